"""The training loop shared by every family.

``train_and_evaluate(config, workdir, make_task)`` is the one entry point the
command line, the notebooks and the tests call (as in flax's examples). The
workdir alone decides whether to resume: if it holds checkpoints, training
continues from the latest usable one.

The loop only steps, logs, checks for divergence and checkpoints; the rest
lives beside it, one job per module: ``run`` (building a run from a
config), ``evaluation`` (exact averages, sample quality, samplers),
``artifacts`` (samples and figures on disk), ``modes`` (eval, sample and a
task's own modes on a trained workdir).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax.train import artifacts
from genjax.train import evaluation
from genjax.train import preemption
from genjax.train import step as step_lib
from genjax.train.modes import evaluate, format_scalars, run_mode, sample
from genjax.train.run import (Run, build, data_seed, make_step,
                              make_train_iterator, restore, validate)
from genjax.train.writers import MetricWriter, Progress

log = logging.getLogger("genjax")

run_eval = evaluation.run_eval
Preempted = preemption.Preempted


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left untouched."""


def write_figures(run: Run, params, step: int, writer: MetricWriter | None,
                  tag: str) -> list[str]:
    """The task's rendering of ``config.sample.num_samples`` samples and its
    figures, under ``samples/`` (``<name>_<tag>.png`` or ``.txt``).

    Every process draws and computes (the computations span every device),
    and process 0 alone writes."""
    samples = evaluation.draw(run, params, run.config.sample.num_samples)
    rendered = dict(run.task.render_samples(samples, run.dataset))
    rendered.update(artifacts.figures_of(run.task, params, run.dataset,
                                         run.key("figures")))
    return artifacts.write_rendered(os.path.join(run.workdir, "samples"),
                                    rendered, tag, step=step, writer=writer)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       make_task: Callable, devices=None) -> dict[str, float]:
    """Trains (resuming if ``workdir`` holds checkpoints), evaluates, samples.

    ``devices``: the mesh's devices, if not all of them (``run.build``).
    Returns the final evaluation metrics (also written to ``eval.json``).
    """
    run = build(config, workdir, make_task, devices=devices)
    t = config.train
    os.makedirs(workdir, exist_ok=True)
    artifacts.write_json(os.path.join(workdir, "config.json"),
                         config_lib.to_dict(config))

    iterator = make_train_iterator(run)
    restored = restore(run)
    if restored is None:
        state = run.init_state_fn()
        start = 0
        log.info("training %s from scratch in %s on %d device(s)",
                 config.data.name, workdir, run.mesh.devices.size)
    else:
        start, state, data_state = restored
        iterator.set_state(data_state)
        log.info("resuming from step %d in %s on %d device(s)", start, workdir,
                 run.mesh.devices.size)

    writer = MetricWriter(workdir, resume_step=start if restored else None)
    train_step = make_step(run)
    sync = step_lib.steps_must_sync(run.mesh)
    config_dict = config_lib.to_dict(config)
    progress = Progress(start, t.num_steps, t.log_every)
    pending: list[dict] = []
    final_metrics: dict[str, float] = {}
    watcher = preemption.Watcher()
    try:
        with watcher:
            for step in range(start + 1, t.num_steps + 1):
                batch = step_lib.to_global(next(iterator), run.mesh)
                state, metrics = train_step(state, batch)
                if sync:
                    jax.block_until_ready(metrics)
                pending.append(metrics)
                progress.update(step)
                is_last = step == t.num_steps
                stop = watcher.should_stop(step) and not is_last
                save_now = step % t.checkpoint_every == 0 or is_last or stop
                _log_and_check(run, writer, progress, pending, step,
                               flush=step % t.log_every == 0 or save_now)
                if step % t.eval_every == 0 and not is_last and not stop:
                    params = run.task.inference_params(state, config.eval.use_ema)
                    scalars = run_eval(run, params, final=False)
                    writer.write_scalars(step, without_timings(scalars))
                    log.info("step %d  %s", step, format_scalars(scalars))
                    write_figures(run, params, step, writer, f"step{step:07d}")
                if save_now:
                    run.checkpointer.save(step, state, iterator.get_state(),
                                          config_dict)
                if stop:
                    raise preemption.Preempted(step, watcher.signum, workdir)
        progress.close()
        params = run.task.inference_params(state, config.eval.use_ema)
        t0 = time.perf_counter()
        final_metrics = run_eval(run, params, final=True)
        final_metrics["eval/seconds"] = time.perf_counter() - t0
        writer.write_scalars(t.num_steps, without_timings(final_metrics))
        log.info("final (step %d)  %s", t.num_steps, format_scalars(final_metrics))
        artifacts.write_json(os.path.join(workdir, "eval.json"),
                             dict(final_metrics, step=t.num_steps))
        paths = write_figures(run, params, t.num_steps, writer, "final")
        log.info("wrote %s", ", ".join(paths))
    finally:
        progress.close()
        writer.close()
        run.checkpointer.close()
    return final_metrics


