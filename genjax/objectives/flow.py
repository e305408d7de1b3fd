"""The flow objective: exact log-likelihood by the change of variables.

A flow ``f`` maps data ``x`` to a latent ``z = f(x)`` under ``N(0, I)``:

    log p(x) = log N(f(x); 0, I) + log |det df/dx|

``forward`` below is any function ``x -> (z, log_det)`` (a flow model's
``forward`` bound to its parameters).

On 8-bit images (the convention of ``genjax.objectives.likelihood``): the
pixels ``k / 255`` are uniformly dequantised to ``(k + u) / 256`` on
``(0, 1)^D`` and the flow's density there is turned into the discrete scale
by adding ``D ln 256``, so

    bits/dim = (E_u[-log p((k + u) / 256)] + D ln 256) / (D ln 2),

an upper bound on the discrete NLL (Theis et al. 2016), computed exactly
for each dequantisation draw; with ``k`` draws, ``-log mean_k p(...)`` is a
tighter importance-weighted bound (Ho et al. 2019, Flow++, eq. 14), reported
apart. The flow includes its logit pre-transform, so its density is on the
pixels' ``(0, 1)^D``, not on the logit space.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from genjax.models.flows import standard_normal_log_prob
from genjax.objectives import likelihood

Forward = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def log_prob(forward: Forward, x: jax.Array) -> jax.Array:
    """``log p(x)`` per example, ``[B]``, in nats (a density)."""
    z, log_det = forward(x)
    return standard_normal_log_prob(z) + log_det


def num_dims(x: jax.Array) -> int:
    """Dimensions per example of a batch ``[B, ...]``."""
    return int(math.prod(x.shape[1:]))


def dequantized_nll(forward: Forward, images: jax.Array, rng: jax.Array) -> jax.Array:
    """Discrete NLL bound in nats per example of 8-bit images in [0, 1],
    from one uniform dequantisation draw: ``-log p((k + u)/256) + D ln 256``."""
    x = likelihood.uniform_dequantize(images, rng)
    return likelihood.density_to_discrete_nll(-log_prob(forward, x), num_dims(images))


def importance_weighted_nll(forward: Forward, images: jax.Array, rng: jax.Array,
                            num_samples: int) -> jax.Array:
    """``-log mean_k p((k + u_k)/256) + D ln 256`` per example, ``k =
    num_samples`` dequantisation draws: a bound on the discrete NLL that
    tightens with ``k`` (the uniform ``q(u)`` has density 1 on the bin)."""
    keys = jax.random.split(rng, num_samples)

    def one(key):
        x = likelihood.uniform_dequantize(images, key)
        return log_prob(forward, x)

    log_p = jax.lax.map(one, keys)  # [k, B]
    log_mean = jax.nn.logsumexp(log_p, axis=0) - math.log(num_samples)
    return likelihood.density_to_discrete_nll(-log_mean, num_dims(images))


def bits_per_dim(nll_nats: jax.Array, images: jax.Array) -> jax.Array:
    """Discrete NLL in nats per example -> bits per dimension."""
    return likelihood.bits_per_dim(nll_nats, num_dims(images))


def sample(inverse: Forward, rng: jax.Array, num_samples: int, num_dims_: int,
           temperature: float = 1.0) -> jax.Array:
    """``inverse(T z)``, ``z ~ N(0, I)``: one pass through the inverse flow;
    ``T < 1`` draws from a sharpened prior (Glow's reduced temperature)."""
    z = temperature * jax.random.normal(rng, (num_samples, num_dims_))
    x, _ = inverse(z)
    return x


def to_pixels(x: jax.Array) -> jax.Array:
    """Dequantised values in (0, 1) -> the 8-bit levels ``k / 255`` they
    fall in (the inverse of ``uniform_dequantize``)."""
    k = jnp.clip(jnp.floor(x * likelihood.NUM_8BIT_BINS), 0, likelihood.NUM_8BIT_BINS - 1)
    return k / (likelihood.NUM_8BIT_BINS - 1)
