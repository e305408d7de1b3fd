"""Interrupted runs lose nothing: SIGKILL at five moments, SIGTERM and SIGINT.

A 200-step vae_digits smoke run (checkpoints every 50 steps, an evaluation
at step 100, log rows every 10) is the reference, trained once in-process.
The interrupted runs are real training processes (the command line) that a
signal ends; each is resumed by running the same command again, and the
end result must equal the reference bitwise: parameters, optimiser state,
data position, metrics.jsonl and eval.json.

To hit a moment exactly, the child process wraps a function of the loop (or
watches its own workdir from a thread) and sends the signal to itself; the
signal is as real as one from outside.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest

from genjax import cli, registry
from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop

from conftest import (REPO, assert_trees_bitwise_equal, read_json,
                      restore_latest, subprocess_env, train)

OVERRIDES = [("train.num_steps", "200"), ("train.log_every", "10"),
             ("train.checkpoint_every", "50"), ("train.eval_every", "100")]
FLAGS = ["--preset=smoke", *[f"--config.{k}={v}" for k, v in OVERRIDES]]

# The child: ``python -c CHILD MOMENT SIGNAL WORKDIR FLAGS...`` runs the
# vae_digits command line and sends itself SIGNAL at MOMENT.
CHILD = r"""
import os, signal, sys, threading, time
from genjax import cli
from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop

moment, signum, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def send():
    sys.stdout.flush()
    os.kill(os.getpid(), signum)

def when(condition):
    def watch():
        while not condition():
            time.sleep(0.0005)
        send()
    threading.Thread(target=watch, daemon=True).start()

