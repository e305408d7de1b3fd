"""The training loop, evaluation and sampling, shared by every family.

``train_and_evaluate(config, workdir, make_task)`` is the one entry point the
command line, the notebooks and the tests call (as in flax's examples). The
workdir alone decides whether to resume: if it holds checkpoints, training
continues from the latest usable one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from genjax import config as config_lib
from genjax import data as data_lib
from genjax.data.images import default_data_dir
from genjax.evaluate import images as image_lib
from genjax.evaluate import sample_quality
from genjax.train import checkpoint as ckpt_lib
from genjax.train import step as step_lib
from genjax.train.state import build_optimizer
from genjax.train.writers import MetricWriter, Progress

log = logging.getLogger("genjax")


_POINTS = "points"  # the field of a points dataset


class TrainingDiverged(RuntimeError):
    """A non-finite loss; the last good checkpoint is left untouched."""


def data_seed(seed: int) -> int:
    """The data-order seed derived from ``config.seed`` (never the clock)."""
    return int(np.random.SeedSequence([seed, 0x6A7A]).generate_state(1)[0])


@dataclasses.dataclass
class Run:
    """Everything built from a config, before any step is taken."""

    config: ml_collections.ConfigDict
    workdir: str
    mesh: Any
    dataset: data_lib.Dataset
    task: Any
    optimizer: Any
    schedule: Any
    abstract_state: Any
    init_state_fn: Callable
    checkpointer: ckpt_lib.Checkpointer
    # Jitted eval/sample functions, compiled once per run and reused.
    compiled: dict = dataclasses.field(default_factory=dict)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks that need no data or devices beyond counting them.

    Raises ValueError with an actionable one-line message. Called before the
    workdir is created, so a bad config writes nothing.
    """
    t = config.train
    for key in ("batch_size", "num_steps", "log_every", "eval_every",
                "checkpoint_every"):
        if getattr(t, key) <= 0:
            raise ValueError(f"train.{key}={getattr(t, key)} must be positive")
    build_optimizer(t)  # An unknown optimizer or schedule is a usage error.
    accum = t.get("grad_accum_steps", 1)
    if accum < 1 or t.batch_size % accum:
        raise ValueError(
            f"train.grad_accum_steps={accum} must be a positive divisor of "
            f"train.batch_size={t.batch_size}")
    protocol = config.eval.get("sample_quality")
    if protocol is not None:
        sample_quality.validate_protocol(protocol)
    mesh = step_lib.make_mesh()
    step_lib.check_batch_divides(t.batch_size, "train.batch_size", mesh)
    if accum > 1:
        step_lib.check_batch_divides(
            t.batch_size // accum,
            f"train.batch_size / train.grad_accum_steps (the micro-batch, "
            f"{t.batch_size}/{accum})", mesh)
    step_lib.check_batch_divides(config.eval.batch_size, "eval.batch_size", mesh)


def build(config: ml_collections.ConfigDict, workdir: str,
          make_task: Callable, dataset=None) -> Run:
    """Loads the data and builds the task, optimiser, state shapes, manager.

    ``dataset``, if given, is used instead of loading ``config.data`` (e.g.
    a text dataset's vocabulary read back from a checkpoint, for sampling).
    """
    validate(config)
    mesh = step_lib.make_mesh()
    if dataset is None:
        dataset = data_lib.load_dataset(config.data)
    task = make_task(config, dataset)
    optimizer, schedule = task.make_optimizer()
    example = task.example_batch(dataset)

    def init_state():
        return task.init_state(step_lib.root_key(config.seed, "init"),
                               step_lib.root_key(config.seed, "train"),
                               example, optimizer)

    repl = step_lib.replicated(mesh)
    init_state_fn = jax.jit(init_state, out_shardings=repl)
    abstract = jax.eval_shape(init_state)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract)
    checkpointer = ckpt_lib.Checkpointer(
        workdir, config.train.keep_checkpoints,
        allow_fresh_start=config.train.get("allow_fresh_start", False))
    return Run(config, workdir, mesh, dataset, task, optimizer, schedule,
               abstract, init_state_fn, checkpointer)


def make_train_iterator(run: Run):
    """The training batches of ``run``: seeded from ``config.seed`` alone."""
    return run.task.make_train_iterator(
        run.dataset, data_seed(run.config.seed), jax.process_index(),
        jax.process_count())


