"""Profiling helpers: where a compiled step's time and FLOPs go.

Used by ``python -m genjax.tools.benchmark`` and usable on their own: XLA's
cost analysis of a compiled function, the machine's measured matmul peak,
and a summary of a ``jax.profiler`` trace by operation kind (matmul,
collective, other) with the JAX source of the costliest operations.
"""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
import re
import time
from typing import Any

# Operations listed by name in a profile summary.
PROFILE_TOP = 12
PEAK_RUNS = 5
# One timed peak run should last at least this long (accelerators repeat the
# matmul inside one jitted loop so that dispatch overhead does not count).
PEAK_MIN_SECONDS = 0.2


def flops_from_cost_analysis(compiled) -> float | None:
    """The ``flops`` entry of ``compiled.cost_analysis()``, or None.

    JAX has returned a dict, a one-element list of dicts, or None (backends
    without a cost model) across versions; all are handled.
    """
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # pylint: disable=broad-except
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    flops = analysis.get("flops")
    if flops is None:
        return None
    flops = float(flops)
    return flops if math.isfinite(flops) and flops > 0 else None


def _matmul_flops(eqn) -> float:
    """2 x multiply-adds of a ``dot_general`` or ``conv_general_dilated``
    equation (0 for anything else)."""
    name = eqn.primitive.name
    if name not in ("dot_general", "conv_general_dilated"):
        return 0.0
    out = math.prod(eqn.outvars[0].aval.shape)
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * out * math.prod(lhs[d] for d in lhs_contract)
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
    return 2.0 * out * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])


def _sub_jaxprs(value):
    """The jaxprs held in an equation parameter (a jaxpr, a closed one, or a
    tuple of them, such as ``cond``'s branches)."""
    if hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def loop_matmul_flops(jaxpr) -> dict[str, float]:
    """The matmul and convolution FLOPs that XLA's cost analysis leaves out.

    The cost analysis counts a loop's body once, whatever its trip count:
    a step that maps a matmul over 5 mixture components (``lax.map``, a
    ``scan``) is charged for one. This walks ``jaxpr`` (a step's, e.g.
    ``jax.jit(f).trace(*args).jaxpr``) and returns ``extra``: the FLOPs of
    every ``dot_general`` and ``conv_general_dilated`` times its enclosing
    scans' trip counts less one, summed (global shapes: divide by the devices
    for a per-device count), and ``unknown_loops``: while-loops whose trip
    count the jaxpr does not fix, counted once as XLA does.
    """
    out = {"extra": 0.0, "unknown_loops": 0}

    def walk(jaxpr, trips: int) -> None:
        for eqn in jaxpr.eqns:
            flops = _matmul_flops(eqn)
            if flops:
                out["extra"] += flops * (trips - 1)
                continue
            name = eqn.primitive.name
            inner = trips
            if name == "scan":
                inner = trips * int(eqn.params["length"])
            elif name == "while":
                out["unknown_loops"] += 1
            for value in eqn.params.values():
                for sub in _sub_jaxprs(value):
                    walk(sub, inner)

    walk(getattr(jaxpr, "jaxpr", jaxpr), 1)
    return out


def measure_matmul_peak(mesh, size: int = 2048,
                        runs: int = PEAK_RUNS) -> dict[str, Any]:
    """The f32 matmul FLOP/s of every device of ``mesh`` together, now.

    Each device multiplies its own ``[size, size]`` pair (the leading axis is
    sharded over the mesh), so the result is the aggregate peak the train
    step could reach. ``reps`` dependent matmuls run inside one jitted loop,
    with ``reps`` chosen so that one run takes at least ``PEAK_MIN_SECONDS``;
    the best of ``runs`` runs counts.
    """
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    n = mesh.devices.size
    sharding = step_lib.data_sharding(mesh)
    make = jax.jit(
        lambda key: jax.random.normal(key, (n, size, size), jnp.float32)
        * (1.0 / math.sqrt(size)),  # Keeps repeated products O(1).
        out_shardings=sharding)
    a = make(jax.random.key(0))
    b = make(jax.random.key(1))

    @jax.jit
    def chain(x, y, reps):
        return jax.lax.fori_loop(0, reps, lambda _, z: jnp.matmul(z, y), x)

    def timed(reps: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(chain(a, b, reps))
        return time.perf_counter() - t0

    timed(1)  # Compiles (the trip count is an argument: compiled once).
    once = min(timed(1), timed(1))
    reps = int(min(1000, max(1, math.ceil(PEAK_MIN_SECONDS / max(once, 1e-9)))))
    best = min(timed(reps) for _ in range(runs))
    flops = 2.0 * size ** 3 * n * reps
    return {"flops_per_second": flops / best, "size": size, "devices": n,
            "reps": reps, "runs": runs, "best_seconds": best}


# Operation names (XLA instruction names, less the ``.N`` suffix) by kind.
# "conv" alone would also catch ``convert`` fusions.
_MATMUL_PREFIXES = ("dot", "ynn_fusion", "xnn_fusion", "onednn", "convolution",
                    "cublas", "gemm", "__cublas", "custom-call")
_COLLECTIVE_PREFIXES = ("all-reduce", "all-gather", "reduce-scatter",
                        "all-to-all", "collective-permute")


def op_kind(name: str) -> str:
    """``matmul`` (dots, convolutions, library GEMM fusions), ``collective``
    or ``other`` (elementwise and reduction fusions, copies, ...) for an XLA
    operation's name."""
    base = re.sub(r"\.\d+$", "", name)
    if base.startswith(_COLLECTIVE_PREFIXES):
        return "collective"
    if base.startswith(_MATMUL_PREFIXES):
        return "matmul"
    return "other"


def summarize_trace(profile_dir: str, hlo_text: str, steps: int,
                    devices: int) -> dict[str, Any]:
    """Time per step and device in each operation of the compiled step.

    Reads the newest ``*.trace.json.gz`` (Perfetto) under ``profile_dir``
    and keeps the events named like an instruction of ``hlo_text`` (the
    compiled step), so runtime bookkeeping is left out. Times are the events'
    durations summed, divided by ``steps`` and ``devices``; ``top`` names
    the costliest with the JAX operation each came from (``source``). On
    XLA:CPU some library calls (Eigen dots) finish outside their event, so
    the parts can add up to less than the step: ``untraced`` is that
    remainder.
    """
    paths = glob.glob(os.path.join(profile_dir, "**", "*.trace.json.gz"),
                      recursive=True)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {profile_dir}")
    path = max(paths, key=os.path.getmtime)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        events = json.load(f).get("traceEvents", [])
    # Instruction name -> the JAX operation it came from (its op_name).
    instructions = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            source = re.search(r'op_name="([^"]*)"', line)
            instructions[m.group(1)] = source.group(1) if source else ""
    per_op: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in events:
        name = e.get("name")
        if e.get("ph") == "X" and name in instructions:
            per_op[name] = per_op.get(name, 0.0) + e.get("dur", 0) * 1e-6
            count[name] = count.get(name, 0) + 1
    scale = 1.0 / (steps * devices)
    kinds = {"matmul": 0.0, "collective": 0.0, "other": 0.0}
    for name, seconds in per_op.items():
        kinds[op_kind(name)] += seconds * scale
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]
    return {
        "dir": profile_dir, "trace": path, "steps": steps,
        "ops_per_step": sum(count.values()) * scale,
        "kind_seconds": kinds,
        "top": [{"name": n, "kind": op_kind(n), "seconds": sec * scale,
                 "source": instructions[n]} for n, sec in top],
    }


