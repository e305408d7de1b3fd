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
    run = jax.jit(lambda key: fn(_gaussian_score(sde, s0), sde, key, (4096, 2), 500))
    x, nfe = run(jax.random.key(0))
    assert int(nfe) == 500
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_allclose(jnp.std(x, axis=0), s0, rtol=0.05)
    np.testing.assert_allclose(jnp.mean(x, axis=0), 0.0, atol=0.03)
    # A wrong score (half the true one) does not: the test can fail.
    wrong = jax.jit(lambda key: fn(lambda x, t: 0.5 * _gaussian_score(sde, s0)(x, t),
                                   sde, key, (4096, 2), 500))
    x_wrong, _ = wrong(jax.random.key(0))
    assert abs(float(jnp.std(x_wrong)) - s0) > 0.05


def test_hutchinson_mean_over_many_probes_is_the_exact_trace():
    w = jax.random.normal(jax.random.key(0), (5, 5))

    def fn(x):
        return jnp.tanh(x @ w)

    x = jax.random.normal(jax.random.key(1), (3, 5))
    exact = sde_lib.divergence(fn, x)
    by_jacobian = jnp.stack([jnp.trace(jax.jacfwd(lambda v: fn(v[None])[0])(xi)) for xi in x])
    np.testing.assert_allclose(exact, by_jacobian, rtol=1e-5, atol=1e-5)
    estimate = sde_lib.divergence(fn, x, jax.random.key(2), num_probes=20000)
    np.testing.assert_allclose(estimate, exact, atol=0.05)
    one_probe = sde_lib.divergence(fn, x, jax.random.key(3), num_probes=1)
    assert float(jnp.max(jnp.abs(one_probe - exact))) > 1e-3  # a real estimate


@pytest.mark.parametrize("kind", sde_lib.KINDS)
@pytest.mark.parametrize("exact_trace", [True, False])
def test_ode_likelihood_of_gaussian_data_is_the_analytic_density(kind, exact_trace):
    """Data N(0, s0^2 I) with its closed-form score: the probability-flow
    ODE's log-likelihood is log N(x; 0, s0^2 I), exactly with the trace and
    on average with Hutchinson probes."""
    sde, s0 = sde_lib.SDE(kind), 0.5
    x = s0 * jax.random.normal(jax.random.key(0), (64, 3))
    rng = None if exact_trace else jax.random.key(1)
    log_p, nfe = jax.jit(lambda x: sde_lib.ode_log_likelihood(
        _gaussian_score(sde, s0), sde, x, rng, num_steps=100, num_probes=4))(x)
    want = jax.scipy.stats.norm.logpdf(x, 0.0, s0).sum(axis=1)
    assert int(nfe) == 400
    if exact_trace:
        np.testing.assert_allclose(log_p, want, atol=0.02)
    else:
        np.testing.assert_allclose(jnp.mean(log_p), jnp.mean(want), atol=0.05)
        assert float(jnp.std(log_p - want)) < 0.5


@pytest.mark.parametrize("kind", sde_lib.KINDS)
def test_predictor_corrector_with_the_exact_score_draws_the_data(kind):
    # 256 dimensions: the corrector's step size comes from the norms of the
    # noise and the score per example, which concentrate in many dimensions.
    sde, s0 = sde_lib.SDE(kind), 0.5
    x, nfe = jax.jit(lambda key: sde_lib.predictor_corrector_sample(
        _gaussian_score(sde, s0), sde, key, (256, 128), 200))(jax.random.key(0))
    assert int(nfe) == 400
    np.testing.assert_allclose(jnp.std(x), s0, rtol=0.03)
    np.testing.assert_allclose(jnp.mean(x), 0.0, atol=0.01)


