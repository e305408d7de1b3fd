"""The autoregressive image task: a gated PixelCNN, exact NLL, row-cached sampling.

Training maximises the exact log-likelihood ``sum_i log p(x_i | x_<i)`` of
dynamically binarised images (``model.distribution=bernoulli``, nats per
example, each test image binarised with the key of its index as the VAE
does) or of the 8-bit pixels (``categorical``, bits/dim).

Sampling draws the pixels one at a time in raster order. A naive sampler
runs the whole network once per pixel (784 passes for MNIST). Here the
vertical stack, which depends on the rows above only, runs once per row,
and only the horizontal stack and the output head run once per pixel, on
that one row; and each runs only on the ``reach + 1`` rows (columns) that
the current pixel's logits read (``GatedPixelCNN.reach``: 12 for the cpu
preset, so bands of 13 of MNIST's 28). 1,000 samples of the cpu preset take
59 s on 2 cores instead of 110 s with whole rows and images (``python -m
genjax.tools.benchmark pixelcnn_mnist --preset=cpu --sampling=1000``);
tests check that ``sample`` draws exactly what the naive sampler draws with
the same keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax.config import ConfigError, check_choice
from genjax.evaluate import sample_quality
from genjax.models.pixelcnn import GatedPixelCNN
from genjax.objectives import likelihood as likelihood_lib
from genjax.objectives import pixels as pixels_lib
from genjax.tasks.base import Task, conditional_classes
from genjax.train import step as step_lib


def base_config(data_name: str) -> ml_collections.ConfigDict:
    """The config keys of every PixelCNN experiment, with neutral defaults."""
    from genjax import config as config_lib  # pylint: disable=import-outside-toplevel

    config = config_lib.base_config(data_name=data_name)
    config.model = ml_collections.ConfigDict()
    config.model.distribution = "bernoulli"  # bernoulli | categorical
    config.model.features = 64
    config.model.num_layers = 8
    config.model.kernel = 3
    config.model.first_kernel = 7
    config.model.head_features = 256
    # Labels condition every gate (van den Oord et al. 2016, sec. 2.3);
    # samples then get uniformly drawn labels.
    config.model.class_conditional = False
    config.sample.temperature = 1.0
    config.eval.sample_quality = sample_quality.default_protocol()
    return config


class PixelCNNTask(Task):
    """A gated PixelCNN on single-channel images.

    Config keys: ``model.{distribution, features, num_layers, kernel,
    first_kernel, head_features, class_conditional}``, ``sample.temperature``.
    """

    progress_keys = ("loss", "grad_norm")

    def __init__(self, config, dataset_info):
        super().__init__(config, dataset_info)
        if dataset_info.kind != "image":
            raise ConfigError(
                f"the PixelCNN task needs an image dataset; data.name="
                f"{config.data.name!r} is of kind {dataset_info.kind!r}")
        m = config.model
        check_choice("model.distribution", m.distribution, pixels_lib.DISTRIBUTIONS)
        self.image_shape = tuple(dataset_info.element_spec["image"])
        if self.image_shape[-1] != 1:
            raise ConfigError(
                f"the gated PixelCNN here models single-channel images; data.name="
                f"{config.data.name!r} has {self.image_shape[-1]} channels (colour "
                f"needs per-channel masks): use a greyscale dataset")
        for key in ("features", "num_layers", "head_features"):
            if int(m[key]) < 1:
                raise ConfigError(f"model.{key}={m[key]} must be >= 1")
        for key in ("kernel", "first_kernel"):
            if int(m[key]) < 1 or int(m[key]) % 2 == 0:
                raise ConfigError(f"model.{key}={m[key]} must be a positive odd number")
        if not float(config.sample.temperature) > 0:
            raise ConfigError(f"sample.temperature={config.sample.temperature} must be > 0")
        self.distribution = m.distribution
        self.num_dims = int(np.prod(self.image_shape))
        self.num_classes = conditional_classes(config, dataset_info)
        self.model = GatedPixelCNN(
            features=int(m.features), num_layers=int(m.num_layers), kernel=int(m.kernel),
            first_kernel=int(m.first_kernel),
            outputs_per_pixel=pixels_lib.outputs_per_pixel(m.distribution),
            num_classes=self.num_classes, head_features=int(m.head_features))

    def _labels(self, batch):
        return batch["label"] if self.num_classes else None

    def init_params(self, rng, example_batch):
        x = jnp.zeros((1,) + self.image_shape, jnp.float32)
        labels = jnp.zeros((1,), jnp.int32) if self.num_classes else None
        return self.model.init(rng, x, labels)["params"]

    def logits(self, params, pixels, labels=None):
        return self.model.apply({"params": params}, pixels, labels)

    def nll(self, params, images, rng, labels=None):
        """Exact NLL in nats per example of images in [0, 1] (binarised
        with ``rng`` for a Bernoulli model)."""
        x = pixels_lib.prepare(self.distribution, images, rng)
        return pixels_lib.nll(self.distribution, self.logits(params, x, labels), x)

    def loss_fn(self, params, batch, rng):
        nll = self.nll(params, batch["image"], rng, self._labels(batch))
        mean = jnp.mean(nll)
        # Minimised per dimension, so the learning rate does not depend on
        # the image size; logged per example too.
        return mean / self.num_dims, {"nll": mean}

    def eval_fn(self, params, batch, rng, *, final):
        del final
        # The first of three keys: the VAE's own binarisation of each test image.
        pixel_rng = jax.random.split(rng, 3)[0]
        nll = self.nll(params, batch["image"], pixel_rng, self._labels(batch))
        return {"nll": nll, "bits_per_dim": likelihood_lib.bits_per_dim(nll, self.num_dims)}

    def anomaly_score(self, params, images, rng, labels=None):
        """Exact NLL per example (nats); higher = odder."""
        return self.nll(params, images, rng, labels)

    def ood_scores(self, params, images, rng) -> dict:
        """``{"nll": [B] nats}``, the exact NLL, higher = odder."""
        return {"nll": self.nll(params, images, rng)}

    def sample(self, params, rng, num_samples: int, *, labels=None,
               temperature: float | None = None):
        """``num_samples`` images in [0, 1] drawn pixel by pixel, with the
        vertical stack run once per row (see the module docstring). A
        class-conditional model draws labels uniformly unless given."""
        label_rng, rng = jax.random.split(rng)
        temperature = float(self.config.sample.temperature if temperature is None
                            else temperature)
        if self.num_classes and labels is None:
            labels = step_lib.shard_batch_axis(jax.random.randint(
                label_rng, (num_samples,), 0, self.num_classes))
        height, width = self.image_shape[:2]
        variables = {"params": params}
        x = step_lib.shard_batch_axis(jnp.zeros((num_samples,) + self.image_shape,
                                                jnp.float32))
        # Only the last reach + 1 rows (columns) reach the current pixel.
        reach = self.model.reach
        band, window = min(height, reach + 1), min(width, reach + 1)

        def row(r, x):
            top = jnp.clip(r - reach, 0, height - band)
            rows = jax.lax.dynamic_slice_in_dim(x, top, band, axis=1)
            extras = self.model.apply(variables, rows, labels,
                                      method=GatedPixelCNN.vertical)
            extras = [jax.lax.dynamic_slice_in_dim(e, r - top, 1, axis=1) for e in extras]

            def pixel(c, x):
                left = jnp.clip(c - reach, 0, width - window)
                piece = jax.lax.dynamic_slice_in_dim(
                    jax.lax.dynamic_slice_in_dim(x, r, 1, axis=1), left, window, axis=2)
                piece_extras = [jax.lax.dynamic_slice_in_dim(e, left, window, axis=2)
                                for e in extras]
                logits = self.model.apply(variables, piece, piece_extras,
                                          method=GatedPixelCNN.horizontal)
                logits = jax.lax.dynamic_index_in_dim(logits[:, 0], c - left, axis=1,
                                                      keepdims=False)
                key = jax.random.fold_in(rng, r * width + c)
                value = pixels_lib.draw(self.distribution, logits, key, temperature)
                return x.at[:, r, c, 0].set(value)

            return jax.lax.fori_loop(0, width, pixel, x)

        return jax.lax.fori_loop(0, height, row, x)

    def sample_naive(self, params, rng, num_samples: int, *, labels=None,
                     temperature: float = 1.0):
        """The same draws as ``sample`` (same keys) by running the whole
        network once per pixel: the reference that ``sample`` is tested
        against, and the baseline of its speed."""
        label_rng, rng = jax.random.split(rng)
        if self.num_classes and labels is None:
            labels = jax.random.randint(label_rng, (num_samples,), 0, self.num_classes)
        height, width = self.image_shape[:2]
        x = jnp.zeros((num_samples,) + self.image_shape, jnp.float32)

        def pixel(i, x):
            r, c = i // width, i % width
            logits = self.logits(params, x, labels)[:, r, c]
            key = jax.random.fold_in(rng, i)
            return x.at[:, r, c, 0].set(
                pixels_lib.draw(self.distribution, logits, key, temperature))

        return jax.lax.fori_loop(0, height * width, pixel, x)

    def sample_fn(self, params, rng, num_samples):
        return self.sample(params, rng, num_samples)

    def sample_quality_samplers(self, final):
        """The sampler with its sequential steps as ``nfe``: one call of
        the horizontal stack per pixel (the vertical stack runs once per
        row besides)."""
        del final
        steps = self.image_shape[0] * self.image_shape[1]

        def with_nfe(params, rng, num_samples):
            return (self.sample(params, rng, num_samples),
                    {"nfe": jnp.full((num_samples,), steps, jnp.float32)})
        return {"": with_nfe}
