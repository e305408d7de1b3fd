"""Diffusion: the forward process, the objective, the samplers, the bound,
inpainting, and the DDPM task end to end (tiny configs, offline)."""

from __future__ import annotations

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from conftest import (assert_one_error_line, assert_trees_bitwise_equal, run_python,
                      read_json, read_jsonl, restore_latest, run_cli,
                      set_overrides)
from experiments import ddpm_cifar10, ddpm_mnist, ddpm_toy2d
from genjax.objectives import diffusion as diff
from genjax.objectives import likelihood
from genjax.tasks.diffusion import DiffusionTask
from genjax.train import loop, modes
from genjax.train import step as step_lib

# --------------------------------------------------------------------------
# Schedules and the forward process.


def test_linear_schedule_by_hand():
    sched = diff.make_schedule("linear", 4, beta_start=0.1, beta_end=0.4)
    betas = [0.1, 0.2, 0.3, 0.4]
    abar = [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7, 0.9 * 0.8 * 0.7 * 0.6]
    np.testing.assert_allclose(sched.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(sched.alphas_cumprod, abar, rtol=1e-6)
    np.testing.assert_allclose(sched.alphas_cumprod_prev, [1.0] + abar[:3], rtol=1e-6)
    # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. 2020, eq. 7).
    np.testing.assert_allclose(sched.posterior_variance[2],
                               0.3 * (1 - 0.72) / (1 - 0.504), rtol=1e-6)
    assert sched.posterior_variance[0] == 0.0


def test_ho_et_al_linear_schedule_ends_near_pure_noise():
    sched = diff.make_schedule("linear", 1000)
    assert float(sched.betas[0]) == pytest.approx(1e-4)
    assert float(sched.betas[-1]) == pytest.approx(0.02)
    # abar_T = prod(1 - beta) ~ 4e-5: x_T is almost exactly N(0, I).
    expected = np.prod(1.0 - np.linspace(1e-4, 0.02, 1000))
    assert float(sched.alphas_cumprod[-1]) == pytest.approx(expected, rel=1e-4)
    assert expected < 1e-4


def test_cosine_schedule_by_hand():
    """Nichol & Dhariwal 2021, eq. 17, at a few steps of T = 10."""
    sched = diff.make_schedule("cosine", 10)
    f = lambda t: math.cos((t / 10 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for i in (0, 4, 8):
        # Index i is t = i + 1.
        assert float(sched.alphas_cumprod[i]) == pytest.approx(f(i + 1) / f(0), rel=1e-5)
    assert float(sched.betas.max()) == pytest.approx(0.999)  # the clip


def test_unknown_schedule_and_prediction_are_named():
    with pytest.raises(ValueError, match="schedule='quadratic'; valid: linear, cosine"):
        diff.make_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="prediction='score'"):
        diff.target("score", jnp.zeros((1, 2)), jnp.zeros((1, 2)),
                    diff.make_schedule("linear", 10), jnp.zeros((1,), jnp.int32))


def test_closed_form_marginal_matches_iterating_the_forward_process():
    """q(x_t | x_0) of eq. 4 against T steps of q(x_t | x_{t-1}) (eq. 2):
    the moments exactly, and draws of both by Monte Carlo."""
    sched = diff.make_schedule("linear", 20, beta_start=0.01, beta_end=0.2)
    betas = np.asarray(sched.betas, np.float64)
    x0 = 0.7
    mean, var = x0, 0.0
    rng = np.random.default_rng(0)
    chains = np.full(200_000, x0)
    for i, beta in enumerate(betas):
        mean = math.sqrt(1 - beta) * mean
        var = (1 - beta) * var + beta
        chains = math.sqrt(1 - beta) * chains + math.sqrt(beta) * rng.standard_normal(
            chains.shape)
        abar = float(sched.alphas_cumprod[i])
        assert mean == pytest.approx(math.sqrt(abar) * x0, rel=1e-5)
        assert var == pytest.approx(1 - abar, rel=1e-5)
    t = jnp.full((200_000,), 19, jnp.int32)
    closed = diff.q_sample(sched, jnp.full((200_000, 1), x0), t,
                           jax.random.normal(jax.random.key(0), (200_000, 1)))
    for draws in (chains, np.asarray(closed)[:, 0]):
        assert draws.mean() == pytest.approx(mean, abs=0.01)
        assert draws.var() == pytest.approx(var, rel=0.02)


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) of eq. 6-7 against conditioning the joint
    Gaussian of (x_{t-1}, x_t) given x_0 by hand."""
    sched = diff.make_schedule("linear", 10, beta_start=0.05, beta_end=0.3)
    i, x0, xt = 6, 0.4, -0.9
    abar_prev = float(sched.alphas_cumprod[i - 1])
    beta = float(sched.betas[i])
    # x_{t-1} ~ N(sqrt(abar_prev) x0, 1 - abar_prev); x_t | x_{t-1} ~
    # N(sqrt(1 - beta) x_{t-1}, beta).
    m1, v1 = math.sqrt(abar_prev) * x0, 1 - abar_prev
    a = math.sqrt(1 - beta)
    post_var = 1.0 / (1.0 / v1 + a * a / beta)
    post_mean = post_var * (m1 / v1 + a * xt / beta)
    mean, logvar = diff.q_posterior(sched, jnp.array([[x0]]), jnp.array([[xt]]),
                                    jnp.array([i]))
    assert float(mean[0, 0]) == pytest.approx(post_mean, rel=1e-5)
    assert math.exp(float(logvar[0, 0])) == pytest.approx(post_var, rel=1e-5)


@pytest.mark.parametrize("prediction", diff.PREDICTIONS)
def test_parametrisations_recover_x0_and_eps(prediction):
    sched = diff.make_schedule("cosine", 100)
    x0 = jax.random.uniform(jax.random.key(0), (5, 3), minval=-1, maxval=1)
    eps = jax.random.normal(jax.random.key(1), (5, 3))
    t = jnp.array([0, 10, 50, 90, 99])
    xt = diff.q_sample(sched, x0, t, eps)
    out = diff.target(prediction, x0, eps, sched, t)
    eps_hat, x0_hat = diff.eps_and_x0(prediction, out, xt, sched, t)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)


def test_denoising_loss_is_the_squared_error_of_eq_14():
    sched = diff.make_schedule("linear", 50)
    x0 = jnp.linspace(-1, 1, 12).reshape(2, 2, 3, 1)
    rng = jax.random.key(3)
    loss, t = diff.denoising_loss(lambda x, t: jnp.zeros_like(x), sched, x0, rng)
    # With a zero network the loss is the mean squared noise, which we redraw.
    t_rng, noise_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, x0.shape)
    np.testing.assert_array_equal(t, jax.random.randint(t_rng, (2,), 0, 50))
    np.testing.assert_allclose(loss, np.mean(np.square(noise).reshape(2, -1), 1),
                               rtol=1e-6)


# --------------------------------------------------------------------------
# The bound.


def test_discretized_gaussian_is_a_distribution_over_the_bins():
    bins = jnp.linspace(-1.0, 1.0, 256)
    for mean, scale in ((0.1, 0.05), (-0.98, 0.01), (0.999, 0.3), (0.0, 3.0)):
        logp = likelihood.discretized_gaussian_log_likelihood(
            bins, jnp.full((256,), mean), jnp.full((256,), math.log(scale)))
        p = np.exp(np.asarray(logp, np.float64))
        assert p.sum() == pytest.approx(1.0, abs=2e-4)
        # Interior bins against SciPy's CDF.
        edges = np.asarray(bins[100:103], np.float64)
        h = 1.0 / 255
        ref = (stats.norm.cdf(edges + h, mean, scale)
               - stats.norm.cdf(edges - h, mean, scale))
        np.testing.assert_allclose(p[100:103], ref, rtol=2e-3, atol=1e-12)


def test_discretized_gaussian_far_tail_stays_finite():
    logp = likelihood.discretized_gaussian_log_likelihood(
        jnp.array([0.5, -1.0, 1.0]), jnp.array([-0.9, 0.9, -0.9]),
        jnp.log(jnp.array([0.01, 0.01, 0.01])))
    assert np.all(np.isfinite(logp)) and np.all(np.asarray(logp) < -100)


def _oracle_for_point(x0_point, sched):
    """The exact eps-predictor when the data is the single point x0."""
    def denoise(xt, t):
        abar = sched.alphas_cumprod[t].reshape((-1,) + (1,) * (xt.ndim - 1))
        return (xt - jnp.sqrt(abar) * x0_point) / jnp.sqrt(1.0 - abar)
    return denoise


def test_bound_of_the_exact_denoiser_is_prior_plus_decoder():
    """For a one-point data set the true reverse process is known: every KL
    term of eq. 5 vanishes, and the bound is the prior term plus the
    discretised decoder at the posterior's variance."""
    sched = diff.make_schedule("linear", 100, beta_start=1e-4, beta_end=0.05)
    # Pixels 0, 40, 100, 155, 200 and 255 of 8 bits: two end bins, four inner.
    x0 = jnp.array([[0, 40, 100, 155, 200, 255]], jnp.float32) / 127.5 - 1.0
    bound = diff.variational_bound(_oracle_for_point(x0, sched), sched, x0,
                                   jax.random.key(0))
    assert abs(float(bound["diffusion"][0])) < 1e-3
    abar_T = float(sched.alphas_cumprod[-1])
    x = np.asarray(x0, np.float64)[0]
    prior = np.sum(0.5 * (-1 - math.log(1 - abar_T) + (1 - abar_T) + abar_T * x**2))
    assert float(bound["prior"][0]) == pytest.approx(prior, rel=1e-4)
    sigma = math.exp(0.5 * float(sched.posterior_log_variance[0]))
    h = 1.0 / 255
    p = stats.norm.cdf(h / sigma) - stats.norm.cdf(-h / sigma)
    decoder = -(4 * math.log(p) + 2 * math.log(stats.norm.cdf(h / sigma)))
    assert float(bound["decoder_nll"][0]) == pytest.approx(decoder, rel=1e-3)
    assert float(bound["nll_bound"][0]) == pytest.approx(
        float(bound["prior"][0] + bound["diffusion"][0] + bound["decoder_nll"][0]))
    assert float(likelihood.bits_per_dim(bound["nll_bound"], 6)[0]) == pytest.approx(
        float(bound["nll_bound"][0]) / (6 * math.log(2)))


def test_bound_terms_are_the_sum_of_bound_term():
    sched = diff.make_schedule("linear", 8, beta_start=0.01, beta_end=0.3)
    x0 = jnp.array([[0.2, -0.5], [0.9, 0.1]])
    denoise = lambda x, t: 0.3 * x  # noqa: E731  any network
    rng = jax.random.key(5)
    bound = diff.variational_bound(denoise, sched, x0, rng)
    terms = [diff.bound_term(denoise, sched, x0, jnp.full((2,), i),
                             jax.random.normal(jax.random.fold_in(rng, i), x0.shape))
             for i in range(8)]
    np.testing.assert_allclose(bound["diffusion"], sum(terms[1:]), rtol=1e-5)
    np.testing.assert_allclose(bound["decoder_nll"], terms[0], rtol=1e-5)


def test_bound_estimate_is_the_bound_at_one_step_per_stratum_and_unbiased():
    sched = diff.make_schedule("linear", 12, beta_start=0.01, beta_end=0.3)
    x0 = jnp.array([[0.2, -0.5, 0.7], [0.9, 0.1, -1.0]])
    denoise = lambda x, t: 0.3 * x + 0.01 * t[:, None]  # noqa: E731  any network
    rng = jax.random.key(3)
    full = diff.variational_bound(denoise, sched, x0, rng)["nll_bound"]
    every = diff.variational_bound_estimate(denoise, sched, x0, rng, num_terms=11)
    np.testing.assert_allclose(every, full, rtol=1e-5)
    # Three strata of 11 steps: the mean of many draws is the mean full bound.
    keys = jax.random.split(jax.random.key(4), 1500)
    est = jax.vmap(lambda k: diff.variational_bound_estimate(
        denoise, sched, x0, k, num_terms=3))(keys)
    ref = jax.vmap(lambda k: diff.variational_bound(denoise, sched, x0, k)["nll_bound"])(
        keys)
    stderr = np.std(np.asarray(est), axis=0) / np.sqrt(len(keys))
    np.testing.assert_array_less(np.abs(np.mean(est, 0) - np.mean(ref, 0)),
                                 4 * stderr + 1e-3)
    assert float(np.std(np.asarray(est), axis=0).min()) > 0  # it does sample
    with pytest.raises(ValueError, match="num_terms=12"):
        diff.variational_bound_estimate(denoise, sched, x0, rng, num_terms=12)


# --------------------------------------------------------------------------
# Samplers.


def _gaussian_oracle(scale, sched):
    """The exact eps-predictor for data x0 ~ N(0, scale^2):
    E[eps | x_t] = sqrt(1 - abar) x_t / (abar scale^2 + 1 - abar)."""
    def denoise(xt, t):
        abar = sched.alphas_cumprod[t].reshape((-1,) + (1,) * (xt.ndim - 1))
        return jnp.sqrt(1.0 - abar) * xt / (abar * scale**2 + 1.0 - abar)
    return denoise


def test_samplers_with_the_exact_denoiser_draw_the_data_distribution():
    """Data N(0, 0.5^2): ancestral sampling draws it up to its fixed
    variances, which bracket the true reverse variance (Ho et al. 2020,
    section 3.2: beta~_t is too small, beta_t too large, for data that is
    neither a point nor N(0, I)); DDIM, an Euler-like discretisation of an
    ODE, approaches it as its steps grow (first order: the error halves with
    twice the steps)."""
    sched = diff.make_schedule("linear", 200, beta_start=1e-4, beta_end=0.05)
    denoise = _gaussian_oracle(0.5, sched)
    shape = (20_000, 1)
    stds = {}
    for variance in diff.VARIANCES:
        x = np.asarray(diff.ddpm_sample(denoise, sched, shape, jax.random.key(0),
                                        variance=variance, clip=False))
        assert abs(x.mean()) < 0.02
        stds[variance] = x.std()
    assert 0.47 < stds["small"] < 0.5 < stds["large"] < 0.53
    errors = []
    for steps in (25, 50, 100):
        x = np.asarray(diff.ddim_sample(denoise, sched, shape, jax.random.key(0),
                                        num_steps=steps, clip=False))
        assert abs(x.mean()) < 0.02
        errors.append(0.5 - x.std())
    assert 0 < errors[2] < errors[1] < errors[0] < 0.05
    assert errors[0] / errors[1] == pytest.approx(2.0, rel=0.25)


def test_ddim_with_every_step_and_eta_1_is_ancestral_sampling():
    """Song et al. 2021: with eta = 1 on all T steps, eq. 12's variance is
    beta~_t and its mean the posterior mean, so DDIM is DDPM."""
    sched = diff.make_schedule("linear", 30, beta_start=1e-3, beta_end=0.2)
    w = jax.random.normal(jax.random.key(1), (3, 3)) * 0.3
    denoise = lambda x, t: jnp.tanh(x @ w) + 0.01 * t[:, None]  # noqa: E731
    rng = jax.random.key(7)
    a = diff.ddpm_sample(denoise, sched, (4, 3), rng, variance="small")
    b = diff.ddim_sample(denoise, sched, (4, 3), rng, num_steps=30, eta=1.0)
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_ddim_eta_0_is_deterministic_given_the_noise_and_same_seed_same_samples():
    sched = diff.make_schedule("linear", 40)
    denoise = lambda x, t: 0.5 * x  # noqa: E731
    x_T = jax.random.normal(jax.random.key(0), (3, 2))
    a = diff.ddim_sample(denoise, sched, (3, 2), jax.random.key(1), num_steps=8, x_T=x_T)
    b = diff.ddim_sample(denoise, sched, (3, 2), jax.random.key(2), num_steps=8, x_T=x_T)
    np.testing.assert_array_equal(a, b)
    c = diff.ddpm_sample(denoise, sched, (3, 2), jax.random.key(3))
    d = diff.ddpm_sample(denoise, sched, (3, 2), jax.random.key(3))
    np.testing.assert_array_equal(c, d)
    np.testing.assert_array_equal(diff.ddim_timesteps(1000, 5), [0, 250, 500, 749, 999])
    with pytest.raises(ValueError, match="DDIM steps=0"):
        diff.ddim_timesteps(1000, 0)


def test_inpainting_keeps_the_known_pixels_and_fills_the_rest():
    """With the exact denoiser of a one-point data set, the unknown pixels
    come out as that point and the known ones are the image's."""
    sched = diff.make_schedule("linear", 100, beta_start=1e-4, beta_end=0.05)
    point = jnp.linspace(-0.8, 0.8, 16).reshape(1, 4, 4, 1)
    known = jnp.concatenate([point, -point])
    mask = jnp.zeros((1, 4, 4, 1)).at[:, :2].set(1.0)
    out = diff.inpaint(_oracle_for_point(point, sched), sched, known, mask,
                       jax.random.key(0), resample=2)
    np.testing.assert_array_equal(out[:, :2], known[:, :2])
    np.testing.assert_allclose(out[:, 2:], jnp.broadcast_to(point[:, 2:], (2, 2, 4, 1)),
                               atol=0.02)


# --------------------------------------------------------------------------
# The task.


def _digits_config(module=ddpm_mnist, data_dir=None, **overrides):
    """A smoke config on scikit-learn's 8x8 digits (no files)."""
    base = {"data.name": "digits", "eval.batch_size": 120,
            "eval.bound_num_examples": 120,
            "eval.sample_quality.num_samples": 100,
            "eval.sample_quality.kid_subset_size": 50}
    config = set_overrides(module.get_config("smoke"), {**base, **overrides})
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    return config


@pytest.fixture(scope="session")
def data_dir(shared_data_dir):
    """Where the digits classifier is trained once for the whole suite."""
    return shared_data_dir


@pytest.fixture(scope="module")
def ddpm_run(data_dir, tmp_path_factory):
    """One finished class-conditional ddpm smoke run on digits, judged with
    DDIM and DDPM (tests copy, never modify)."""
    workdir = tmp_path_factory.mktemp("ddpm_run") / "wd"
    config = _digits_config(data_dir=data_dir, **{
        "model.class_conditional": True, "sample.guidance_scale": 1.0,
        "eval.compare_samplers": ("ddpm", "dpm2:4")})
    metrics = loop.train_and_evaluate(config, str(workdir),
                                      ddpm_mnist.EXPERIMENT.make_task)
    return workdir, config, metrics


def test_a_ddpm_run_reports_the_bound_and_every_sampler(ddpm_run):
    workdir, _, final = ddpm_run
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20]
    saved = read_json(workdir / "eval.json")
    for key in ("eval/loss", "eval/bits_per_dim", "eval/bound_nll_bound",
                "eval/bound_prior", "eval/bound_decoder_nll", "eval/fd",
                "eval/fd_floor", "eval/classifier_score", "eval/classes_hit",
                "eval/sample_seconds", "eval/ddpm/fd", "eval/ddpm/class_kl",
                "eval/ddpm/sample_seconds"):
        assert key in saved and np.isfinite(saved[key]), key
    assert saved["eval/bits_per_dim"] == pytest.approx(
        saved["eval/bound_nll_bound"] / (64 * math.log(2)), rel=1e-5)
    assert saved["eval/bound_nll_bound"] == pytest.approx(
        saved["eval/bound_prior"] + saved["eval/bound_diffusion"]
        + saved["eval/bound_decoder_nll"], rel=1e-5)
    assert saved["eval/num_samples"] == saved["eval/ddpm/num_samples"] == 100
    # Each sampler's network evaluations: DDIM's 10 steps, all 50 of DDPM,
    # 4 of DPM-Solver++ (a fast sampler from the shared registry).
    assert (saved["eval/nfe"], saved["eval/ddpm/nfe"], saved["eval/dpm2_4/nfe"]) == (10, 50, 4)
    assert np.isfinite(saved["eval/dpm2_4/fd"])
    assert final["eval/fd"] == saved["eval/fd"]
    assert (workdir / "samples" / "samples_final.png").exists()
    assert (workdir / "samples" / "forward_noising_final.png").exists()


