"""Shapes and basic behaviour of the VAE models and task options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import vae_mnist
from genjax.data.registry import Dataset
from genjax.tasks.vae import VAETask


def _info(shape):
    x = np.zeros((2,) + shape, np.float32)
    return Dataset(name="fake", kind="image",
                   splits={"train": {"image": x}, "test": {"image": x}},
                   element_spec={"image": shape}, num_classes=None,
                   description="")


@pytest.mark.parametrize("architecture, hidden, shape, likelihood, prior, k", [
    ("mlp", (32, 16), (28, 28, 1), "bernoulli", "standard", 1),
    ("mlp", (32, 16), (28, 28, 1), "bernoulli", "vamp", 3),
    ("conv", (8, 16), (28, 28, 1), "gaussian", "standard", 1),
    ("conv", (8, 16), (32, 32, 3), "bernoulli", "standard", 1),
])
def test_vae_task_shapes_and_finite_loss(architecture, hidden, shape, likelihood, prior, k):
    config = vae_mnist.get_config("smoke")
    config.model.architecture = architecture
    config.model.hidden = hidden
    config.model.likelihood = likelihood
    config.model.prior = prior
    config.model.pseudo_inputs = 4 if prior == "vamp" else 0
    config.vae.importance_samples = k
    config.eval.iwae_samples = 4
    config.eval.iwae_chunk = 2
    task = VAETask(config, _info(shape))

    @jax.jit  # One compiled program: op by op, this takes several seconds.
    def outputs():
        x = jax.random.uniform(jax.random.key(0), (3,) + shape)
        params = task.init_params(jax.random.key(1), {"image": x})
        return dict(
            x=x,
            loss_and_metrics=task.loss_fn(params, {"image": x}, jax.random.key(2)),
            per_example=task.eval_fn(params, {"image": x}, jax.random.key(3),
                                     final=True),
            samples=task.sample_fn(params, jax.random.key(4), 5),
            reconstruction=task.reconstruct(params, x),
            interpolation=task.interpolate(params, x[0], x[1], 6),
            anomaly=task.anomaly_score(params, x, jax.random.key(5), 3))

    out = outputs()
    x = out["x"]
    loss, metrics = out["loss_and_metrics"]
    assert loss.shape == () and np.isfinite(float(loss))
    if k == 1:
        assert float(metrics["kl"]) >= 0.0 or prior == "vamp"  # sampled KL may dip
    else:
        assert set(metrics) == {"neg_iwae"}
    per_example = out["per_example"]
    assert per_example["nll_iwae"].shape == (3,)
    assert np.all(np.isfinite(np.asarray(per_example["nll_iwae"])))
    samples = out["samples"]
    assert samples.shape == (5,) + shape
    assert float(jnp.min(samples)) >= 0.0 and float(jnp.max(samples)) <= 1.0
    assert out["reconstruction"].shape == x.shape
    assert out["interpolation"].shape == (6,) + shape
    assert out["anomaly"].shape == (3,)


def test_conv_decoder_rejects_sides_it_cannot_reach():
    config = vae_mnist.get_config("smoke")
    config.model.architecture = "conv"
    config.model.hidden = (8, 16, 32)  # 3 upsamplings need sides divisible by 8.
    task = VAETask(config, _info((28, 28, 1)))
    x = jnp.zeros((1, 28, 28, 1))
    with pytest.raises(ValueError, match="divisible by 8"):
        task.init_params(jax.random.key(0), {"image": x})


def test_vampprior_config_mistakes_are_one_line_errors():
    from genjax.config import ConfigError  # pylint: disable=import-outside-toplevel
    config = vae_mnist.get_config("smoke")
    config.model.prior = "vamp"
    with pytest.raises(ConfigError, match="model.pseudo_inputs=0"):
        VAETask(config, _info((28, 28, 1)))
    config.model.prior = "gaussian_mixture"
    with pytest.raises(ConfigError, match="model.prior"):
        VAETask(config, _info((28, 28, 1)))
    config.model.prior = "standard"
    config.vae.importance_samples = 0
    with pytest.raises(ConfigError, match="vae.importance_samples=0"):
        VAETask(config, _info((28, 28, 1)))


def test_vampprior_samples_decode_draws_from_the_encoded_pseudo_inputs():
    config = vae_mnist.get_config("smoke")
    config.model.prior, config.model.pseudo_inputs = "vamp", 3
    task = VAETask(config, _info((28, 28, 1)))
    params = task.init_params(jax.random.key(0), {"image": jnp.zeros((2, 28, 28, 1))})
    assert params["pseudo_inputs"].shape == (3, 28, 28, 1)
    means, logvars = task.model.apply({"params": params},
                                      method=task.model.prior_components)
    z = np.asarray(task._prior_sample(params, jax.random.key(1), 4000))  # pylint: disable=protected-access
    # Each draw from the equal mixture of the three encoded components.
    dens = np.stack([np.exp(-0.5 * np.sum((z - np.asarray(means[k])) ** 2
                                          / np.exp(np.asarray(logvars[k])), axis=1))
                     for k in range(3)], axis=1)
    assert np.all(dens.max(axis=1) > 1e-12)
    np.testing.assert_allclose(z.mean(axis=0), np.asarray(means).mean(axis=0), atol=0.15)
