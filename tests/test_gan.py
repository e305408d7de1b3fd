"""GANs: adversarial losses by hand, the models' shapes, the two-player step,
resume, devices, and instability reports.

Training runs use ``dcgan_mnist``'s or ``gan_mnist``'s smoke preset on
scikit-learn's digits (``data.name=digits``, 8x8), so nothing is downloaded
and every run takes seconds.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (assert_one_error_line, assert_trees_bitwise_equal,
                      leaves_with_paths, read_json, read_jsonl, restore_latest,
                      run_cli, run_python, set_overrides)

from experiments import dcgan_cifar10, dcgan_mnist, gan_mnist
from genjax import data as data_lib
from genjax.models import gan as gan_models
from genjax.objectives import adversarial, diffaugment
from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop

LOG4 = math.log(4.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------
# Objectives, against values computed by hand.


def test_indifferent_discriminator_gives_log_4():
    zeros = jnp.zeros((7,))  # logit 0 is D = 1/2 for every example
    assert float(adversarial.minimax_value(zeros, zeros)) == pytest.approx(-LOG4)
    for kind in ("minimax", "non_saturating"):
        loss, metrics = adversarial.discriminator_loss(kind, zeros, zeros)
        assert float(loss) == pytest.approx(LOG4)
        assert float(metrics["d_real"]) == float(metrics["d_fake"]) == 0.5
    # G's losses at D = 1/2: log(1 - 1/2) and -log(1/2).
    assert float(adversarial.generator_loss("minimax", zeros)[0]) == pytest.approx(
        -math.log(2.0))
    assert float(adversarial.generator_loss("non_saturating", zeros)[0]) == pytest.approx(
        math.log(2.0))
    # Hinge at 0: relu(1) + relu(1) for D, -0 for G.
    assert float(adversarial.discriminator_loss("hinge", zeros, zeros)[0]) == 2.0
    assert float(adversarial.generator_loss("hinge", zeros)[0]) == 0.0


def test_losses_on_uneven_logits():
    real = jnp.array([2.0, -1.0])
    fake = jnp.array([0.5, -3.0])
    # -[log s(r)] = softplus(-r); -[log(1 - s(f))] = softplus(f).
    expected_d = (np.mean([softplus(-2.0), softplus(1.0)])
                  + np.mean([softplus(0.5), softplus(-3.0)]))
    loss, metrics = adversarial.discriminator_loss("minimax", real, fake)
    assert float(loss) == pytest.approx(expected_d, rel=1e-6)
    assert float(metrics["d_accuracy"]) == pytest.approx(0.5)  # 1 of 2 each
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    assert float(metrics["d_real"]) == pytest.approx((sig(2.0) + sig(-1.0)) / 2)
    assert float(adversarial.generator_loss("minimax", fake)[0]) == pytest.approx(
        -np.mean([softplus(0.5), softplus(-3.0)]), rel=1e-6)
    assert float(adversarial.generator_loss("non_saturating", fake)[0]) == pytest.approx(
        np.mean([softplus(-0.5), softplus(3.0)]), rel=1e-6)
    # Hinge: mean(relu(1 - r)) + mean(relu(1 + f)) = (0 + 2)/2 + (1.5 + 0)/2.
    assert float(adversarial.discriminator_loss("hinge", real, fake)[0]) == pytest.approx(1.75)
    assert float(adversarial.generator_loss("hinge", fake)[0]) == pytest.approx(1.25)


def test_losses_stay_finite_for_confident_logits():
    big = jnp.array([80.0, -80.0])
    for kind in adversarial.LOSSES:
        assert np.isfinite(float(adversarial.discriminator_loss(kind, big, -big)[0]))
        assert np.isfinite(float(adversarial.generator_loss(kind, big)[0]))


def test_r1_penalty_of_a_linear_discriminator():
    w = jnp.arange(12.0).reshape(2, 3, 2) / 10.0
    x = jax.random.normal(jax.random.key(0), (5, 2, 3, 2))
    logit_fn = lambda images: jnp.sum(images * w[None], axis=(1, 2, 3))  # noqa: E731
    # grad_x D(x) = w for every example, so E||grad||^2 = ||w||^2.
    assert float(adversarial.r1_penalty(logit_fn, x)) == pytest.approx(
        float(jnp.sum(w * w)), rel=1e-6)


def test_info_loss_by_hand():
    # Q's probabilities: [1/4, 3/4] and [1/2, 1/2] (a tie: argmax 0).
    logits = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0]]))
    loss, metrics = adversarial.info_loss(logits, jnp.array([0, 0]))
    assert float(loss) == pytest.approx(-(math.log(0.25) + math.log(0.5)) / 2, rel=1e-6)
    assert float(metrics["code_accuracy"]) == 0.5
    loss, metrics = adversarial.info_loss(logits, jnp.array([1, 0]))
    assert float(loss) == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2, rel=1e-6)
    assert float(metrics["code_accuracy"]) == 1.0


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="wasserstein.*minimax, non_saturating, hinge"):
        adversarial.generator_loss("wasserstein", jnp.zeros((2,)))


# --------------------------------------------------------------------------
# Models.


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
@pytest.mark.parametrize("architecture", ["mlp", "dcgan"])
def test_models_map_latents_to_images_and_images_to_logits(architecture, shape):
    g, d = gan_models.make_models(architecture, shape, g_hidden=(32,),
                                  d_hidden=(16,), maxout_pieces=3, features=8)
    z = jax.random.uniform(jax.random.key(0), (4, 10), minval=-1, maxval=1)
    # Jitted: one compilation instead of one per operation.
    g_vars = jax.jit(lambda k: g.init(k, z, train=False))(jax.random.key(1))
    x = jax.jit(lambda v: g.apply(v, z, train=False))(g_vars)
    assert x.shape == (4,) + shape
    assert float(jnp.max(jnp.abs(x))) <= 1.0  # tanh range
    d_vars = jax.jit(lambda k1, k2: d.init({"params": k1, "dropout": k2}, x,
                                           train=False))(jax.random.key(2),
                                                         jax.random.key(3))
    logits = jax.jit(lambda v: d.apply(v, x, train=False))(d_vars)
    assert logits.shape == (4,)
    if architecture == "dcgan":
        # Batch norm after every strided layer but D's first (DCGAN, section
        # 3); 8x8 has a single halving, so its D has no batch norm at all.
        downs = {28: 2, 32: 3, 8: 1}[shape[0]]
        expected = ({f"down{i}" for i in range(downs)} | {"logit"}
                    | {f"BatchNorm_{i}" for i in range(downs - 1)})
        assert set(d_vars["params"]) == expected
        assert ("batch_stats" in d_vars) == (downs > 1)
        assert "batch_stats" in g_vars
    else:
        assert "batch_stats" not in g_vars and "batch_stats" not in d_vars


def test_dcgan_layout_follows_the_image_size():
    assert gan_models.seed_size(28) == (7, 2)
    assert gan_models.seed_size(32) == (4, 3)
    assert gan_models.seed_size(64) == (4, 4)
    assert gan_models.seed_size(30) == (15, 1)
    for side in (6, 9):  # no halving leaves a side of at least 4
        with pytest.raises(ValueError, match=f"image side {side} "):
            gan_models.seed_size(side)
    g, _ = gan_models.make_models("dcgan", (32, 32, 3), features=8)
    z = jnp.zeros((1, 5))
    params = g.init(jax.random.key(0), z, train=False)["params"]
    # 4x4 seed with 8 * 2**2 channels, then 16, 8, and 3 output channels.
    assert params["Dense_0"]["kernel"].shape == (5, 4 * 4 * 32)
    assert params["up0"]["kernel"].shape == (4, 4, 32, 16)
    assert params["up1"]["kernel"].shape == (4, 4, 16, 8)
    assert params["out"]["kernel"].shape == (4, 4, 8, 3)


def test_dense_hidden_and_d_features_shape_the_dcgan():
    g, d = gan_models.make_models("dcgan", (28, 28, 1), features=8,
                                  d_features=4, dense_hidden=12)
    z = jnp.zeros((2, 5))
    g_vars = g.init(jax.random.key(0), z, train=False)
    # z -> 12 (batch norm, ReLU) -> the 7x7x16 seed.
    assert g_vars["params"]["hidden"]["kernel"].shape == (5, 12)
    assert g_vars["params"]["Dense_0"]["kernel"].shape == (12, 7 * 7 * 16)
    assert g_vars["batch_stats"]["BatchNorm_0"]["mean"].shape == (12,)
    x = g.apply(g_vars, z, train=False)
    d_params = d.init(jax.random.key(1), x, train=False)["params"]
    # D's own width (4, then 8), then 7*7*8 -> 12 -> logit.
    assert d_params["down0"]["kernel"].shape == (4, 4, 1, 4)
    assert d_params["hidden"]["kernel"].shape == (7 * 7 * 8, 12)
    assert d_params["logit"]["kernel"].shape == (12, 1)
    g0, d0 = gan_models.make_models("dcgan", (28, 28, 1), features=8)
    assert "hidden" not in g0.init(jax.random.key(0), z, train=False)["params"]
    assert "hidden" not in d0.init(jax.random.key(1), x, train=False)["params"]


def test_maxout_takes_the_max_of_its_pieces():
    layer = gan_models.Maxout(features=2, pieces=3)
    x = jnp.ones((1, 4))
    variables = layer.init(jax.random.key(0), x)
    kernel = variables["params"]["Dense_0"]["kernel"]
    bias = variables["params"]["Dense_0"]["bias"]
    affine = (x @ kernel + bias[None]).reshape(1, 2, 3)
    np.testing.assert_allclose(layer.apply(variables, x), affine.max(-1), rtol=1e-6)


# --------------------------------------------------------------------------
# Training runs on digits.

# dcgan_mnist's smoke preset on 8x8 digits: 20 steps, rows every 5 steps,
# checkpoints at 10 and 20; the sample-quality protocol on 200 samples.
DIGITS = {"data.name": "digits", "eval.batch_size": 120,
          "eval.sample_quality.num_samples": 200,
          "eval.sample_quality.num_samples_during_training": 100,
          "eval.sample_quality.kid_subset_size": 100}


def gan_config(module=dcgan_mnist, data_dir=None, **overrides):
    config = set_overrides(module.get_config("smoke"), {**DIGITS, **overrides})
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    return config


def cli_overrides(data_dir, **overrides) -> list[str]:
    items = {**DIGITS, "data.data_dir": str(data_dir), **overrides}
    return [f"--config.{k}={v}" for k, v in items.items()]


@pytest.fixture(scope="session")
def data_dir(shared_data_dir):
    """Where the digits classifier is trained once for the whole suite."""
    return shared_data_dir


@pytest.fixture(scope="module")
def gan_run(data_dir, tmp_path_factory):
    """One finished dcgan_mnist smoke run on digits (tests copy, never modify)."""
    workdir = tmp_path_factory.mktemp("gan_run") / "wd"
    metrics = loop.train_and_evaluate(gan_config(data_dir=data_dir), str(workdir),
                                      dcgan_mnist.EXPERIMENT.make_task)
    return workdir, metrics


def restore(config, workdir):
    return restore_latest(config, workdir, dcgan_mnist.EXPERIMENT.make_task)


def timeless(path) -> dict:
    """eval.json without its wall time."""
    return loop.without_timings(read_json(path))


def test_a_gan_run_logs_both_players_and_judges_its_samples(gan_run):
    workdir, final = gan_run
    rows = read_jsonl(workdir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/d_loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_accuracy",
                "d_grad_norm", "g_grad_norm", "d_param_norm", "g_param_norm",
                "d_wins_streak", "learning_rate"):
        assert all(np.isfinite(r[f"train/{key}"]) for r in train_rows), key
    assert all(0.0 < r["train/d_real"] < 1.0 for r in train_rows)
    # The evaluation during training (step 10) has the cheap protocol.
    mid = [r for r in rows if r["step"] == 10 and "eval/fd" in r]
    assert len(mid) == 1 and mid[0]["eval/num_samples"] == 100
    report = read_json(workdir / "eval.json")
    assert report == pytest.approx({**final, "step": 20})
    assert report["eval/num_samples"] == 200
    for key in ("d_real", "d_fake", "fd", "fd_floor", "kid", "kid_floor",
                "classifier_score", "classifier_score_data", "classes_hit",
                "class_kl", "classifier_test_accuracy"):
        assert np.isfinite(report[f"eval/{key}"]), key
    assert report["eval/classifier_test_accuracy"] > 0.9
    # 20 steps of a tiny GAN are far from the data; the floor is not.
    assert report["eval/fd"] > report["eval/fd_floor"]
    assert 1 <= report["eval/classes_hit"] <= 10
    for name in ("samples_final.png", "interpolation_final.png",
                 "samples_step0000010.png"):
        assert (workdir / "samples" / name).exists(), name


def test_state_holds_both_players_ema_and_batch_stats(gan_run):
    workdir, _ = gan_run
    step, state, _ = restore(gan_config(), workdir)
    assert step == 20 and int(state.step) == 20
    assert set(state.params) == {"generator", "discriminator"}
    assert set(state.opt_state) == {"generator", "discriminator"}
    # The EMA follows the generator, its weights and its batch statistics:
    # same trees, nearby but not equal values.
    assert set(state.ema_params) == {"params", "collections"}
    ema, g = (leaves_with_paths(state.ema_params["params"]),
              leaves_with_paths(state.params["generator"]))
    assert ema.keys() == g.keys()
    assert any(not np.array_equal(ema[k], g[k]) for k in g)
    # The generator's batch statistics moved away from their initial values.
    stats = leaves_with_paths(state.model_state["generator"]["batch_stats"])
    assert any("var" in k and not np.allclose(v, 1.0) for k, v in stats.items())
    ema_stats = leaves_with_paths(state.ema_params["collections"]["batch_stats"])
    assert ema_stats.keys() == stats.keys()
    assert any(not np.array_equal(ema_stats[k], stats[k]) for k in stats)


def _toy_two_player(ema_decay=0.5):
    """A two-player update over scalars: D's metrics come from the batch,
    G's one step adds 1 to its 'batch statistic'."""
    import optax

    from genjax.train import two_player

    def d_loss(d, g, model_state, batch, rng):
        del g, rng
        metrics = {"d_real": batch["d_real"], "d_fake": batch["d_fake"]}
        return (d - 1.0) ** 2, (metrics, model_state)

    def g_loss(g, d, model_state, batch, rng):
        del d, batch, rng
        stats = {"mean": model_state["generator"]["mean"] + 1.0}
        return (g - 2.0) ** 2, ({}, dict(model_state, generator=stats))

    opt = {"generator": optax.sgd(0.1), "discriminator": optax.sgd(0.1)}
    state = two_player.init_state(
        jnp.zeros(()), jnp.zeros(()), {"generator": {"mean": jnp.zeros(())},
                                       "discriminator": {}},
        opt, jax.random.key(0), use_ema=True)
    update = jax.jit(two_player.two_player_update(d_loss, g_loss, opt,
                                                  ema_decay=ema_decay))
    return state, update


