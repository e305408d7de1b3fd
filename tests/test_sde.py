"""Score SDEs: the perturbation kernels solve their SDEs' moment equations,
and denoising score matching is minimised by the true score."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.objectives import sde as sde_lib


@pytest.mark.parametrize("kind", sde_lib.KINDS)
def test_kernel_moments_solve_the_sdes_moment_equations(kind):
    """For dx = a(t) x dt + g(t) dw: d mean/dt = a mean and
    d var/dt = 2 a var + g^2, checked by central differences."""
    sde = sde_lib.SDE(kind)
    t = np.linspace(0.05, 0.95, 19)
    h = 1e-3  # float32 coefficients: rounding over h stays below 1e-4

    def moments(s):
        mean, std = sde.marginal(np.asarray(s, np.float64))
        return np.asarray(mean, np.float64), np.asarray(std, np.float64) ** 2

    (m_hi, v_hi), (m_lo, v_lo) = moments(t + h), moments(t - h)
    mean, var = moments(t)
    a = np.asarray(sde.drift_coefficient(t), np.float64)
    g = np.asarray(sde.diffusion(t), np.float64)
    np.testing.assert_allclose((m_hi - m_lo) / (2 * h), a * mean, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose((v_hi - v_lo) / (2 * h), 2 * a * var + g * g,
                               rtol=2e-3, atol=1e-4)


def test_ends_of_the_three_sdes():
    vp, subvp, ve = sde_lib.SDE("vp"), sde_lib.SDE("subvp"), sde_lib.SDE("ve")
    mean, std = vp.marginal(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(mean, [1.0, np.exp(-0.25 * 19.9 - 0.05)], rtol=1e-5)
    np.testing.assert_allclose(std[1], 1.0, atol=1e-4)
    assert float(std[0]) == 0.0
    _, sub_std = subvp.marginal(jnp.linspace(0.01, 1.0, 50))
    _, vp_std = vp.marginal(jnp.linspace(0.01, 1.0, 50))
    assert bool(jnp.all(sub_std < vp_std))
    _, ve_std = ve.marginal(jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(ve_std, [0.01, 50.0], rtol=1e-5)
    z = jnp.zeros((3, 4))
    np.testing.assert_allclose(ve.prior_log_prob(z),
                               -4 * (np.log(50.0) + 0.5 * np.log(2 * np.pi)), rtol=1e-6)


def test_unknown_sde_and_bad_constants_are_named():
    with pytest.raises(ValueError, match="unknown SDE 'vpp'"):
        sde_lib.SDE("vpp")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sde_lib.SDE("ve", sigma_min=2.0, sigma_max=1.0)


@pytest.mark.parametrize("kind", sde_lib.KINDS)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_dsm_is_minimised_by_the_true_score(kind, likelihood_weighting):
    """Data N(0, s0^2 I): p_t = N(0, (mean^2 s0^2 + std^2) I), whose score is
    known. With the same draws, the true score has a lower loss than the
    same score scaled by 0.8 or 1.2."""
    sde = sde_lib.SDE(kind)
    s0 = 0.7
    x0 = s0 * jax.random.normal(jax.random.key(0), (4096, 3))

    def scaled_score(c):
        def score(x, t):
            mean, std = sde.marginal(t)
            var = (mean * mean * s0 * s0 + std * std)[:, None]
            return -c * x / var
        return score

    def loss(c):
        return float(jnp.mean(sde_lib.dsm_loss(
            scaled_score(c), sde, x0, jax.random.key(1), eps=1e-3,
            likelihood_weighting=likelihood_weighting)))

    best = loss(1.0)
    assert best < loss(0.8) and best < loss(1.2)
    assert np.isfinite(best)


def _gaussian_score(sde, s0):
    """The exact score of p_t when the data are N(0, s0^2 I)."""
    def score(x, t):
        mean, std = sde.marginal(t)
        return -x / (mean * mean * s0 * s0 + std * std)[:, None]
    return score


@pytest.mark.parametrize("kind", sde_lib.KINDS)
@pytest.mark.parametrize("sampler", ["reverse_sde", "probability_flow"])
def test_samplers_with_the_exact_score_draw_the_data_distribution(kind, sampler):
    sde, s0 = sde_lib.SDE(kind), 0.5
    fn = {"reverse_sde": sde_lib.reverse_sde_sample,
          "probability_flow": sde_lib.probability_flow_sample}[sampler]
    run = jax.jit(lambda key: fn(_gaussian_score(sde, s0), sde, key, (8192, 2), 1000))
    x, nfe = run(jax.random.key(0))
    assert int(nfe) == 1000
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_allclose(jnp.std(x, axis=0), s0, rtol=0.05)
    np.testing.assert_allclose(jnp.mean(x, axis=0), 0.0, atol=0.03)
    # A wrong score (half the true one) does not: the test can fail.
    wrong = jax.jit(lambda key: fn(lambda x, t: 0.5 * _gaussian_score(sde, s0)(x, t),
                                   sde, key, (8192, 2), 1000))
    x_wrong, _ = wrong(jax.random.key(0))
    assert abs(float(jnp.std(x_wrong)) - s0) > 0.05
