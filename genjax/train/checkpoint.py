"""Checkpoints: train state, data-iterator state and config, saved together.

One orbax ``CheckpointManager`` per workdir (``<workdir>/checkpoints``) with
three items per step:

- ``state``: the ``TrainState`` pytree (orbax's array format; no pickle);
- ``data``: the input pipeline's JSON state, so a resumed run sees exactly
  the batches an uninterrupted one would;
- ``config``: the config as JSON, for ``--mode=eval|sample`` and provenance.

The manager is opened on first use (``steps``, ``save``, ``restore_latest``):
constructing a ``Checkpointer`` creates no directory and opens nothing, and
``save`` creates ``checkpoints/``. Saves are synchronous. Orbax writes each
step into a temporary directory and renames it when complete, so a process
killed mid-save leaves no step that reads as valid.

Restoring never silently loses progress:

- A step of another model config (its metadata's shapes differ) is refused
  before its arrays are read, and nothing is moved.
- Real damage only (a file of the step missing or undecodable, see
  ``_is_damage``) moves the step aside to ``<workdir>/checkpoints_damaged/``
  with a warning naming it, and the previous step is tried; nothing is
  deleted.
- Any other failure (an I/O error other than a missing file, out of memory,
  a sharding or topology mismatch, anything unrecognised) is raised as a
  one-line ``CheckpointError`` and the step stays where it is, so retrying
  may succeed.
- When no usable step is left because steps were set aside (in this call or
  an earlier one), ``restore_latest`` raises ``CheckpointError`` instead of
  reporting "no checkpoint", so a run does not quietly start from scratch;
  ``allow_fresh_start=True`` (``--config.train.allow_fresh_start=true``)
  allows that fresh start, with a warning.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from genjax import distributed

log = logging.getLogger("genjax")

ITEMS = ("state", "data", "config")

FRESH_START_FLAG = "--config.train.allow_fresh_start=true"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required or expected, or one that
    could not be read for a reason other than damage."""