def test_two_player_ema_averages_generator_batch_statistics():
    state, update = _toy_two_player(ema_decay=0.5)
    batch = {"d_real": jnp.float32(0.5), "d_fake": jnp.float32(0.5)}
    g, ema_g = 0.0, 0.0
    for expected in (0.5, 1.25, 2.125):  # 0.5 * ema + 0.5 * (1, 2, 3)
        state, _ = update(state, batch, jax.random.key(1))
        np.testing.assert_allclose(
            float(state.ema_params["collections"]["mean"]), expected)
        # The averaged weights follow the same rule (SGD on (g - 2)^2).
        g -= 0.1 * 2.0 * (g - 2.0)
        ema_g = 0.5 * ema_g + 0.5 * g
        np.testing.assert_allclose(float(state.ema_params["params"]), ema_g,
                                   rtol=1e-6)


def test_d_wins_streak_counts_consecutive_outright_wins_and_resets():
    state, update = _toy_two_player()
    wins = {"d_real": jnp.float32(0.999), "d_fake": jnp.float32(0.001)}
    close = {"d_real": jnp.float32(0.999), "d_fake": jnp.float32(0.2)}
    streaks = []
    for batch in (wins, wins, wins, close, wins):
        state, metrics = update(state, batch, jax.random.key(1))
        streaks.append(int(metrics["d_wins_streak"]))
    assert streaks == [1, 2, 3, 0, 1]
    assert int(state.model_state["d_wins_streak"]) == 1


