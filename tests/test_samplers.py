"""The shared Gaussian-path samplers (genjax.objectives.samplers) against
closed forms: for Gaussian data ``N(mu, s^2 I)`` the data prediction is
exact and the probability-flow ODE has a closed-form solution,

    x~(sigma~) - mu = (x~_start - mu) sqrt(s^2 + sigma~^2) / sqrt(s^2 + sigma~_start^2)

in EDM's variables (``x~ = x / alpha``, ``sigma~ = sigma / alpha``), so each
sampler's error and its order can be measured exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.objectives import diffusion as diff
from genjax.objectives import samplers
from genjax.objectives import sde as sde_lib

MU, S = 0.3, 0.5


def _paths():
    sched = diff.make_schedule("linear", 1000)
    return {
        "discrete": samplers.DiscretePath(np.asarray(sched.alphas_cumprod)),
        "vp": samplers.SDEPath(sde_lib.SDE("vp")),
        "subvp": samplers.SDEPath(sde_lib.SDE("subvp")),
        "ve": samplers.SDEPath(sde_lib.SDE("ve", sigma_max=20.0)),
        "linear": samplers.LinearPath(),
    }


PATHS = _paths()


def _oracle(path):
    """The exact E[x0 | x_t] for x0 ~ N(MU, S^2)."""
    def x0_fn(x, t):
        a = path.alpha(t).reshape((-1,) + (1,) * (x.ndim - 1))
        s = path.sigma(t).reshape((-1,) + (1,) * (x.ndim - 1))
        return MU + a * S**2 / (a * a * S**2 + s * s) * (x - a * MU)
    return x0_fn


def _exact(path, x_T):
    """The probability-flow ODE's output from ``x_T`` at ``t_max``, followed
    by the data prediction at ``t_min`` (what every sampler returns)."""
    start = path.sigma_tilde(jnp.float32(path.t_max))
    end = path.sigma_tilde(jnp.float32(path.t_min))
    xt = x_T / path.alpha(jnp.float32(path.t_max))
    xt_end = MU + (xt - MU) * jnp.sqrt(S**2 + end**2) / jnp.sqrt(S**2 + start**2)
    return MU + S**2 / (S**2 + end**2) * (xt_end - MU)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_t_of_lambda_inverts_the_log_snr(name):
    path = PATHS[name]
    t = jnp.linspace(path.t_min, path.t_max, 37)
    np.testing.assert_allclose(path.t_of_lambda(path.lam(t)), t, rtol=2e-4, atol=2e-5)
    grid = samplers.time_grid(path, 12, "logsnr")
    steps = np.diff(np.asarray(path.lam(grid)))
    np.testing.assert_allclose(steps, steps.mean(), rtol=2e-3)
    assert np.all(np.diff(np.asarray(samplers.time_grid(path, 12, "karras"))) < 0)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_n_evaluations_make_n_moves(name):
    """The grid stops one interval above t_min (the last move returns the
    data prediction there), so every evaluation moves the sample: two DDIM
    steps are closer to the exact ODE solution than one, and the last
    log-SNR interval is the grid's own spacing."""
    path = PATHS[name]
    grid = samplers.time_grid(path, 6, "logsnr")
    lams = np.asarray(path.lam(jnp.concatenate([grid, jnp.asarray([path.t_min])])))
    np.testing.assert_allclose(np.diff(lams), np.diff(lams).mean(), rtol=2e-3)
    x_T = path.prior_std * jax.random.normal(jax.random.key(3), (64, 3))
    exact = _exact(path, x_T)
    errs = [float(jnp.max(jnp.abs(
        samplers.ddim(_oracle(path), path, x_T, num_steps=n, grid="logsnr")[0] - exact)))
        for n in (1, 2, 4)]
    assert errs[2] < errs[1] < 0.9 * errs[0], errs


