"""Normalizing flows: every bijector is invertible with the right
log-determinant, the likelihood convention has known answers, and the flow
task trains, samples and evaluates under the shared loop."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (assert_one_error_line, read_json, read_jsonl, restore_latest,
                      run_cli, set_overrides)

from experiments import flow_toy2d, glow_mnist
from genjax.models import flows as F
from genjax.objectives import flow as flow_obj
from genjax.objectives import likelihood
from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop


def _perturbed(variables, scale=0.05, seed=0):
    """``variables`` plus small noise, so that zero-initialised couplings
    (identities at init) become non-trivial maps."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [
        leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys)])


def _jacobian_log_det(fn, x_one):
    """``log|det|`` of the Jacobian of ``fn`` (batch of one) at ``x_one``."""
    shape = x_one.shape

    def flat(v):
        return fn(v.reshape((1,) + shape))[0].reshape(-1)

    jac = jax.jacfwd(flat)(x_one.reshape(-1))
    sign, log_det = jnp.linalg.slogdet(jac)
    assert float(sign) != 0.0
    return float(log_det)


IMAGE = (4, 4, 2)
UNIT = jax.random.uniform(jax.random.key(1), (3,) + IMAGE, minval=0.05, maxval=0.95)
REAL = jax.random.normal(jax.random.key(2), (3,) + IMAGE)
POINTS = 1.5 * jax.random.normal(jax.random.key(3), (3, 4))

BIJECTORS = {
    "logit": (lambda: F.Logit(0.05), UNIT),
    "squeeze": (F.Squeeze, REAL),
    "actnorm": (F.ActNorm, REAL),
    "invconv_lu": (lambda: F.InvertibleConv1x1(seed=3), REAL),
    "affine_checkerboard": (lambda: F.AffineCoupling(mask="checkerboard", parity=1, hidden=8), REAL),
    "affine_channel": (lambda: F.AffineCoupling(mask="channel", parity=0, hidden=8), REAL),
    "additive_channel": (lambda: F.AffineCoupling(mask="channel", additive=True, hidden=8), REAL),
    "spline_checkerboard": (lambda: F.SplineCoupling(mask="checkerboard", hidden=8), REAL),
    "spline_channel": (lambda: F.SplineCoupling(mask="channel", parity=1, hidden=8), REAL),
    "affine_vector": (lambda: F.AffineCoupling(mask="vector", hidden=8), POINTS),
    "spline_vector": (lambda: F.SplineCoupling(mask="vector", parity=1, hidden=8), POINTS),
}


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_every_bijector_inverts_and_its_log_det_is_the_jacobians(name):
    make, x = BIJECTORS[name]
    layer = make()
    variables = _perturbed(layer.init(jax.random.key(0), x, method=layer.forward))

    def forward(v):
        return layer.apply(variables, v, method=layer.forward)

    def inverse(v):
        return layer.apply(variables, v, method=layer.inverse)

    y, log_det = forward(x)
    x_back, inv_log_det = inverse(y)
    np.testing.assert_allclose(x_back, x, atol=2e-5)
    np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)
    # jit and eager agree.
    y_jit, log_det_jit = jax.jit(forward)(x)
    np.testing.assert_allclose(y_jit, y, atol=1e-5)
    np.testing.assert_allclose(log_det_jit, log_det, rtol=1e-5, atol=1e-4)
    if name != "squeeze":  # A permutation: nothing to compare but zeros.
        assert float(jnp.max(jnp.abs(y - x))) > 1e-3, "the layer is the identity"
    for i in range(2):
        assert _jacobian_log_det(lambda v: forward(v), x[i]) == pytest.approx(
            float(log_det[i]), abs=2e-3)


@pytest.mark.parametrize("architecture,coupling,num_scales", [
    ("realnvp", "affine", 2), ("realnvp", "spline", 1), ("glow", "affine", 2),
    ("glow", "additive", 2)])
def test_whole_multiscale_flow_inverts_with_the_jacobians_log_det(
        architecture, coupling, num_scales):
    model = F.MultiScaleFlow((8, 8, 1), architecture=architecture, num_scales=num_scales,
                             steps_per_scale=2, hidden=8, coupling=coupling,
                             split_prior=architecture == "glow")
    x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 1), minval=0.02, maxval=0.98)
    variables = _perturbed(model.init(jax.random.key(0), x, method=model.forward), 0.02)
    z, log_det = model.apply(variables, x, method=model.forward)
    assert z.shape == (2, 64)
    x_back, inv_log_det = model.apply(variables, z, method=model.inverse)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-5, atol=1e-3)
    jac = _jacobian_log_det(
        lambda v: model.apply(variables, v, method=model.forward), x[0])
    assert jac == pytest.approx(float(log_det[0]), rel=1e-5, abs=1e-2)


