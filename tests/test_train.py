"""The training loop end to end on vae_digits: outputs, determinism, devices,
leftover and damaged checkpoints, divergence.

Most runs are in-process ``train_and_evaluate`` calls on one CPU device with
the 20-step ``SHORT`` config (checkpoints at 10 and 20). Runs on 8 simulated
CPU devices happen in one subprocess (the device count is fixed when JAX
starts). Killed and interrupted runs: test_interrupt.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop
from genjax.train import step as step_lib

from conftest import (DAMAGED_CHECKPOINT_MARKS, SHORT,
                      assert_one_error_line,
                      assert_trees_bitwise_equal, leaves_with_paths, read_json,
                      read_jsonl, restore_latest, run_cli, run_python,
                      short_config, train)

SHORT_FLAGS = [f"--config.{k}={v}" for k, v in SHORT.items()]

pytestmark = DAMAGED_CHECKPOINT_MARKS


def without_seconds(eval_json: dict) -> dict:
    """eval.json minus its wall-clock entry (metrics.jsonl has none)."""
    return loop.without_timings(eval_json)


def drop_checkpoint(workdir, step: int) -> None:
    """Makes ``workdir`` look like a run stopped right after an earlier save."""
    shutil.rmtree(workdir / "checkpoints" / str(step))
    (workdir / "eval.json").unlink()


def state_files(step_dir) -> dict[str, int]:
    """Relative path -> size of every file of one checkpoint step."""
    out = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, step_dir)] = os.path.getsize(path)
    return out


def damage(step_dir) -> str:
    """Deletes the largest array data file of a checkpoint's state."""
    data_files = [p for p in state_files(step_dir)
                  if p.startswith("state") and f"{os.sep}d{os.sep}" in p]
    victim = max(data_files, key=lambda p: os.path.getsize(step_dir / p))
    os.remove(step_dir / victim)
    return victim


def assert_close_rows(rows, ref_rows, rtol):
    """Same steps and keys; every value within ``rtol``."""
    assert [sorted(r) for r in rows] == [sorted(r) for r in ref_rows]
    for row, ref in zip(rows, ref_rows):
        assert row["step"] == ref["step"]
        for key in ref:
            np.testing.assert_allclose(row[key], ref[key], rtol=rtol,
                                       err_msg=f"{key} at step {ref['step']}")


def assert_trees_close(a, b, rtol, atol):
    la, lb = leaves_with_paths(a), leaves_with_paths(b)
    assert la.keys() == lb.keys()
    for key in la:
        np.testing.assert_allclose(la[key], lb[key], rtol=rtol, atol=atol,
                                   err_msg=key)


# --------------------------------------------------------------------------
# Outputs.


def test_outputs_of_a_training_run(short_run):
    workdir, final = short_run
    rows = read_jsonl(workdir / "metrics.jsonl")
    for row in rows:
        assert isinstance(row["step"], int)
        others = [k for k in row if k != "step"]
        assert others and all(k.startswith(("train/", "eval/")) for k in others), row
        assert all(isinstance(row[k], float) for k in others), row
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    eval_steps = [r["step"] for r in rows if "eval/neg_elbo" in r]
    assert train_steps == list(range(2, 21, 2))
    assert eval_steps == [10, 20]
    assert "eval/nll_iwae" in rows[-1]  # the final evaluation's k = 10
    saved = read_json(workdir / "eval.json")
    assert saved.pop("step") == 20 and saved == final  # what train_and_evaluate returned
    assert final.keys() >= {"eval/neg_elbo", "eval/nll_iwae", "eval/kl",
                            "eval/reconstruction_nll"}
    # The final row of metrics.jsonl is that evaluation (less its wall time).
    assert rows[-1] == {"step": 20, **without_seconds(final)}
    # The run learned something in 20 steps.
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < losses[0]

    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)

    pngs = sorted(p.name for p in (workdir / "samples").glob("*.png"))
    assert {"samples_final.png", "reconstructions_final.png",
            "interpolation_final.png", "samples_step0000010.png"} <= set(pngs)
    with Image.open(workdir / "samples" / "samples_final.png") as im:
        im.load()
        assert im.width >= 4 * 8 and im.height >= 4 * 8
        assert len(set(np.asarray(im).ravel().tolist())) > 2  # not blank

    assert read_json(workdir / "config.json") == json.loads(short_config().to_json())
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [10, 20]