def listing(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []

def logged(step):
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            return any(f'"step": {step},' in line for line in f)
    except FileNotFoundError:
        return False

kind, _, number = moment.rpartition("_")
if kind == "after_save":  # right after a checkpoint is complete on disk
    save = ckpt_lib.Checkpointer.save
    def save_then_signal(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        if step == int(number):
            send()
    ckpt_lib.Checkpointer.save = save_then_signal
elif kind == "mid_save":  # orbax is writing the step into its temporary directory
    when(lambda: any(n.startswith(number + ".orbax-checkpoint-tmp")
                     for n in listing(os.path.join(workdir, "checkpoints"))))
elif kind == "mid_training":  # between checkpoints, once a log row is written
    when(lambda: logged(int(number)))
elif kind in ("mid_eval", "final_eval"):  # inside an evaluation
    run_eval = loop.run_eval
    def eval_then_signal(run, params, *, final):
        if final == (kind == "final_eval"):
            send()
            time.sleep(5)  # A signal handler runs at the next bytecode.
        return run_eval(run, params, final=final)
    loop.run_eval = eval_then_signal
elif moment != "none":
    raise SystemExit(f"unknown moment {moment}")
sys.exit(cli.run("vae_digits", sys.argv[4:]))
"""


def run_child(moment: str, signum: int, workdir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, moment, str(int(signum)), str(workdir),
         f"--workdir={workdir}", *FLAGS],
        cwd=REPO, env=subprocess_env(1), capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def config():
    return cli.build_config(registry.get("vae_digits"), "smoke", OVERRIDES)


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("uninterrupted") / "wd"
    train(config, workdir)
    return workdir


def assert_same_end(config, workdir, reference, *, same_log=True):
    step_a, state_a, data_a = restore_latest(config, workdir)
    step_b, state_b, data_b = restore_latest(config, reference)
    assert step_a == step_b == 200 and data_a == data_b
    assert_trees_bitwise_equal(state_a, state_b)
    assert loop.without_timings(read_json(workdir / "eval.json")) == \
        loop.without_timings(read_json(reference / "eval.json"))
    if same_log:
        got = (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        want = (reference / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(got) == len(want) == 20 + 1 + 1  # 20 log rows, 2 evals
        for i, (a, b) in enumerate(zip(got, want)):
            assert a == b, f"line {i + 1} differs"


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_at_five_moments_then_resume_equals_uninterrupted_run(
        config, reference, tmp_path):
    workdir = tmp_path / "wd"
    checkpoints = workdir / "checkpoints"
    # (moment, complete checkpoints after the kill, resumed from)
    plan = [("after_save_50", [50], None),
            ("mid_save_100", [50], 50),
            ("mid_eval_100", [50], 50),
            ("mid_training_130", [50, 100], 50),
            ("final_eval_200", [100, 150, 200], 100)]
    for moment, steps_after, resumed_from in plan:
        proc = run_child(moment, signal.SIGKILL, workdir)
        assert proc.returncode == -signal.SIGKILL, (moment, proc.stderr[-3000:])
        if resumed_from is not None:
            assert f"resuming from step {resumed_from}" in proc.stdout, moment
        assert not (workdir / "eval.json").exists(), moment
        if moment.startswith("mid_save"):
            # Killed while orbax wrote step 100: its temporary directory is
            # left, and it is not a step.
            assert any(n.startswith("100.orbax-checkpoint-tmp")
                       for n in os.listdir(checkpoints)), os.listdir(checkpoints)
        assert ckpt_lib.Checkpointer(str(workdir)).steps() == steps_after, moment
    # The command line built the same config as this test did.
    assert read_json(workdir / "config.json") == json.loads(config.to_json())
    proc = run_child("none", 0, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step 200" in proc.stdout
    assert not list(checkpoints.glob("*orbax-checkpoint-tmp*"))
    assert ckpt_lib.Checkpointer(str(workdir)).steps() == [100, 150, 200]
    assert_same_end(config, workdir, reference)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_saves_at_the_next_step_and_the_same_command_resumes(
        config, reference, tmp_path):
    workdir = tmp_path / "wd"
    proc = run_child("mid_training_70", signal.SIGTERM, workdir)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("genjax:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "stopped by SIGTERM after step" in lines[0]
    assert "run the same command again to resume" in lines[0]
    stopped = int(lines[0].split("after step ")[1].split()[0])
    assert 70 <= stopped < 200
    # The checkpoint of the step it stopped at, besides the periodic one.
    steps = ckpt_lib.Checkpointer(str(workdir)).steps()
    assert steps[-1] == stopped and set(steps) - {stopped} <= {50}
    assert not (workdir / "eval.json").exists()
    proc = run_child("none", 0, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from step {stopped}" in proc.stdout
    # The log gains the row of the step it stopped at (unless that was a log
    # step anyway); the state and the evaluation are the reference's.
    assert_same_end(config, workdir, reference, same_log=stopped % 10 == 0)


def test_sigint_in_process_saves_and_raises_preempted(config, reference, tmp_path,
                                                      caplog):
    """Ctrl-C in a notebook or a script calling train_and_evaluate: the
    checkpoint is saved and ``Preempted`` says how to resume; the handlers
    before the run are back afterwards."""
    workdir = tmp_path / "wd"
    before = signal.getsignal(signal.SIGINT)
    interrupted = threading.Event()

    def interrupt_once_logged():
        while not interrupted.is_set():
            path = workdir / "metrics.jsonl"
            if path.exists() and '"step": 30,' in path.read_text(encoding="utf-8"):
                os.kill(os.getpid(), signal.SIGINT)
                interrupted.set()
            else:
                interrupted.wait(0.001)

    watcher = threading.Thread(target=interrupt_once_logged, daemon=True)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="genjax"), \
                pytest.raises(loop.Preempted) as info:
            train(config, workdir)
    finally:
        interrupted.set()
    assert signal.getsignal(signal.SIGINT) is before
    assert "received SIGINT" in caplog.text
    stopped = info.value.step
    assert info.value.exit_code == 130 and 30 <= stopped < 200
    assert ckpt_lib.Checkpointer(str(workdir)).steps()[-1] == stopped
    assert f"resume from step {stopped}" in str(info.value)
    train(config, workdir)
    assert_same_end(config, workdir, reference, same_log=stopped % 10 == 0)