def test_spline_is_monotone_identity_at_zero_and_linear_outside():
    x = jnp.linspace(-5.0, 5.0, 501)
    zeros = jnp.zeros((501, 8))
    y, log_det = F.rational_quadratic_spline(x, zeros, zeros, zeros[:, :7], bound=3.0)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-5)
    # One spline (the same bins and slopes) for every x.
    raw = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (3, 1, 8)), (3, 501, 8))
    y, log_det = F.rational_quadratic_spline(x, raw[0], raw[1], raw[2, :, :7], bound=3.0)
    assert bool(jnp.all(jnp.diff(y) > 0))
    outside = jnp.abs(x) >= 3.0
    np.testing.assert_array_equal(y[outside], x[outside])
    slope = jax.vmap(jax.grad(lambda v, w, h, d: F.rational_quadratic_spline(
        v, w, h, d, bound=3.0)[0]))(x, raw[0], raw[1], raw[2, :, :7])
    np.testing.assert_allclose(log_det, jnp.log(slope), atol=1e-4)
    x_back, inv = F.rational_quadratic_spline(y, raw[0], raw[1], raw[2, :, :7],
                                              bound=3.0, inverse=True)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(inv, -log_det, atol=1e-3)


def test_point_flow_density_integrates_to_one():
    model = F.PointFlow(dims=2, num_layers=4, hidden=16, coupling="spline")
    x = jax.random.normal(jax.random.key(0), (256, 2))
    variables = _perturbed(model.init(jax.random.key(1), x, method=model.forward), 0.1)
    coords = jnp.linspace(-9.0, 9.0, 601)
    xx, yy = jnp.meshgrid(coords, coords)
    grid = jnp.stack([xx.ravel(), yy.ravel()], -1)
    log_p = flow_obj.log_prob(
        lambda v: model.apply(variables, v, method=model.forward), grid)
    mass = float(jnp.sum(jnp.exp(log_p)) * (coords[1] - coords[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=5e-3)


# --------------------------------------------------------------------------
# The likelihood convention, on cases with a known answer.


def _probit(x):
    """A flow whose density on (0, 1)^D is exactly uniform: z = Phi^-1(x),
    log|dz/dx| = -log N(z)."""
    z = jax.scipy.special.ndtri(x)
    return z, -F.standard_normal_log_prob(z)


def test_uniform_model_on_8bit_data_gives_exactly_8_bits_per_dim():
    levels = jax.random.randint(jax.random.key(0), (16, 5, 5, 1), 0, 256)
    images = levels / 255.0
    nll = flow_obj.dequantized_nll(_probit, images, jax.random.key(1))
    np.testing.assert_allclose(flow_obj.bits_per_dim(nll, images), 8.0, atol=2e-4)
    iw = flow_obj.importance_weighted_nll(_probit, images, jax.random.key(2), 4)
    np.testing.assert_allclose(flow_obj.bits_per_dim(iw, images), 8.0, atol=2e-4)


def test_actnorm_gaussian_flow_has_the_analytic_density():
    layer = F.ActNorm()
    bias, log_scale = jnp.array([0.5, -1.0]), jnp.array([0.3, -0.7])
    variables = {"params": {"bias": bias, "log_scale": log_scale}}
    x = jax.random.normal(jax.random.key(0), (10, 2)) * 2.0
    log_p = flow_obj.log_prob(lambda v: layer.apply(variables, v, method=layer.forward), x)
    # z = (x + b) e^s ~ N(0, 1)  <=>  x ~ N(-b, e^{-2s}).
    want = jax.scipy.stats.norm.logpdf(x, -bias[None], jnp.exp(-log_scale)[None]).sum(-1)
    np.testing.assert_allclose(log_p, want, rtol=1e-5, atol=1e-5)


def test_importance_weighted_bound_is_tighter_than_one_draw():
    model = F.MultiScaleFlow((8, 8, 1), architecture="glow", steps_per_scale=1, hidden=8)
    images = jnp.round(jax.random.uniform(jax.random.key(0), (8, 8, 8, 1)) * 255) / 255
    variables = _perturbed(model.init(jax.random.key(1), images, method=model.forward))

    def fwd(v):
        return model.apply(variables, v, method=model.forward)

    one = jnp.mean(jnp.stack([flow_obj.dequantized_nll(fwd, images, jax.random.key(i))
                              for i in range(16)]))
    iw = jnp.mean(flow_obj.importance_weighted_nll(fwd, images, jax.random.key(99), 16))
    assert float(iw) < float(one)


# --------------------------------------------------------------------------
# Training.


def test_actnorm_data_init_whitens_the_first_batch():
    layer = F.ActNorm()
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 4, 4, 3))
    variables = layer.init(jax.random.key(1), x, method=layer.forward)
    y, _ = layer.apply(variables, x, method=layer.forward)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_lu_convolution_stays_invertible_after_training():
    model = F.MultiScaleFlow((8, 8, 1), architecture="glow", num_scales=2,
                             steps_per_scale=2, hidden=8)
    data = jnp.round(jax.random.uniform(jax.random.key(0), (32, 8, 8, 1)) ** 3 * 255) / 255
    params = model.init(jax.random.key(1), likelihood.uniform_dequantize(
        data, jax.random.key(2)), method=model.forward)["params"]
    opt = optax.adam(3e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state, rng):
        def loss(p):
            return jnp.mean(flow_obj.dequantized_nll(
                lambda v: model.apply({"params": p}, v, method=model.forward), data, rng))
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for i in range(60):
        params, state, value = step(params, state, jax.random.key(i))
        losses.append(float(value))
    assert losses[-1] < losses[0]
    for name, conv in params.items():
        if name.startswith("invconv"):
            assert float(jnp.max(jnp.abs(conv["lower"]))) > 1e-3  # it trained
    x = likelihood.uniform_dequantize(data[:4], jax.random.key(5))
    z, log_det = model.apply({"params": params}, x, method=model.forward)
    x_back, inv = model.apply({"params": params}, z, method=model.inverse)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(inv, -log_det, rtol=1e-4, atol=1e-2)