def _log_and_check(run: Run, writer: MetricWriter, progress: Progress,
                   pending: list, step: int, *, flush: bool) -> None:
    """With ``flush``, the per-step metrics since the last flush (``pending``,
    emptied) are fetched, checked for divergence, averaged and logged as the
    row of ``step``.

    The loop flushes at log steps, and at checkpoint steps too, so that a
    resumed run logs exactly the rows an uninterrupted one does (a run
    stopped by a signal flushes at the step it stops at). The check comes
    before any save, so a diverged state never replaces the last good
    checkpoint.
    """
    if not flush:
        return
    host = jax.device_get(pending)
    pending.clear()
    problem, advice = _divergence(run.task, host, step)
    if problem:
        raise TrainingDiverged(_with_checkpoint_note(
            problem, advice, run.checkpointer.latest_step()))
    scalars = _mean_metrics(host)
    writer.write_scalars(step, scalars)
    progress.log(step, {k: scalars[f"train/{k}"] for k in run.task.progress_keys})


def without_timings(scalars: dict[str, float]) -> dict[str, float]:
    """``scalars`` less wall times (keys ending in ``seconds``), which vary
    from run to run: ``metrics.jsonl`` holds only what the seed decides, so
    it is bitwise the same run after run. ``eval.json`` keeps them."""
    return {k: v for k, v in scalars.items() if not k.endswith("seconds")}


def _mean_metrics(host: list[dict]) -> dict[str, float]:
    return {f"train/{k}": float(np.mean([m[k] for m in host]))
            for k in host[0]}


def _watched(name: str) -> bool:
    """Losses and gradient norms: non-finite values there mean divergence."""
    return name == "loss" or name.endswith("_loss") or name.endswith("grad_norm")


def _divergence(task, host: list[dict], step: int) -> tuple[str | None, str]:
    """``(why training must stop or None, advice)`` from the per-step metrics
    since the last log.

    ``host`` holds one dict per step, the last one for ``step``. A
    non-finite gradient with a finite loss corrupts the parameters just as
    surely, so both are watched; then the task's own check runs (its
    message carries its own advice).
    """
    first_step = step - len(host) + 1
    for i, metrics in enumerate(host):
        for name in sorted(metrics):
            value = float(metrics[name])
            if _watched(name) and not math.isfinite(value):
                return (f"non-finite train/{name} ({value}) at step "
                        f"{first_step + i}",
                        "Lower train.learning_rate or set train.grad_clip_norm")
    return task.check_divergence({k: float(v) for k, v in host[-1].items()},
                                 step), ""


def _with_checkpoint_note(problem: str, advice: str, latest: int | None) -> str:
    kept = (f"the last good checkpoint (step {latest}) is kept"
            if latest is not None else "no checkpoint had been written")
    return f"{problem}; {kept}. {advice}" if advice else f"{problem}; {kept}"


__all__ = ["train_and_evaluate", "evaluate", "sample", "run_mode", "run_eval",
           "build", "validate", "make_step", "make_train_iterator",
           "TrainingDiverged", "Preempted", "data_seed", "without_timings", "write_figures"]