def test_resume_is_bitwise_identical(gan_run, data_dir, tmp_path):
    import shutil

    workdir = tmp_path / "resumed"
    shutil.copytree(gan_run[0], workdir)
    shutil.rmtree(workdir / "checkpoints" / "20")
    (workdir / "eval.json").unlink()
    loop.train_and_evaluate(gan_config(data_dir=data_dir), str(workdir),
                            dcgan_mnist.EXPERIMENT.make_task)
    assert read_jsonl(workdir / "metrics.jsonl") == read_jsonl(gan_run[0] / "metrics.jsonl")
    assert timeless(workdir / "eval.json") == timeless(gan_run[0] / "eval.json")
    assert_trees_bitwise_equal(restore(gan_config(), workdir)[1],
                               restore(gan_config(), gan_run[0])[1])


def test_eval_and_sample_modes(gan_run, data_dir, tmp_path, capsys):
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(gan_run[0], workdir)
    (workdir / "eval.json").unlink()
    args = [f"--workdir={workdir}", "--preset=smoke", *cli_overrides(data_dir)]
    code, _, err = run_cli(capsys, "dcgan_mnist", args + ["--mode=eval"])
    assert code == 0, err
    assert timeless(workdir / "eval.json") == timeless(gan_run[0] / "eval.json")
    code, _, err = run_cli(capsys, "dcgan_mnist",
                           args + ["--mode=sample", "--num_samples=12"])
    assert code == 0, err
    samples = np.load(workdir / "samples.npy")
    assert samples.shape == (12, 8, 8, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0


def test_n_disc_steps_the_discriminator_more_often(data_dir, tmp_path):
    config = gan_config(data_dir=data_dir, **{
        "gan.n_disc": 3, "train.num_steps": 4, "train.log_every": 2,
        "train.checkpoint_every": 4, "train.eval_every": 100,
        "eval.sample_quality.num_samples": 0})
    loop.train_and_evaluate(config, str(tmp_path / "wd"),
                            dcgan_mnist.EXPERIMENT.make_task)
    _, state, _ = restore(config, tmp_path / "wd")
    counts = {player: sorted({int(v) for k, v in leaves_with_paths(
        state.opt_state[player]).items() if "count" in k})
              for player in ("generator", "discriminator")}
    assert counts == {"generator": [4], "discriminator": [12]}


@pytest.mark.slow
@pytest.mark.subprocess
def test_eight_devices_match_one_device(gan_run, data_dir, tmp_path):
    """Batch norm sees the global batch on 8 devices (4 examples each), so
    the run matches the 1-device run up to float reordering."""
    config = gan_config(data_dir=data_dir).to_json()
    script = (
        "import json, sys, jax\n"
        "import ml_collections\n"
        "from experiments import dcgan_mnist\n"
        "from genjax.train import loop\n"
        "config = ml_collections.ConfigDict(json.loads(sys.argv[1]))\n"
        "assert jax.device_count() == 8\n"
        "loop.train_and_evaluate(config, sys.argv[2], dcgan_mnist.EXPERIMENT.make_task)\n")
    workdir = tmp_path / "eight"
    proc = run_python(["-c", script, config, str(workdir)], devices=8, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/d_loss" in r]
    ref = [r for r in read_jsonl(gan_run[0] / "metrics.jsonl") if "train/d_loss" in r]
    assert len(rows) == len(ref) == 4
    for row, ref_row in zip(rows, ref):
        for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake",
                    "train/g_grad_norm"):
            np.testing.assert_allclose(row[key], ref_row[key], rtol=2e-3,
                                       err_msg=f"{key} at step {row['step']}")


# --------------------------------------------------------------------------
# Instability, reported.


def test_discriminator_winning_outright_stops_with_the_step(data_dir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    # A frozen generator (lr 0) against a fast discriminator: D soon wins.
    code, _, err = run_cli(capsys, "dcgan_mnist", [
        f"--workdir={workdir}", "--preset=smoke",
        *cli_overrides(data_dir, **{
            "train.learning_rate": 0.0, "gan.d_learning_rate": 0.01,
            "gan.d_wins_threshold": 0.8, "gan.d_wins_patience": 4,
            "train.num_steps": 200, "train.log_every": 1,
            "train.checkpoint_every": 2, "train.eval_every": 1000})])
    assert code == 1
    line = assert_one_error_line(err, "discriminator has won outright", "since step",
                                 "gan.d_wins_patience=0")
    at_step = int(line.split("at step ")[1].split(")")[0])
    since = int(line.split("since step ")[1].split(" ")[0])
    assert at_step - since + 1 == 4
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert max(r["step"] for r in rows) == at_step - 1
    assert all(s < at_step for s in ckpt_lib.Checkpointer(str(workdir)).steps())


def test_exploding_discriminator_exits_1(data_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, "gan_mnist", [
        f"--workdir={tmp_path / 'wd'}", "--preset=smoke",
        *cli_overrides(data_dir, **{"gan.d_learning_rate": 1e35})])
    assert code == 1
    assert_one_error_line(err, "non-finite train/", "at step", "checkpoint")


@pytest.mark.parametrize("metric", ["g_loss", "d_grad_norm"])
def test_non_finite_player_metric_keeps_last_checkpoint(metric, data_dir, tmp_path,
                                                        monkeypatch):
    from genjax.train import step as step_lib

    original = step_lib.make_update_step

    def poisoned(*args, **kwargs):
        step_fn = original(*args, **kwargs)

        def wrapped(state, batch):
            state, metrics = step_fn(state, batch)
            if int(state.step) == 7:  # NaN after the 7th update, outside the jit
                metrics = dict(metrics, **{metric: np.float32("nan")})
            return state, metrics

        return wrapped

    monkeypatch.setattr(step_lib, "make_update_step", poisoned)
    workdir = tmp_path / "wd"
    config = gan_config(data_dir=data_dir, **{
        "train.log_every": 4, "train.checkpoint_every": 5,
        "eval.sample_quality.num_samples": 0,
        "eval.sample_quality.num_samples_during_training": 0})
    with pytest.raises(loop.TrainingDiverged) as e:
        loop.train_and_evaluate(config, str(workdir), dcgan_mnist.EXPERIMENT.make_task)
    assert (f"non-finite train/{metric} (nan) at step 7; the last good checkpoint "
            "(step 5) is kept") in str(e.value)
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [5]
    assert [r["step"] for r in read_jsonl(workdir / "metrics.jsonl")] == [4, 5]


# --------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020).


def _dot_images(n=64, h=8, w=8):
    """One bright pixel per image, at (3, 4), on a background of -1."""
    x = -np.ones((n, h, w, 1), np.float32)
    x[:, 3, 4, 0] = 1.0
    return jnp.asarray(x)


def test_translation_moves_each_image_by_at_most_an_eighth():
    x = _dot_images()
    y = np.asarray(diffaugment.translation(x, jax.random.key(0)))
    shifts = set()
    for img in y[..., 0]:
        rows, cols = np.nonzero(img == 1.0)
        assert len(rows) == 1  # the dot moved, nothing else became bright
        dy, dx = rows[0] - 3, cols[0] - 4
        assert abs(dy) <= 1 and abs(dx) <= 1  # 8 * 0.125 = 1 pixel
        shifts.add((dy, dx))
        # Pixels shifted in from outside are zeros; the rest is background.
        assert set(np.unique(img)) <= {-1.0, 0.0, 1.0}
    assert len(shifts) > 4  # each image draws its own shift


def test_cutout_zeroes_one_square_of_half_the_size_per_image():
    x = jnp.ones((32, 8, 8, 1))
    y = np.asarray(diffaugment.cutout(x, jax.random.key(1)))
    holes = y[..., 0] == 0.0
    assert set(np.unique(y)) == {0.0, 1.0}
    for hole in holes:
        rows, cols = np.nonzero(hole)
        # A 4x4 square, clipped where it crosses an edge.
        assert 1 <= len(rows) <= 16
        assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
    assert holes.sum(axis=(1, 2)).max() == 16  # some squares lie wholly inside


def test_color_shifts_and_scales_each_image_and_passes_gradients():
    x = jax.random.uniform(jax.random.key(2), (16, 6, 6, 3), minval=-1, maxval=1)
    y = diffaugment.color(x, jax.random.key(3))
    assert y.shape == x.shape
    assert len({round(float(m), 4) for m in jnp.mean(y - x, axis=(1, 2, 3))}) > 8
    grad = jax.grad(lambda x: jnp.sum(diffaugment.diff_augment(
        x, ("color", "translation", "cutout"), jax.random.key(4)) ** 2))(x)
    assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


def test_policy_parsing_and_identity():
    assert diffaugment.parse_policy("") == ()
    assert diffaugment.parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match="flip"):
        diffaugment.parse_policy("flip")
    x = _dot_images()
    assert diffaugment.diff_augment(x, (), jax.random.key(0)) is x


def test_diff_augment_and_mode_seeking_train(data_dir, tmp_path):
    """DiffAugment reaches the task and transforms only when set; a
    class-conditional DCGAN trains with both few-shot options and logs the
    mode-seeking term."""
    overrides = {"train.num_steps": 4, "train.log_every": 2, "train.checkpoint_every": 4,
                 "train.eval_every": 4, "eval.sample_quality.num_samples": 0,
                 "eval.sample_quality.num_samples_during_training": 0}
    config = gan_config(dcgan_mnist, data_dir=data_dir, **overrides,
                        **{"gan.diff_augment": "color,translation,cutout",
                           "gan.mode_seeking": 1.0, "model.class_conditional": True})
    dataset = data_lib.load_dataset(config.data)
    task = dcgan_mnist.EXPERIMENT.make_task(config, dataset)
    assert task.diff_augment == ("color", "translation", "cutout")
    x = jnp.zeros((4, 8, 8, 1))
    assert not np.allclose(task.augmented(x, jax.random.key(0), 0), x)
    plain = dcgan_mnist.EXPERIMENT.make_task(gan_config(dcgan_mnist, data_dir=data_dir),
                                             dataset)
    assert plain.augmented(x, jax.random.key(0), 0) is x
    loop.train_and_evaluate(config, str(tmp_path / "wd"), dcgan_mnist.EXPERIMENT.make_task)
    rows = read_jsonl(tmp_path / "wd" / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/d_loss" in r] == [2, 4]
    assert all(np.isfinite(r["train/d_loss"]) for r in rows if "train/d_loss" in r)
    # 1 / (image distance / latent distance) of two draws per label: finite, > 0.
    seeking = [r["train/mode_seeking"] for r in rows if "train/mode_seeking" in r]
    assert len(seeking) == 2 and all(0 < v < 1e5 for v in seeking)


@pytest.mark.parametrize("loss", ["minimax", "hinge"])
def test_other_losses_and_r1_train(loss, data_dir, tmp_path):
    config = gan_config(gan_mnist, data_dir=data_dir, **{
        "gan.loss": loss, "gan.r1_gamma": 10.0, "train.num_steps": 6,
        "train.log_every": 3, "train.checkpoint_every": 6,
        "train.eval_every": 100, "eval.sample_quality.num_samples": 0})
    loop.train_and_evaluate(config, str(tmp_path / "wd"), gan_mnist.EXPERIMENT.make_task)
    rows = [r for r in read_jsonl(tmp_path / "wd" / "metrics.jsonl") if "train/r1" in r]
    assert len(rows) == 2
    assert all(r["train/r1"] > 0 and np.isfinite(r["train/d_loss"]) for r in rows)


@pytest.mark.parametrize("override, named", [
    ("--config.gan.loss=wasserstein", ["gan.loss='wasserstein'", "hinge"]),
    ("--config.model.architecture=resnet", ["model.architecture='resnet'", "dcgan"]),
    ("--config.gan.r1_gamma=1.0", ["model.d_norm=none"]),
    ("--config.gan.n_disc=0", ["gan.n_disc=0"]),
    ("--config.model.dense_hidden=-1", ["model.dense_hidden=-1", ">= 0"]),
    ("--config.model.code_classes=1", ["model.code_classes=1", "at least 2"]),
    ("--config.gan.info_weight=-1", ["gan.info_weight=-1", ">= 0"]),
    ("--config.gan.diff_augment=color,flip", ["gan.diff_augment='color,flip'", "flip",
                                              "translation"]),
    ("--config.gan.mode_seeking=-1", ["gan.mode_seeking=-1", ">= 0"]),
])
def test_config_mistakes_exit_2_and_write_nothing(override, named, data_dir,
                                                  tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "dcgan_mnist", [
        f"--workdir={workdir}", "--preset=smoke", *cli_overrides(data_dir), override])
    assert code == 2
    assert_one_error_line(err, *named)
    assert not workdir.exists()


def test_presets_are_complete_recipes():
    for module in (gan_mnist, dcgan_mnist, dcgan_cifar10):
        for preset in ("smoke", "cpu", "paper"):
            config = module.get_config(preset)
            assert config.gan.loss in adversarial.LOSSES
            assert config.train.learning_rate > 0
    assert dcgan_cifar10.get_config("smoke").data.name == "shapes32"
    assert dcgan_cifar10.get_config("paper").data.name == "cifar10"
    paper = dcgan_mnist.get_config("paper")
    assert (paper.train.learning_rate, paper.train.b1) == (2e-4, 0.5)
    assert json.loads(paper.to_json())["model"]["architecture"] == "dcgan"


@pytest.mark.parametrize("shape, cout", [((2, 7, 7, 5), 3), ((1, 4, 6, 2), 1)])
def test_upsample_conv_equals_the_transposed_convolution(shape, cout):
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (4, 4, shape[-1], cout))
    expected = jax.lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = gan_models.upsample_conv(x, kernel)
    assert got.shape == (shape[0], 2 * shape[1], 2 * shape[2], cout)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # And one output pixel by the formula of the docstring, by hand.
    m, n, a, b = 2, 1, 1, 0
    total = np.zeros(cout)
    for u in (0, 1):
        for v in (0, 1):
            i, j = m - 1 + a + u, n - 1 + b + v
            if 0 <= i < shape[1] and 0 <= j < shape[2]:
                total += np.asarray(x[0, i, j]) @ np.asarray(kernel[a + 2 * u, b + 2 * v])
    np.testing.assert_allclose(got[0, 2 * m + a, 2 * n + b], total, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_dcgan_cifar10_smoke_preset_trains_on_colour_shapes(data_dir, tmp_path,
                                                          monkeypatch):
    """The 32x32 colour path end to end: shapes32, three doublings, the
    classifier and metrics on colour images (shrunk so the test is quick:
    the domain classifier trains 100 steps, not the recipe's 500)."""
    from genjax.evaluate import classifier  # pylint: disable=import-outside-toplevel
    monkeypatch.setitem(classifier.RECIPE, "min_steps", 100)
    config = dcgan_cifar10.get_config("smoke")
    config.data.data_dir = str(data_dir)
    config.data.num_train = 1000  # shapes32's optional size keys
    config.data.num_test = 200
    config.eval.batch_size = 100
    config.train.num_steps = 10
    final = loop.train_and_evaluate(config, str(tmp_path / "wd"),
                                    dcgan_cifar10.EXPERIMENT.make_task)
    assert final["eval/num_samples"] == 200
    assert final["eval/classifier_test_accuracy"] > 0.5
    assert final["eval/fd"] > final["eval/fd_floor"]
    grid = tmp_path / "wd" / "samples" / "samples_final.png"
    from PIL import Image
    assert np.asarray(Image.open(grid)).shape[-1] == 3  # colour samples


@pytest.mark.parametrize("d_norm", ["none", "spectral"])
def test_r1_with_a_batch_norm_free_dcgan_from_the_command_line(d_norm, data_dir,
                                                               tmp_path, capsys):
    """``--config.model.d_norm=none`` (parsed as None) means no batch norm,
    which R1 needs, and so does ``spectral``; the run trains and the penalty
    is logged."""
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "dcgan_mnist", [
        f"--workdir={workdir}", "--preset=smoke",
        *cli_overrides(data_dir, **{"model.d_norm": d_norm, "gan.r1_gamma": 1.0,
                                    "gan.loss": "hinge",
                                    "train.num_steps": 4, "train.log_every": 2,
                                    "train.checkpoint_every": 4,
                                    "train.eval_every": 100,
                                    "eval.sample_quality.num_samples": 0})])
    assert code == 0, err
    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/r1" in r]
    assert len(rows) == 2 and all(r["train/r1"] > 0 for r in rows)
    assert read_json(workdir / "config.json")["model"]["d_norm"] == d_norm


def test_spectral_norm_divides_each_discriminator_layer_by_its_top_singular_value():
    d = gan_models.DCGANDiscriminator(features=4, norm="spectral", hidden=6)
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 1))
    variables = d.init(jax.random.key(1), x, train=False)
    layers = ("down0", "down1", "hidden", "logit")
    assert set(variables["params"]) == set(layers)  # no batch norm
    train_call = jax.jit(lambda v: d.apply(v, x, train=True,
                                           mutable=["batch_stats"]))
    for _ in range(50):  # one power iteration per training call
        _, stats = train_call(variables)
        variables = {"params": variables["params"], **stats}
    for name in layers:
        kernel = np.asarray(variables["params"][name]["kernel"])
        top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        sigma = variables["batch_stats"][f"{name}_spectral"][f"{name}/kernel/sigma"]
        np.testing.assert_allclose(sigma, top, rtol=1e-3)
    # Evaluation calls leave the estimates alone.
    _, stats = d.apply(variables, x, train=False, mutable=["batch_stats"])
    assert_trees_bitwise_equal(stats["batch_stats"], variables["batch_stats"])
    # Each layer sees only its weight's direction: scaling every kernel
    # leaves the logits unchanged (the biases start at zero and leaky ReLU
    # is positively homogeneous), unlike the same network without the norm.
    def logits(norm, scale):
        net = gan_models.DCGANDiscriminator(features=4, norm=norm, hidden=6)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: p * scale if "kernel" in str(path[-1]) else p,
            variables["params"])
        extra = {"batch_stats": variables["batch_stats"]} if norm == "spectral" else {}
        return np.asarray(net.apply({"params": params, **extra}, x, train=True,
                                    mutable=list(extra))[0])
    np.testing.assert_allclose(logits("spectral", 3.0), logits("spectral", 1.0),
                               rtol=1e-4, atol=1e-6)
    assert not np.allclose(logits("none", 3.0), logits("none", 1.0), rtol=1e-2)


