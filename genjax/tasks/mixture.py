"""The mixture task: a Gaussian or Bernoulli mixture fitted by EM.

The classical baseline in the same loop, registry and table as the neural
families. Each training step is one EM iteration (``genjax.objectives.em``)
on the step's batch: with ``train.batch_size`` equal to the train split's
size (the MNIST presets: 60,000) every step sees the whole split and the
iteration is exact batch EM, whose training log-likelihood never decreases;
a smaller batch gives an EM iteration on each batch (quick, but the
likelihood then moves with the batch). There is no optimiser and no
learning rate; checkpoints, resumption, data-parallel sharding of the
E-step over devices and the evaluations are the loop's, as for any task.

- ``model.distribution=bernoulli``: binary pixels, NLL in nats per example
  on dynamically binarised test images (each test image binarised with the
  key of its index, as the VAE does), exact. Training uses the grey levels
  as soft targets (see ``em``), a fixed objective.
- ``model.distribution=gaussian`` (``model.covariance`` full or diag):
  uniformly dequantised 8-bit pixels, bits/dim on the discrete scale
  (``genjax.objectives.likelihood``). Each training image keeps one
  dequantisation draw for the whole run (its key is that of its index), so
  that EM iterates on a fixed data set. With ``model.logit_alpha`` > 0 (the
  default, 1e-6 as the MNIST flows) the mixture models the pixels' logits,
  ``y = logit(alpha + (1 - 2 alpha) x)``, and the transform's Jacobian is
  counted in every likelihood: a Gaussian in pixel space fits MNIST's
  almost-binary pixels poorly (10 full-covariance components: 4.06 test
  bits/dim in pixel space, 1.98 in logit space).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genjax import data as data_lib
from genjax.config import ConfigError, check_choice
from genjax.evaluate import sample_quality
from genjax.models import flows, mixture
from genjax.objectives import em
from genjax.objectives import likelihood as likelihood_lib
from genjax.tasks.base import Task
from genjax.train.state import TrainState


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every mixture experiment, with neutral defaults."""
    from genjax import config as config_lib  # pylint: disable=import-outside-toplevel

    config = config_lib.base_config(data_name=data_name)
    del config.train["compute_dtype"]  # EM takes no gradient steps.
    config.model = ml_collections.ConfigDict()
    config.model.distribution = "bernoulli"  # bernoulli | gaussian
    config.model.covariance = "full"  # full | diag (gaussian only)
    config.model.components = 10
    # gaussian only: model logit(alpha + (1 - 2 alpha) x) of the dequantised
    # pixels x (its Jacobian counted); 0 models the pixels themselves.
    config.model.logit_alpha = 1e-6
    config.em = ml_collections.ConfigDict()
    # The bounds of the M-step (see genjax.objectives.em): a variance or
    # covariance eigenvalue of at least min_variance (the variance of the
    # uniform dequantisation noise of one 8-bit bin is 1/(12 * 256^2) =
    # 1.27e-6), a Bernoulli probability in [min_prob, 1 - min_prob].
    config.em.min_variance = 1e-6
    config.em.min_prob = 1e-4
    # Samples: a draw from the chosen component, or its mean image (a
    # Bernoulli component's pixel probabilities, as the VAE shows its
    # decoder's means).
    config.sample.mean_image = False
    config.eval.sample_quality = sample_quality.default_protocol()
    config.train.num_steps = 50
    config.train.log_every = 1
    config.train.eval_every = 50
    config.train.checkpoint_every = 10
    return config


