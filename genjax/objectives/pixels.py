"""Per-pixel likelihoods of autoregressive image models (exact NLL).

Two pixel distributions, each a categorical over the pixel's discrete
values, so the NLL is exact with no dequantisation:

- ``bernoulli``: binary pixels, one logit each (binarised MNIST; the NLL
  in nats per example is what the published table gives: PixelCNN 81.3);
- ``categorical``: 8-bit pixels, a softmax over the 256 intensities
  (van den Oord et al. 2016); bits/dim by ``genjax.objectives.likelihood``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.objectives import likelihood as likelihood_lib

DISTRIBUTIONS = ("bernoulli", "categorical")
NUM_INTENSITIES = likelihood_lib.NUM_8BIT_BINS


def outputs_per_pixel(distribution: str) -> int:
    return 1 if distribution == "bernoulli" else NUM_INTENSITIES


def prepare(distribution: str, images: jax.Array, rng: jax.Array) -> jax.Array:
    """Images in [0, 1] -> the discrete pixels the model sees, as floats in
    [0, 1]: a dynamic binarisation (``rng``) or the 8-bit levels ``k/255``."""
    if distribution == "bernoulli":
        return jax.random.bernoulli(rng, images).astype(images.dtype)
    return jnp.round(images * (NUM_INTENSITIES - 1)) / (NUM_INTENSITIES - 1)


def nll(distribution: str, logits: jax.Array, pixels: jax.Array) -> jax.Array:
    """Negative log-likelihood in nats per example ``[B]`` of ``pixels
    [B, H, W, 1]`` (from ``prepare``) under ``logits [B, H, W, outputs]``."""
    if distribution == "bernoulli":
        per_pixel = (jax.nn.softplus(logits[..., 0]) - pixels[..., 0] * logits[..., 0])
    else:
        index = jnp.round(pixels[..., 0] * (NUM_INTENSITIES - 1)).astype(jnp.int32)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        per_pixel = -jnp.take_along_axis(log_probs, index[..., None], axis=-1)[..., 0]
    return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=1)


def draw(distribution: str, logits: jax.Array, rng: jax.Array,
         temperature: float = 1.0) -> jax.Array:
    """Pixel values in [0, 1] drawn from ``logits [..., outputs]`` -> ``[...]``."""
    logits = logits / temperature
    if distribution == "bernoulli":
        return jax.random.bernoulli(rng, jax.nn.sigmoid(logits[..., 0])).astype(logits.dtype)
    index = jax.random.categorical(rng, logits, axis=-1)
    return index.astype(logits.dtype) / (NUM_INTENSITIES - 1)