def test_guidance_combines_conditional_and_unconditional_outputs(ddpm_run):
    _, config, _ = ddpm_run
    task = ddpm_mnist.EXPERIMENT.make_task(config, _digits_dataset())

    @jax.jit  # One compiled program: op-by-op, the U-Net takes ~20 s here.
    def outputs():
        params = task.init_params(jax.random.key(0), None)
        # A non-zero network: perturb the zero-initialised output layer.
        params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)
        x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
        t = jnp.array([1, 20, 40])
        labels = jnp.array([0, 3, 9])
        return (task.denoiser(params, labels)(x, t),
                task.denoiser(params, task.null_labels(3))(x, t),
                task.denoiser(params, labels, guidance_scale=2.0)(x, t))

    cond, uncond, guided = outputs()
    assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-4
    np.testing.assert_allclose(guided, 3.0 * cond - 2.0 * uncond, atol=1e-5)


def _digits_dataset():
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from conftest import data_config  # pylint: disable=import-outside-toplevel
    return data_lib.load_dataset(data_config("digits"))


@pytest.mark.slow
def test_resume_is_bitwise_identical(ddpm_run, data_dir, tmp_path):
    workdir, config, _ = ddpm_run
    resumed = tmp_path / "resumed"
    # Evaluation draws from keys of its own and never touches the train
    # state, so the resumed runs skip its costly parts (the bound, DDPM's
    # 50-step samples, the sample-quality protocol): the state must still
    # equal the reference run's bitwise.
    light = set_overrides(config.copy_and_resolve_references(), {
        "eval.bound_num_examples": 0, "eval.compare_samplers": (),
        "eval.sample_quality.num_samples": 0,
        "eval.sample_quality.num_samples_during_training": 0})
    short = set_overrides(light.copy_and_resolve_references(),
                          {"train.num_steps": 10})
    loop.train_and_evaluate(short, str(resumed), ddpm_mnist.EXPERIMENT.make_task)
    loop.train_and_evaluate(light, str(resumed), ddpm_mnist.EXPERIMENT.make_task)
    make = ddpm_mnist.EXPERIMENT.make_task
    _, a, _ = restore_latest(config, workdir, make)
    _, b, _ = restore_latest(config, resumed, make)
    assert_trees_bitwise_equal(a, b)