class Checkpointer:
    """Saves and restores ``(state, data_state, config)`` under a workdir."""

    def __init__(self, workdir: str, keep: int = 3, *,
                 allow_fresh_start: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.damaged_dir = os.path.abspath(
            os.path.join(workdir, "checkpoints_damaged"))
        self._keep = keep
        self.allow_fresh_start = allow_fresh_start
        # Opened on first use (``_open``); None until then and after close().
        self._manager: ocp.CheckpointManager | None = None

    def _open(self) -> ocp.CheckpointManager:
        """The orbax manager, opened (creating ``checkpoints/``) if need be."""
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep,
                create=True,
                # Synchronous saves: a returned save() is on disk, which keeps
                # kill-and-resume reasoning simple; states here are small.
                enable_async_checkpointing=False,
                cleanup_tmp_directories=True,
            )
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=ITEMS)
        return self._manager

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        if self._manager is None and not os.path.isdir(self.directory):
            return []  # Nothing saved yet: create nothing, open nothing.
        return sorted(self._open().all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def damaged_steps(self) -> list[str]:
        """The names of the steps set aside in ``checkpoints_damaged/``
        (``"20"``, or ``"20.1"`` for a second step 20), oldest first."""
        try:
            names = os.listdir(self.damaged_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = [n for n in names if re.fullmatch(r"\d+(\.\d+)?", n)
                 and os.path.isdir(os.path.join(self.damaged_dir, n))]
        return sorted(names, key=lambda n: tuple(int(p) for p in n.split(".")))

    def save(self, step: int, state, data_state: dict, config: dict) -> None:
        """Writes one checkpoint (blocking until it is complete on disk)."""
        manager = self._open()
        if step in manager.all_steps():
            return  # Already saved (e.g. the final step equals a periodic one).
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
        )
        manager.wait_until_finished()

    def _restore_step(self, step: int, abstract_state):
        args = {"data": ocp.args.JsonRestore(), "config": ocp.args.JsonRestore()}
        if abstract_state is not None:
            args["state"] = ocp.args.StandardRestore(abstract_state)
        restored = self._open().restore(step, args=ocp.args.Composite(**args))
        if abstract_state is not None:
            # Orbax may return host arrays for scalars; check shapes strictly.
            _check_tree_matches(restored["state"], abstract_state, step)
        return restored

    def restore_latest(self, abstract_state) -> tuple[int, Any, dict, dict] | None:
        """Restores the newest usable checkpoint onto ``abstract_state``.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with the target
            shardings (so a checkpoint written on N devices restores onto M),
            or None to read only the data state and config.

        Returns:
          ``(step, state, data_state, config)``, or None if there is no
          checkpoint to resume from (none was ever written, or all were set
          aside as damaged and ``allow_fresh_start`` is true).

        Raises:
          CheckpointError: a checkpoint of another model config; a step that
            could not be read for a reason other than damage (nothing is
            moved); or no usable step left because steps were set aside as
            damaged, unless ``allow_fresh_start``.
        """
        steps = self.steps()
        if not steps:
            return self._nothing_to_resume()
        errors = []
        for step in reversed(steps):
            # The saved shapes, from the step's metadata. A checkpoint of
            # another model (a different preset or override) is not damaged:
            # refuse it before trying, and move nothing. Metadata that cannot
            # be read is judged together with the restore below.
            metadata_error = None
            mismatch = None
            if abstract_state is not None:
                try:
                    mismatch = self._shape_mismatch(step, abstract_state)
                except Exception as e:  # pylint: disable=broad-except
                    metadata_error = e
            if mismatch:
                raise CheckpointError(
                    f"the checkpoint at step {step} in {self.directory} does not "
                    f"fit this config ({mismatch}); pass the --preset and "
                    "--config overrides it was trained with, or use a new --workdir")
            try:
                restored = self._restore_step(step, abstract_state)
            except Exception as e:  # pylint: disable=broad-except
                # A restore that fails in an unrecognised way after the
                # metadata was found damaged is that damage showing through
                # (e.g. a missing _METADATA makes a tree-structure error).
                damaged = _is_damage(e) or (
                    metadata_error is not None and _is_damage(metadata_error)
                    and not _is_environmental(e) and not _is_placement(e))
                if not damaged:
                    raise CheckpointError(self._not_damage_message(
                        step, e, moved=[s for s, _ in errors])) from e
                reason = _first_line(e if _is_damage(e) else metadata_error)
                step_dir = os.path.join(self.directory, str(step))
                if not os.path.isdir(step_dir):
                    # Gone while being read (removed by hand, or the disk
                    # went away): nothing to set aside, and not ours to judge.
                    raise CheckpointError(
                        f"the checkpoint at step {step} disappeared from "
                        f"{self.directory} while being read ({reason}); nothing "
                        "was moved; check the disk and retry") from e
                moved_to = self._move_aside(step)
                errors.append((step, reason))
                log.warning(
                    "checkpoint at step %d is damaged (%s); moved it to %s and "
                    "%s", step, reason, moved_to,
                    "trying the previous one" if step != steps[0]
                    else "no earlier checkpoint is left")
                continue
            return (step, restored.get("state"), restored["data"],
                    restored["config"])
        details = "; ".join(f"step {s}: {r}" for s, r in errors)
        if self.allow_fresh_start:
            log.warning(
                "no usable checkpoint in %s: all %d are damaged and were moved "
                "to %s (%s); starting from scratch because allow_fresh_start "
                "is set", self.directory, len(steps), self.damaged_dir, details)
            return None
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: all {len(steps)} are "
            f"damaged and were moved to {self.damaged_dir} ({details}); repair "
            "or remove them, or pass " + FRESH_START_FLAG + " to train from "
            "scratch here (or use a new --workdir)")

    def _nothing_to_resume(self) -> None:
        """None (a fresh start) where ``checkpoints/`` holds no complete step;
        raises if steps of this workdir were set aside as damaged."""
        damaged = self.damaged_steps()
        if not damaged:
            return None
        listed = ", ".join(damaged)
        if self.allow_fresh_start:
            log.warning(
                "no usable checkpoint in %s; the damaged steps %s set aside in "
                "%s stay there; starting from scratch because allow_fresh_start "
                "is set", self.directory, listed, self.damaged_dir)
            return None
        raise CheckpointError(
            f"no usable checkpoint in {self.directory}: its checkpoints were set "
            f"aside as damaged in {self.damaged_dir} (steps {listed}); repair "
            "them and move them back, or remove them, or pass "
            + FRESH_START_FLAG + " to train from scratch here (or use a new "
            "--workdir)")

    def _not_damage_message(self, step: int, error: BaseException,
                            moved: list[int]) -> str:
        if moved:
            done = (f"step {step} was left in place (damaged step(s) "
                    f"{', '.join(map(str, moved))} were moved to "
                    f"{self.damaged_dir})")
        else:
            done = "nothing was moved"
        return (f"could not read the checkpoint at step {step} in "
                f"{self.directory} ({_first_line(error)}); this is not damage "
                f"to the checkpoint, so {done}; fix the cause (memory, disk, "
                "devices) and retry")

    def _shape_mismatch(self, step: int, abstract_state) -> str | None:
        """How the saved state's arrays differ from ``abstract_state``'s, from
        the step's metadata; None if they agree. Raises what reading the
        metadata raises (``restore_latest`` judges it)."""
        path = epath.Path(self.directory) / str(step) / "state"
        handler = ocp.StandardCheckpointHandler()
        try:
            meta = handler.metadata(path)
            saved = _shapes(meta.tree if hasattr(meta, "tree") else meta)
        finally:
            handler.close()
        wanted = _shapes(abstract_state)
        for key in sorted(saved.keys() | wanted.keys()):
            if saved.get(key) != wanted.get(key):
                return (f"{'/'.join(key)}: saved {saved.get(key, 'absent')}, "
                        f"config needs {wanted.get(key, 'absent')}")
        return None

    def _move_aside(self, step: int) -> str:
        """Moves step ``step`` into ``checkpoints_damaged/``; returns where."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.damaged_dir, str(step))
        if distributed.is_chief() and os.path.isdir(src):
            os.makedirs(self.damaged_dir, exist_ok=True)
            suffix = 0
            while os.path.exists(dst):
                suffix += 1
                dst = os.path.join(self.damaged_dir, f"{step}.{suffix}")
            shutil.move(src, dst)
        distributed.barrier("move_aside")  # No process reads it after this.
        # The manager caches the steps it saw: reopen it on next use.
        self.close()
        return dst

    def close(self) -> None:
        """Closes the manager if it was opened (a no-op otherwise)."""
        if self._manager is not None:
            manager, self._manager = self._manager, None
            manager.close()


# --------------------------------------------------------------------------
# Telling damage from everything else.

# tensorstore raises ValueError("CODE: ...") with an absl status code. Codes
# that mean the stored bytes are missing or undecodable:
_DAMAGE_CODES = ("NOT_FOUND", "DATA_LOSS")
# ...codes that mean so only with a message saying what was wrong with the
# bytes (tensorstore also maps errno values such as EBUSY or ENOTDIR to
# FAILED_PRECONDITION, and EOVERFLOW to OUT_OF_RANGE):
_DECODE_CODES = ("FAILED_PRECONDITION", "OUT_OF_RANGE")
_DECODE_WORDS = re.compile(
    r"truncated|decompress|decod|corrupt|checksum|invalid json|"
    r"unexpected end|byte range .* is not valid", re.IGNORECASE)
# ...and codes that describe the machine, not the checkpoint.
_ENVIRONMENT_CODES = (
    "RESOURCE_EXHAUSTED", "UNAVAILABLE", "PERMISSION_DENIED",
    "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED", "UNKNOWN", "INTERNAL",
    "UNIMPLEMENTED")
_STATUS = re.compile(r"^\s*([A-Z][A-Z_]+[A-Z]):")
# tensorstore appends the OS error to a status it made from errno.
_OS_ERROR = re.compile(r"\[OS error(?: \d+)?: ([^\]]*)\]")


def _status_code(message: str) -> str | None:
    match = _STATUS.match(message)
    return match.group(1) if match else None


def _missing_file(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) and exc.errno in (None, errno.ENOENT)


def _is_environmental(exc: BaseException) -> bool:
    """Whether ``exc`` or anything it was raised from or during says that the
    machine failed (memory, an I/O error, permissions, a lost device), which
    retrying may cure: then it is never damage."""
    for e in _chain(exc, implicit=True):
        if isinstance(e, (MemoryError, ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and not _missing_file(e):
            return True
        message = str(e)
        if _status_code(message) in _ENVIRONMENT_CODES:
            return True
        os_error = _OS_ERROR.search(message)
        if os_error and "No such file or directory" not in os_error.group(1):
            return True
    return False


def _is_placement(exc: BaseException) -> bool:
    """Whether ``exc``'s first line is about shardings, devices or topology
    (restoring onto devices that cannot hold the state), not the files."""
    lines = str(exc).strip().splitlines()
    return bool(lines) and bool(re.search(
        r"shard|device|mesh|topolog|process", lines[0], re.IGNORECASE))


def _is_damage(exc: BaseException) -> bool:
    """Whether ``exc``, raised while restoring a step, shows that a file of
    the step is missing or undecodable.

    Conservative: only recognised damage counts, seen in the exception or the
    ones it was explicitly raised from (``raise ... from``); an environmental
    cause anywhere in the chain (``_is_environmental``) and anything
    unrecognised is not damage.
    """
    if _is_environmental(exc):
        return False
    for e in _chain(exc, implicit=False):
        if _missing_file(e):
            return True  # A JSON item's file, or a state's _METADATA, gone.
        if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)):
            return True  # A JSON file truncated or overwritten.
        if isinstance(e, KeyError) and re.search(
                r'Item ".*" was not found in the checkpoint', str(e)):
            return True  # A whole item's directory gone.
        message = str(e)
        code = _status_code(message)
        if code in _DAMAGE_CODES:
            return True  # tensorstore: a file gone, or bytes it cannot decode.
        if code in _DECODE_CODES and _DECODE_WORDS.search(message):
            return True  # tensorstore: a file truncated or garbled.
    return False


def _chain(exc: BaseException, implicit: bool):
    """``exc`` and the exceptions it was raised from (``__cause__``), and
    with ``implicit`` also those it was raised while handling."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) >= 32:
            continue
        seen.add(id(e))
        yield e
        todo.append(e.__cause__)
        if implicit:
            todo.append(e.__context__)
        for sub in getattr(e, "exceptions", ()) or ():  # ExceptionGroup
            todo.append(sub)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of the most telling exception in ``exc``'s chain
    (a wrapper's message is less useful than the tensorstore error it was
    raised from), at most ``limit`` characters."""
    best = exc
    for e in _chain(exc, implicit=False):
        if _status_code(str(e)) or isinstance(e, OSError):
            best = e
            break
    lines = str(best).strip().splitlines()
    text = f"{type(best).__name__}: {lines[0].strip()}" if lines else type(best).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shapes(tree) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Leaf path (names only, so a saved tree and a live one compare) -> shape."""
    def name(k):
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    flat, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: hasattr(x, "shape"))
    return {tuple(name(k) for k in path): tuple(leaf.shape)
            for path, leaf in flat if leaf is not None}


def _check_tree_matches(tree, abstract, step: int) -> None:
    leaves, treedef = jax.tree.flatten(tree)
    abs_leaves, abs_treedef = jax.tree.flatten(abstract)
    if treedef != abs_treedef:
        raise ValueError(f"structure differs from the model's at step {step}")
    for leaf, ref in zip(leaves, abs_leaves):
        if tuple(leaf.shape) != tuple(ref.shape):
            raise ValueError(
                f"array of shape {leaf.shape} where the model has {ref.shape}")
