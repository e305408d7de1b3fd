"""Flow matching on the linear path (Lipman et al. 2023; Liu et al. 2023,
rectified flow), as pure functions.

Noise ``x_0 ~ N(0, I)`` at ``t = 0``, data ``x_1`` at ``t = 1``, the path
``x_t = (1 - t) x_0 + t x_1`` (the optimal-transport path with
``sigma_min = 0``) and its velocity ``x_1 - x_0``. A network ``v(x, t)``
regressed on that velocity learns the marginal field ``E[x_1 - x_0 | x_t]``,
whose ODE carries the noise to the data: sampling is any ODE solver from
t = 0 to 1 (``euler_sample``, ``heun_sample``), the likelihood the same
change of variables as the score SDE's probability-flow ODE
(``genjax.objectives.sde.velocity_log_likelihood``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.models.flows import standard_normal_log_prob
from genjax.objectives import sde as sde_lib


def interpolate(noise, data, t):
    """``x_t = (1 - t) noise + t data`` for per-example ``t [B]``."""
    tb = sde_lib.per_example(t, data)
    return (1.0 - tb) * noise + tb * data


def flow_matching_loss(velocity_fn, data, rng, *, noise=None):
    """``||v(x_t, t) - (x_1 - x_0)||^2`` per example (summed over
    dimensions), ``t ~ U[0, 1]``; ``noise`` gives the coupled ``x_0`` (a
    reflow round's pairs), else ``x_0 ~ N(0, I)`` independently."""
    t_rng, z_rng = jax.random.split(rng)
    b = data.shape[0]
    t = jax.random.uniform(t_rng, (b,))
    if noise is None:
        noise = jax.random.normal(z_rng, data.shape, data.dtype)
    xt = interpolate(noise, data, t)
    residual = velocity_fn(xt, t) - (data - noise)
    return jnp.sum(residual.reshape(b, -1) ** 2, axis=1)


def euler_sample(velocity_fn, noise, num_steps: int):
    """Euler steps of ``dx/dt = v`` from ``noise`` at t = 0 to t = 1.
    Returns ``(x_1, nfe)``."""
    b = noise.shape[0]
    h = 1.0 / num_steps

    def step(x, i):
        return x + h * velocity_fn(x, jnp.full((b,), i * h)), None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
    return x, num_steps


def heun_sample(velocity_fn, noise, num_steps: int):
    """Heun's second-order steps (EDM's, Karras et al. 2022, without the
    churn) from t = 0 to 1; the last step is Euler's, as Karras et al.'s.
    Returns ``(x_1, nfe)``, ``nfe = 2 num_steps - 1``."""
    b = noise.shape[0]
    h = 1.0 / num_steps

    def step(x, i):
        t = i * h
        v = velocity_fn(x, jnp.full((b,), t))
        euler = x + h * v
        v_next = velocity_fn(euler, jnp.full((b,), t + h))
        heun = x + 0.5 * h * (v + v_next)
        return jnp.where(i == num_steps - 1, euler, heun), None

    x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps))
    return x, 2 * num_steps - 1


def log_likelihood(velocity_fn, x, rng=None, *, num_steps: int = 100, num_probes: int = 1):
    """``log p_1(x)`` per example by the ODE from the data (t = 1) back to
    the noise (t = 0); see ``sde.velocity_log_likelihood``."""
    return sde_lib.velocity_log_likelihood(
        velocity_fn, standard_normal_log_prob, x, 1.0, 0.0, rng,
        num_steps=num_steps, num_probes=num_probes)
