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
from genjax.models import ddgan as ddgan_models
from genjax.objectives import adversarial, ddgan
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


def test_minibatch_stddev_is_each_groups_spread():
    """Groups of consecutive examples (the largest divisor of the batch up
    to the group size): identical examples give 0, and each example carries
    its own group's mean standard deviation."""
    same = jnp.ones((8, 2, 2, 3))
    np.testing.assert_allclose(ddgan_models.minibatch_stddev(same, 4), 0.0, atol=1e-3)
    h = jnp.arange(6, dtype=jnp.float32).reshape(6, 1, 1, 1)  # 6: groups of 3
    got = np.asarray(ddgan_models.minibatch_stddev(h, 4))[:, 0, 0, 0]
    want = np.repeat([np.std([0.0, 1, 2]), np.std([3.0, 4, 5])], 3)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_the_discriminator_sees_a_collapsed_generator_only_with_minibatch_stddev():
    """A batch of one repeated image and a batch of varied ones, with the
    same mean: without the minibatch feature the logits of the repeated
    image cannot depend on the rest of its batch; with it they do."""
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    t = jnp.zeros((8,))
    for std, moves in ((0, False), (4, True)):
        d = ddgan_models.PairDiscriminator(features=4, num_levels=1, minibatch_std=std)
        params = d.init(jax.random.key(1), x, x, t)
        one = d.apply(params, jnp.repeat(x[:1], 8, 0), jnp.repeat(x[:1], 8, 0), t)[0]
        mixed = d.apply(params, x.at[1:].set(-x[1:]), x, t)[0]  # example 0 alike
        assert (abs(float(one - mixed)) > 1e-6) == moves, std


def test_the_networks_tell_the_four_steps_apart():
    """The step index reaches the networks spread over the diffusion
    models' [0, 1000) range, one step every 250."""
    task = ddgan_mnist.EXPERIMENT.make_task(ddgan_mnist.get_config("smoke"),
                                            _DigitsInfo())
    np.testing.assert_allclose(task.embed_step(jnp.arange(4)), [125, 375, 625, 875])


class _DigitsInfo:
    kind = "image"
    element_spec = {"image": (8, 8, 1)}


class _LabelledDigitsInfo:
    kind = "image"
    element_spec = {"image": (8, 8, 1), "label": ()}
    num_classes = 10


def test_the_projection_discriminator_reads_the_label():
    """Class-conditional by projection: the same pair scores differently
    under another label; labels for an unconditional discriminator, or none
    for a conditional one, are errors."""
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    t = jnp.zeros((4,))
    d = ddgan_models.PairDiscriminator(features=4, num_levels=1, num_classes=10)
    params = d.init(jax.random.key(1), x, x, t, jnp.zeros((4,), jnp.int32))
    a = d.apply(params, x, x, t, jnp.zeros((4,), jnp.int32))
    b = d.apply(params, x, x, t, jnp.full((4,), 7, jnp.int32))
    assert np.all(np.abs(np.asarray(a - b)) > 1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        d.apply(params, x, x, t)
    plain = ddgan_models.PairDiscriminator(features=4, num_levels=1)
    with pytest.raises(ValueError, match="unconditional"):
        plain.init(jax.random.key(1), x, x, t, jnp.zeros((4,), jnp.int32))


def test_the_conditional_generator_follows_its_labels_and_the_recon_term_adds():
    """Samples from one seed change with the labels asked for; the
    generator's loss with ``ddgan.recon_weight = w`` is the adversarial loss
    plus ``w`` times the squared error of its clean image."""
    config = set_overrides(ddgan_mnist.get_config("smoke"),
                           {"model.class_conditional": True, "ddgan.recon_weight": 0.5})
    task = ddgan_mnist.EXPERIMENT.make_task(config, _LabelledDigitsInfo())
    batch = {"image": jax.random.uniform(jax.random.key(2), (8, 8, 8, 1)),
             "label": jnp.arange(8) % 10}
    params = task.init_params(jax.random.key(3), batch)
    # The U-Net's output layer starts at zero: move every weight a little.
    leaves, tree = jax.tree.flatten(params["generator"]["params"])
    keys = jax.random.split(jax.random.key(5), len(leaves))
    g = jax.tree.unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape)
                                  for p, k in zip(leaves, keys)])
    d = params["discriminator"]["params"]
    rng = jax.random.key(4)
    zeros, sevens = jnp.zeros((8,), jnp.int32), jnp.full((8,), 7, jnp.int32)
    a = task.sample({"generator": g}, rng, 8, labels=zeros)
    b = task.sample({"generator": g}, rng, 8, labels=sevens)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4
    with_recon, (metrics, _) = task.g_loss_fn(g, d, {}, batch, rng)
    task.config.ddgan.recon_weight = 0.0
    without, _ = task.g_loss_fn(g, d, {}, batch, rng)
    np.testing.assert_allclose(with_recon - without, 0.5 * metrics["recon"], rtol=1e-5)
    assert float(metrics["recon"]) > 0



def test_the_r1_penalty_on_every_kth_pair():
    """``ddgan.r1_subsample = k``: the penalty is R1 on the batch's pairs 0,
    k, 2k, ... alone, the same pairs (and steps) as the full batch draws."""
    config = set_overrides(ddgan_mnist.get_config("smoke"),
                           {"model.class_conditional": True, "ddgan.r1_subsample": 2,
                            "model.d_minibatch_std": 0})
    task = ddgan_mnist.EXPERIMENT.make_task(config, _LabelledDigitsInfo())
    batch = {"image": jax.random.uniform(jax.random.key(2), (8, 8, 8, 1)),
             "label": jnp.arange(8) % 10}
    params = task.init_params(jax.random.key(3), batch)
    g, d = params["generator"]["params"], params["discriminator"]["params"]
    rng = jax.random.key(4)
    _, (metrics, _) = task.d_loss_fn(d, g, {}, batch, rng)
    (x_prev, x_next, _, i, y), _ = task._pairs(g, batch, rng)
    per_pair = [float(adversarial.r1_penalty(
        lambda x, j=j: task.d_logits(d, x, x_next[j:j + 1], i[j:j + 1], y[j:j + 1]),
        x_prev[j:j + 1])) for j in range(8)]
    np.testing.assert_allclose(metrics["r1"], np.mean(per_pair[::2]), rtol=1e-4)
    assert abs(np.mean(per_pair[::2]) - np.mean(per_pair)) > 1e-6


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
    ("--config.model.d_minibatch_std=-1", "model.d_minibatch_std=-1"),
    ("--config.ddgan.recon_weight=-1.0", "ddgan.recon_weight=-1.0"),
    ("--config.ddgan.r1_subsample=0", "ddgan.r1_subsample=0"),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "ddgan_mnist", [
        f"--workdir={workdir}", "--preset=smoke", "--config.data.name=digits", override])
    assert code == 2
    assert_one_error_line(err, named)
    assert not workdir.exists()