def make_step(run: Run):
    """The jitted, data-parallel train step of ``run``'s task."""
    return step_lib.make_update_step(run.task.make_update(run.optimizer),
                                     run.mesh, schedule=run.schedule)


def _local_rows(batch: dict, mask: np.ndarray | None = None):
    """This process's contiguous share of a global batch."""
    n_proc, p = jax.process_count(), jax.process_index()
    def cut(x):
        b = x.shape[0] // n_proc
        return x[p * b:(p + 1) * b]
    return jax.tree.map(cut, batch), (None if mask is None else cut(mask))


def _eval_pass(run: Run, params, name: str, eval_fn: Callable, batches,
               key) -> dict[str, float]:
    """``eval_fn``'s per-example values averaged over ``batches``."""
    if ("eval", name) not in run.compiled:
        run.compiled["eval", name] = step_lib.make_eval_step(eval_fn, run.mesh)
    eval_step = run.compiled["eval", name]
    totals: dict[str, float] = {}
    for i, (batch, mask) in enumerate(batches):
        batch, mask = _local_rows(batch, mask)
        sums = eval_step(params, step_lib.to_global(batch, run.mesh),
                         step_lib.to_global(mask, run.mesh),
                         jax.random.fold_in(key, i))
        for k, v in jax.device_get(sums).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count")
    return {f"eval/{k}": v / count for k, v in sorted(totals.items())}


def run_eval(run: Run, params, *, final: bool) -> dict[str, float]:
    """Averages ``task.eval_fn`` over the whole test split, and each of the
    task's extra passes over its own examples; ``eval/...`` keys."""
    task, batch_size = run.task, run.config.eval.batch_size
    key = step_lib.root_key(run.config.seed, "eval")
    metrics = _eval_pass(
        run, params, f"main/{final}",
        lambda p, b, r: task.eval_fn(p, b, r, final=final),
        task.eval_batches(run.dataset, batch_size, final=final), key)
    for name in task.extra_eval_passes(final):
        metrics.update(_eval_pass(
            run, params, name,
            lambda p, b, r, name=name: task.extra_eval_fn(name, p, b, r),
            task.extra_eval_batches(name, run.dataset, batch_size), key))
    metrics = task.summarize_eval(metrics)
    protocol = run.config.eval.get("sample_quality")
    if protocol is not None:
        n = (protocol.num_samples if final
             else protocol.num_samples_during_training)
        if n > 0:
            metrics.update(_sample_quality(run, params, protocol, n, final=final))
    return metrics