@pytest.mark.slow
def test_infogan_code_feeds_the_generator_and_is_read_by_q(data_dir, tmp_path):
    """``model.code_classes``: latents end in a uniform one-hot code, D's Q head
    reads it back, and the code's cross-entropy enters both players' losses."""
    config = gan_config(data_dir=data_dir, **{
        "model.code_classes": 4, "train.num_steps": 4, "train.log_every": 2,
        "train.checkpoint_every": 4, "train.eval_every": 100,
        "eval.sample_quality.num_samples": 0})
    workdir = tmp_path / "wd"
    loop.train_and_evaluate(config, str(workdir), dcgan_mnist.EXPERIMENT.make_task)
    rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/info_loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    # InfoGAN's figure: one row per code, the same noise down each column.
    from PIL import Image
    grid = np.asarray(Image.open(workdir / "samples" / "codes_final.png"))
    assert grid.shape[0] < grid.shape[1]  # 4 rows of 10
    # Q starts near indifferent: about log 4 nats per code.
    assert all(abs(r["train/info_loss"] - math.log(4)) < 0.1 for r in rows)
    assert all(0 <= r["train/code_accuracy"] <= 1 for r in rows)

    run = loop.build(config, str(workdir), dcgan_mnist.EXPERIMENT.make_task)
    run.checkpointer.close()
    task = run.task
    latents = config.model.latents
    z = task.latent(jax.random.key(0), 4000)
    assert z.shape == (4000, latents + 4)
    codes = np.asarray(task.codes_of(z))
    np.testing.assert_array_equal(np.asarray(z[:, latents:]), np.eye(4)[codes])
    assert np.abs(np.bincount(codes, minlength=4) / 4000 - 0.25).max() < 0.03
    state = jax.device_get(run.init_state_fn())
    batch = {"image": jnp.full((8, 8, 8, 1), 0.5)}
    d_params, g_params = state.params["discriminator"], state.params["generator"]
    (logits, code_logits), _ = task.discriminate(
        d_params, state.model_state["discriminator"], batch["image"] * 2 - 1,
        jax.random.key(1), train=False, with_code=True)
    assert logits.shape == (8,) and code_logits.shape == (8, 4)
    images = task.by_code({"generator": g_params,
                           "generator_state": state.model_state["generator"]},
                          jax.random.key(3), num_columns=3)
    assert images.shape == (12, 8, 8, 1)
    assert not np.allclose(images[0], images[3])  # codes 0 and 1, same noise
    # The info weight adds exactly the logged cross-entropy to each loss.
    losses = {}
    for weight in (0.0, 1.0):
        config.gan.info_weight = weight
        d_loss, (metrics, _) = task.d_loss_fn(d_params, g_params, state.model_state,
                                              batch, jax.random.key(2))
        g_loss, _ = task.g_loss_fn(g_params, d_params, state.model_state, batch,
                                   jax.random.key(2))
        losses[weight] = (float(d_loss), float(g_loss), float(metrics["info_loss"]))
    info = losses[1.0][2]
    assert losses[1.0][0] - losses[0.0][0] == pytest.approx(info, rel=1e-5)
    assert losses[1.0][1] - losses[0.0][1] == pytest.approx(math.log(4), abs=0.1)


def test_a_code_needs_the_dcgan(data_dir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "gan_mnist", [
        f"--workdir={workdir}", "--preset=smoke",
        *cli_overrides(data_dir, **{"model.code_classes": 10})])
    assert code == 2
    assert_one_error_line(err, "model.code_classes=10", "dcgan")
    assert not workdir.exists()
