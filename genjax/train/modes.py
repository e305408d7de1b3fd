"""What a trained workdir can be asked for besides training: ``eval``,
``sample``, and the modes a task declares itself (``Task.extra_modes``, e.g.
a diffusion model's ``inpaint``).

Each mode restores the latest checkpoint onto this run's devices and
writes its outputs atomically beside it; a mode never trains and never
changes a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax import data as data_lib
from genjax.train import artifacts
from genjax.train import checkpoint as ckpt_lib
from genjax.train import evaluation
from genjax.train.run import Run, build

log = logging.getLogger("genjax")

CORE_MODES = ("train", "eval", "sample")


def available_modes(make_task) -> tuple[str, ...]:
    """The modes of an experiment: the core ones and its task's own."""
    return CORE_MODES + tuple(getattr(make_task, "extra_modes", ()))


def _saved_dataset(config, workdir: str):
    """A dataset rebuilt from the latest checkpoint's data state alone (a
    text run's vocabulary), or None where the data must be loaded."""
    checkpointer = ckpt_lib.Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        restored = checkpointer.restore_latest(None)
    finally:
        checkpointer.close()
    if restored is None:
        return None
    return data_lib.dataset_from_state(config.data.name, restored[2])


def restore_for_inference(config, workdir: str, make_task, *,
                          need_data: bool = True, devices=None) -> tuple[Run, int, Any]:
    """``(run, step, inference params)`` of ``workdir``'s latest checkpoint,
    on ``devices`` if given (``run.build``), else on all of them.

    Raises:
      CheckpointError: no checkpoint, or one of another model config.
    """
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ckpt_lib.CheckpointError(
            f"no checkpoints in {workdir}; train first with --mode=train")
    dataset = None if need_data else _saved_dataset(config, workdir)
    run = build(config, workdir, make_task, dataset, devices=devices)
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        raise ckpt_lib.CheckpointError(
            f"no complete checkpoint in {run.checkpointer.directory}; "
            "train first with --mode=train")
    step, state, _, saved = restored
    model_diff = config_lib.model_diff(saved, config)
    if model_diff:
        raise ckpt_lib.CheckpointError(
            f"{workdir} was trained with a different model config "
            f"({'; '.join(model_diff)}); pass the same --preset and overrides")
    return run, step, run.task.inference_params(state, config.eval.use_ema)


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             make_task: Callable) -> dict[str, float]:
    """Evaluates the latest checkpoint on the test split; writes ``eval.json``."""
    run, step, params = restore_for_inference(config, workdir, make_task)
    try:
        t0 = time.perf_counter()
        metrics = evaluation.run_eval(run, params, final=True)
        metrics["eval/seconds"] = time.perf_counter() - t0
        artifacts.write_json(os.path.join(workdir, "eval.json"),
                             dict(metrics, step=step))
        log.info("eval of step %d  %s", step, format_scalars(metrics))
    finally:
        run.checkpointer.close()
    return metrics


def sample(config: ml_collections.ConfigDict, workdir: str, make_task: Callable,
           num_samples: int | None = None):
    """Samples from the latest checkpoint and writes them as the task
    renders them (``Task.render_samples``).

    Pictures go to ``samples/sample_mode.png``, texts to ``<name>.txt`` in
    the workdir and to stdout, and floating samples (images, points) to
    ``samples.npy`` (float32). ``num_samples`` defaults to the task's
    ``default_num_samples()`` (64 images; ``config.sample.num_samples``
    texts). A task that can rebuild its data from the checkpoint (a text
    run's vocabulary) reads no dataset. Returns the samples, or the text of
    text samples.
    """
    run, step, params = restore_for_inference(config, workdir, make_task,
                                              need_data=False)
    try:
        num_samples = num_samples or run.task.default_num_samples()
        samples = evaluation.draw(run, params, num_samples)
        rendered = run.task.render_samples(samples, run.dataset)
        texts = {k: v for k, v in rendered.items() if isinstance(v, str)}
        pictures = {("sample_mode" if k == "samples" else f"{k}_sample_mode"): v
                    for k, v in rendered.items() if not isinstance(v, str)}
        if artifacts.is_chief():
            if np.issubdtype(samples.dtype, np.floating):
                artifacts.write_npy(os.path.join(workdir, "samples.npy"),
                                    samples.astype(np.float32))
            artifacts.write_rendered(os.path.join(workdir, "samples"), pictures, "")
            artifacts.write_rendered(workdir, texts, "")
            for text in texts.values():
                print(text, end="", flush=True)
        log.info("wrote %d samples from step %d to %s", num_samples, step, workdir)
    finally:
        run.checkpointer.close()
    if texts:
        return "".join(texts.values())
    return samples


@dataclasses.dataclass
class ModeContext:
    """What a task's own mode (``Task.run_mode``) gets: the built run, the
    restored inference parameters and their step, and atomic writers."""

    run: Run
    params: Any
    step: int

    @property
    def workdir(self) -> str:
        return self.run.workdir

    def write_picture(self, name: str, picture: np.ndarray) -> str:
        """``samples/<name>.png`` from a uint8 or [0, 1] float ``[H, W, C]``."""
        paths = artifacts.write_rendered(
            os.path.join(self.workdir, "samples"), {name: picture}, "")
        return paths[0] if paths else ""

    def write_array(self, name: str, array: np.ndarray) -> str:
        """``<workdir>/<name>.npy``."""
        path = os.path.join(self.workdir, f"{name}.npy")
        if artifacts.is_chief():
            artifacts.write_npy(path, np.asarray(array))
        return path


def run_task_mode(mode: str, config: ml_collections.ConfigDict, workdir: str,
                  make_task: Callable):
    """Runs the task's own ``mode`` on the latest checkpoint."""
    if mode not in getattr(make_task, "extra_modes", ()):
        raise config_lib.ConfigError(
            f"--mode={mode} is not a mode of {getattr(make_task, '__name__', make_task)}; "
            f"valid: {', '.join(available_modes(make_task))}")
    run, step, params = restore_for_inference(config, workdir, make_task)
    try:
        return run.task.run_mode(mode, ModeContext(run, params, step))
    finally:
        run.checkpointer.close()


def run_mode(mode: str, config: ml_collections.ConfigDict, workdir: str,
             make_task: Callable, *, num_samples: int | None = None):
    """Dispatches ``--mode``: ``eval``, ``sample`` or a task's own mode
    (``train`` is ``loop.train_and_evaluate``)."""
    if mode == "eval":
        return evaluate(config, workdir, make_task)
    if mode == "sample":
        return sample(config, workdir, make_task, num_samples)
    return run_task_mode(mode, config, workdir, make_task)


def format_scalars(scalars: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scalars.items())