def _sample_quality(run: Run, params, protocol, num_samples: int, *,
                    final: bool = True) -> dict:
    """The shared sample-quality metrics of ``num_samples`` new samples from
    each of the task's samplers (``task.sample_quality_samplers``).

    Samples are drawn in chunks of ``protocol.batch_size`` from a key of
    their own, so the numbers depend on ``config.seed`` and the protocol
    only; every sampler gets the same keys. ``eval/<name>/sample_seconds``
    is each sampler's drawing time, compilation excluded.
    """
    chunk = min(protocol.batch_size, num_samples)
    key = step_lib.root_key(run.config.seed, "sample_quality")
    cache_dir = run.config.data.get("data_dir") or default_data_dir()
    out = {}
    for name, sample_fn in run.task.sample_quality_samplers(final).items():
        fn = compiled_sampler(run, params, name, sample_fn, chunk, key)
        t0 = time.perf_counter()
        parts = [_as_host(fn(params, jax.random.fold_in(key, i)))
                 for i in range(-(-num_samples // chunk))]
        seconds = time.perf_counter() - t0
        samples = np.concatenate(parts)[:num_samples]
        result = sample_quality.evaluate_samples(
            samples, run.dataset, protocol, os.path.expanduser(cache_dir),
            seed=run.config.seed)
        result["sample_seconds"] = seconds
        prefix = f"eval/{name}/" if name else "eval/"
        out.update({f"{prefix}{k}": float(v) for k, v in sorted(result.items())})
    return out


def compiled_sampler(run: Run, params, name: str, sample_fn, num_samples: int,
                      key):
    """``sample_fn`` for ``num_samples``, jitted and compiled ahead of use
    (once per run), so that timing it measures sampling alone."""
    if ("sample", name, num_samples) not in run.compiled:
        def draw(p, k):
            # Samplers shard their batch over the devices (shard_batch_axis).
            with step_lib.tracing_mesh(run.mesh):
                return sample_fn(p, k, num_samples)

        jitted = jax.jit(draw, out_shardings=step_lib.replicated(run.mesh))
        run.compiled["sample", name, num_samples] = jitted.lower(params, key).compile()
    return run.compiled["sample", name, num_samples]


def _as_host(out) -> np.ndarray:
    """Samples on the host: images as float32; token ids stay integers."""
    out = np.asarray(jax.device_get(out))
    return out.astype(np.float32) if np.issubdtype(out.dtype, np.floating) else out


def _draw(run: Run, params, num_samples: int, key) -> np.ndarray:
    """``num_samples`` samples of ``task.sample_fn`` from ``key``, by a
    sampler compiled once per size (float32 images, or integer tokens)."""
    fn = compiled_sampler(run, params, "", run.task.sample_fn, num_samples, key)
    return _as_host(fn(params, key))


def _sample(run: Run, params, num_samples: int) -> np.ndarray:
    return _draw(run, params, num_samples,
                 step_lib.root_key(run.config.seed, "sample"))


def write_figures(run: Run, params, step: int, writer: MetricWriter | None,
                  tag: str) -> list[str]:
    """Sample grid plus the task's figures as PNGs under ``samples/``."""
    out_dir = os.path.join(run.workdir, "samples")
    paths = []
    if jax.process_index() != 0:
        return paths
    samples = _sample(run, params, run.config.sample.num_samples)
    text = run.task.samples_as_text(samples)
    if text is not None:
        path = os.path.join(out_dir, f"samples_{tag}.txt")
        _write_text(path, text)
        paths.append(path)
        if writer is not None:
            writer.write_text(step, "samples", text)
    elif samples.ndim in (2, 4):
        if samples.ndim == 4:
            grid = image_lib.make_grid(samples)
        else:  # 2-D points, over the test points.
            grid = image_lib.scatter_image(
                samples, run.dataset.arrays("test")[_POINTS][:len(samples)])
        path = os.path.join(out_dir, f"samples_{tag}.png")
        image_lib.save_png(path, grid)
        paths.append(path)
        if writer is not None:
            writer.write_image(step, "samples", grid)
    if run.dataset.kind == "text":
        return paths
    test = run.dataset.arrays("test")
    first = {k: v[:32] for k, v in test.items()}
    figs = run.task.figures(params, first, step_lib.root_key(run.config.seed,
                                                             "figures"))
    for name, (images, ncols) in figs.items():
        grid = image_lib.make_grid(np.asarray(images), ncols=ncols)
        path = os.path.join(out_dir, f"{name}_{tag}.png")
        image_lib.save_png(path, grid)
        paths.append(path)
        if writer is not None:
            writer.write_image(step, name, grid)
    return paths


def _write_text(path: str, text: str) -> None:
    """Writes ``text`` atomically (a temporary file, then a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_npy(path: str, array: np.ndarray) -> None:
    """Writes ``array`` as ``.npy`` atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _write_json(path: str, obj: dict) -> None:
    if jax.process_index() != 0:
        return
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _restore(run: Run):
    """``(step, state, data_state)`` from the latest usable checkpoint, or None."""
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        return None
    step, state, data_state, saved_config = restored
    changes = config_lib.diff(saved_config, config_lib.to_dict(run.config))
    if changes:
        log.warning("resuming with a config that differs from the checkpoint's: %s",
                    "; ".join(changes))
    return step, state, data_state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       make_task: Callable) -> dict[str, float]:
    """Trains (resuming if ``workdir`` holds checkpoints), evaluates, samples.

    Returns the final evaluation metrics (also written to ``eval.json``).
    """
    run = build(config, workdir, make_task)
    t = config.train
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(config))

    iterator = make_train_iterator(run)
    restored = _restore(run)
    if restored is None:
        state = run.init_state_fn()
        start = 0
        log.info("training %s from scratch in %s on %d device(s)",
                 config.data.name, workdir, run.mesh.devices.size)
    else:
        start, state, data_state = restored
        iterator.set_state(data_state)
        log.info("resuming from step %d in %s", start, workdir)

    writer = MetricWriter(workdir, resume_step=start if restored else None)
    train_step = make_step(run)
    sync = step_lib.steps_must_sync(run.mesh)
    config_dict = config_lib.to_dict(config)
    progress = Progress(start, t.num_steps, t.log_every)
    pending: list[dict] = []
    final_metrics: dict[str, float] = {}
    try:
        for step in range(start + 1, t.num_steps + 1):
            batch = step_lib.to_global(next(iterator), run.mesh)
            state, metrics = train_step(state, batch)
            if sync:
                jax.block_until_ready(metrics)
            pending.append(metrics)
            progress.update(step)
            is_last = step == t.num_steps
            save_now = step % t.checkpoint_every == 0 or is_last
            if step % t.log_every == 0 or save_now:
                # Flushed at checkpoint steps too, so a resumed run logs
                # exactly the rows an uninterrupted one does.
                host = jax.device_get(pending)
                pending = []
                # Checked before any save, so a diverged state never
                # replaces the last good checkpoint.
                problem, advice = _divergence(run.task, host, step)
                if problem:
                    raise TrainingDiverged(_with_checkpoint_note(
                        problem, advice, run.checkpointer.latest_step()))
                scalars = _mean_metrics(host)
                writer.write_scalars(step, scalars)
                progress.log(step, {k: scalars[f"train/{k}"]
                                    for k in run.task.progress_keys})
            if step % t.eval_every == 0 and not is_last:
                params = run.task.inference_params(state, config.eval.use_ema)
                scalars = run_eval(run, params, final=False)
                writer.write_scalars(step, without_timings(scalars))
                log.info("step %d  %s", step, _fmt(scalars))
                write_figures(run, params, step, writer, f"step{step:07d}")
            if save_now:
                run.checkpointer.save(step, state, iterator.get_state(),
                                      config_dict)
        progress.close()
        params = run.task.inference_params(state, config.eval.use_ema)
        t0 = time.perf_counter()
        final_metrics = run_eval(run, params, final=True)
        final_metrics["eval/seconds"] = time.perf_counter() - t0
        writer.write_scalars(t.num_steps, without_timings(final_metrics))
        log.info("final (step %d)  %s", t.num_steps, _fmt(final_metrics))
        _write_json(os.path.join(workdir, "eval.json"),
                    dict(final_metrics, step=t.num_steps))
        paths = write_figures(run, params, t.num_steps, writer, "final")
        log.info("wrote %s", ", ".join(paths))
    finally:
        progress.close()
        writer.close()
        run.checkpointer.close()
    return final_metrics


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


def _fmt(scalars: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scalars.items())


def _saved_vocabulary(config, workdir: str):
    """A text run's vocabulary from its latest checkpoint (no text read);
    None for other kinds of data."""
    if data_lib.dataset_kind(config.data.name) != "text":
        return None
    checkpointer = ckpt_lib.Checkpointer(workdir, config.train.keep_checkpoints)
    try:
        restored = checkpointer.restore_latest(None)
    finally:
        checkpointer.close()
    if restored is None:
        return None
    return data_lib.text.SavedVocabulary(
        config.data.name, data_lib.text.tokenizer_from_state(restored[2]))


def _restore_for_inference(config, workdir, make_task, *,
                           need_data: bool = True) -> tuple[Run, int, Any]:
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ckpt_lib.CheckpointError(
            f"no checkpoints in {workdir}; train first with --mode=train")
    dataset = None if need_data else _saved_vocabulary(config, workdir)
    run = build(config, workdir, make_task, dataset)
    restored = run.checkpointer.restore_latest(run.abstract_state)
    if restored is None:
        raise ckpt_lib.CheckpointError(
            f"no complete checkpoint in {run.checkpointer.directory}; "
            "train first with --mode=train")
    step, state, _, saved = restored
    model_diff = config_lib.diff(saved.get("model", {}),
                                 config_lib.to_dict(config).get("model", {}))
    if model_diff:
        raise ckpt_lib.CheckpointError(
            f"{workdir} was trained with a different model config "
            f"({'; '.join(model_diff)}); pass the same --preset and overrides")
    return run, step, run.task.inference_params(state, config.eval.use_ema)


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             make_task: Callable) -> dict[str, float]:
    """Evaluates the latest checkpoint on the test split; writes ``eval.json``."""
    run, step, params = _restore_for_inference(config, workdir, make_task)
    t0 = time.perf_counter()
    metrics = run_eval(run, params, final=True)
    metrics["eval/seconds"] = time.perf_counter() - t0
    _write_json(os.path.join(workdir, "eval.json"), dict(metrics, step=step))
    log.info("eval of step %d  %s", step, _fmt(metrics))
    run.checkpointer.close()
    return metrics


