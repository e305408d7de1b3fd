"""Checkpoints: train state, data-iterator state and config, saved together.

One orbax ``CheckpointManager`` per workdir (``<workdir>/checkpoints``) with
three items per step:

- ``state``: the ``TrainState`` pytree (orbax's array format; no pickle);
- ``data``: the input pipeline's JSON state, so a resumed run sees exactly
  the batches an uninterrupted one would;
- ``config``: the config as JSON, for ``--mode=eval|sample`` and provenance.

Orbax writes each step into a temporary directory and renames it when
complete, so a process killed mid-save leaves no step that reads as valid.
A damaged step (a file missing or corrupt) is moved aside to
``<workdir>/checkpoints_damaged/`` with a warning, and the previous step is
used; nothing is deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

log = logging.getLogger("genjax")

ITEMS = ("state", "data", "config")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was required or expected."""


class Checkpointer:
    """Saves and restores ``(state, data_state, config)`` under a workdir."""

    def __init__(self, workdir: str, keep: int = 3, *,
                 allow_fresh_start: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.damaged_dir = os.path.abspath(
            os.path.join(workdir, "checkpoints_damaged"))
        self._keep = keep
        self.allow_fresh_start = allow_fresh_start
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self._keep,
            create=True,
            # Synchronous saves: a returned save() is on disk, which keeps
            # kill-and-resume reasoning simple; states here are small.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        )
        return ocp.CheckpointManager(self.directory, options=options,
                                     item_names=ITEMS)

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state, data_state: dict, config: dict) -> None:
        """Writes one checkpoint (blocking until it is complete on disk)."""
        if step in self._manager.all_steps():
            return  # Already saved (e.g. the final step equals a periodic one).
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
        )
        self._manager.wait_until_finished()

    def _restore_step(self, step: int, abstract_state):
        args = {"data": ocp.args.JsonRestore(), "config": ocp.args.JsonRestore()}
        if abstract_state is not None:
            args["state"] = ocp.args.StandardRestore(abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
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
          checkpoint at all.

        Raises:
          CheckpointError: checkpoints exist but none of them is readable.
        """
        steps = self.steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            # A checkpoint of another model (a different preset or override)
            # is not damaged: refuse it before trying, and move nothing.
            mismatch = (None if abstract_state is None
                        else self._shape_mismatch(step, abstract_state))
            if mismatch:
                raise CheckpointError(
                    f"the checkpoint at step {step} in {self.directory} does not "
                    f"fit this config ({mismatch}); pass the --preset and "
                    "--config overrides it was trained with, or use a new --workdir")
            try:
                restored = self._restore_step(step, abstract_state)
            except Exception as e:  # pylint: disable=broad-except
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                errors.append(f"step {step}: {type(e).__name__}: {first_line[:200]}")
                self._move_aside(step)
                log.warning(
                    "checkpoint at step %d is damaged (%s); moved it to %s and "
                    "trying the previous one", step, first_line[:200],
                    self.damaged_dir)
                continue
            return (step, restored.get("state"), restored["data"],
                    restored["config"])
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} (all {len(steps)} are "
            f"damaged and were moved to {self.damaged_dir}: {'; '.join(errors)}); "
            "start a fresh run with a new --workdir")

    def _shape_mismatch(self, step: int, abstract_state) -> str | None:
        """How the saved state's arrays differ from ``abstract_state``'s, from
        the step's metadata; None if they agree or the metadata is unreadable
        (a damaged step, which restoring then reports)."""
        path = epath.Path(self.directory) / str(step) / "state"
        handler = ocp.StandardCheckpointHandler()
        try:
            meta = handler.metadata(path)
            saved = _shapes(meta.tree if hasattr(meta, "tree") else meta)
        except Exception:  # pylint: disable=broad-except
            return None
        finally:
            handler.close()
        wanted = _shapes(abstract_state)
        for key in sorted(saved.keys() | wanted.keys()):
            if saved.get(key) != wanted.get(key):
                return (f"{'/'.join(key)}: saved {saved.get(key, 'absent')}, "
                        f"config needs {wanted.get(key, 'absent')}")
        return None

    def _move_aside(self, step: int) -> None:
        src = os.path.join(self.directory, str(step))
        if jax.process_index() == 0 and os.path.isdir(src):
            os.makedirs(self.damaged_dir, exist_ok=True)
            dst = os.path.join(self.damaged_dir, str(step))
            suffix = 0
            while os.path.exists(dst):
                suffix += 1
                dst = os.path.join(self.damaged_dir, f"{step}.{suffix}")
            shutil.move(src, dst)
        self._manager.close()
        self._manager = self._open()

    def close(self) -> None:
        self._manager.close()


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
