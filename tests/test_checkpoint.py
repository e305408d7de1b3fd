"""Checkpoints never silently lose progress.

Only real damage (a file of a step missing or undecodable) moves a step
aside to ``checkpoints_damaged/``; any other failure to read a step is a
one-line ``CheckpointError`` that moves nothing; a workdir whose checkpoints
were all set aside refuses to train from scratch unless
``train.allow_fresh_start``; and building a run opens no checkpoint manager.

Every test reads a copy of the shared ``short_run`` (checkpoints at steps 10
and 20); one trains (the allowed fresh start).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil

import orbax.checkpoint as ocp
import pytest

from genjax.train import checkpoint as ckpt_lib
from genjax.train import loop

from conftest import (DAMAGED_CHECKPOINT_MARKS, MAKE_TASK, SHORT,
                      assert_one_error_line,
                      assert_trees_bitwise_equal, restore_latest, run_cli,
                      short_config, train)

SHORT_FLAGS = [f"--config.{k}={v}" for k, v in SHORT.items()]

pytestmark = DAMAGED_CHECKPOINT_MARKS


@pytest.fixture(scope="module")
def abstract_state(tmp_path_factory):
    """The abstract TrainState of ``short_config()`` (building writes nothing)."""
    run = loop.build(short_config(), str(tmp_path_factory.mktemp("abstract")),
                     MAKE_TASK)
    return run.abstract_state

def restore_error(workdir, abstract_state) -> str:
    """The CheckpointError message of restoring ``workdir``'s latest step."""
    checkpointer = ckpt_lib.Checkpointer(str(workdir))
    try:
        with pytest.raises(ckpt_lib.CheckpointError) as raised:
            checkpointer.restore_latest(abstract_state)
    finally:
        checkpointer.close()
    return str(raised.value)



def files_of(step_dir) -> dict[str, bytes]:
    """Relative path -> contents of every file of one checkpoint step."""
    out = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, step_dir)] = f.read()
    return out


def largest_array_file(step_dir) -> str:
    """The relative path of the largest array data file of a step's state."""
    data = [p for p in files_of(step_dir)
            if p.startswith("state") and f"{os.sep}d{os.sep}" in p]
    return max(data, key=lambda p: os.path.getsize(os.path.join(step_dir, p)))


def delete_array_file(step_dir) -> str:
    victim = largest_array_file(step_dir)
    os.remove(os.path.join(step_dir, victim))
    return victim


def truncate_array_file(step_dir) -> str:
    victim = largest_array_file(step_dir)
    path = os.path.join(step_dir, victim)
    os.truncate(path, os.path.getsize(path) // 2)
    return victim


def delete_state_metadata(step_dir) -> str:
    victim = os.path.join("state", "_METADATA")
    os.remove(os.path.join(step_dir, victim))
    return victim


def corrupt_data_json(step_dir) -> str:
    victim = os.path.join("data", "metadata")
    with open(os.path.join(step_dir, victim), "w", encoding="utf-8") as f:
        f.write('{"position": ')
    return victim


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def fail_restore(monkeypatch, error: BaseException, at_steps=(10, 20)):
    """Makes orbax's restore of ``at_steps`` raise ``error``."""
    original = ocp.CheckpointManager.restore

    def restore(self, step, *args, **kwargs):
        if step in at_steps:
            raise error
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)


# --------------------------------------------------------------------------
# Building a run opens nothing.


def test_constructing_creates_no_directory_and_opens_no_manager(tmp_path,
                                                                 monkeypatch):
    def no_manager(*args, **kwargs):
        raise AssertionError("a CheckpointManager was opened")

    workdir = tmp_path / "new"
    run = loop.build(short_config(), str(workdir), MAKE_TASK)
    checkpointer = ckpt_lib.Checkpointer(str(workdir / "other"))
    assert not workdir.exists()
    assert run.checkpointer._manager is None  # pylint: disable=protected-access
    assert checkpointer._manager is None  # pylint: disable=protected-access
    monkeypatch.setattr(ocp, "CheckpointManager", no_manager)
    assert checkpointer.steps() == []
    assert checkpointer.latest_step() is None
    assert run.checkpointer.restore_latest(run.abstract_state) is None
    checkpointer.close()  # A no-op: nothing was opened.
    run.checkpointer.close()
    assert not workdir.exists()


# --------------------------------------------------------------------------
# Real damage: moved aside, the previous step used.


@pytest.mark.parametrize("damage", [delete_array_file, truncate_array_file,
                                    delete_state_metadata, corrupt_data_json],
                         ids=lambda f: f.__name__)
