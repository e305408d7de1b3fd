"""The denoising diffusion GAN: its pairs and posterior against the forward
process, T-call sampling exact with an exact generator, and the task end to
end on digits (tiny configs, offline)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_one_error_line, run_cli, set_overrides
from experiments import ddgan_mnist
from genjax.objectives import ddgan
from genjax.objectives import diffusion as diff
from genjax.train import loop

SCHED = diff.make_schedule("vp", 4, 0.1, 20.0)


def test_the_vp_schedule_discretises_the_sde_in_four_steps():
    abar = np.asarray(SCHED.alphas_cumprod)
    t = np.arange(1, 5) / 4
    np.testing.assert_allclose(abar, np.exp(-0.1 * t - 0.5 * 19.9 * t * t), rtol=1e-5)


def test_real_pairs_are_consecutive_steps_of_the_forward_process():
    """x_{i+1} of a real pair has q(x_{i+1} | x_0)'s mean and variance, and
    x_i is x_0 itself at i = 0."""
    n = 100_000
    x0 = jnp.full((n, 1), 0.7)
    for i in range(4):
        prev, nxt = ddgan.real_pair(SCHED, x0, jnp.full((n,), i), jax.random.key(i))
        abar = float(SCHED.alphas_cumprod[i])
        assert float(nxt.mean()) == pytest.approx(0.7 * np.sqrt(abar), abs=0.01)
        assert float(nxt.var()) == pytest.approx(1.0 - abar, rel=0.02, abs=0.003)
        if i == 0:
            np.testing.assert_array_equal(prev, x0)


def test_sampling_with_the_exact_generator_draws_the_data_distribution():
    """For data N(0, s^2) a generator that draws x_0' from the true p(x_0 |
    x_t) makes each step the true reverse step, so 4 calls give N(0, s^2)."""
    s = 0.5

    def generator(x, i, key):
        abar = SCHED.alphas_cumprod[i].reshape((-1,) + (1,) * (x.ndim - 1))
        denom = abar * s**2 + 1.0 - abar
        mean = jnp.sqrt(abar) * s**2 / denom * x
        std = jnp.sqrt(s**2 * (1.0 - abar) / denom)
        return mean + std * jax.random.normal(key, x.shape)

    x_T = jax.random.normal(jax.random.key(0), (50_000, 2))
    x, path = ddgan.sample(generator, SCHED, x_T, jax.random.key(1), keep_path=True)
    assert path.shape == (4, 50_000, 2)
    np.testing.assert_array_equal(path[-1], x)
    assert abs(float(x.mean())) < 0.01
    assert float(x.std()) == pytest.approx(s, rel=0.01)


def test_a_ddgan_run_trains_samples_in_four_calls_and_draws_its_steps(
        shared_data_dir, tmp_path):
    config = set_overrides(ddgan_mnist.get_config("smoke"), {
        "data.name": "digits", "data.data_dir": str(shared_data_dir)})
    workdir = tmp_path / "wd"
    final = loop.train_and_evaluate(config, str(workdir), ddgan_mnist.EXPERIMENT.make_task)
    assert final["eval/nfe"] == 4
    for key in ("eval/d_real", "eval/d_fake", "eval/fd", "eval/classifier_score"):
        assert np.isfinite(final[key]), key
    assert (workdir / "samples" / "denoising_final.png").exists()


@pytest.mark.parametrize("override, named", [
    ("--config.ddgan.num_steps=0", "ddgan.num_steps=0"),
    ("--config.gan.loss=wasserstein", "gan.loss='wasserstein'"),
    ("--config.ddgan.beta_min=30.0", "ddgan.beta_min=30.0"),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "ddgan_mnist", [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits", override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()