def test_eval_and_sample_modes(short_run, copy_workdir, capsys):
    workdir = copy_workdir(short_run[0])
    trained_eval = read_json(workdir / "eval.json")
    (workdir / "eval.json").unlink()
    flags = [f"--workdir={workdir}", "--preset=smoke", *SHORT_FLAGS]

    code, _, err = run_cli(capsys, "vae_digits", flags + ["--mode=eval"])
    assert code == 0, err
    evaluated = read_json(workdir / "eval.json")
    assert evaluated["step"] == 20
    assert {"eval/neg_elbo", "eval/nll_iwae"} <= evaluated.keys()
    # The same parameters and evaluation key as the end of training.
    assert without_seconds(evaluated) == without_seconds(trained_eval)

    code, _, err = run_cli(capsys, "vae_digits",
                           flags + ["--mode=sample", "--num_samples=7"])
    assert code == 0, err
    samples = np.load(workdir / "samples.npy")
    assert samples.dtype == np.float32 and samples.shape == (7, 8, 8, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    assert np.ptp(samples, axis=0).max() > 0  # not seven copies
    with Image.open(workdir / "samples" / "sample_mode.png") as im:
        im.load()
    # Inference modes leave the checkpoints alone.
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [10, 20]


def test_other_model_config_is_refused_and_checkpoints_kept(short_run, copy_workdir,
                                                           capsys):
    """A checkpoint of another model is not damage: exit 1, nothing moved."""
    workdir = copy_workdir(short_run[0])
    cases = [
        ("eval", "--config.model.latents=5", ["saved (4,", "needs (5,"]),
        ("train", "--config.model.latents=5", ["saved (4,", "needs (5,"]),
        # An EMA copy the checkpoint does not have: a different structure.
        ("train", "--config.train.ema_decay=0.99", ["ema_params/", "saved absent"]),
    ]
    for mode, override, texts in cases:
        code, _, err = run_cli(capsys, "vae_digits",
                               [f"--workdir={workdir}", "--preset=smoke",
                                f"--mode={mode}", *SHORT_FLAGS, override])
        assert code == 1, err
        assert_one_error_line(err, "step 20", "does not fit", "--preset", *texts)
        assert not (workdir / "checkpoints_damaged").exists()
        assert ckpt_lib.Checkpointer(str(workdir)).steps() == [10, 20]
    assert (workdir / "metrics.jsonl").read_bytes() == (
        short_run[0] / "metrics.jsonl").read_bytes()


# --------------------------------------------------------------------------
# Determinism.


def test_same_seed_is_bitwise_identical(short_run, tmp_path):
    ref, _ = short_run
    again = tmp_path / "again"
    train(short_config(), again)
    assert (again / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert without_seconds(read_json(again / "eval.json")) == without_seconds(
        read_json(ref / "eval.json"))
    step_a, state_a, data_a = restore_latest(short_config(), ref)
    step_b, state_b, data_b = restore_latest(short_config(), again)
    assert step_a == step_b == 20 and data_a == data_b
    assert_trees_bitwise_equal(state_a, state_b)
    for name in ("samples_final.png", "reconstructions_final.png"):
        assert (again / "samples" / name).read_bytes() == (
            ref / "samples" / name).read_bytes()


def test_different_seed_differs(short_run, tmp_path):
    ref, _ = short_run
    other = tmp_path / "seed1"
    train(short_config(seed=1), other)
    rows, ref_rows = read_jsonl(other / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    assert rows[0]["train/loss"] != ref_rows[0]["train/loss"]
    _, state_a, data_a = restore_latest(short_config(), ref)
    _, state_b, data_b = restore_latest(short_config(seed=1), other)
    assert data_a != data_b  # the data order depends on the seed too
    a, b = leaves_with_paths(state_a.params), leaves_with_paths(state_b.params)
    assert all(not np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------
# 1 vs 8 devices, and checkpoints moving between device counts.

WORKER = r"""
import json, logging, sys
import jax
jax.config.update("jax_numpy_rank_promotion", "raise")
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
logging.getLogger("genjax").setLevel(logging.INFO)
from experiments import vae_digits
from genjax.train import loop
spec = json.loads(sys.argv[1])
out = {"device_count": jax.device_count()}
for job in spec["jobs"]:
    config = vae_digits.get_config("smoke")
    for key, value in spec["overrides"].items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        setattr(node, leaf, value)
    fn = {"train": loop.train_and_evaluate, "eval": loop.evaluate}[job["op"]]
    print("JOB", job["workdir"], flush=True)
    out[job["workdir"]] = fn(config, job["workdir"], vae_digits.EXPERIMENT.make_task)
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def eight_devices(short_run, tmp_path_factory):
    """One 8-device process: a fresh run, a resume of a 1-device checkpoint,
    and an evaluation of a 1-device run."""
    base = tmp_path_factory.mktemp("eight")
    fresh = base / "fresh8"
    resumed = base / "resumed_1_to_8"
    shutil.copytree(short_run[0], resumed)
    drop_checkpoint(resumed, 20)
    evaluated = base / "eval_on_8"
    shutil.copytree(short_run[0], evaluated)
    (evaluated / "eval.json").unlink()
    spec = {"overrides": SHORT, "jobs": [
        {"op": "train", "workdir": str(fresh)},
        {"op": "train", "workdir": str(resumed)},
        {"op": "eval", "workdir": str(evaluated)},
    ]}
    proc = run_python(["-c", WORKER, json.dumps(spec)], devices=8, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    logs = {}
    for chunk in proc.stdout.split("JOB ")[1:]:
        path, _, text = chunk.partition("\n")
        logs[path] = text
    return {"fresh": fresh, "resumed": resumed, "evaluated": evaluated,
            "result": result, "logs": logs}


def test_eight_devices_match_one_device(short_run, eight_devices):
    ref = short_run[0]
    fresh = eight_devices["fresh"]
    assert eight_devices["result"]["device_count"] == 8
    assert "on 8 device(s)" in eight_devices["logs"][str(fresh)]
    rows, ref_rows = read_jsonl(fresh / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert len(rows) == len(ref_rows) == 12
    # Every logged train and eval value, at every logged step.
    assert_close_rows(rows, ref_rows, rtol=1e-4)
    assert ckpt_lib.Checkpointer(str(fresh)).steps() == [10, 20]
    # Restoring the 8-device checkpoint here (1 device) works, and the
    # parameters agree with the 1-device run's.
    _, state8, _ = restore_latest(short_config(), fresh)
    _, state1, _ = restore_latest(short_config(), ref)
    assert int(state8.step) == 20
    assert_trees_close(state8.params, state1.params, rtol=1e-4, atol=1e-5)
    assert_trees_close(state8.opt_state, state1.opt_state, rtol=1e-3, atol=1e-6)


def test_one_device_checkpoint_resumes_on_eight(short_run, eight_devices):
    ref = short_run[0]
    resumed = eight_devices["resumed"]
    log_text = eight_devices["logs"][str(resumed)]
    assert "resuming from step 10" in log_text
    rows, ref_rows = read_jsonl(resumed / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    # Rows up to the checkpoint are the 1-device run's own; the rest agree.
    head = [r for r in ref_rows if r["step"] <= 10]
    assert rows[:len(head)] == head
    assert_close_rows(rows, ref_rows, rtol=1e-4)
    _, state, _ = restore_latest(short_config(), resumed)
    _, state1, _ = restore_latest(short_config(), ref)
    assert int(state.step) == 20
    assert_trees_close(state.params, state1.params, rtol=1e-4, atol=1e-5)


def test_one_device_run_evaluates_on_eight(short_run, eight_devices):
    got = read_json(eight_devices["evaluated"] / "eval.json")
    ref = read_json(short_run[0] / "eval.json")
    assert got["step"] == 20
    assert without_seconds(got).keys() == without_seconds(ref).keys()
    for key in without_seconds(ref):
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key


def test_eight_device_checkpoint_resumes_on_one(short_run, eight_devices,
                                                copy_workdir, caplog):
    workdir = copy_workdir(eight_devices["fresh"])
    drop_checkpoint(workdir, 20)
    with caplog.at_level(logging.INFO, logger="genjax"):
        train(short_config(), workdir)
    assert "resuming from step 10" in caplog.text
    rows = read_jsonl(workdir / "metrics.jsonl")
    rows8 = read_jsonl(eight_devices["fresh"] / "metrics.jsonl")
    assert rows[:6] == rows8[:6]  # steps 2..10 and the eval at 10, kept as written
    assert_close_rows(rows, read_jsonl(short_run[0] / "metrics.jsonl"), rtol=1e-4)
    _, state, _ = restore_latest(short_config(), workdir)
    _, state1, _ = restore_latest(short_config(), short_run[0])
    assert_trees_close(state.params, state1.params, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Kill and resume (SIGKILL, SIGTERM and SIGINT: test_interrupt.py).

def test_leftover_tmp_checkpoint_is_not_a_step(short_run, copy_workdir):
    """A temporary directory of the newest step does not shadow the real one."""
    workdir = copy_workdir(short_run[0])
    shutil.copytree(workdir / "checkpoints" / "20",
                    workdir / "checkpoints" / "30.orbax-checkpoint-tmp-99")
    checkpointer = ckpt_lib.Checkpointer(str(workdir))
    assert checkpointer.steps() == [10, 20]
    checkpointer.close()
    step, _, _ = restore_latest(short_config(), workdir)
    assert step == 20


# --------------------------------------------------------------------------
# Damaged checkpoints.


def test_damaged_latest_checkpoint_is_moved_aside(short_run, copy_workdir, caplog):
    ref = short_run[0]
    workdir = copy_workdir(ref)
    before = state_files(workdir / "checkpoints" / "20")
    victim = damage(workdir / "checkpoints" / "20")
    with caplog.at_level(logging.INFO, logger="genjax"):
        train(short_config(), workdir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("checkpoint at step 20 is damaged" in m for m in warnings), warnings
    assert "resuming from step 10" in caplog.text
    # Moved aside whole (less the file this test deleted), not deleted.
    moved = workdir / "checkpoints_damaged" / "20"
    assert state_files(moved) == {k: v for k, v in before.items() if k != victim}
    # The run completed from step 10 exactly as the uninterrupted one.
    assert (workdir / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [10, 20]
    _, state, _ = restore_latest(short_config(), workdir)
    _, state_ref, _ = restore_latest(short_config(), ref)
    assert_trees_bitwise_equal(state, state_ref)


def test_all_checkpoints_damaged_exit_1_and_nothing_deleted(short_run, copy_workdir,
                                                            capsys):
    workdir = copy_workdir(short_run[0])
    expected = {}
    for step in (10, 20):
        files = state_files(workdir / "checkpoints" / str(step))
        victim = damage(workdir / "checkpoints" / str(step))
        expected[step] = {k: v for k, v in files.items() if k != victim}
    metrics = (workdir / "metrics.jsonl").read_bytes()
    eval_json = (workdir / "eval.json").read_bytes()
    code, _, err = run_cli(capsys, "vae_digits",
                           [f"--workdir={workdir}", "--preset=smoke", *SHORT_FLAGS])
    assert code == 1
    assert_one_error_line(err, "no usable checkpoint", "all 2 are damaged",
                          "checkpoints_damaged", "new --workdir")
    for step in (10, 20):
        assert state_files(workdir / "checkpoints_damaged" / str(step)) == expected[step]
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    assert (workdir / "eval.json").read_bytes() == eval_json
    assert len(list((workdir / "samples").glob("*.png"))) == 6


# --------------------------------------------------------------------------
# Divergence.


def _poison(monkeypatch, at_step: int, metric: str):
    """Makes ``metric`` NaN after update ``at_step`` (outside the jitted step,
    so everything computed is exactly what a normal run computes)."""
    original = step_lib.make_update_step

    def make(*args, **kwargs):
        step_fn = original(*args, **kwargs)

        def wrapped(state, batch):
            state, metrics = step_fn(state, batch)
            if int(state.step) == at_step:
                metrics = dict(metrics, **{metric: np.float32("nan")})
            return state, metrics

        return wrapped

    monkeypatch.setattr(step_lib, "make_update_step", make)


@pytest.mark.parametrize("metric, at_step, logged_at", [
    ("loss", 13, 14),       # noticed at the next logged step
    ("grad_norm", 20, 20),  # a finite loss with a NaN gradient, at a save step
])
def test_non_finite_metric_stops_training_and_keeps_last_checkpoint(
        short_run, copy_workdir, tmp_path, monkeypatch, metric, at_step, logged_at):
    _poison(monkeypatch, at_step, metric)
    workdir = tmp_path / "diverged"
    with pytest.raises(loop.TrainingDiverged) as e:
        train(short_config(), workdir)
    message = str(e.value)
    assert f"non-finite train/{metric} (nan) at step {at_step};" in message
    assert "last good checkpoint (step 10) is kept" in message
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [10]
    assert not (workdir / "eval.json").exists()
    # Nothing from the bad steps was logged; what was logged is the normal run's.
    rows = read_jsonl(workdir / "metrics.jsonl")
    assert max(r["step"] for r in rows) == logged_at - 2
    ref_rows = read_jsonl(short_run[0] / "metrics.jsonl")
    assert rows == ref_rows[:len(rows)]
    # The checkpoint at 10 is intact: the normal run's state at step 10.
    ref10 = copy_workdir(short_run[0])
    drop_checkpoint(ref10, 20)
    _, state, _ = restore_latest(short_config(), workdir)
    _, state_ref, _ = restore_latest(short_config(), ref10)
    assert int(state.step) == 10
    assert_trees_bitwise_equal(state, state_ref)


def test_diverging_learning_rate_exits_1(tmp_path, capsys):
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "vae_digits",
                           [f"--workdir={workdir}", "--preset=smoke",
                            "--config.train.learning_rate=1e30"])
    assert code == 1
    line = assert_one_error_line(err, "non-finite train/", "at step",
                                 "no checkpoint had been written",
                                 "train.learning_rate")
    # The first step with huge parameters (the loss of step 1 is finite).
    assert int(line.split("at step ")[1].split(";")[0]) in (2, 3, 4, 5)
