"""The gated PixelCNN: causality with no blind spot, exact NLLs, the
row-cached sampler against the naive one, training in the loop, and config
errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_one_error_line, read_json, run_cli, set_overrides
from experiments import pixelcnn_mnist, pixelcnn_mnist_8bit
from genjax.models.pixelcnn import GatedPixelCNN
from genjax.objectives import pixels as pixels_lib
from genjax.train import loop


class _Info:
    kind = "image"
    num_classes = 10

    def __init__(self, shape=(6, 6, 1)):
        self.element_spec = {"image": shape, "label": ()}


def _task(distribution="bernoulli", class_conditional=False, shape=(6, 6, 1), **model):
    config = pixelcnn_mnist.get_config("smoke")
    config.model.distribution = distribution
    config.model.class_conditional = class_conditional
    for key, value in model.items():
        config.model[key] = value
    return pixelcnn_mnist.EXPERIMENT.make_task(config, _Info(shape))


@pytest.mark.parametrize("num_classes", [0, 3])
def test_each_pixel_sees_every_earlier_pixel_and_nothing_else(num_classes):
    """d logits(i, j) / d x(k, l) is non-zero exactly for the pixels before
    (i, j) in raster order: causal (no pixel sees itself or a later one)
    and no blind spot (with enough layers to reach the corners)."""
    height = width = 7
    model = GatedPixelCNN(features=8, num_layers=8, kernel=3, first_kernel=3,
                          outputs_per_pixel=2, head_features=8, num_classes=num_classes)
    x = jax.random.uniform(jax.random.key(0), (1, height, width, 1))
    labels = jnp.array([1]) if num_classes else None
    params = model.init(jax.random.key(1), x, labels)
    jac = jax.jacobian(lambda x: model.apply(params, x, labels).sum(-1))(x)
    depends = np.abs(np.asarray(jac)[0, :, :, 0, :, :, 0]).reshape(
        height * width, height * width) > 0
    earlier = np.tril(np.ones_like(depends), -1)
    np.testing.assert_array_equal(depends, earlier)


def test_the_bernoulli_nll_is_the_summed_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 3, 1)).astype(np.float32)
    x = (rng.uniform(size=(2, 3, 3, 1)) < 0.5).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(2, -1).sum(1)
    got = pixels_lib.nll("bernoulli", jnp.asarray(logits), jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_the_categorical_nll_of_uniform_logits_is_8_bits_per_pixel():
    x = pixels_lib.prepare("categorical", jax.random.uniform(jax.random.key(0), (2, 4, 4, 1)),
                           None)
    got = pixels_lib.nll("categorical", jnp.zeros((2, 4, 4, 256)), x)
    np.testing.assert_allclose(got, 16 * math.log(256), rtol=1e-6)
    # A logit of +20 on the right intensity: almost no loss.
    index = jnp.round(x[..., 0] * 255).astype(jnp.int32)
    sharp = 20.0 * jax.nn.one_hot(index, 256)
    assert float(pixels_lib.nll("categorical", sharp, x).max()) < 1e-3


def test_reach_is_exactly_how_far_a_pixels_logits_read():
    """Logits (i, j) read x(i - reach, .) and x(i, j - reach) but nothing
    further up or further left on row i: the bands the sampler runs on."""
    model = GatedPixelCNN(features=8, num_layers=2, kernel=3, first_kernel=5,
                          head_features=8)
    assert model.reach == 5
    size, (i, j) = 13, (11, 11)
    x = jax.random.uniform(jax.random.key(0), (1, size, size, 1))
    params = model.init(jax.random.key(1), x)
    grad = np.abs(np.asarray(jax.grad(
        lambda x: model.apply(params, x)[0, i, j, 0])(x))[0, :, :, 0]) > 0
    assert grad[i - model.reach].any() and not grad[:i - model.reach].any()
    assert grad[i, j - model.reach] and not grad[i, :j - model.reach].any()


@pytest.mark.parametrize("distribution,class_conditional,shape,first_kernel", [
    ("bernoulli", False, (6, 6, 1), 7),      # the bands are the whole image
    ("categorical", True, (6, 6, 1), 7),
    ("bernoulli", False, (13, 12, 1), 3),    # bands of reach + 1 = 6 < 12
    ("categorical", True, (13, 12, 1), 3)])
def test_the_row_cached_sampler_draws_what_the_naive_one_draws(
        distribution, class_conditional, shape, first_kernel):
    task = _task(distribution, class_conditional, shape, features=8, num_layers=3,
                 head_features=16, first_kernel=first_kernel)
    params = task.init_params(jax.random.key(0), None)
    labels = jnp.array([0, 3, 7, 9]) if class_conditional else None
    fast = jax.jit(lambda p, k: task.sample(p, k, 4, labels=labels))(
        params, jax.random.key(5))
    slow = jax.jit(lambda p, k: task.sample_naive(p, k, 4, labels=labels))(
        params, jax.random.key(5))
    np.testing.assert_array_equal(fast, slow)
    values = np.unique(np.asarray(fast))
    if distribution == "bernoulli":
        assert set(values) <= {0.0, 1.0} and len(values) == 2
    else:
        np.testing.assert_allclose(values * 255, np.round(values * 255), atol=1e-4)


def test_the_eval_binarisation_is_the_vaes(shared_data_dir):
    """The same test image and key give the same binary pixels in the
    PixelCNN's evaluation as in the VAE's, so their NLLs compare."""
    from genjax.objectives import elbo  # pylint: disable=import-outside-toplevel
    task = _task()
    params = task.init_params(jax.random.key(0), None)
    images = jax.random.uniform(jax.random.key(1), (1, 6, 6, 1))
    key = jax.random.key(2)
    binary = elbo.prepare_pixels("bernoulli", images, jax.random.split(key, 3)[0])
    want = pixels_lib.nll("bernoulli", task.logits(params, binary), binary)
    got = task.eval_fn(params, {"image": images, "label": jnp.zeros((1,), jnp.int32)},
                       key, final=True)["nll"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("module", [pixelcnn_mnist, pixelcnn_mnist_8bit])
def test_a_pixelcnn_trains_evaluates_and_samples_in_the_loop(module, shared_data_dir,
                                                             tmp_path):
    config = set_overrides(module.get_config("smoke"), {
        "data.name": "digits", "data.data_dir": str(shared_data_dir),
        "eval.batch_size": 60, "model.class_conditional": module is pixelcnn_mnist,
        "train.num_steps": 30, "train.eval_every": 30, "train.checkpoint_every": 30,
        "train.learning_rate": 3e-3})
    workdir = tmp_path / "wd"
    final = loop.train_and_evaluate(config, str(workdir), module.EXPERIMENT.make_task)
    assert read_json(workdir / "eval.json")["eval/nll"] == final["eval/nll"]
    # Better than the uniform model's 64 ln 2 (binary) or 64 ln 256 nats.
    uniform = 64 * math.log(2 if module is pixelcnn_mnist else 256)
    assert final["eval/nll"] < uniform
    assert final["eval/bits_per_dim"] == pytest.approx(
        final["eval/nll"] / (64 * math.log(2)), rel=1e-5)
    assert np.isfinite(final["eval/fd"]) and (workdir / "samples" / "samples_final.png").is_file()


@pytest.mark.parametrize("override,named", [
    ("--config.model.distribution=logistic", "model.distribution='logistic'"),
    ("--config.model.kernel=4", "model.kernel=4"),
    ("--config.model.num_layers=0", "model.num_layers=0"),
    ("--config.sample.temperature=0", "sample.temperature=0"),
    ("--config.data.name=shapes32", "3 channels"),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "pixelcnn_mnist", [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits", override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()