def sample(config: ml_collections.ConfigDict, workdir: str, make_task: Callable,
           num_samples: int | None = None):
    """Samples from the latest checkpoint.

    Images: writes ``samples/sample_mode.png`` and ``samples.npy`` (float32
    [N,H,W,C]; ``num_samples`` defaults to 64) and returns the array. Text:
    ``num_samples`` (default ``config.sample.num_samples``) continuations of
    ``config.sample.prompt``, printed, written to ``samples.txt`` and
    returned as one string; the vocabulary comes from the checkpoint, so no
    dataset is read.
    """
    run, step, params = _restore_for_inference(config, workdir, make_task,
                                               need_data=False)
    if run.dataset.kind == "text":
        num_samples = num_samples or config.sample.num_samples
        text = run.task.samples_as_text(_sample(run, params, num_samples))
        if jax.process_index() == 0:
            _write_text(os.path.join(workdir, "samples.txt"), text)
            print(text, end="", flush=True)
        log.info("wrote %d samples of %d tokens from step %d to %s",
                 num_samples, config.sample.max_new_tokens, step,
                 os.path.join(workdir, "samples.txt"))
        run.checkpointer.close()
        return text
    num_samples = num_samples or 64
    samples = _sample(run, params, num_samples)
    if jax.process_index() == 0:
        _write_npy(os.path.join(workdir, "samples.npy"), samples.astype(np.float32))
        picture = (image_lib.make_grid(samples) if samples.ndim == 4 else
                   image_lib.scatter_image(samples) if samples.ndim == 2 else None)
        if picture is not None:
            image_lib.save_png(os.path.join(workdir, "samples", "sample_mode.png"),
                               picture)
    log.info("wrote %d samples from step %d to %s", num_samples, step, workdir)
    run.checkpointer.close()
    return samples