def test_the_discrete_path_is_the_schedule_at_the_training_steps():
    sched = diff.make_schedule("cosine", 50)
    path = samplers.DiscretePath(np.asarray(sched.alphas_cumprod))
    t = (jnp.arange(50) + 1.0) / 50
    np.testing.assert_allclose(path.alpha(t) ** 2, sched.alphas_cumprod, rtol=1e-5)
    np.testing.assert_allclose(path.index(t), jnp.arange(50), atol=1e-4)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_every_deterministic_sampler_converges_to_the_exact_ode_solution(name):
    """Errors against the closed form fall with the steps at each solver's
    order: DDIM (first order) about halves with twice the steps, DPM-Solver++
    2M/3M and EDM's Heun fall about fourfold or more; at 20 network
    evaluations DPM-Solver++ is several times closer than DDIM, and the
    adaptive solve (tolerance 1e-3) is within 1e-2."""
    path = PATHS[name]
    x_T = path.prior_std * jax.random.normal(jax.random.key(0), (64, 3))
    exact = _exact(path, x_T)
    x0_fn = _oracle(path)

    def err(sampler, steps, **kw):
        x, _ = samplers.SAMPLERS[sampler](x0_fn, path, x_T, num_steps=steps, **kw)
        return float(jnp.max(jnp.abs(x - exact)))

    ddim = [err("ddim", n, grid="logsnr") for n in (40, 80)]
    dpm2 = [err("dpm2", n) for n in (40, 80)]
    dpm3 = [err("dpm3", n) for n in (40, 80)]
    heun = [err("heun", n) for n in (40, 80)]
    assert 1.6 < ddim[0] / ddim[1] < 2.6
    assert dpm2[0] / dpm2[1] > 3.0 and dpm3[0] / dpm3[1] > 3.0
    assert heun[0] / heun[1] > 3.0
    assert dpm3[1] < dpm2[1] < ddim[1] / 10 and heun[1] < ddim[1] / 5
    assert max(err("dpm2", 20), err("dpm3", 20)) < err("ddim", 20, grid="logsnr") / 3
    assert err("adaptive", None) < 1e-2


def test_dpm_solver_first_order_is_ddim():
    """Lu et al. 2022: DPM-Solver(++) of order 1 is DDIM with eta = 0."""
    path = PATHS["vp"]
    x_T = jax.random.normal(jax.random.key(1), (8, 2))
    x0_fn = lambda x, t: jnp.tanh(0.7 * x) * (1.0 + 0.1 * t[:, None])  # noqa: E731
    a, _ = samplers.dpm_solver_pp(x0_fn, path, x_T, num_steps=12, order=1)
    b, _ = samplers.ddim(x0_fn, path, x_T, num_steps=12, grid="logsnr")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["discrete", "linear"])
def test_samplers_draw_the_data_distribution_and_count_their_evaluations(name):
    path = PATHS[name]
    x_T = path.prior_std * jax.random.normal(jax.random.key(2), (4000, 2))
    x0_fn = _oracle(path)
    nfes = {}
    for sampler, steps in (("ddim", 100), ("dpm2", 10), ("dpm3", 20), ("heun", 40),
                           ("adaptive", None)):
        kw = {"grid": "logsnr"} if sampler == "ddim" else {}
        x, nfes[sampler] = samplers.SAMPLERS[sampler](x0_fn, path, x_T,
                                                      num_steps=steps, **kw)
        assert abs(float(x.mean()) - MU) < 0.02, sampler
        assert abs(float(x.std()) - S) < 0.02, sampler
    assert nfes["ddim"] == 100 and nfes["dpm2"] == 10 and nfes["dpm3"] == 20
    assert nfes["heun"] == 79
    adaptive = np.asarray(nfes["adaptive"])
    assert adaptive.shape == (4000,) and 10 < adaptive.min() <= adaptive.max() < 400


def test_stochastic_ddim_draws_the_data_distribution():
    path = PATHS["vp"]
    x_T = jax.random.normal(jax.random.key(3), (8000, 1))
    x, _ = samplers.ddim(_oracle(path), path, x_T, jax.random.key(4), num_steps=300,
                         eta=1.0, grid="logsnr")
    assert abs(float(x.mean()) - MU) < 0.02
    assert abs(float(x.std()) - S) < 0.02


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score", "velocity"])
def test_every_parametrisation_reads_back_the_data(prediction):
    """Each output space's exact target, read back, is ``x0``."""
    path = PATHS["linear"] if prediction == "velocity" else PATHS["vp"]
    x0 = jax.random.normal(jax.random.key(5), (6, 4))
    z = jax.random.normal(jax.random.key(6), (6, 4))
    t = jnp.linspace(0.1, 0.9, 6)
    a, s = path.alpha(t)[:, None], path.sigma(t)[:, None]
    x = a * x0 + s * z
    target = {"eps": z, "x0": x0, "v": a * z - s * x0, "score": -z / s,
              "velocity": z - x0}[prediction]
    np.testing.assert_allclose(samplers.x0_from_output(prediction, target, x, a, s),
                               x0, rtol=1e-4, atol=1e-4)
    score = samplers.score_from_x0(path, x, t, x0)
    np.testing.assert_allclose(score, -z / s, rtol=1e-4, atol=1e-3)