def test_inpaint_and_sample_modes(ddpm_run, data_dir, tmp_path, capsys):
    workdir, config, _ = ddpm_run
    import shutil  # pylint: disable=import-outside-toplevel
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    args = [f"--workdir={copy}", "--preset=smoke", "--config.data.name=digits",
            f"--config.data.data_dir={data_dir}", "--config.eval.batch_size=120",
            "--config.model.class_conditional=true",
            "--config.sample.guidance_scale=1.0"]
    code, out, err = run_cli(capsys, "ddpm_mnist", args + ["--mode=inpaint"])
    assert code == 0, err
    filled = np.load(copy / "inpainted.npy")
    assert filled.shape == (config.inpaint.num_images, 8, 8, 1)
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    test = _digits_dataset().arrays("test")["image"][:len(filled)]
    task = ddpm_mnist.EXPERIMENT.make_task(config, _digits_dataset())
    keep = task.inpaint_mask(len(filled)) == 1.0
    keep = np.broadcast_to(keep, filled.shape)
    np.testing.assert_allclose(filled[keep], test[keep], atol=1e-6)
    assert (copy / "samples" / "inpaint.png").exists()
    del data_lib
    code, _, err = run_cli(capsys, "ddpm_mnist",
                           args + ["--mode=sample", "--num_samples=6"])
    assert code == 0, err
    samples = np.load(copy / "samples.npy")
    assert samples.shape == (6, 8, 8, 1) and np.isfinite(samples).all()