def test_annealed_langevin_with_the_exact_score_draws_the_data():
    """NCSN's sampler: noise levels from 1 down to 0.1, the exact score of
    N(0, s0^2) convolved with N(0, sigma^2); samples of std s0, and a wrong
    score gives a wrong std."""
    s0 = 0.5
    sigmas = jnp.exp(jnp.linspace(jnp.log(1.0), jnp.log(0.1), 10))

    def score(c):
        return lambda x, sigma: -c * x / (s0 * s0 + sigma[:, None] ** 2)

    def draw(c):
        x, nfe = jax.jit(lambda key: sde_lib.annealed_langevin_sample(
            score(c), sigmas, key, (8192, 2), steps_per_level=100,
            step_lr=2e-3))(jax.random.key(0))
        return x, int(nfe)

    x, nfe = draw(1.0)
    assert nfe == 1000
    # The last level's target is N(0, s0^2 + 0.1^2).
    np.testing.assert_allclose(jnp.std(x, axis=0), np.sqrt(s0 ** 2 + 0.01), rtol=0.05)
    x_wrong, _ = draw(2.0)
    assert abs(float(jnp.std(x_wrong)) - s0) > 0.05


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_adaptive_solver_likelihood_and_samples_with_the_exact_score(kind):
    """diffrax's Tsit5, one solve per example: the probability-flow ODE's
    log-likelihood of Gaussian data is the analytic log N, its samples have
    the data's std, and every example reports its evaluations."""
    sde, s0 = sde_lib.SDE(kind), 0.5
    score = _gaussian_score(sde, s0)

    def velocity(x, t):
        return sde_lib.probability_flow_drift(score, sde, x, t)

    x = s0 * jax.random.normal(jax.random.key(0), (32, 3))
    log_p, nfe = jax.jit(lambda x: sde_lib.adaptive_velocity_log_likelihood(
        velocity, sde.prior_log_prob, x, 1e-5, 1.0))(x)
    want = jax.scipy.stats.norm.logpdf(x, 0.0, s0).sum(axis=1)
    np.testing.assert_allclose(log_p, want, atol=0.01)
    assert nfe.shape == (32,) and bool(jnp.all((nfe > 7) & (nfe < 6 * 4096)))
    hutchinson, _ = jax.jit(lambda x: sde_lib.adaptive_velocity_log_likelihood(
        velocity, sde.prior_log_prob, x, 1e-5, 1.0, jax.random.key(1), num_probes=8))(x)
    np.testing.assert_allclose(jnp.mean(hutchinson), jnp.mean(want), atol=0.1)

    prior = sde.prior_sample(jax.random.key(2), (2048, 2))
    samples, nfe = jax.jit(lambda z: sde_lib.adaptive_ode_sample(velocity, z, 1.0, 1e-3))(prior)
    np.testing.assert_allclose(jnp.std(samples, axis=0), s0, rtol=0.05)
    assert bool(jnp.all(nfe > 7))


def test_min_snr_weighting_scales_each_examples_loss_by_min_snr_over_snr():
    """Hang et al. 2023 in continuous time: with ``lambda = std^2`` the DSM
    loss of an example is its eps error; Min-SNR multiplies it by
    ``min(SNR, gamma) / SNR``, so low-noise examples (SNR > gamma) weigh
    less and the rest are unchanged."""
    sde = sde_lib.SDE("vp")
    x0 = jax.random.normal(jax.random.key(0), (512, 3))
    score = lambda x, t: -0.7 * x  # noqa: E731  any network
    plain = sde_lib.dsm_loss(score, sde, x0, jax.random.key(1))
    weighted = sde_lib.dsm_loss(score, sde, x0, jax.random.key(1), min_snr_gamma=5.0)
    t = jax.random.uniform(jax.random.split(jax.random.key(1))[0], (512,),
                           minval=1e-5, maxval=1.0)
    mean, std = sde.marginal(t)
    snr = (mean / std) ** 2
    np.testing.assert_allclose(weighted, plain * jnp.minimum(snr, 5.0) / snr, rtol=1e-5)
    assert bool(jnp.any(snr > 5.0)) and bool(jnp.any(snr < 5.0))
