"""Evaluation and sampling of a built run: exact averages over a split, the
shared sample-quality protocol, and compiled samplers.

Every metric is a function of the data, the parameters and ``config.seed``
only: each example's randomness comes from the key of its index in the
split (``step.example_keys``), sums are taken inside the jitted step and
divided once, and samples are drawn in chunks of the protocol's batch size
from keys of their own.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import jax
import numpy as np

from genjax.data.images import default_data_dir
from genjax.evaluate import sample_quality
from genjax.train import step as step_lib
from genjax.train.run import Run


def _local_rows(arrays):
    """This process's contiguous share of global arrays (a pytree)."""
    n_proc, p = jax.process_count(), jax.process_index()

    def cut(x):
        b = x.shape[0] // n_proc
        return x[p * b:(p + 1) * b]

    return jax.tree.map(cut, arrays)


def pad_to_devices(batch, mask, index, num_devices: int):
    """``(batch, mask, index)`` with rows appended (copies of row 0, mask 0)
    until ``num_devices`` divides them, so that any eval batch size shards
    over any number of devices; the padding counts for nothing."""
    pad = -len(mask) % num_devices
    if not pad:
        return batch, mask, index

    def grow(x):
        return np.concatenate([x, np.repeat(x[:1], pad, axis=0)])

    return (jax.tree.map(grow, batch),
            np.concatenate([mask, np.zeros(pad, mask.dtype)]), grow(index))


def eval_pass(run: Run, params, name: str, eval_fn: Callable, batches,
              key) -> dict[str, float]:
    """``eval_fn``'s per-example values averaged over ``batches``
    (``(batch, mask)`` pairs in split order); ``eval/...`` keys.

    Exact on any number of devices and processes: each batch is padded to a
    multiple of the device count (``pad_to_devices``), every example's
    randomness comes from the key of its index in the split, and the masked
    sums are divided once, so the metrics depend neither on
    ``eval.batch_size`` nor on the device count. Every process walks the
    same batches, so all take part in the same collectives."""
    if ("eval", name) not in run.compiled:
        run.compiled["eval", name] = step_lib.make_eval_step(eval_fn, run.mesh)
    eval_step = run.compiled["eval", name]
    totals: dict[str, float] = {}
    offset = 0
    for batch, mask in batches:
        size = len(mask)
        index = np.arange(offset, offset + size, dtype=np.int32)
        offset += size
        batch, mask, index = pad_to_devices(batch, np.asarray(mask), index,
                                            run.mesh.devices.size)
        batch, mask, index = _local_rows((batch, mask, index))
        sums = eval_step(params, step_lib.to_global(batch, run.mesh),
                         step_lib.to_global(mask, run.mesh),
                         step_lib.to_global(index, run.mesh), key)
        for k, v in jax.device_get(sums).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count")
    return {f"eval/{k}": v / count for k, v in sorted(totals.items())}


def run_eval(run: Run, params, *, final: bool) -> dict[str, float]:
    """Averages ``task.eval_fn`` over the whole test split, and each of the
    task's extra passes over its own examples; then the sample-quality
    protocol if the config has one. ``eval/...`` keys."""
    task, batch_size = run.task, run.config.eval.batch_size
    key = run.key("eval")
    metrics = eval_pass(
        run, params, f"main/{final}",
        lambda p, b, r: task.eval_fn(p, b, r, final=final),
        task.eval_batches(run.dataset, batch_size, final=final), key)
    for name in task.extra_eval_passes(final):
        metrics.update(eval_pass(
            run, params, name,
            lambda p, b, r, name=name: task.extra_eval_fn(name, p, b, r),
            task.extra_eval_batches(name, run.dataset, batch_size), key))
    protocol = run.config.eval.get("sample_quality")
    if protocol is not None:
        n = (protocol.num_samples if final
             else protocol.num_samples_during_training)
        if n > 0:
            metrics.update(sample_quality_metrics(run, params, protocol, n,
                                                  final=final))
    return task.summarize_eval(metrics)


def sample_quality_metrics(run: Run, params, protocol, num_samples: int, *,
                           final: bool = True,
                           samplers: tuple[str, ...] | None = None) -> dict[str, float]:
    """The shared sample-quality metrics of ``num_samples`` new samples from
    each of the task's samplers (``task.sample_quality_samplers``).

    Samples are drawn in chunks of ``protocol.batch_size`` from a key of
    their own, so the numbers depend on ``config.seed`` and the protocol
    only; every sampler gets the same keys. ``eval/<name>/sample_seconds``
    is each sampler's drawing time, compilation excluded; a sampler that
    returns ``(samples, extras)`` also reports each extra's mean (e.g.
    ``nfe``). ``final`` is passed to ``task.sample_quality_samplers``;
    ``samplers`` keeps only those names (``("",)``: the task's own sampler).
    """
    chunk = min(protocol.batch_size, num_samples)
    key = run.key("sample_quality")
    cache_dir = run.config.data.get("data_dir") or default_data_dir()
    out = {}
    for name, sample_fn in run.task.sample_quality_samplers(final).items():
        if samplers is not None and name not in samplers:
            continue
        # Cached apart from draw()'s sample_fn: these may return extras.
        fn = compiled_sampler(run, params, f"quality/{name}", sample_fn, chunk, key)
        t0 = time.perf_counter()
        outs = [jax.device_get(fn(params, jax.random.fold_in(key, i)))
                for i in range(-(-num_samples // chunk))]
        seconds = time.perf_counter() - t0
        # A sampler may return (samples, {name: per-sample values}), e.g. its
        # number of network evaluations, reported as their mean.
        extras = [o[1] for o in outs] if isinstance(outs[0], tuple) else []
        samples = np.concatenate([as_host(o[0] if extras else o)
                                  for o in outs])[:num_samples]
        result = sample_quality.evaluate_samples(
            samples, run.dataset, protocol, os.path.expanduser(cache_dir),
            seed=run.config.seed)
        result["sample_seconds"] = seconds
        for k in (extras[0] if extras else {}):
            values = np.concatenate([np.asarray(e[k]).reshape(-1) for e in extras])
            result[k] = float(np.mean(values[:num_samples]))
        prefix = f"eval/{name}/" if name else "eval/"
        out.update({f"{prefix}{k}": float(v) for k, v in sorted(result.items())})
    return out


def compiled_sampler(run: Run, params, name: str, sample_fn, num_samples: int,
                     key):
    """``sample_fn`` for ``num_samples``, jitted under the run's mesh and
    compiled ahead of use (once per run), so that timing it measures
    sampling alone."""
    cache_key = ("sample", name, num_samples)
    if cache_key not in run.compiled:
        jitted = run.jit(lambda p, k: sample_fn(p, k, num_samples))
        run.compiled[cache_key] = jitted.lower(params, key).compile()
    return run.compiled[cache_key]


def as_host(out) -> np.ndarray:
    """Samples on the host: floating samples as float32; token ids stay
    integers."""
    out = np.asarray(jax.device_get(out))
    return out.astype(np.float32) if np.issubdtype(out.dtype, np.floating) else out


def draw(run: Run, params, num_samples: int, key=None) -> np.ndarray:
    """``num_samples`` samples of ``task.sample_fn`` (from the run's
    ``sample`` key unless ``key`` is given), by a sampler compiled once per
    size."""
    key = run.key("sample") if key is None else key
    fn = compiled_sampler(run, params, "", run.task.sample_fn, num_samples, key)
    return as_host(fn(params, key))
