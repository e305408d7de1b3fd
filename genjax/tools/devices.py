"""Does every registered experiment and preset start on this many devices?

    python -m genjax.tools.devices [--experiments=A,B] [--presets=P,Q]
        [--lower_only=P,...] [--build_only=P,...] [--train=P,...] [--compile=P,...]
        [--data_root=DIR]
        [--workdir=DIR] [--config.KEY=VALUE ...] [--json]

For each experiment x preset, on every device JAX sees (simulate N on a CPU
with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``), it builds the
run as training does (config, mesh, task, state shapes), draws one real
training batch through the input pipeline, shards it over the devices
(``jax.make_array_from_process_local_data``) and compiles the train step for
the preset's global batch, without taking a step. Presets named in
``--lower_only`` are traced and lowered with their shardings, not compiled
(a big model's compile costs minutes on a CPU), those in ``--build_only``
are built (config checks, mesh, task, the state's shapes and shardings) and
given one sharded real batch, without tracing the step; presets named in ``--train``
are trained and evaluated end to end instead (``train_and_evaluate``, into
``--workdir``). Each of these lists names presets (``smoke``) or one
experiment's preset (``ddpm_mnist:smoke``), which wins over a plain preset;
``--compile`` forces the default. ``--config.KEY=VALUE`` overrides apply to
every preset that has the key (e.g.
``--config.eval.sample_quality.num_samples=0`` to train and evaluate without
the sample-quality protocol's domain classifiers). A global batch the
devices do not divide is reported with the one-line error a run gives,
naming the nearest batch sizes that work.

Data: ``--data_root`` holds the datasets by name (``DIR/mnist``,
``DIR/tiny_shakespeare``: ``../shared/data`` by default), used as
``config.data.manual_dir``; a dataset that cannot be had here (CIFAR-10
offline) is replaced by a synthetic stand-in of the same shape and classes
(``shapes32``), named in the report.

Prints one line per experiment and preset (``--json``: one JSON object per
line) and exits 1 if any run failed other than by such a batch error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time

from genjax import config as config_lib
from genjax import registry

log = logging.getLogger("genjax")

# Stand-ins for datasets that cannot be downloaded here: same image shape
# and number of classes.
STAND_INS = {"cifar10": "shapes32"}
FLAGS = ("experiments", "presets", "lower_only", "build_only", "train", "compile",
         "data_root", "workdir")
MODES = {"train": "train", "lower_only": "lower", "build_only": "build",
         "compile": "compile"}


def stand_in(data_config) -> str | None:
    """The stand-in (``STAND_INS``) for ``data_config``'s dataset when that
    one cannot be loaded here, else None."""
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    if data_config.name not in STAND_INS:
        return None
    try:
        data_lib.load_dataset(data_config)
        return None
    except data_lib.DatasetError:
        return STAND_INS[data_config.name]


def _config(experiment, preset: str, data_root: str, data_dir: str | None,
            overrides=()):
    """The preset's config with ``overrides`` (``(key, raw value)``), its
    data pointed at what can be had here, and the stand-in used (or None)."""
    config = experiment.get_config(preset)
    for key, raw in overrides:
        if _has_key(config, key):  # A text experiment has no sample quality.
            config_lib.apply_override(config, key, raw)
    name = config.data.name
    local = os.path.join(data_root, name)
    if config.data.get("manual_dir", None) is None and os.path.isdir(local):
        config.data.manual_dir = local
    if data_dir is not None:
        config.data.data_dir = data_dir
    used = stand_in(config.data)
    if used:
        config.data.name = used
    return config, used


def _has_key(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return False
        node = node[part]
    return True


def check(experiment, preset: str, *, mode: str = "compile",
          data_root: str = "../shared/data", workdir: str | None = None,
          data_dir: str | None = None, overrides=()) -> dict:
    """One row of the matrix: ``mode`` is ``compile``, ``lower``, ``build``
    or ``train`` (end to end, into ``workdir/<name>_<preset>``)."""
    import jax  # pylint: disable=import-outside-toplevel
    from genjax.train import loop  # pylint: disable=import-outside-toplevel
    from genjax.train import run as run_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    row = {"experiment": experiment.name, "preset": preset, "mode": mode,
           "devices": jax.device_count(), "processes": jax.process_count()}
    t0 = time.perf_counter()
    try:
        config, stand_in = _config(experiment, preset, data_root, data_dir,
                                   overrides)
        row.update(batch=int(config.train.batch_size), stand_in=stand_in)
        if mode == "train":
            out = os.path.join(workdir, f"{experiment.name}_{preset}")
            metrics = loop.train_and_evaluate(config, out, experiment.make_task)
            row["eval"] = {k: v for k, v in metrics.items()
                           if not k.endswith("seconds")}
            row["finite"] = all(math.isfinite(v) for v in row["eval"].values())
        else:
            run = run_lib.build(config, workdir or "/nonexistent", experiment.make_task)
            batch = step_lib.to_global(next(run_lib.make_train_iterator(run)), run.mesh)
            if mode != "build":
                lowered = run_lib.make_step(run).lower(run.abstract_state, batch)
                if mode == "compile":
                    lowered.compile()
            row["per_device_batch"] = row["batch"] // run.mesh.devices.size
        row["status"] = "ok"
    except config_lib.ConfigError as e:
        row.update(status="config error", error=str(e))
    except Exception as e:  # pylint: disable=broad-except
        first = (str(e).strip().splitlines() or [""])[0]
        row.update(status="failed", error=f"{type(e).__name__}: {first}")
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def format_row(row: dict) -> str:
    what = {"compile": "compiled", "lower": "lowered", "train": "trained + evaluated"}
    where = f" (on {row['stand_in']})" if row.get("stand_in") else ""
    if row["status"] == "ok":
        done = f"{what[row['mode']]} in {row['seconds']} s"
        if "per_device_batch" in row:
            done += f", {row['per_device_batch']} per device"
    else:
        done = f"{row['status']}: {row['error']}"
    return (f"{row['experiment']:22s} {row['preset']:6s} batch "
            f"{row.get('batch', '?'):>4}{where}  {done}")


def _parse(argv: list[str]) -> dict:
    flags = {"experiments": "", "presets": "", "lower_only": "", "build_only": "",
             "train": "", "compile": "", "data_root": "../shared/data", "workdir": None,
             "json": False, "overrides": []}
    for arg in argv:
        if arg == "--json":
            flags["json"] = True
            continue
        if arg.startswith("--config.") and "=" in arg:
            key, _, value = arg[len("--config."):].partition("=")
            flags["overrides"].append((key, value))
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("--") or name not in FLAGS or not eq:
            raise ValueError(f"unknown argument {arg!r}; valid: "
                             + ", ".join(f"--{f}=..." for f in FLAGS) + ", --config.KEY=VALUE, --json")
        flags[name] = value
    return flags


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        stream=sys.stdout, force=True)
    for noisy in ("absl", "orbax", "jax._src", "genjax"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        flags = _parse(argv)
        everything = registry.load_all()
        names = [n for n in flags["experiments"].split(",") if n] or sorted(everything)
        experiments = [registry.get(n) for n in names]
    except (ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    presets = [p for p in flags["presets"].split(",") if p]
    modes = {item: mode for flag, mode in MODES.items()
             for item in flags[flag].split(",") if item}
    if "train" in modes.values() and flags["workdir"] is None:
        print("error: --train needs --workdir=DIR", file=sys.stderr)
        return 2
    failed = False
    for experiment in experiments:
        for preset in presets or experiment.presets:
            if preset not in experiment.presets:
                continue
            mode = modes.get(f"{experiment.name}:{preset}",
                             modes.get(preset, "compile"))
            row = check(experiment, preset, mode=mode, data_root=flags["data_root"],
                        workdir=flags["workdir"], overrides=flags["overrides"])
            failed |= row["status"] == "failed"
            print(json.dumps(row) if flags["json"] else format_row(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
