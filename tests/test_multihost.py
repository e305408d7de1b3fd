"""Several processes with JAX's own runtime: 2 local CPU processes x 2
devices each train and evaluate exactly as 1 process x 4 devices does, and
stop together when one of them gets SIGTERM.

The processes find each other through ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (``jax.distributed.initialize``'s
own arguments) and run their collectives over gloo, JAX's default on CPU.
Every wait has a timeout, so a hang fails the test instead of CI.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from genjax import distributed
from genjax.config import ConfigError

from conftest import REPO, read_json, read_jsonl, subprocess_env

FLAGS = ["--preset=smoke", "--config.train.num_steps=20",
         "--config.train.log_every=5", "--config.train.checkpoint_every=10",
         "--config.train.eval_every=10"]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, devices: int, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.vae_digits", f"--workdir={workdir}",
         *FLAGS, *extra],
        cwd=REPO, env=subprocess_env(devices), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Waits for every process (killing them all at the first timeout)."""
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            out.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return out


def _files(workdir) -> list[str]:
    """The files a run wrote, but checkpoints (TensorBoard's event files by
    kind: their names hold a time)."""
    return sorted(
        "tensorboard/events" if p.parent.name == "tensorboard" and p.name.startswith("events")
        else str(p.relative_to(workdir))
        for p in workdir.rglob("*") if p.is_file() and "checkpoints" not in p.parts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multihost")
    one, two = base / "one_process", base / "two_processes"
    port = _free_port()
    multi = [_start(two, 2, [f"--coordinator_address=localhost:{port}",
                             "--num_processes=2", f"--process_id={i}"])
             for i in range(2)]
    results = _finish(multi)
    single = _finish([_start(one, 4, [])])[0]
    return one, two, single, results


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_train_and_evaluate_as_one_with_four_devices(runs):
    one, two, single, results = runs
    assert single[0] == 0, single[2][-3000:]
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    chief_out, other_out = results[0][1], results[1][1]
    assert "process 0 of 2" in chief_out and "on 4 device(s)" in chief_out
    assert "step 20/20" in chief_out and "step 20/20" not in other_out
    assert "on 4 device(s)" in single[1]

    rows, ref = read_jsonl(two / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in ref] == [5, 10, 10, 15, 20, 20]
    for row, want in zip(rows, ref):
        assert row.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(row[key], want[key], rtol=2e-5, atol=1e-6,
                                       err_msg=f"{key} at step {want['step']}")
    got, want = read_json(two / "eval.json"), read_json(one / "eval.json")
    assert got.keys() == want.keys()
    for key in want:
        if not key.endswith("seconds"):
            np.testing.assert_allclose(got[key], want[key], rtol=2e-5, err_msg=key)


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_write_one_set_of_files(runs):
    one, two, _, _ = runs
    assert _files(two) == _files(one)
    assert len(list((two / "tensorboard").glob("events*"))) == 1
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["10", "20"]
    assert read_json(two / "config.json") == read_json(one / "config.json")


def test_one_process_needs_no_runtime():
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False


@pytest.mark.parametrize("kwargs, words", [
    ({"num_processes": 0}, ["--num_processes=0"]),
    ({"num_processes": 2, "process_id": 2}, ["--process_id=2", "[0, "]),
    ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0},
     ["--coordinator_address=localhost", "HOST:PORT"]),
])
def test_bad_distributed_flags_are_one_line_errors(kwargs, words):
    with pytest.raises(ConfigError) as info:
        distributed.initialize(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_config_hash_is_stable_and_sees_every_key():
    a = {"train": {"batch_size": 64}, "seed": 0}
    assert distributed.config_hash(a) == distributed.config_hash(
        {"seed": 0, "train": {"batch_size": 64}})
    assert distributed.config_hash(a) != distributed.config_hash(
        {"train": {"batch_size": 64}, "seed": 1})
    assert 0 <= distributed.config_hash(a) < 2 ** 62


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_process_checkpoint_resumes_on_one_device(runs, tmp_path):
    """Written by 2 processes x 2 devices, read by 1 process x 1 device: the
    state comes back with the restoring run's shardings and the data stream
    goes on from the same position."""
    one, two, _, _ = runs
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / "20")
    (resumed / "eval.json").unlink()
    code, stdout, stderr = _finish([_start(resumed, 1, [])])[0]
    assert code == 0, stderr[-3000:]
    assert "resuming from step 10" in stdout and "on 1 device(s)" in stdout
    rows, ref = read_jsonl(resumed / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in ref]
    for row, want in zip(rows, ref):
        for key in want:
            np.testing.assert_allclose(row[key], want[key], rtol=2e-5, atol=1e-6,
                                       err_msg=f"{key} at step {want['step']}")


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    """JAX's preemption service: a SIGTERM that reaches one host only (as a
    maintenance event may) makes every process save the same step and exit
    with 143."""
    workdir = tmp_path / "wd"
    port = _free_port()
    flags = ["--config.train.num_steps=100000", "--config.train.log_every=10",
             "--config.train.checkpoint_every=100000",
             "--config.train.eval_every=100000"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.vae_digits", f"--workdir={workdir}",
         "--preset=smoke", *flags, f"--coordinator_address=localhost:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=subprocess_env(2), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for i in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT
        metrics = workdir / "metrics.jsonl"
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)
        results = _finish(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    lines = []
    for code, _, stderr in results:
        assert code == 128 + signal.SIGTERM, stderr[-3000:]
        mine = [line for line in stderr.splitlines() if line.startswith("genjax:")]
        assert len(mine) == 1 and "stopped by SIGTERM after step" in mine[0], stderr[-3000:]
        lines.append(mine[0])
    assert lines[0] == lines[1]  # The same step on both.
    stopped = int(lines[0].split("after step ")[1].split()[0])
    assert stopped >= 50
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(stopped)]


@pytest.mark.slow
@pytest.mark.subprocess
def test_processes_with_different_configs_stop_with_one_line(tmp_path):
    """Two processes started with different --config overrides would compile
    different programs and hang in their first collective; instead both stop
    at start-up, before writing anything, with one line naming the fix."""
    workdir = tmp_path / "wd"
    port = _free_port()
    procs = [_start(workdir, 2, [f"--coordinator_address=localhost:{port}",
                                 "--num_processes=2", f"--process_id={i}",
                                 f"--config.seed={i}"])
             for i in range(2)]
    for code, _, stderr in _finish(procs):
        assert code == 2, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, stderr[-3000:]
        assert "do not run the same config" in lines[0]
        assert "same flags and --config overrides" in lines[0]
    assert not (workdir / "checkpoints").exists()
    assert not (workdir / "metrics.jsonl").exists()