def inpaint(config: ml_collections.ConfigDict, workdir: str,
            make_task: Callable) -> np.ndarray:
    """Fills a masked region of the first ``config.inpaint.num_images`` test
    images with the latest checkpoint (tasks with an ``inpaint`` method:
    diffusion models).

    Writes ``samples/inpaint.png`` (rows: the originals, the masked inputs,
    the inpainted images) and ``inpainted.npy`` (float32 ``[N, H, W, C]`` in
    [0, 1]), and returns the inpainted images.
    """
    run, step, params = _restore_for_inference(config, workdir, make_task)
    if not hasattr(run.task, "inpaint"):
        run.checkpointer.close()
        raise config_lib.ConfigError(
            f"--mode=inpaint needs a diffusion model; {config.data.name!r} is "
            f"trained by {type(run.task).__name__}, which cannot inpaint")
    test = run.dataset.arrays("test")["image"]
    num = min(config.inpaint.num_images, len(test))
    images = test[:num]
    mask = run.task.inpaint_mask(num)
    fn = jax.jit(run.task.inpaint, out_shardings=step_lib.replicated(run.mesh))
    t0 = time.perf_counter()
    filled = _as_host(fn(params, images, mask,
                         step_lib.root_key(config.seed, "sample")))
    seconds = time.perf_counter() - t0
    if jax.process_index() == 0:
        masked = images * mask + 0.5 * (1.0 - mask)  # grey where unknown
        grid = image_lib.make_grid(np.concatenate([images, masked, filled]),
                                   ncols=num)
        image_lib.save_png(os.path.join(workdir, "samples", "inpaint.png"), grid)
        _write_npy(os.path.join(workdir, "inpainted.npy"), filled)
    log.info("inpainted %d test images (mask %s, %d resampling rounds) from "
             "step %d in %.1f s; wrote %s", num, config.inpaint.mask,
             config.inpaint.resample, step, seconds,
             os.path.join(workdir, "samples", "inpaint.png"))
    run.checkpointer.close()
    return filled


__all__ = ["train_and_evaluate", "evaluate", "sample", "inpaint", "run_eval", "build",
           "TrainingDiverged", "data_seed"]
