"""Benchmark one experiment's real train step: compile time, step time, MFU.

    python -m genjax.tools.benchmark NAME [--preset=P] [--config.KEY=VALUE ...]
        [--steps=N] [--warmup=N] [--peak_size=N] [--sampling=N]
        [--profile=DIR] [--json]

The train step is built exactly as ``genjax.train.loop.train_and_evaluate``
builds it: the same task, optimiser, schedule, EMA, one-axis mesh, shardings
and state donation (``genjax.train.run.build`` +
``genjax.train.step.make_update_step``), fed with real batches of the
experiment's dataset (``TrainIterator`` seeded as in training, then
``to_global``). Nothing is written: ``build`` opens no checkpoint manager.

What it measures:

* compile: ``lower`` + ``compile`` of the train step (seconds). Timings are
  from a cold process unless JAX's persistent compilation cache is enabled.
* step time: ``--warmup`` untimed steps, then ``--steps`` timed steps, each
  the step of a real training loop (next batch -> ``to_global`` -> step),
  synchronised with ``jax.block_until_ready`` on the new state and metrics;
  reported as median, p10 and p90 (and the median host time spent on the
  batch). A second pass times ``--steps`` steps as the training loop runs
  them (no per-step synchronisation, except on a mesh of several CPU
  devices, where every step is awaited) and reports the mean.
* throughput: global batch / median step time; for sequence models (batches
  of ``inputs`` windows ``[B, T]``) also tokens per second, ``B * T`` per step.
* FLOPs: XLA's cost analysis of the compiled step. Under SPMD the compiled
  program is the per-device one, so the step's FLOPs are the per-device count
  times the number of devices. XLA counts every op (elementwise ones too),
  forward, backward and optimiser update, but a loop's body only once: the
  matmuls and convolutions of a ``scan`` (``lax.map``, a ``fori_loop`` of
  fixed length) run once per trip, so their FLOPs times the trips less one
  are added, counted from the step's jaxpr (``profiling.loop_matmul_flops``;
  the mixture's EM step maps its matmuls over the components).
* peak and MFU: the peak is measured here, now: a jitted f32 square matmul
  (``--peak_size``, 2048 by default) on every device at once, at JAX's
  default matmul precision (the one the model's own matmuls use; on TPU that
  means bf16 passes), best of 5 runs; MFU = achieved FLOP/s / that peak. So
  MFU is relative to what this machine's matmul reaches, not to a datasheet
  number. On a shared host both the peak and the step time drop when other
  processes run; the report notes a busy host (load above 0.5 per CPU).

Usage mistakes (unknown experiment, flag, preset or config key, a bad value)
print one ``error:`` line and exit 2; data problems exit 1.

Example, measured on a 2-core CPU VM (jax 0.10.2, an otherwise quiet host;
the data paths are shortened to ``...``)::

    $ python -m genjax.tools.benchmark vae_mnist --preset=cpu \\
          --config.data.manual_dir=... --config.data.data_dir=...
    genjax benchmark: vae_mnist --preset=cpu --config.data.manual_dir=... --config.data.data_dir=...
      devices     1 x cpu (cpu), 1 process(es); jax 0.10.2
      model       1,091,920 params; global batch 128
      compile     2.33 s (lower 0.36 s + XLA compile 1.98 s)
      step time   median 9.59 ms  p10 9.35 ms  p90 9.95 ms  (50 timed, 5 warm-up; batch 1.01 ms)
      pipelined   9.24 ms/step mean, no per-step sync (as the training loop runs)
      throughput  13,343 examples/s
      FLOPs       762.71 MFLOP/step (XLA cost analysis; 762.71 MFLOP per device)
      achieved    79.50 GFLOP/s
      peak        165.12 GFLOP/s (f32 2048x2048 matmul on 1 device(s), best of 5)
      MFU         48.1%

The same machine with other jobs running measured 16-19 ms per step and a
peak of 80-105 GFLOP/s: compare numbers from quiet runs only.

``--sampling=N`` also times each of the task's samplers on N samples (for
a diffusion model: DDIM with ``sample.steps``, and ancestral DDPM when
``eval.compare_samplers`` lists ``ddpm``), compiled ahead, from the initial
parameters (the cost does not depend on their values), and prints each
time with its ratio to the first.

``--profile=DIR`` also traces 10 steps (fewer if ``--steps`` is smaller)
with ``jax.profiler`` into ``DIR`` (a Perfetto trace that TensorBoard's
profile plugin and ui.perfetto.dev open) and prints where a step's time goes,
per device: matmuls (dots, convolutions, library GEMM fusions such as
XLA:CPU's ``ynn_fusion``), collectives, everything else, and the part no
operation's event covers; then the costliest operations, each with the JAX
operation it came from. Profile before optimising: on XLA:CPU the shape and
layout of each ``dot_general`` decide most of a step's time.

``--json`` prints one JSON object with the same numbers (seconds and FLOP/s,
unrounded) instead of the block.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

from genjax import cli
from genjax import config as config_lib
from genjax import registry
from genjax.tools.profiling import (flops_from_cost_analysis, loop_matmul_flops,
                                    measure_matmul_peak, summarize_trace)

USAGE = ("usage: python -m genjax.tools.benchmark NAME [--preset=P] "
         "[--config.KEY=VALUE ...] [--steps=N] [--warmup=N] [--peak_size=N] "
         "[--sampling=N] [--profile=DIR] [--json]")
DEFAULTS = {"preset": "cpu", "steps": 50, "warmup": 5, "peak_size": 2048,
            "sampling": 0, "profile": None}
# Steps traced by --profile (the trace of a step is large).
PROFILE_STEPS = 10


class UsageError(cli.UsageError):
    """A command-line mistake: exit code 2."""


def parse_argv(argv: list[str]) -> tuple[str, dict[str, Any],
                                         list[tuple[str, str]]]:
    """``(experiment_name, flags, config_overrides)`` from argv.

    Same conventions as ``genjax.cli.parse_args`` (``--name=value`` or
    ``--name value``; ``--config.KEY=VALUE``), plus one positional NAME and
    the boolean ``--json``.
    """
    names: list[str] = []
    flags: dict[str, Any] = dict(DEFAULTS, json=False)
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            names.append(arg)
            continue
        name, eq, value = arg[2:].partition("=")
        if name in ("json", "help"):
            if not eq:
                value = "true"
            if value.lower() not in ("true", "1", "false", "0"):
                raise UsageError(f"--{name}={value}: expected true or false")
            flags[name] = value.lower() in ("true", "1")
            continue
        if not eq:
            if i >= len(argv):
                raise UsageError(f"flag --{name} needs a value (--{name}=VALUE)")
            value = argv[i]
            i += 1
        if name.startswith("config."):
            overrides.append((name[len("config."):], value))
        elif name == "preset":
            flags[name] = value
        elif name == "profile":
            if not value:
                raise UsageError("--profile needs a directory (--profile=DIR)")
            flags[name] = value
        elif name in ("steps", "warmup", "peak_size", "sampling"):
            try:
                flags[name] = int(value)
            except ValueError:
                raise UsageError(f"--{name}={value}: expected an int") from None
            minimum = 0 if name in ("warmup", "sampling") else 1
            if flags[name] < minimum:
                raise UsageError(f"--{name}={value} must be >= {minimum}")
        else:
            raise UsageError(
                f"unknown flag --{name}; valid: --preset, --steps, --warmup, "
                "--peak_size, --sampling, --profile, --json, --config.KEY")
    if flags.get("help"):
        return (names[0] if names else ""), flags, overrides
    if len(names) != 1:
        got = "none" if not names else " ".join(names)
        raise UsageError(
            f"expected exactly one experiment name (got {got}); see "
            "`python -m experiments` for the registered names")
    return names[0], flags, overrides


# --------------------------------------------------------------------------
# Measurements.


def _percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_train_step(run, steps: int, warmup: int,
                     profile_dir: str | None = None) -> dict[str, Any]:
    """Compiles and times the train step of ``run`` (see the module docstring)."""
    import jax  # pylint: disable=import-outside-toplevel
    from genjax.train import run as run_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    mesh = run.mesh
    # The same iterator and step as loop.train_and_evaluate.
    iterator = run_lib.make_train_iterator(run)
    train_step = run_lib.make_step(run)
    state = jax.block_until_ready(run.init_state_fn())
    num_params = int(sum(np.prod(x.shape) for x in
                         jax.tree.leaves(run.abstract_state.params)))

    # Compile: lower + compile, on the shapes and shardings of real inputs.
    host_batch = next(iterator)
    # Sequence models: every example is a window of tokens.
    inputs = host_batch.get("inputs")
    tokens_per_example = (int(inputs.shape[1]) if inputs is not None
                          and inputs.ndim == 2 else None)
    batch = step_lib.to_global(host_batch, mesh)
    t0 = time.perf_counter()
    traced = train_step.trace(state, batch)  # its jaxpr counts the loop trips
    lowered = traced.lower()
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    flops_per_device = flops_from_cost_analysis(compiled)
    loops = loop_matmul_flops(traced.jaxpr)
    loop_flops_per_device = loops["extra"] / int(mesh.devices.size)
    if flops_per_device is not None:
        flops_per_device += loop_flops_per_device

    # Warm-up (the batch used for lowering is the first one trained on).
    for i in range(warmup):
        if i:
            batch = step_lib.to_global(next(iterator), mesh)
        state, metrics = compiled(state, batch)
    state = jax.block_until_ready(state)

    # Pass 1: each step synchronised, so that it has its own duration.
    step_times, batch_times = [], []
    for _ in range(steps):
        s0 = time.perf_counter()
        batch = step_lib.to_global(next(iterator), mesh)
        s1 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        s2 = time.perf_counter()
        batch_times.append(s1 - s0)
        step_times.append(s2 - s0)

    # Pass 2: as the training loop runs: no per-step synchronisation, except
    # on a mesh of several CPU devices (step_lib.steps_must_sync).
    sync = step_lib.steps_must_sync(mesh)
    pending = []
    s0 = time.perf_counter()
    for _ in range(steps):
        batch = step_lib.to_global(next(iterator), mesh)
        state, metrics = compiled(state, batch)
        if sync:
            jax.block_until_ready(metrics)
        pending.append(metrics)
    jax.block_until_ready((state, pending))
    pipelined = (time.perf_counter() - s0) / steps
    last = jax.device_get(pending[-1])
    final_metrics = {k: float(last[k]) for k in run.task.progress_keys}
    del pending

    profile = None
    if profile_dir is not None:
        # Pass 3: a jax.profiler trace of a few steps, each awaited.
        n = min(steps, PROFILE_STEPS)
        wall = time.perf_counter()
        with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
            for _ in range(n):
                batch = step_lib.to_global(next(iterator), mesh)
                state, metrics = compiled(state, batch)
                jax.block_until_ready((state, metrics))
            wall = time.perf_counter() - wall
        profile = summarize_trace(profile_dir, compiled.as_text(), n,
                                  int(mesh.devices.size))
        profile["step_seconds"] = wall / n
    del state

    return {"compile": (t0, t1, t2), "flops_per_device": flops_per_device,
            "loop_flops_per_device": loop_flops_per_device,
            "unknown_loops": loops["unknown_loops"],
            "step_times": step_times, "batch_times": batch_times,
            "pipelined": pipelined, "steps_synced": sync,
            "final_metrics": final_metrics,
            "num_params": num_params, "tokens_per_example": tokens_per_example,
            "profile": profile}


def _time_samplers(run, num_samples: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds each of the task's samplers (``sample_quality_samplers(final
    =True)``: e.g. DDIM and, listed in ``eval.compare_samplers``, DDPM) takes
    for ``num_samples`` samples from the initial parameters (the cost of
    sampling does not depend on their values), compiled ahead, one timed
    call each after an untimed one; and the network evaluations per sample
    of each sampler that reports them (``{"nfe": ...}`` beside its samples)."""
    import jax  # pylint: disable=import-outside-toplevel
    from genjax.train import evaluation  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    params = run.task.inference_params(run.init_state_fn(),
                                       run.config.eval.use_ema)
    key = step_lib.root_key(run.config.seed, "sample")
    seconds, nfe = {}, {}
    for name, sample_fn in run.task.sample_quality_samplers(True).items():
        fn = evaluation.compiled_sampler(run, params, name, sample_fn, num_samples,
                                         key)
        out = jax.block_until_ready(fn(params, key))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params, jax.random.fold_in(key, 1)))
        label = name or run.config.sample.get("sampler", "sample_fn")
        seconds[label] = time.perf_counter() - t0
        if (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)
                and "nfe" in out[1]):
            nfe[label] = float(np.mean(np.asarray(out[1]["nfe"])))
    return seconds, nfe


