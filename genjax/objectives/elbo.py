"""The evidence lower bound and the importance-weighted bound.

All quantities are per example, in nats, summed over pixels:

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))       (Kingma & Welling
                                                               2013, eq. 3)
    IWAE_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)]      (Burda et al.
                                                               2015, eq. 8)

with q(z|x) = N(mean, diag(exp(logvar))) and p(z) = N(0, I). The loss
minimised is the negative ELBO averaged over the batch, estimated with one
reparameterised sample and the analytic KL.

Likelihoods p(x|z):

- ``bernoulli``: pixels in [0, 1] are binarised (dynamically in training,
  Salakhutdinov & Murray 2008), decoder outputs logits.
- ``gaussian``: a continuous-pixel option. 8-bit pixels are uniformly
  dequantised to ``(k + u) / 256``; the decoder outputs a per-pixel mean and
  log-scale. The density is in nats on [0, 1]^D; ``genjax.objectives.
  likelihood`` (``density_to_discrete_nll``, then ``bits_per_dim``) puts it
  on the discrete 8-bit scale that bits per dimension are reported on.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from genjax.objectives import likelihood as likelihood_lib

LIKELIHOODS = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2.0 * math.pi)
# A floor on the Gaussian decoder's log-scale: without it the density can
# grow without bound on pixels that are constant across the data set.
MIN_LOG_SCALE = -5.0


def params_per_pixel(likelihood: str) -> int:
    """How many decoder outputs per pixel a likelihood needs."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(
            f"model.likelihood={likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
    return 1 if likelihood == "bernoulli" else 2


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over the last axis.

    Kingma & Welling 2013, appendix B: -1/2 sum(1 + logvar - mean^2 - var).
    """
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * jnp.sum(z**2 + _LOG_2PI, axis=-1)


def diag_gaussian_log_prob(z, mean, logvar) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
    return -0.5 * jnp.sum(
        _LOG_2PI + logvar + (z - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def _sum_pixels(x):
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x | logits) for binary x, summed over pixels: ``[B]``.

    x log s(l) + (1-x) log s(-l) = x l - softplus(l): one transcendental per
    pixel instead of two, which matters for 1000-sample IWAE on CPU.
    """
    return _sum_pixels(x * logits - jax.nn.softplus(logits))


def gaussian_log_prob(out: jax.Array, x: jax.Array) -> jax.Array:
    """log N(x; mean, exp(log_scale)^2), summed over pixels: ``[B]``.

    ``out`` is ``[B, H, W, 2C]``: means then (floored) log-scales.
    """
    mean, log_scale = jnp.split(out, 2, axis=-1)
    log_scale = jnp.maximum(log_scale, MIN_LOG_SCALE)
    z = (x - mean) * jnp.exp(-log_scale)
    return _sum_pixels(-0.5 * (z**2 + _LOG_2PI) - log_scale)


def log_likelihood(likelihood: str, out: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|z) per example for the named likelihood."""
    if likelihood == "bernoulli":
        return bernoulli_log_prob(out, x)
    return gaussian_log_prob(out, x)


def mean_image(likelihood: str, out: jax.Array) -> jax.Array:
    """The decoder's mean in [0, 1] (for samples and reconstructions)."""
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(out)
    return jnp.clip(jnp.split(out, 2, axis=-1)[0], 0.0, 1.0)


def prepare_pixels(likelihood: str, x: jax.Array, rng: jax.Array) -> jax.Array:
    """Binarise (Bernoulli) or dequantise (Gaussian) pixels in [0, 1]."""
    if likelihood == "bernoulli":
        return jax.random.bernoulli(rng, x).astype(x.dtype)
    return likelihood_lib.uniform_dequantize(x, rng)


def neg_elbo(encode: Callable, decode: Callable, x: jax.Array, rng: jax.Array,
             likelihood: str):
    """Per-example negative ELBO with one reparameterised sample.

    Args:
      encode: ``x -> (mean, logvar)``.
      decode: ``z -> decoder output``.
      x: prepared pixels (binary for Bernoulli).

    Returns:
      ``(neg_elbo, reconstruction_nll, kl)``, each ``[B]`` in nats.
    """
    mean, logvar = encode(x)
    eps = jax.random.normal(rng, mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * logvar) * eps
    rec_nll = -log_likelihood(likelihood, decode(z), x)
    kl = gaussian_kl(mean, logvar)
    return rec_nll + kl, rec_nll, kl


def nll_iwae(encode: Callable, decode: Callable, x: jax.Array, rng: jax.Array,
             likelihood: str, num_samples: int, chunk_size: int = 100):
    """Per-example -IWAE_k(x), an upper bound on -log p(x), in nats ``[B]``.

    The k importance samples are drawn in chunks of ``chunk_size`` inside a
    ``lax.scan`` with a running log-sum-exp, so k = 1000 fits in memory.
    At k = 1 the estimate equals the one-sample negative ELBO with the KL
    estimated by sampling (its expectation is the negative ELBO).
    """
    mean, logvar = encode(x)
    chunk = min(chunk_size, num_samples)
    if num_samples % chunk:
        raise ValueError(
            f"iwae samples ({num_samples}) must be a multiple of the chunk "
            f"size ({chunk}); set eval.iwae_chunk to a divisor")
    num_chunks = num_samples // chunk
    batch = x.shape[0]

    def log_weights(key):
        eps = jax.random.normal(key, (chunk,) + mean.shape, mean.dtype)
        # Explicit leading axes: no implicit rank promotion (the tests run
        # with jax_numpy_rank_promotion="raise").
        mean_c, logvar_c = mean[None], logvar[None]           # [1, B, L]
        z = mean_c + jnp.exp(0.5 * logvar_c) * eps            # [c, B, L]
        out = decode(z.reshape(chunk * batch, -1))             # [c*B, ...]
        x_rep = jnp.broadcast_to(x, (chunk,) + x.shape).reshape(
            (chunk * batch,) + x.shape[1:])
        log_px_z = log_likelihood(likelihood, out, x_rep).reshape(chunk, batch)
        return (log_px_z + standard_normal_log_prob(z)
                - diag_gaussian_log_prob(z, mean_c, logvar_c))  # [c, B]

    def body(running, key):
        lw = log_weights(key)
        return jnp.logaddexp(running, jax.nn.logsumexp(lw, axis=0)), None

    init = jnp.full((batch,), -jnp.inf, mean.dtype)
    total, _ = jax.lax.scan(body, init, jax.random.split(rng, num_chunks))
    return -(total - math.log(num_samples))


def anomaly_score(encode: Callable, decode: Callable, x: jax.Array,
                  rng: jax.Array, likelihood: str, num_samples: int = 16):
    """Per-example anomaly score: the negative ELBO averaged over samples.

    Higher means less like the training data. ``x`` are prepared pixels.
    """
    keys = jax.random.split(rng, num_samples)
    scores = jax.vmap(lambda k: neg_elbo(encode, decode, x, k, likelihood)[0])(keys)
    return jnp.mean(scores, axis=0)
