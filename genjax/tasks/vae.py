"""The VAE task: the VAE model, the ELBO objective, IWAE evaluation, sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.config import ConfigError, check_choice
from genjax.models.vae import ACTIVATIONS, ARCHITECTURES, PRIORS, VAE
from genjax.objectives import elbo
from genjax.objectives import likelihood as likelihood_lib
from genjax.tasks.base import Task, conditional_classes


class VAETask(Task):
    """Kingma & Welling 2013 on image data.

    Config keys used: ``model.{architecture, hidden, latents, activation,
    likelihood, class_conditional, prior, pseudo_inputs}``, ``vae.importance_samples`` (k: 1
    trains on the ELBO, k > 1 on the importance-weighted bound, Burda et al.
    2016), ``eval.{iwae_samples, iwae_samples_during_training, iwae_chunk}``.
    A class-conditional VAE
    (Sohn et al. 2015) models p(x|y): its likelihoods are conditional on the
    test labels, and its samples take uniformly drawn labels.
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
                           ("likelihood", elbo.LIKELIHOODS),
                           ("prior", PRIORS)):
            check_choice(f"model.{key}", m[key], valid)
        if m.prior == "vamp" and m.pseudo_inputs < 1:
            raise ConfigError(f"model.pseudo_inputs={m.pseudo_inputs}: the VampPrior "
                              f"needs at least one pseudo-input (Tomczak & Welling "
                              f"2018 use 500 on MNIST)")
        if m.prior == "vamp" and m.class_conditional:
            raise ConfigError("model.prior='vamp' with model.class_conditional=true: "
                              "the VampPrior is for unconditional VAEs; use "
                              "model.prior=standard")
        self.likelihood = m.likelihood
        k = config.vae.importance_samples
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"vae.importance_samples={k!r} must be an integer >= 1 "
                              f"(1: the ELBO; k > 1: the IWAE bound)")
        self.importance_samples = k
        self.num_classes = conditional_classes(config, dataset_info)
        self.image_shape = tuple(dataset_info.element_spec["image"])
        self.num_dims = int(np.prod(self.image_shape))
        self.model = VAE(
            architecture=m.architecture, hidden=tuple(m.hidden),
            latents=m.latents, image_shape=self.image_shape,
            params_per_pixel=elbo.params_per_pixel(m.likelihood),
            activation=m.activation, num_classes=self.num_classes,
            prior=m.prior, pseudo_inputs=m.pseudo_inputs if m.prior == "vamp" else 0)

    # Bound methods of the Linen model, as pure functions of params (and,
    # for a conditional VAE, of the labels).
    def _encode(self, params, labels=None):
        return lambda x: self.model.apply({"params": params}, x, labels,
                                          method=VAE.encode)

    def _decode(self, params, labels=None):
        return lambda z: self.model.apply({"params": params}, z, labels,
                                          method=VAE.decode)

    def _vamp_components(self, params):
        """The VampPrior's (means, logvars), each ``[K, L]``; None for N(0, I)."""
        if self.config.model.prior != "vamp":
            return None
        return self.model.apply({"params": params}, method=VAE.prior_components)

    def _log_prior(self, params):
        """``z [N, L] -> log p(z)`` for the VampPrior; None for N(0, I)."""
        components = self._vamp_components(params)
        if components is None:
            return None
        return lambda z: elbo.mixture_log_prob(z, *components)

    def _prior_sample(self, params, rng, num_samples):
        """z from the prior: N(0, I), or a uniformly chosen VampPrior component."""
        components = self._vamp_components(params)
        if components is None:
            return jax.random.normal(rng, (num_samples, self.config.model.latents))
        means, logvars = components
        pick_rng, z_rng = jax.random.split(rng)
        k = jax.random.randint(pick_rng, (num_samples,), 0, means.shape[0])
        eps = jax.random.normal(z_rng, (num_samples, self.config.model.latents))
        return means[k] + jnp.exp(0.5 * logvars[k]) * eps

    def _labels(self, batch):
        return batch["label"] if self.num_classes else None

    def init_params(self, rng, example_batch):
        x = example_batch["image"]
        labels = jnp.zeros((x.shape[0],), jnp.int32) if self.num_classes else None
        return self.model.init(rng, x, rng, labels)["params"]

    def loss_fn(self, params, batch, rng):
        pixel_rng, z_rng = jax.random.split(rng)
        x = elbo.prepare_pixels(self.likelihood, batch["image"], pixel_rng)
        labels = self._labels(batch)
        log_prior = self._log_prior(params)
        if self.importance_samples > 1:
            loss = jnp.mean(elbo.neg_iwae(self._encode(params, labels),
                                          self._decode(params, labels), x, z_rng,
                                          self.likelihood, self.importance_samples,
                                          log_prior))
            metrics = {"neg_iwae": loss}
            if self.likelihood == "gaussian":
                metrics["bits_per_dim"] = self.bits_per_dim(loss)
            return loss, metrics
        nelbo, rec, kl = elbo.neg_elbo(self._encode(params, labels),
                                       self._decode(params, labels),
                                       x, z_rng, self.likelihood, log_prior)
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
        labels = self._labels(batch)
        enc, dec = self._encode(params, labels), self._decode(params, labels)
        log_prior = self._log_prior(params)
        nelbo, rec, kl = elbo.neg_elbo(enc, dec, x, z_rng, self.likelihood, log_prior)
        k = cfg.iwae_samples if final else cfg.iwae_samples_during_training
        out = {"neg_elbo": nelbo, "reconstruction_nll": rec, "kl": kl}
        if k > 0:
            out["nll_iwae"] = elbo.nll_iwae(enc, dec, x, iw_rng, self.likelihood,
                                            k, cfg.iwae_chunk, log_prior)
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

    def sample(self, params, rng, num_samples, *, labels=None):
        """Decoder means at ``z ~ N(0, I)``; a conditional VAE draws labels
        uniformly unless ``labels [num_samples]`` are given."""
        z_rng, label_rng = jax.random.split(rng)
        z = self._prior_sample(params, z_rng, num_samples)
        if self.num_classes and labels is None:
            labels = jax.random.randint(label_rng, (num_samples,), 0, self.num_classes)
        return elbo.mean_image(self.likelihood, self._decode(params, labels)(z))

    def sample_fn(self, params, rng, num_samples):
        if not self.num_classes:  # the unconditional draw of earlier runs, unchanged
            z = self._prior_sample(params, rng, num_samples)
            return elbo.mean_image(self.likelihood, self._decode(params)(z))
        return self.sample(params, rng, num_samples)

    def anomaly_score(self, params, images, rng, num_samples=16, labels=None):
        """Per-example negative ELBO (nats) of images in [0, 1]; higher = odder."""
        pixel_rng, z_rng = jax.random.split(rng)
        x = elbo.prepare_pixels(self.likelihood, images, pixel_rng)
        return elbo.anomaly_score(self._encode(params, labels), self._decode(params, labels),
                                  x, z_rng, self.likelihood, num_samples,
                                  self._log_prior(params))

    def ood_scores(self, params, images, rng, num_samples: int = 100) -> dict:
        """Per-example scores of images in [0, 1], each higher = odder, in
        nats: ``nll`` (-IWAE with ``num_samples`` samples), ``neg_elbo`` and
        ``reconstruction`` (the negative reconstruction probability of An &
        Cho 2015, -E_q log p(x|z)), both averaged over 16 posterior samples.
        Unconditional models only (an unlabelled image has no class to
        condition on)."""
        pixel_rng, z_rng, iw_rng = jax.random.split(rng, 3)
        x = elbo.prepare_pixels(self.likelihood, images, pixel_rng)
        enc, dec = self._encode(params), self._decode(params)
        log_prior = self._log_prior(params)
        nelbo, rec = jax.vmap(lambda k: elbo.neg_elbo(enc, dec, x, k, self.likelihood,
                                                      log_prior)[:2])(
            jax.random.split(z_rng, 16))
        chunk = min(num_samples, 100)
        return {"nll": elbo.nll_iwae(enc, dec, x, iw_rng, self.likelihood, num_samples,
                                     chunk, log_prior),
                "neg_elbo": jnp.mean(nelbo, axis=0),
                "reconstruction": jnp.mean(rec, axis=0)}

    def reconstruct(self, params, images, labels=None):
        """Decoder means at the posterior means of ``images``."""
        mean, _ = self._encode(params, labels)(images)
        return elbo.mean_image(self.likelihood, self._decode(params, labels)(mean))

    def interpolate(self, params, image_a, image_b, num_steps=10, labels=None):
        """Decoded images along the line between two posterior means (a
        conditional VAE: each image encoded with its label ``labels[0]``,
        ``labels[1]``, the path decoded with the first)."""
        mean, _ = self._encode(params, labels)(jnp.stack([image_a, image_b]))
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        z = (1.0 - t) * mean[0][None] + t * mean[1][None]  # [num_steps, L]
        decode_labels = None if labels is None else jnp.full((num_steps,), labels[0])
        return elbo.mean_image(self.likelihood, self._decode(params, decode_labels)(z))

    def figures(self, params, batch, rng):
        del rng
        images = batch["image"]
        n = min(10, images.shape[0])
        cond = self._labels(batch)
        recon = self.reconstruct(params, images[:n], None if cond is None else cond[:n])
        # Originals on the top row, reconstructions below.
        figs = {"reconstructions": (np.concatenate([images[:n], recon]), n)}
        # Interpolate between two test images of different labels if we can.
        j = 1
        if "label" in batch:
            labels = np.asarray(batch["label"])
            others = np.nonzero(labels != labels[0])[0]
            j = int(others[0]) if len(others) else 1
        pair = None if cond is None else jnp.asarray([cond[0], cond[j]])
        figs["interpolation"] = (self.interpolate(params, images[0], images[j],
                                                  labels=pair), 10)
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
    # p(x|y): the label conditions encoder and decoder (Sohn et al. 2015).
    config.model.class_conditional = False
    # p(z): "standard" N(0, I), or "vamp", the VampPrior (Tomczak & Welling
    # 2018) with model.pseudo_inputs learned pseudo-inputs.
    config.model.prior = "standard"
    config.model.pseudo_inputs = 0
    # The training objective: k = 1, the ELBO (Kingma & Welling 2013); k > 1,
    # the importance-weighted bound with k samples (Burda et al. 2016).
    config.vae = ml_collections.ConfigDict()
    config.vae.importance_samples = 1
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