def benchmark(config, make_task: Callable, *, steps: int = 50, warmup: int = 5,
              peak_size: int = 2048, sampling: int = 0,
              profile_dir: str | None = None) -> dict[str, Any]:
    """Builds the training step of ``config`` and times it; returns the numbers.

    Args:
      config: an experiment config (``Experiment.get_config`` + overrides).
      make_task: ``Experiment.make_task``.
      steps: timed steps (each pass).
      warmup: untimed steps after compilation.
      peak_size: side of the square matmul that measures the peak.
      sampling: if > 0, also time each of the task's samplers on this many
        samples (``sampling_seconds``).
      profile_dir: if given, also trace a few steps with ``jax.profiler``
        into this directory and summarise them (``profile``).
    """
    import jax  # pylint: disable=import-outside-toplevel
    from genjax.train import run as run_lib  # pylint: disable=import-outside-toplevel

    # build() opens no checkpoint manager and writes nothing: the workdir
    # it is given is never created.
    run = run_lib.build(config, os.path.join(tempfile.gettempdir(),
                                             "genjax_benchmark_unused"), make_task)
    m = _time_train_step(run, steps, warmup, profile_dir)
    sampler_seconds, sampler_nfe = _time_samplers(run, sampling) if sampling else (None, None)

    peak = measure_matmul_peak(run.mesh, peak_size)
    step_times, (t0, t1, t2) = m["step_times"], m["compile"]
    median = _percentile(step_times, 50)
    n_dev = int(run.mesh.devices.size)
    per_device = m["flops_per_device"]
    flops = None if per_device is None else per_device * n_dev
    achieved = None if flops is None else flops / median
    batch_size = int(config.train.batch_size)
    device = jax.devices()[0]
    return {
        "experiment": None,  # Filled in by main().
        "preset": None,
        "overrides": [],
        "devices": {"count": n_dev, "kind": device.device_kind,
                    "platform": device.platform,
                    "processes": jax.process_count()},
        "jax_version": jax.__version__,
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "global_batch_size": batch_size,
        "params": m["num_params"],
        "compile_seconds": t2 - t0,
        "lower_seconds": t1 - t0,
        "xla_compile_seconds": t2 - t1,
        "steps": steps,
        "warmup": warmup,
        "step_seconds": {"median": median,
                         "p10": _percentile(step_times, 10),
                         "p90": _percentile(step_times, 90),
                         "mean": float(np.mean(step_times)),
                         "min": float(np.min(step_times))},
        "batch_seconds_median": _percentile(m["batch_times"], 50),
        "pipelined_step_seconds_mean": m["pipelined"],
        "steps_synced": m["steps_synced"],
        "examples_per_second": batch_size / median,
        "tokens_per_second": (None if m["tokens_per_example"] is None else
                              batch_size * m["tokens_per_example"] / median),
        "flops_per_step": flops,
        "flops_per_step_per_device": per_device,
        # Of those, the matmul FLOPs of loop trips XLA's analysis leaves out.
        "loop_flops_per_step": m["loop_flops_per_device"] * n_dev,
        "while_loops_counted_once": m["unknown_loops"],
        "achieved_flops_per_second": achieved,
        "peak_flops_per_second": peak["flops_per_second"],
        "peak": peak,
        "mfu": None if achieved is None else achieved / peak["flops_per_second"],
        # The task's progress-line metrics at the last step (e.g. loss).
        "final_train_metrics": m["final_metrics"],
        "sampling_num_samples": sampling,
        "sampling_seconds": sampler_seconds,
        "sampling_nfe": sampler_nfe,
        "profile": m["profile"],
        # This process's peak resident memory so far (Linux: ru_maxrss, KiB).
        "peak_host_memory_bytes": _peak_rss_bytes(),
    }