def test_damaged_step_is_moved_aside_and_previous_restored(
        short_run, copy_workdir, abstract_state, caplog, damage):
    workdir = copy_workdir(short_run[0])
    step_dir = workdir / "checkpoints" / "20"
    before = files_of(step_dir)
    victim = damage(step_dir)
    checkpointer = ckpt_lib.Checkpointer(str(workdir))
    try:
        with caplog.at_level(logging.WARNING, logger="genjax"):
            step, state, data_state, config = checkpointer.restore_latest(
                abstract_state)
        assert checkpointer.steps() == [10]
    finally:
        checkpointer.close()
    assert step == 10
    moved = workdir / "checkpoints_damaged" / "20"
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "checkpoint at step 20 is damaged" in warnings[0]
    assert str(moved) in warnings[0]
    # Moved whole (less what the test deleted or changed), nothing deleted.
    after = files_of(moved)
    assert after.keys() == before.keys() - ({victim} if damage is delete_array_file
                                            or damage is delete_state_metadata
                                            else set())
    assert all(after[k] == before[k] for k in after if k != victim)
    # Step 10 restored exactly as written.
    reference = ckpt_lib.Checkpointer(str(short_run[0]))
    try:
        expected = reference._restore_step(  # pylint: disable=protected-access
            10, abstract_state)
    finally:
        reference.close()
    assert_trees_bitwise_equal(state, expected["state"])
    assert data_state == expected["data"] and config == expected["config"]


# --------------------------------------------------------------------------
# Anything else: a one-line error, nothing moved.


