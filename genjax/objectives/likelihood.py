"""Likelihood units and conventions shared by every family that has one.

One convention for bits per dimension, everywhere in genjax:

    bits_per_dim = NLL / (D * ln 2)

where NLL is the negative log-probability, in nats per example, of the
**discrete** data (for images, the 8-bit pixels: a probability mass over
{0, ..., 255}^D) and D is the number of dimensions (pixels times channels).
This is the number the literature tabulates (Theis et al. 2016; PixelCNN,
RealNVP, Glow, DDPM all report it).

A model with a **density** on continuous pixels reaches the discrete scale
in one of two ways:

- a discretised likelihood that integrates its density over each 8-bit bin
  (``discretized_gaussian_log_likelihood``; DDPM's decoder, Ho et al. 2020,
  eq. 13) already gives a probability mass: use ``bits_per_dim`` directly;
- a density on [0, 1]^D fitted to uniformly dequantised pixels
  (``uniform_dequantize``; a VAE's Gaussian decoder, a flow) gives a bound
  on the discrete NLL after ``density_to_discrete_nll``, which adds
  D ln 256 (an 8-bit bin is 1/256 wide there; Theis et al. 2016, sec. 3.1):
  -log P(x) <= E_u[-log p((x + u) / 256)] + D ln 256.

Binary data (binarised MNIST) is already discrete: its NLL in nats per
example is what the published tables give (e.g. 86.8 nats for a VAE), and
``bits_per_dim`` applies unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LN2 = math.log(2.0)
NUM_8BIT_BINS = 256


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
    """Nats per example of the discrete data -> bits per dimension.

    ``nll_nats`` must already be on the discrete scale (see the module
    docstring); for a density on [0, 1]^D apply ``density_to_discrete_nll``
    first.
    """
    return nll_nats / (num_dims * LN2)


def nats_from_bits_per_dim(bpd: jax.Array, num_dims: int) -> jax.Array:
    """The inverse of ``bits_per_dim``: nats per example."""
    return bpd * (num_dims * LN2)


def density_to_discrete_nll(nll_density_nats: jax.Array, num_dims: int,
                            num_bins: int = NUM_8BIT_BINS) -> jax.Array:
    """The NLL of a density on [0, 1]^D fitted to uniformly dequantised
    pixels -> an upper bound on the discrete NLL, in nats per example: adds
    ``D ln num_bins``, the log-volume of one bin (width ``1 / num_bins``)."""
    return nll_density_nats + num_dims * math.log(num_bins)


def uniform_dequantize(x: jax.Array, rng: jax.Array,
                       num_bins: int = NUM_8BIT_BINS) -> jax.Array:
    """Pixels in [0, 1] on the ``num_bins`` levels ``k / (num_bins - 1)`` ->
    ``(k + u) / num_bins`` with ``u ~ U[0, 1)``: a continuous point inside
    the pixel's bin of [0, 1] (Uria et al. 2013; Theis et al. 2016)."""
    u = jax.random.uniform(rng, x.shape, x.dtype)
    return (jnp.round(x * (num_bins - 1)) + u) / num_bins


def _log_sub_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log(exp(a) - exp(b))`` for ``a >= b``, stable."""
    return a + jnp.log(-jnp.expm1(jnp.minimum(b - a, -1e-12)))


def discretized_gaussian_log_likelihood(x: jax.Array, mean: jax.Array,
                                        log_scale: jax.Array,
                                        num_bins: int = NUM_8BIT_BINS) -> jax.Array:
    """``log P(x)`` elementwise for ``x`` on the ``num_bins`` bin centres of
    [-1, 1], under ``N(mean, exp(log_scale)^2)`` integrated over each bin;
    the end bins extend to -inf and +inf (Ho et al. 2020, eq. 13). A
    probability mass: its negated sum is a discrete NLL."""
    half_bin = 1.0 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_scale
    lower = (x - mean - half_bin) * inv_scale
    log_cdf_upper = jax.scipy.special.log_ndtr(upper)
    log_sf_lower = jax.scipy.special.log_ndtr(-lower)
    log_mid = _log_sub_exp(log_cdf_upper, jax.scipy.special.log_ndtr(lower))
    # For upper < 0, Phi(upper) - Phi(lower) is computed from the left tail;
    # otherwise from the right tail (1 - Phi(lower)) - (1 - Phi(upper)).
    log_mid = jnp.where(upper < 0.0, log_mid,
                        _log_sub_exp(log_sf_lower, jax.scipy.special.log_ndtr(-upper)))
    return jnp.where(x < -1.0 + half_bin, log_cdf_upper,
                     jnp.where(x > 1.0 - half_bin, log_sf_lower, log_mid))