# --------------------------------------------------------------------------
# Output.


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                           (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def format_report(r: dict[str, Any]) -> str:
    """The human-readable block printed without ``--json``."""
    d, s, pk = r["devices"], r["step_seconds"], r["peak"]
    title = f"{r['experiment']} --preset={r['preset']}"
    for key, value in r["overrides"]:
        title += f" --config.{key}={value}"
    lines = [
        f"genjax benchmark: {title}",
        f"  devices     {d['count']} x {d['kind']} ({d['platform']}), "
        f"{d['processes']} process(es); jax {r['jax_version']}",
        f"  model       {r['params']:,} params; global batch "
        f"{r['global_batch_size']}",
        f"  compile     {r['compile_seconds']:.2f} s (lower "
        f"{r['lower_seconds']:.2f} s + XLA compile "
        f"{r['xla_compile_seconds']:.2f} s)",
        f"  step time   median {_ms(s['median'])}  p10 {_ms(s['p10'])}  "
        f"p90 {_ms(s['p90'])}  ({r['steps']} timed, {r['warmup']} warm-up; "
        f"batch {_ms(r['batch_seconds_median'])})",
        f"  pipelined   {_ms(r['pipelined_step_seconds_mean'])}/step mean, "
        + ("each step awaited (several CPU devices)" if r["steps_synced"]
           else "no per-step sync") + " (as the training loop runs)",
        f"  throughput  {r['examples_per_second']:,.0f} examples/s"
        + ("" if r.get("tokens_per_second") is None else
           f" ({r['tokens_per_second']:,.0f} tokens/s)"),
    ]
    if r["flops_per_step"] is None:
        lines.append("  FLOPs       n/a (no XLA cost analysis on this backend)")
    else:
        loop_part = (f" + {_si(r['loop_flops_per_step'], 'FLOP')} of loop trips it "
                     "counts once" if r.get("loop_flops_per_step") else "")
        lines += [
            f"  FLOPs       {_si(r['flops_per_step'], 'FLOP')}/step (XLA cost "
            f"analysis{loop_part}; {_si(r['flops_per_step_per_device'], 'FLOP')} per "
            "device)",
            f"  achieved    {_si(r['achieved_flops_per_second'], 'FLOP/s')}",
        ]
    lines.append(
        f"  peak        {_si(r['peak_flops_per_second'], 'FLOP/s')} (f32 "
        f"{pk['size']}x{pk['size']} matmul on {pk['devices']} device(s), "
        f"best of {pk['runs']})")
    mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    lines.append(f"  MFU         {mfu}")
    if r.get("peak_host_memory_bytes"):
        lines.append(f"  memory      {r['peak_host_memory_bytes'] / 2**30:.2f} GiB "
                     "peak resident (this process)")
    if r.get("sampling_seconds"):
        times, nfe = r["sampling_seconds"], r.get("sampling_nfe") or {}
        first = next(iter(times.values()))
        lines.append("  sampling    " + "; ".join(
            f"{name} {sec:.2f} s ({sec / first:.1f}x"
            + (f", NFE {nfe[name]:g}" if name in nfe else "") + ")"
            for name, sec in times.items())
            + f" for {r['sampling_num_samples']} samples")
    prof = r.get("profile")
    if prof:
        k = prof["kind_seconds"]
        untraced = max(prof["step_seconds"] - sum(k.values()), 0.0)
        lines.append(
            f"  profile     {_ms(prof['step_seconds'])}/step traced over "
            f"{prof['steps']} steps; per device: "
            f"{prof['ops_per_step']:,.0f} ops, matmul {_ms(k['matmul'])}, collective "
            f"{_ms(k['collective'])}, other {_ms(k['other'])}, untraced "
            f"{_ms(untraced)}")
        for op in prof["top"]:
            source = op["source"].removeprefix("jit(step)/")
            lines.append(f"              {_ms(op['seconds']):>10}  "
                         f"{op['kind']:<10}  {op['name']}  {source}"[:118])
        lines.append(f"              trace: {prof['trace']} (Perfetto, "
                     "TensorBoard's profile plugin)")
    load = r.get("host_load_per_cpu")
    if load is not None and load > 0.5:
        lines.append(f"  note        the host was busy before the run (load "
                     f"{load:.1f} per CPU): timings are pessimistic")
    if r.get("compilation_cache_dir"):
        lines.append("  note        JAX's persistent compilation cache is on "
                     f"({r['compilation_cache_dir']}): compile may be a cache hit")
    if r.get("while_loops_counted_once"):
        lines.append(f"  note        {r['while_loops_counted_once']} while-loop(s) of a "
                     "trip count set at run time: their FLOPs are counted once")
    if r["steps"] < 20:
        lines.append(f"  note        only {r['steps']} timed steps: the "
                     "percentiles are noisy (use >= 20)")
    return "\n".join(lines)


NOISY_LOGGERS = ("absl", "orbax", "jax._src", "genjax")


def _peak_rss_bytes() -> int | None:
    """The peak resident set size of this process (None where unknown)."""
    try:
        import resource  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB; macOS bytes.
    return int(kib if sys.platform == "darwin" else kib * 1024)


def _host_load() -> float | None:
    """The 1-minute load average per CPU (None where the OS has none)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


def main(argv: list[str]) -> int:
    """Runs the benchmark from command-line arguments; returns the exit code."""
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import loop  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    try:
        name, flags, overrides = parse_argv(argv)
        if flags.get("help"):
            print(USAGE)
            if name:
                exp = registry.get(name)
                print(f"presets: {', '.join(exp.presets)}")
            return 0
        experiment = registry.get(name)
        config = cli.build_config(experiment, flags["preset"], overrides)
        step_lib.split_host_cpu(config.get("cpu_devices", 0))
        loop.validate(config)
        if flags["profile"] is not None:
            # Checked before the minutes of measuring, not when the trace
            # is written at their end.
            try:
                os.makedirs(flags["profile"], exist_ok=True)
            except OSError as err:
                why = ("it is a file" if os.path.isfile(flags["profile"])
                       else err.strerror)
                raise UsageError(
                    f"--profile={flags['profile']}: cannot hold the trace "
                    f"({why}); name a directory") from None
    except (cli.UsageError, config_lib.ConfigError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2

    load = _host_load()  # Before we add to it.
    levels = {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    for n in NOISY_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        result = benchmark(config, experiment.make_task, steps=flags["steps"],
                           warmup=flags["warmup"], peak_size=flags["peak_size"],
                           sampling=flags["sampling"],
                           profile_dir=flags["profile"])
    except data_lib.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
    result.update(experiment=name, preset=flags["preset"],
                  overrides=[list(o) for o in overrides],
                  host_load_per_cpu=load)
    import jax  # pylint: disable=import-outside-toplevel
    if jax.process_index() == 0:
        if flags["json"]:
            print(json.dumps(result, sort_keys=True))
        else:
            print(format_report(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