# --------------------------------------------------------------------------
# The task under the shared loop.


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flow_toy") / "wd"
    config = flow_toy2d.get_config("smoke")
    metrics = loop.train_and_evaluate(config, str(workdir), flow_toy2d.EXPERIMENT.make_task)
    return workdir, config, metrics


def test_toy2d_flow_trains_evaluates_and_draws_its_density(toy_run):
    workdir, config, final = toy_run
    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    for key in ("eval/nll", "eval/energy_distance", "eval/energy_distance_floor",
                "eval/classes_hit"):
        assert np.isfinite(final[key]), key
    assert read_json(workdir / "eval.json")["eval/nll"] == pytest.approx(final["eval/nll"])
    assert (workdir / "samples" / "density_final.png").exists()
    assert (workdir / "samples" / "samples_final.png").exists()


def test_flow_task_log_likelihood_matches_eval_nll(toy_run):
    workdir, config, final = toy_run
    run = loop.build(config, str(workdir), flow_toy2d.EXPERIMENT.make_task)
    _, state, _ = restore_latest(config, workdir, flow_toy2d.EXPERIMENT.make_task)
    test = run.dataset.arrays("test")["points"]
    log_lik = run.task.log_likelihood(state.params, jnp.asarray(test), None)
    assert float(-jnp.mean(log_lik)) == pytest.approx(final["eval/nll"], rel=1e-4)
    # The same seed gives the same samples; the temperature sharpens them.
    a = run.task.sample_at(state.params, jax.random.key(0), 500, 1.0)
    b = run.task.sample_at(state.params, jax.random.key(0), 500, 1.0)
    np.testing.assert_array_equal(a, b)
    cold = run.task.sample_at(state.params, jax.random.key(0), 500, 0.3)
    assert float(jnp.std(cold)) < float(jnp.std(a))


def _digits_flow_config(data_dir, **overrides):
    base = {"data.name": "digits", "eval.batch_size": 120, "eval.dequant_samples": 2,
            "train.eval_every": 10,
            "eval.sample_quality.num_samples": 100,
            "eval.sample_quality.kid_subset_size": 50}
    config = set_overrides(glow_mnist.get_config("smoke"), {**base, **overrides})
    config.data.data_dir = str(data_dir)
    return config


def test_image_flow_smoke_run_reports_bpd_iw_bound_and_temperatures(
        shared_data_dir, tmp_path):
    # Glow on digits with the sample-quality protocol; RealNVP's and Glow's
    # MNIST smoke presets train and evaluate on 8 devices in test_devices.
    config = _digits_flow_config(shared_data_dir)
    final = loop.train_and_evaluate(config, str(tmp_path), glow_mnist.EXPERIMENT.make_task)
    assert 0.5 < final["eval/bits_per_dim"] < 9.0
    assert final["eval/bits_per_dim_iw"] <= final["eval/bits_per_dim"] + 1e-3
    assert final["eval/nll"] == pytest.approx(
        final["eval/bits_per_dim"] * 64 * math.log(2.0), rel=1e-5)
    for key in ("eval/classifier_score", "eval/fd", "eval/t0.7/fd"):
        assert np.isfinite(final[key]), key
    assert final["eval/best_temperature"] in (0.7, 1.0)
    for name in ("interpolation_final.png", "temperatures_final.png", "samples_final.png"):
        assert (tmp_path / "samples" / name).exists(), name


def test_a_diverging_flow_says_so_in_one_line_and_keeps_its_checkpoint(tmp_path, capsys):
    """Two good steps with a checkpoint each, then a learning rate that
    blows the flow up: exit 1, one line, the checkpoint of step 2 kept."""
    workdir = tmp_path / "wd"
    flags = [f"--workdir={workdir}", "--preset=smoke", "--config.train.num_steps=2",
             "--config.train.checkpoint_every=1", "--config.train.warmup_steps=0"]
    assert run_cli(capsys, "flow_toy2d", flags)[0] == 0
    code, _, err = run_cli(capsys, "flow_toy2d", [
        *flags[:2], "--config.train.num_steps=20", "--config.train.checkpoint_every=10",
        "--config.train.warmup_steps=0",
        "--config.train.learning_rate=1e30"])
    assert code == 1
    assert_one_error_line(err, "non-finite train/", "last good checkpoint (step 2) is kept")
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [1, 2]