@pytest.mark.parametrize("error, shown", [
    (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    (MemoryError("cannot allocate 2 GiB"), "MemoryError: cannot allocate 2 GiB"),
    (ValueError("Sharding NamedSharding(mesh=Mesh('data': 8)) refers to 8 "
                "devices\nbut this process has 1"),
     "refers to 8 devices"),
    (ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"),
     "RESOURCE_EXHAUSTED"),
    (RuntimeError("something nobody expected"), "something nobody expected"),
], ids=["EIO", "MemoryError", "sharding", "device-OOM", "unknown"])
def test_non_damage_error_raises_one_line_and_moves_nothing(
        short_run, copy_workdir, abstract_state, monkeypatch, error, shown):
    workdir = copy_workdir(short_run[0])
    before = {s: files_of(workdir / "checkpoints" / str(s)) for s in (10, 20)}
    fail_restore(monkeypatch, error)
    message = restore_error(workdir, abstract_state)
    assert "\n" not in message
    for text in ("step 20", str(workdir / "checkpoints"), shown,
                 "nothing was moved", "retry"):
        assert text in message, f"{text!r} not in {message!r}"
    assert not (workdir / "checkpoints_damaged").exists()
    assert listing(workdir / "checkpoints") == ["10", "20"]
    for step in (10, 20):
        assert files_of(workdir / "checkpoints" / str(step)) == before[step]


def test_error_after_damage_keeps_the_step_that_failed(
        short_run, copy_workdir, abstract_state, monkeypatch):
    """Step 20 damaged, step 10 out of memory: 20 is set aside, 10 stays."""
    workdir = copy_workdir(short_run[0])
    delete_array_file(workdir / "checkpoints" / "20")
    fail_restore(monkeypatch, MemoryError("cannot allocate"), at_steps=(10,))
    message = restore_error(workdir, abstract_state)
    assert "\n" not in message
    assert "step 10" in message and "step 10 was left in place" in message
    assert listing(workdir / "checkpoints") == ["10"]
    assert listing(workdir / "checkpoints_damaged") == ["20"]


def test_is_damage_classifies_by_type_and_message():
    def chained(outer, cause):
        outer.__cause__ = cause
        return outer

    def during(outer, context):
        outer.__context__ = context
        return outer

    damage = [
        FileNotFoundError("File /w/checkpoints/20/data/metadata not found."),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        json.JSONDecodeError("Expecting value", '{"a": ', 6),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        KeyError('Item "state" was not found in the checkpoint. Available '
                 "items: ['config', 'data']"),
        ValueError('NOT_FOUND: Error opening "zarr" driver: Metadata at '
                   '"step/.zarray" in OCDBT database does not exist'),
        ValueError('DATA_LOSS: Error decoding local file "manifest.ocdbt"'),
        ValueError('FAILED_PRECONDITION: Error reading "params/0.0": '
                   "Truncated Zstd-compressed stream; at byte 0"),
        ValueError('OUT_OF_RANGE: Error reading "mu/0.0": Requested byte '
                   "range [22824, 29375) is not valid for value of size 17432"),
        chained(Exception("Encountered error while reading array index"),
                ValueError("FAILED_PRECONDITION: ZSTD_decompressStream() "
                           "failed: Unknown frame descriptor")),
    ]
    not_damage = [
        OSError(errno.EIO, "Input/output error"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.ENOSPC, "No space left on device"),
        MemoryError(),
        ValueError("Sharding of the array does not match the devices"),
        TypeError("Argument sharding must be a Sharding, got a Mesh"),
        RuntimeError("unexpected"),
        KeyError("params"),
        ValueError("pytree structure error: different types at key path"),
        ValueError("RESOURCE_EXHAUSTED: Out of memory"),
        ValueError("UNAVAILABLE: connection reset"),
        ValueError('FAILED_PRECONDITION: Error opening file "x" '
                   "[OS error: Device or resource busy]"),
        ValueError('NOT_FOUND: Error reading local file "x" '
                   "[OS error: No such device]"),
        ValueError("FAILED_PRECONDITION: generation mismatch"),
        # Damage-looking, but the machine failed first or underneath.
        chained(Exception("Encountered error while reading array index"),
                OSError(errno.EIO, "Input/output error")),
        during(json.JSONDecodeError("Expecting value", "", 0), MemoryError()),
        # Damage seen only while handling something else: not trusted.
        during(ValueError("could not place the array"),
               FileNotFoundError("File x not found.")),
    ]
    is_damage = ckpt_lib._is_damage  # pylint: disable=protected-access
    assert [e for e in damage if not is_damage(e)] == []
    assert [e for e in not_damage if is_damage(e)] == []


# --------------------------------------------------------------------------
# All steps set aside: no silent fresh start.


def test_all_damaged_refuses_until_fresh_start_is_allowed(
        short_run, copy_workdir, abstract_state, caplog):
    ref = short_run[0]
    workdir = copy_workdir(ref)
    for step in (10, 20):
        delete_array_file(workdir / "checkpoints" / str(step))
    metrics = (workdir / "metrics.jsonl").read_bytes()

    message = restore_error(workdir, abstract_state)
    assert "\n" not in message
    for text in ("all 2 are damaged", "checkpoints_damaged",
                 "--config.train.allow_fresh_start=true"):
        assert text in message, f"{text!r} not in {message!r}"
    assert listing(workdir / "checkpoints") == []
    assert listing(workdir / "checkpoints_damaged") == ["10", "20"]

    # The next attempt, now that checkpoints/ is empty, refuses too.
    message = restore_error(workdir, abstract_state)
    assert "\n" not in message
    for text in ("steps 10, 20", str(workdir / "checkpoints_damaged"),
                 "--config.train.allow_fresh_start=true"):
        assert text in message, f"{text!r} not in {message!r}"
    with pytest.raises(ckpt_lib.CheckpointError, match="allow_fresh_start"):
        train(short_config(), workdir)
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    assert listing(workdir / "checkpoints") == []

    # Allowed: a warning, and a fresh run to the end, as the reference.
    with caplog.at_level(logging.INFO, logger="genjax"):
        train(short_config(**{"train.allow_fresh_start": True}), workdir)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert any("allow_fresh_start" in w and "checkpoints_damaged" in w
               for w in warnings), warnings
    assert "from scratch" in caplog.text
    assert listing(workdir / "checkpoints") == ["10", "20"]
    assert listing(workdir / "checkpoints_damaged") == ["10", "20"]
    # The earlier run's metrics are kept beside, not appended to.
    assert (workdir / "metrics.jsonl.1").read_bytes() == metrics
    assert (workdir / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    step, state, _ = restore_latest(short_config(), workdir)
    step_ref, state_ref, _ = restore_latest(short_config(), ref)
    assert step == step_ref == 20
    assert_trees_bitwise_equal(state, state_ref)


def test_all_damaged_in_this_call_with_fresh_start_allowed_returns_none(
        short_run, copy_workdir, abstract_state, caplog):
    workdir = copy_workdir(short_run[0])
    for step in (10, 20):
        truncate_array_file(workdir / "checkpoints" / str(step))
    checkpointer = ckpt_lib.Checkpointer(str(workdir), allow_fresh_start=True)
    try:
        with caplog.at_level(logging.WARNING, logger="genjax"):
            assert checkpointer.restore_latest(abstract_state) is None
    finally:
        checkpointer.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings  # Step 20, step 10, the fresh start.
    assert "starting from scratch" in warnings[-1]
    assert listing(workdir / "checkpoints_damaged") == ["10", "20"]


def test_cli_refuses_fresh_start_over_set_aside_checkpoints(
        short_run, copy_workdir, capsys):
    workdir = copy_workdir(short_run[0])
    # As an earlier run left it: every step moved aside.
    os.makedirs(workdir / "checkpoints_damaged")
    for step in ("10", "20"):
        shutil.move(workdir / "checkpoints" / step,
                    workdir / "checkpoints_damaged" / step)
    metrics = (workdir / "metrics.jsonl").read_bytes()
    code, _, err = run_cli(capsys, "vae_digits",
                           [f"--workdir={workdir}", "--preset=smoke", *SHORT_FLAGS])
    assert code == 1
    assert_one_error_line(err, "checkpoints_damaged", "allow_fresh_start",
                          "steps 10, 20")
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    assert listing(workdir / "checkpoints") == []
    assert listing(workdir / "checkpoints_damaged") == ["10", "20"]
