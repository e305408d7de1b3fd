"""The denoising diffusion GAN (Xiao, Kreis & Vahdat 2022), as pure functions.

A diffusion with few, large steps (T = 4) has a reverse step ``q(x_{t-1} |
x_t)`` far from Gaussian, so instead of a Gaussian denoiser a conditional
generator ``x_0' = G(x_t, z, t)`` draws a clean image and ``x_{t-1}`` is
drawn from the Gaussian posterior ``q(x_{t-1} | x_t, x_0')``; a
discriminator ``D(x_{t-1}, x_t, t)`` tells real pairs of consecutive steps
from generated ones, and the two play the usual adversarial game
(``genjax.objectives.adversarial``). Sampling is T generator calls.

Index ``i`` in ``0 .. T-1`` is the step from ``x_i`` to ``x_{i+1}`` (``x_0``
the data), the diffusion module's convention; ``sched`` is any
``genjax.objectives.diffusion.Schedule`` (``vp`` for few steps).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genjax.objectives import diffusion as diff

# generator_fn(x_next [B, ...], i [B], key) -> x_0' [B, ...], drawing its
# latent z from key.
GeneratorFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def real_pair(sched: diff.Schedule, x0, i, rng):
    """A draw of ``(x_i, x_{i+1})`` from the forward process for per-example
    step indices ``i [B]``: ``x_i ~ q(x_i | x_0)`` (``x_0`` itself at
    ``i = 0``), then one step ``q(x_{i+1} | x_i)``."""
    prev_rng, step_rng = jax.random.split(rng)
    noisy = diff.q_sample(sched, x0, jnp.maximum(i - 1, 0),
                          jax.random.normal(prev_rng, x0.shape, x0.dtype))
    at_data = (i == 0).reshape((-1,) + (1,) * (x0.ndim - 1))
    x_prev = jnp.where(at_data, x0, noisy)
    beta = sched.betas[i].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_next = (jnp.sqrt(1.0 - beta) * x_prev
              + jnp.sqrt(beta) * jax.random.normal(step_rng, x0.shape, x0.dtype))
    return x_prev, x_next


def posterior_sample(sched: diff.Schedule, x0_pred, x_next, i, rng):
    """``x_i ~ q(x_i | x_{i+1}, x_0')``; at ``i = 0`` it is ``x_0'``."""
    mean, log_var = diff.q_posterior(sched, x0_pred, x_next, i)
    std = jnp.where((i == 0).reshape(log_var.shape), 0.0, jnp.exp(0.5 * log_var))
    return mean + std * jax.random.normal(rng, x_next.shape, x_next.dtype)


def fake_pair(generator_fn: GeneratorFn, sched: diff.Schedule, x_next, i, rng):
    """``(x_i', x_0')``: the generator's clean image for ``x_{i+1}`` and the
    posterior draw of the previous step from it."""
    z_key, post_key = jax.random.split(rng)
    x0_pred = generator_fn(x_next, i, z_key)
    return posterior_sample(sched, x0_pred, x_next, i, post_key), x0_pred


def sample(generator_fn: GeneratorFn, sched: diff.Schedule, x_T, rng, *,
           keep_path: bool = False):
    """T generator calls from ``x_T ~ N(0, I)`` down to ``x_0``, in one
    ``lax.scan``; the generator gets a fresh latent at each step through
    ``generator_fn(x, i, key)``. Returns ``x_0`` (and with ``keep_path``
    every step's ``x``, ``[T, *shape]``)."""
    b = x_T.shape[0]

    def step(x, i):
        idx = jnp.full((b,), i, jnp.int32)
        x, _ = fake_pair(generator_fn, sched, x, idx, jax.random.fold_in(rng, i))
        return x, (x if keep_path else None)

    x, path = jax.lax.scan(step, x_T, jnp.arange(sched.num_steps - 1, -1, -1))
    return (x, path) if keep_path else x
