"""Flow matching and sliced score matching on Gaussian data, whose marginal
velocity field and score are known in closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.objectives import flow_matching as fm
from genjax.objectives import sde as sde_lib

S0 = 0.5  # data N(0, S0^2 I); noise N(0, I)


def exact_velocity(c=1.0):
    """``E[x_1 - x_0 | x_t]`` for jointly Gaussian noise and data:
    ``x (t S0^2 - (1 - t)) / ((1 - t)^2 + t^2 S0^2)``, times ``c``."""
    def v(x, t):
        t = t[:, None]
        return c * x * (t * S0 ** 2 - (1.0 - t)) / ((1.0 - t) ** 2 + t ** 2 * S0 ** 2)
    return v


def test_flow_matching_loss_is_minimised_by_the_marginal_velocity():
    data = S0 * jax.random.normal(jax.random.key(0), (8192, 3))

    def loss(c):
        return float(jnp.mean(fm.flow_matching_loss(exact_velocity(c), data,
                                                    jax.random.key(1))))

    best = loss(1.0)
    assert best < loss(0.9) and best < loss(1.1)


@pytest.mark.parametrize("solver,steps,nfe", [("euler", 200, 200), ("heun", 20, 39)])
def test_ode_samplers_carry_the_noise_to_the_data(solver, steps, nfe):
    fn = {"euler": fm.euler_sample, "heun": fm.heun_sample}[solver]
    noise = jax.random.normal(jax.random.key(0), (8192, 2))
    x, got_nfe = jax.jit(lambda z: fn(exact_velocity(), z, steps))(noise)
    assert int(got_nfe) == nfe
    np.testing.assert_allclose(jnp.std(x, axis=0), S0, rtol=0.03)
    x_wrong, _ = jax.jit(lambda z: fn(exact_velocity(0.5), z, steps))(noise)
    assert abs(float(jnp.std(x_wrong)) - S0) > 0.05


def test_heun_is_more_accurate_than_euler_at_equal_steps():
    noise = jax.random.normal(jax.random.key(0), (2048, 2))
    exact, _ = fm.heun_sample(exact_velocity(), noise, 400)
    euler, _ = fm.euler_sample(exact_velocity(), noise, 10)
    heun, _ = fm.heun_sample(exact_velocity(), noise, 10)
    assert float(jnp.max(jnp.abs(heun - exact))) < 0.2 * float(jnp.max(jnp.abs(euler - exact)))


def test_flow_matching_likelihood_of_gaussian_data_is_analytic():
    x = S0 * jax.random.normal(jax.random.key(0), (64, 3))
    log_p, nfe = jax.jit(lambda x: fm.log_likelihood(exact_velocity(), x, num_steps=100))(x)
    assert int(nfe) == 400
    want = jax.scipy.stats.norm.logpdf(x, 0.0, S0).sum(axis=1)
    np.testing.assert_allclose(log_p, want, atol=0.02)


def test_sliced_score_matching_is_minimised_by_the_true_score():
    x = S0 * jax.random.normal(jax.random.key(0), (8192, 3))

    def loss(c):
        return float(jnp.mean(sde_lib.sliced_score_matching_loss(
            lambda v: -c * v / S0 ** 2, x, jax.random.key(1), num_projections=4)))

    best = loss(1.0)
    assert best < loss(0.8) and best < loss(1.2)
    # Its value at the optimum: E[-D / S0^2 + ||x||^2 / (2 S0^4)] = -D / (2 S0^2).
    assert best == pytest.approx(-3 / (2 * S0 ** 2), rel=0.03)
