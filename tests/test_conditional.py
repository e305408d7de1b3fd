"""Class-conditional variants selected by config (``model.class_conditional``):
the VAE, the GAN and the flow (diffusion, score and flow-matching models and
the PixelCNN have theirs tested with their families)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import set_overrides
from experiments import dcgan_mnist, realnvp_mnist, vae_digits
from genjax import data as data_lib
from genjax.config import ConfigError
from genjax.models import gan as gan_models
from genjax.models.vae import VAE
from genjax.train import loop


def _cvae_config(**overrides):
    config = vae_digits.get_config("smoke")
    return set_overrides(config, {"model.class_conditional": True, **overrides})


def test_a_conditional_vae_trains_and_its_labels_steer_the_decoder(tmp_path):
    config = _cvae_config()
    workdir = tmp_path / "wd"
    final = loop.train_and_evaluate(config, str(workdir), vae_digits.EXPERIMENT.make_task)
    assert np.isfinite(final["eval/nll_iwae"])
    dataset = data_lib.load_dataset(config.data)
    task = vae_digits.EXPERIMENT.make_task(config, dataset)
    params = task.init_params(jax.random.key(0), task.example_batch(dataset))
    z = jax.random.normal(jax.random.key(1), (3, config.model.latents))
    a = task._decode(params, jnp.array([0, 0, 0]))(z)
    b = task._decode(params, jnp.array([5, 5, 5]))(z)
    assert float(jnp.abs(a - b).max()) > 1e-3
    samples = task.sample(params, jax.random.key(2), 4, labels=jnp.array([1, 2, 3, 4]))
    assert samples.shape == (4, 8, 8, 1)


def test_each_importance_sample_is_decoded_with_its_own_examples_label():
    """``nll_iwae`` decodes k samples of a batch of B as one ``[k * B]``
    batch, sample-major: row ``c * B + b`` must get label ``b``."""
    model = VAE(architecture="mlp", hidden=(4,), latents=2, image_shape=(2, 2, 1),
                num_classes=5)
    labels = jnp.array([3, 0, 4])
    cond = model.apply({}, labels, 6, method=VAE._cond)
    np.testing.assert_array_equal(jnp.argmax(cond, axis=1), [3, 0, 4, 3, 0, 4])
    with pytest.raises(ValueError, match="called without labels"):
        model.apply({}, None, 3, method=VAE._cond)


def test_class_conditional_on_unlabelled_data_is_a_config_error():
    class Unlabelled:
        kind = "image"
        element_spec = {"image": (8, 8, 1)}
        num_classes = 0

    with pytest.raises(ConfigError, match="model.class_conditional=True needs labels"):
        vae_digits.EXPERIMENT.make_task(_cvae_config(), Unlabelled())


# --------------------------------------------------------------------------
# The class-conditional GAN.

def test_the_projection_discriminator_reads_the_label():
    d = gan_models.DCGANDiscriminator(features=4, norm="none", num_classes=3)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    variables = d.init(jax.random.key(1), x, train=False, labels=jnp.array([0, 0]))
    # The embedding starts small but non-zero: another label, another logit.
    a = d.apply(variables, x, train=False, labels=jnp.array([0, 0]))
    b = d.apply(variables, x, train=False, labels=jnp.array([2, 2]))
    assert a.shape == (2,) and float(jnp.abs(a - b).max()) > 0
    with pytest.raises(ValueError, match="called without labels"):
        d.apply(variables, x, train=False)


def test_a_conditional_gan_trains_and_draws_each_class(shared_data_dir, tmp_path):
    config = set_overrides(dcgan_mnist.get_config("smoke"), {
        "data.name": "digits", "data.data_dir": str(shared_data_dir),
        "eval.batch_size": 120, "eval.sample_quality.num_samples": 200,
        "eval.sample_quality.num_samples_during_training": 0,
        "eval.sample_quality.kid_subset_size": 100, "train.eval_every": 20,
        "model.class_conditional": True})
    workdir = tmp_path / "wd"
    final = loop.train_and_evaluate(config, str(workdir), dcgan_mnist.EXPERIMENT.make_task)
    assert np.isfinite(final["eval/fd"]) and 0 < final["eval/d_real"] < 1
    assert (workdir / "samples" / "classes_final.png").is_file()
    dataset = data_lib.load_dataset(config.data)
    task = dcgan_mnist.EXPERIMENT.make_task(config, dataset)
    state = task.init_state(jax.random.key(0), jax.random.key(1),
                            task.example_batch(dataset), task.make_optimizer()[0])
    params = task.inference_params(state, use_ema=True)
    z = jax.random.key(3)
    one = task.sample(params, z, 4, labels=jnp.array([1, 1, 1, 1]))
    other = task.sample(params, z, 4, labels=jnp.array([7, 7, 7, 7]))
    assert one.shape == (4, 8, 8, 1) and float(jnp.abs(one - other).max()) > 0


def test_a_label_and_an_infogan_code_together_are_a_config_error():
    config = set_overrides(dcgan_mnist.get_config("smoke"), {
        "data.name": "digits", "model.class_conditional": True, "model.code_classes": 10})
    with pytest.raises(ConfigError, match="model.code_classes=10"):
        dcgan_mnist.EXPERIMENT.make_task(config, data_lib.load_dataset(config.data))


# --------------------------------------------------------------------------
# The class-conditional flow.

def test_a_conditional_flows_likelihood_is_its_class_gaussian_on_the_latent(
        shared_data_dir, tmp_path):
    """log p(x | y) = log N(z; mu_y, sigma_y^2) + log|det dz/dx| (dequantised,
    on the 8-bit scale), by a direct computation from the flow's own
    latent; a short run trains, and its samples follow the given labels."""
    config = set_overrides(realnvp_mnist.get_config("smoke"), {
        "data.name": "digits", "data.data_dir": str(shared_data_dir),
        "eval.batch_size": 120, "train.num_steps": 6, "train.eval_every": 6,
        "train.checkpoint_every": 6, "train.log_every": 3,
        "eval.sample_quality.num_samples": 100, "eval.sample_quality.kid_subset_size": 50,
        "eval.temperatures": (), "model.class_conditional": True})
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    realnvp_mnist.EXPERIMENT.make_task)
    assert 0 < final["eval/bits_per_dim"] < 9 and np.isfinite(final["eval/fd"])
    dataset = data_lib.load_dataset(config.data)
    task = realnvp_mnist.EXPERIMENT.make_task(config, dataset)
    params = task.init_params(jax.random.key(0), task.example_batch(dataset))
    rng = np.random.default_rng(0)
    params["class_prior"] = {
        "mean": jnp.asarray(rng.normal(size=(10, 64)), jnp.float32),
        "log_scale": jnp.asarray(0.3 * rng.normal(size=(10, 64)), jnp.float32)}
    images = jnp.asarray(dataset.arrays("test")["image"][:3])
    labels = jnp.array([2, 5, 9])
    key = jax.random.key(1)
    got = task.log_likelihood(params, images, key, labels)
    from genjax.objectives import likelihood  # pylint: disable=import-outside-toplevel
    x = likelihood.uniform_dequantize(images, key)
    z, log_det = task.model.apply({"params": task._flow_params(params)}, x,
                                  method=task.model.forward)
    mean = np.asarray(params["class_prior"]["mean"])[np.asarray(labels)]
    scale = np.exp(np.asarray(params["class_prior"]["log_scale"]))[np.asarray(labels)]
    gauss = np.sum(-0.5 * ((np.asarray(z) - mean) / scale) ** 2
                   - np.log(scale) - 0.5 * np.log(2 * np.pi), axis=1)
    want = gauss + np.asarray(log_det) - 64 * np.log(256)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # The inverse undoes the forward map for the same labels.
    back, _ = task.inverse(params, labels)(task.forward(params, labels)(x)[0])
    np.testing.assert_allclose(back, x, atol=1e-4)
    a = task.sample_at(params, jax.random.key(2), 3, 1.0, labels=labels)
    b = task.sample_at(params, jax.random.key(2), 3, 1.0, labels=(labels + 1) % 10)
    assert a.shape == (3, 8, 8, 1) and float(jnp.abs(a - b).max()) > 0