@pytest.mark.parametrize("override, named", [
    ("--config.sample.sampler=euler", "sample.sampler='euler'; valid: ddpm, ddim"),
    ("--config.diffusion.prediction=score", "diffusion.prediction='score'"),
    ("--config.sample.steps=5000", "sample.steps=5000"),
    ("--config.sample.sampler=dpm2:ten", "the steps after ':' must be a positive"),
    ("--config.sample.guidance_scale=2.0", "needs model.class_conditional=True"),
    ("--config.model.architecture=mlp", "set --config.model.architecture=unet"),
    ("--config.eval.compare_samplers=('ddpm','pndm')", "'pndm'"),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "ddpm_mnist", [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits",
        override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()


def test_inpaint_is_the_diffusion_tasks_own_mode(short_run, copy_workdir, capsys):
    """A task declares its own modes: the VAE has none, so --mode=inpaint is
    refused before anything is read or written, naming the valid modes."""
    workdir = copy_workdir(short_run[0])
    before = sorted(p.name for p in workdir.rglob("*"))
    code, _, err = run_cli(capsys, "vae_digits", [
        f"--workdir={workdir}", "--preset=smoke", "--mode=inpaint"])
    assert code == 2
    assert_one_error_line(err, "--mode=inpaint", "train, eval, sample")
    assert sorted(p.name for p in workdir.rglob("*")) == before
    code, out, _ = run_cli(capsys, "ddpm_mnist", ["--help"])
    assert code == 0 and "inpaint" in out


def test_final_loss_covers_the_test_split_and_the_bound_its_first_examples(
        ddpm_run, tmp_path):
    workdir, config, final = ddpm_run
    config = set_overrides(config.copy_and_resolve_references(),
                           {"eval.bound_num_examples": 40})
    copy = tmp_path / "wd"
    shutil.copytree(workdir, copy)
    run, _, params = modes.restore_for_inference(
        config, str(copy), ddpm_mnist.EXPERIMENT.make_task)
    config.eval.sample_quality.num_samples = 0
    config.eval.sample_quality.num_samples_during_training = 0
    during = loop.run_eval(run, params, final=False)
    at_end = loop.run_eval(run, params, final=True)
    # The loss: the same draws over the whole test split, at the end too.
    assert at_end["eval/loss"] == during["eval/loss"] == final["eval/loss"]
    assert "eval/bits_per_dim" not in during
    # The bound: the mean over the first 40 test images, each with the key of
    # its index (not over the 120 of an eval batch).
    images = run.dataset.arrays("test")["image"][:120]
    keys = step_lib.example_keys(step_lib.root_key(config.seed, "eval"),
                                 jnp.arange(len(images)))
    bound = step_lib.per_example(
        lambda p, b, r: run.task.extra_eval_fn("bound", p, b, r))
    values = np.asarray(bound(params, {"image": images}, keys)["bound_nll_bound"])
    assert at_end["eval/bound_nll_bound"] == pytest.approx(
        float(np.mean(values[:40])), rel=1e-5)
    assert at_end["eval/bound_nll_bound"] != pytest.approx(
        float(np.mean(values)), rel=1e-3)


def test_toy2d_smoke_judges_points_by_energy_distance(tmp_path):
    config = ddpm_toy2d.get_config("smoke")
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    ddpm_toy2d.EXPERIMENT.make_task)
    from PIL import Image  # pylint: disable=import-outside-toplevel
    picture = np.asarray(Image.open(tmp_path / "wd" / "samples" / "samples_final.png"))
    assert picture.shape == (256, 256, 3) and picture.min() < 128
    for key in ("eval/energy_distance", "eval/energy_distance_floor",
                "eval/classes_hit", "eval/class_kl", "eval/bound_nll_bound",
                "eval/ddpm/energy_distance"):
        assert np.isfinite(final[key]), key
    assert "eval/bits_per_dim" not in final


@pytest.mark.slow
def test_cifar10_smoke_preset_trains_on_colour_shapes(tmp_path):
    config = ddpm_cifar10.get_config("smoke")  # As the command line runs it.
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    ddpm_cifar10.EXPERIMENT.make_task)
    assert np.isfinite(final["eval/bits_per_dim"])
    assert final["eval/bits_per_dim"] > 0


def test_presets_are_complete_recipes():
    for module in (ddpm_mnist, ddpm_cifar10, ddpm_toy2d):
        for preset in module.PRESETS:
            config = module.get_config(preset)
            assert config.diffusion.num_timesteps >= 2, (module, preset)
    paper = ddpm_cifar10.get_config("paper")
    assert (paper.model.channels, tuple(paper.model.channel_mults)) == (128, (1, 2, 2, 2))
    assert paper.train.batch_size == 128 and paper.train.num_steps == 800_000
    assert paper.train.ema_decay == 0.9999 and paper.model.dropout == 0.1
    with pytest.raises(ValueError, match="unknown preset"):
        ddpm_mnist.get_config("huge")


def test_paper_cifar10_unet_has_35_7m_parameters():
    config = ddpm_cifar10.get_config("paper")
    task = DiffusionTask(config, _shapes_info())
    shapes = jax.eval_shape(task.init_params, jax.random.key(0), None)
    count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert count == pytest.approx(35.7e6, rel=0.01)


def _shapes_info():
    from genjax.data.registry import Dataset  # pylint: disable=import-outside-toplevel
    x = np.zeros((2, 32, 32, 3), np.float32)
    return Dataset(name="fake", kind="image",
                   splits={"train": {"image": x}, "test": {"image": x}},
                   element_spec={"image": (32, 32, 3)}, num_classes=None,
                   description="")


def test_scatter_image_puts_points_where_they_are():
    from genjax.evaluate import images  # pylint: disable=import-outside-toplevel
    picture = images.scatter_image(np.array([[0.0, 0.0], [1.0, 1.0]]), size=64,
                                   extent=2.0)
    assert picture.shape == (64, 64, 3) and picture.dtype == np.uint8
    # (0, 0) is the centre; (1, 1) is up (y flipped) and to the right.
    assert picture[32, 32].sum() < 400 and picture[16, 48].sum() < 400
    assert picture[48, 16].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        images.scatter_image(np.zeros((4, 3)))


@pytest.mark.slow
@pytest.mark.subprocess
def test_eight_devices_match_one_device(tmp_path):
    """ddpm_toy2d's smoke run on 8 simulated devices (8 points each) trains as
    on one, and its samplers, compiled ahead for the timing, run sharded."""
    config = set_overrides(ddpm_toy2d.get_config("smoke"), {
        "eval.batch_size": 48, "eval.bound_num_examples": 48})
    script = (
        "import json, sys, jax\n"
        "import ml_collections\n"
        "from experiments import ddpm_toy2d\n"
        "from genjax.train import loop\n"
        "config = ml_collections.ConfigDict(json.loads(sys.argv[1]))\n"
        "assert jax.device_count() == int(sys.argv[3])\n"
        "loop.train_and_evaluate(config, sys.argv[2], ddpm_toy2d.EXPERIMENT.make_task)\n")
    rows = {}
    for devices in (1, 8):
        workdir = tmp_path / f"d{devices}"
        proc = run_python(["-c", script, config.to_json(), str(workdir), str(devices)],
                          devices=devices, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        rows[devices] = [r for r in read_jsonl(workdir / "metrics.jsonl")
                         if "train/loss" in r]
        final = read_json(workdir / "eval.json")
        assert final["eval/num_samples"] == final["eval/ddpm/num_samples"] == 100
    assert len(rows[1]) == len(rows[8]) == 4
    for one, eight in zip(rows[1], rows[8]):
        np.testing.assert_allclose(eight["train/loss"], one["train/loss"], rtol=1e-4)


@pytest.mark.parametrize("prediction", diff.PREDICTIONS)
def test_min_snr_weighting_is_min_snr_gamma_times_the_x0_error(prediction):
    """Hang et al. 2023: whatever the network regresses, the weighted loss is
    ``min(SNR, gamma) ||x0_hat - x0||^2``, and 1x the eps loss when SNR is
    below gamma for an eps model."""
    sched = diff.make_schedule("linear", 100)
    x0 = jax.random.normal(jax.random.key(0), (256, 3))
    net = lambda x, t: 0.3 * jnp.tanh(x) + 0.001 * t[:, None]  # noqa: E731
    rng = jax.random.key(1)
    loss, t = diff.denoising_loss(net, sched, x0, rng, prediction,
                                  weighting="min_snr", min_snr_gamma=5.0)
    t_rng, noise_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, x0.shape)
    xt = diff.q_sample(sched, x0, t, noise)
    _, x0_hat = diff.eps_and_x0(prediction, net(xt, t), xt, sched, t)
    abar = sched.alphas_cumprod[t]
    snr = abar / (1.0 - abar)
    expected = jnp.minimum(snr, 5.0) * jnp.mean((x0_hat - x0) ** 2, axis=1)
    np.testing.assert_allclose(loss, expected, rtol=2e-3, atol=1e-6)
    assert bool(jnp.any(snr > 5.0)) and bool(jnp.any(snr < 5.0))
    if prediction == "eps":
        plain, _ = diff.denoising_loss(net, sched, x0, rng, prediction)
        low = snr < 5.0
        np.testing.assert_allclose(loss[low], plain[low], rtol=1e-6)