class MixtureTask(Task):
    """A mixture of ``model.components`` Bernoulli or Gaussian components on
    flattened images, fitted by EM.

    Config keys: ``model.{distribution, covariance, components, logit_alpha}``,
    ``em.{min_variance, min_prob}``, ``sample.mean_image``.
    """

    progress_keys = ("loss", "min_component_weight")

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "image":
            raise ConfigError(
                f"the mixture task needs an image dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r}")
        m = config.model
        check_choice("model.distribution", m.distribution, mixture.DISTRIBUTIONS)
        check_choice("model.covariance", m.covariance, mixture.COVARIANCES)
        if int(m.components) < 1:
            raise ConfigError(f"model.components={m.components} must be >= 1")
        if int(m.components) > int(config.train.batch_size):
            raise ConfigError(
                f"model.components={m.components} exceeds train.batch_size="
                f"{config.train.batch_size}: EM starts from that many distinct "
                f"examples of a batch; lower model.components or raise the batch")
        if not 0.0 < float(config.em.min_variance):
            raise ConfigError(f"em.min_variance={config.em.min_variance} must be > 0")
        if not 0.0 < float(config.em.min_prob) < 0.5:
            raise ConfigError(f"em.min_prob={config.em.min_prob} must be in (0, 0.5)")
        if not 0.0 <= float(m.logit_alpha) < 0.5:
            raise ConfigError(f"model.logit_alpha={m.logit_alpha} must be in [0, 0.5)")
        if float(config.train.ema_decay) > 0:
            raise ConfigError(
                f"train.ema_decay={config.train.ema_decay}: EM has no gradient "
                f"steps to average; set it to 0")
        self.distribution = m.distribution
        self.covariance = m.covariance if m.distribution == "gaussian" else ""
        self.image_shape = tuple(dataset_info.element_spec["image"])
        self.num_dims = int(np.prod(self.image_shape))
        self.num_components = int(m.components)
        alpha = float(m.logit_alpha) if m.distribution == "gaussian" else 0.0
        self.logit = flows.Logit(alpha) if alpha > 0 else None
        # Dequantisation keys of the training images: one per image index.
        self._train_key = jax.random.key(int(config.seed) + 0x3e3)

    @property
    def num_parameters(self) -> int:
        return mixture.num_parameters(self.num_components, self.num_dims,
                                      self.distribution, self.covariance or "diag")

    def _flat(self, images):
        return images.reshape(images.shape[0], -1)

    def init_params(self, rng, example_batch):
        del example_batch
        return mixture.init_params(rng, self.distribution, self.covariance or "diag",
                                   self.num_components, self.num_dims)

    # ------------------------------------------------------------------
    # Training: one EM iteration per step.

    def make_train_iterator(self, dataset, seed, process_index, process_count):
        arrays = dict(dataset.arrays("train"))
        # Each image's index travels with it, for its fixed dequantisation.
        arrays["index"] = np.arange(len(arrays["image"]), dtype=np.int32)
        return data_lib.TrainIterator(
            arrays, self.config.train.batch_size, seed=seed,
            process_index=process_index, process_count=process_count)

    def example_batch(self, dataset):
        batch = super().example_batch(dataset)
        batch["index"] = np.zeros((1,), np.int32)
        return batch

    def _to_model_space(self, x):
        """Dequantised pixels ``[B, D]`` -> ``(what the mixture models,
        log|det| of the map [B])``: the logits, or the pixels themselves."""
        if self.logit is None:
            return x, jnp.zeros(x.shape[:1], x.dtype)
        return self.logit.apply({}, x)

    def _to_pixels(self, y):
        if self.logit is None:
            return y
        return self.logit.apply({}, y, inverse=True)[0]

    def train_pixels(self, batch):
        """The step's data ``[B, D]`` and the log-det of its transform
        ``[B]``: grey levels (Bernoulli soft targets), or each image's fixed
        dequantisation in the model's space (Gaussian)."""
        x = self._flat(batch["image"])
        if self.distribution == "bernoulli":
            return x, jnp.zeros(x.shape[:1], x.dtype)
        keys = jax.vmap(lambda i: jax.random.fold_in(self._train_key, i))(batch["index"])
        return self._to_model_space(jax.vmap(likelihood_lib.uniform_dequantize)(x, keys))

    def make_optimizer(self):
        return optax.identity(), None

    def init_state(self, init_rng, train_rng, example_batch, optimizer):
        params = self.init_params(init_rng, example_batch)
        return TrainState.create(params, optimizer, train_rng, use_ema=False)

    def make_update(self, optimizer):
        del optimizer
        cfg = self.config.em

        def update(state, batch, rng):
            x, log_det = self.train_pixels(batch)
            params, metrics = em.em_step(
                state.params, x, rng, initialise=state.step == 0,
                min_variance=float(cfg.min_variance), min_prob=float(cfg.min_prob))
            # The transform's Jacobian does not depend on the parameters: EM
            # on the logits is EM on the pixels' likelihood.
            metrics["loss"] = -metrics.pop("log_likelihood") - jnp.mean(log_det)
            if self.distribution == "gaussian":
                metrics["bits_per_dim"] = self._bits_per_dim(metrics["loss"])
            return state.replace(params=params), metrics

        return update

    def loss_fn(self, params, batch, rng):
        """The batch's NLL under ``params`` (nats per example; for a
        Gaussian, of the density on [0, 1]^D); EM does not differentiate it."""
        del rng
        x, log_det = self.train_pixels(batch)
        nll = -jnp.mean(mixture.log_prob(params, x) + log_det)
        return nll, {"nll": nll}

    # ------------------------------------------------------------------
    # Evaluation and sampling.

    def _bits_per_dim(self, density_nll):
        return likelihood_lib.bits_per_dim(
            likelihood_lib.density_to_discrete_nll(density_nll, self.num_dims),
            self.num_dims)

    def test_pixels(self, images, rng):
        """Test images as the likelihood sees them, ``([B, D], log-det [B])``:
        binarised with the first of three keys split from ``rng`` (the VAE's
        own binarisation of each test image), or dequantised and mapped to
        the model's space."""
        x = self._flat(images)
        pixel_rng = jax.random.split(rng, 3)[0]
        if self.distribution == "bernoulli":
            return (jax.random.bernoulli(pixel_rng, x).astype(x.dtype),
                    jnp.zeros(x.shape[:1], x.dtype))
        return self._to_model_space(likelihood_lib.uniform_dequantize(x, pixel_rng))

    def log_likelihood(self, params, images, rng):
        """Per-example log-likelihood of the discrete data in nats: exact
        for binary pixels, the dequantisation bound for 8-bit pixels."""
        x, log_det = self.test_pixels(images, rng)
        log_px = mixture.log_prob(params, x) + log_det
        if self.distribution == "gaussian":
            log_px = -likelihood_lib.density_to_discrete_nll(-log_px, self.num_dims)
        return log_px

    def anomaly_score(self, params, images, rng):
        """Negative log-likelihood per example (nats); higher = odder."""
        return -self.log_likelihood(params, images, rng)

    def ood_scores(self, params, images, rng) -> dict:
        """``{"nll": [B] nats}`` of the discrete pixels, higher = odder."""
        return {"nll": -self.log_likelihood(params, images, rng)}

    def eval_fn(self, params, batch, rng, *, final):
        del final
        nll = -self.log_likelihood(params, batch["image"], rng)
        return {"nll": nll,
                "bits_per_dim": likelihood_lib.bits_per_dim(nll, self.num_dims)}

    def sample_fn(self, params, rng, num_samples):
        x, _ = mixture.sample(params, rng, num_samples,
                              mean_only=bool(self.config.sample.mean_image))
        return jnp.clip(self._to_pixels(x), 0.0, 1.0).reshape((num_samples,) + self.image_shape)

    def figures(self, params, batch, rng):
        """The components' means, heaviest first, with their weights' order."""
        del batch, rng
        order = np.argsort(-np.asarray(params["logits"]))
        key = "probs" if self.distribution == "bernoulli" else "means"
        means = self._to_pixels(jnp.asarray(params[key])[order][:100])
        images = np.clip(np.asarray(means), 0.0, 1.0).reshape((-1,) + self.image_shape)
        return {"components": (images, min(10, len(images)))}
