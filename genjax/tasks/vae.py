"""The VAE task: the VAE model, the ELBO objective, IWAE evaluation, sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.config import ConfigError, check_choice
from genjax.models.vae import ACTIVATIONS, ARCHITECTURES, VAE
from genjax.objectives import elbo
from genjax.objectives import likelihood as likelihood_lib
from genjax.tasks.base import Task


class VAETask(Task):
    """Kingma & Welling 2013 on image data.

    Config keys used: ``model.{architecture, hidden, latents, activation,
    likelihood}``, ``eval.{iwae_samples, iwae_samples_during_training,
    iwae_chunk}``.
    """

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "image":
            raise ConfigError(
                f"the VAE task needs an image dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r}")
        m = config.model
        for key, valid in (("architecture", ARCHITECTURES),
                           ("activation", ACTIVATIONS),
                           ("likelihood", elbo.LIKELIHOODS)):
            check_choice(f"model.{key}", m[key], valid)
        self.likelihood = m.likelihood
        self.image_shape = tuple(dataset_info.element_spec["image"])
        self.num_dims = int(np.prod(self.image_shape))
        self.model = VAE(
            architecture=m.architecture, hidden=tuple(m.hidden),
            latents=m.latents, image_shape=self.image_shape,
            params_per_pixel=elbo.params_per_pixel(m.likelihood),
            activation=m.activation)

    # Bound methods of the Linen model, as pure functions of params.
    def _encode(self, params):
        return lambda x: self.model.apply({"params": params}, x,
                                          method=VAE.encode)

    def _decode(self, params):
        return lambda z: self.model.apply({"params": params}, z,
                                          method=VAE.decode)

    def init_params(self, rng, example_batch):
        x = example_batch["image"]
        return self.model.init(rng, x, rng)["params"]

    def loss_fn(self, params, batch, rng):
        pixel_rng, z_rng = jax.random.split(rng)
        x = elbo.prepare_pixels(self.likelihood, batch["image"], pixel_rng)
        nelbo, rec, kl = elbo.neg_elbo(self._encode(params), self._decode(params),
                                       x, z_rng, self.likelihood)
        loss = jnp.mean(nelbo)
        metrics = {"neg_elbo": loss, "reconstruction_nll": jnp.mean(rec),
                   "kl": jnp.mean(kl)}
        if self.likelihood == "gaussian":
            metrics["bits_per_dim"] = self.bits_per_dim(loss)
        return loss, metrics

    def eval_fn(self, params, batch, rng, *, final):
        cfg = self.config.eval
        pixel_rng, z_rng, iw_rng = jax.random.split(rng, 3)
        x = elbo.prepare_pixels(self.likelihood, batch["image"], pixel_rng)
        enc, dec = self._encode(params), self._decode(params)
        nelbo, rec, kl = elbo.neg_elbo(enc, dec, x, z_rng, self.likelihood)
        k = cfg.iwae_samples if final else cfg.iwae_samples_during_training
        out = {"neg_elbo": nelbo, "reconstruction_nll": rec, "kl": kl}
        if k > 0:
            out["nll_iwae"] = elbo.nll_iwae(enc, dec, x, iw_rng, self.likelihood,
                                            k, cfg.iwae_chunk)
        if self.likelihood == "gaussian":
            out["bits_per_dim"] = self.bits_per_dim(out.get("nll_iwae", nelbo))
        return out

    def bits_per_dim(self, nll_density):
        """Bits per dimension of 8-bit pixels from the Gaussian decoder's NLL
        (a density on [0, 1]^D of dequantised pixels; see
        ``genjax.objectives.likelihood``)."""
        return likelihood_lib.bits_per_dim(
            likelihood_lib.density_to_discrete_nll(nll_density, self.num_dims),
            self.num_dims)

    def sample_fn(self, params, rng, num_samples):
        z = jax.random.normal(rng, (num_samples, self.config.model.latents))
        return elbo.mean_image(self.likelihood, self._decode(params)(z))

    def anomaly_score(self, params, images, rng, num_samples=16):
        """Per-example negative ELBO (nats) of images in [0, 1]; higher = odder."""
        pixel_rng, z_rng = jax.random.split(rng)
        x = elbo.prepare_pixels(self.likelihood, images, pixel_rng)
        return elbo.anomaly_score(self._encode(params), self._decode(params),
                                  x, z_rng, self.likelihood, num_samples)

    def reconstruct(self, params, images):
        """Decoder means at the posterior means of ``images``."""
        mean, _ = self._encode(params)(images)
        return elbo.mean_image(self.likelihood, self._decode(params)(mean))

    def interpolate(self, params, image_a, image_b, num_steps=10):
        """Decoded images along the line between two posterior means."""
        mean, _ = self._encode(params)(jnp.stack([image_a, image_b]))
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        z = (1.0 - t) * mean[0][None] + t * mean[1][None]  # [num_steps, L]
        return elbo.mean_image(self.likelihood, self._decode(params)(z))

    def figures(self, params, batch, rng):
        del rng
        images = batch["image"]
        n = min(10, images.shape[0])
        recon = self.reconstruct(params, images[:n])
        # Originals on the top row, reconstructions below.
        figs = {"reconstructions": (np.concatenate([images[:n], recon]), n)}
        # Interpolate between two test images of different labels if we can.
        j = 1
        if "label" in batch:
            labels = np.asarray(batch["label"])
            others = np.nonzero(labels != labels[0])[0]
            j = int(others[0]) if len(others) else 1
        figs["interpolation"] = (self.interpolate(params, images[0], images[j]),
                                 10)
        return figs



def base_config(data_name: str):
    """The config keys of every VAE experiment, with neutral defaults."""
    from genjax import config as config_lib  # pylint: disable=import-outside-toplevel
    import ml_collections  # pylint: disable=import-outside-toplevel

    config = config_lib.base_config(data_name=data_name)
    config.model = ml_collections.ConfigDict()
    config.model.architecture = "mlp"  # mlp | conv
    config.model.hidden = (512, 256)
    config.model.latents = 32
    config.model.activation = "relu"
    config.model.likelihood = "bernoulli"  # bernoulli | gaussian
    # k for the reported IWAE bound (--mode=eval and the end of training),
    # and a cheaper k for the evaluations during training (0 skips it).
    config.eval.iwae_samples = 1000
    config.eval.iwae_samples_during_training = 0
    config.eval.iwae_chunk = 20
    return config


def kingma_welling_2013(config, *, latents: int) -> None:
    """Sets the MNIST setup of Kingma & Welling 2013 (section 5, appendix).

    An MLP with one hidden layer of 500 tanh units in encoder and decoder,
    Adagrad with step size 0.02 (of their {0.01, 0.02, 0.1}), minibatches of
    M = 100 and L = 1 sample of z per example.
    """
    config.model.architecture = "mlp"
    config.model.hidden = (500,)
    config.model.latents = latents
    config.model.activation = "tanh"
    config.train.optimizer = "adagrad"
    config.train.learning_rate = 0.02
    config.train.batch_size = 100
