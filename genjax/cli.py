"""The command line every experiment shares (absl flags, ml_collections configs).

    python -m experiments.<name> --workdir=DIR [--preset=P]
        [--config.KEY=VALUE ...] [--mode=train|eval|sample|<task's own>]
        [--num_samples=N] [--prompt=TEXT] [--max_new_tokens=N] [--flagfile=F]
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]
    python -m experiments --config=experiments/<name>.py:P --workdir=DIR ...
    python -m experiments --config=<name>:P --workdir=DIR ...

Flags are absl flags; ``--flagfile=F`` reads more flags from F, one a line,
as big_vision and the Flax examples do. ``--config=PATH.py:PRESET`` loads
the recipe with ml_collections' ``config_flags`` (the file's
``get_config(PRESET)``); ``--config=NAME:PRESET`` takes it from the
registry; either replaces ``--preset``. ``--config.KEY=VALUE`` overrides a
key, type-checked against the recipe. ``--prompt`` and ``--max_new_tokens``
(text experiments) set ``config.sample.prompt`` and
``config.sample.max_new_tokens``.

Several processes (hosts): ``--coordinator_address``, ``--num_processes``
and ``--process_id`` are ``jax.distributed.initialize``'s own arguments;
without them, a cluster JAX detects by itself (Cloud TPU pod, SLURM, Open
MPI, Kubernetes) starts the multi-process runtime, and one process needs
nothing (``genjax.distributed``).

Usage mistakes (unknown experiment, flag, preset or config key; a value of the
wrong type; a batch the devices do not divide) print one line naming the bad
value and the valid choices, exit with code 2, and write nothing. Problems
found later (a missing or corrupt data file, no usable checkpoint) print one
line and exit with code 1; nothing already written is lost. SIGTERM or
SIGINT during training saves a checkpoint at the next step boundary, prints
how to resume and exits with 128 + the signal's number (143, 130).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

from genjax import config as config_lib
from genjax import distributed
from genjax import registry

MODES = ("train", "eval", "sample")  # plus the task's own (modes.available_modes)
USAGE = ("usage: python -m experiments.{name} --workdir=DIR [--preset=P] "
         "[--config.KEY=VALUE ...] [--mode=MODE] [--num_samples=N] "
         "[--prompt=TEXT] [--max_new_tokens=N] [--flagfile=FILE] "
         "[--coordinator_address=HOST:PORT --num_processes=N --process_id=I]")
# Flags that are spellings of config keys (text experiments' sampling).
CONFIG_FLAGS = {"prompt": "sample.prompt", "max_new_tokens": "sample.max_new_tokens"}
PLAIN_FLAGS = (("workdir", "preset", "mode", "num_samples") + tuple(CONFIG_FLAGS)
               + distributed.FLAGS)  # jax.distributed.initialize's arguments


class UsageError(ValueError):
    """A command-line mistake: exit code 2, nothing written."""


def _flag_values() -> flags.FlagValues:
    """A fresh set of the command line's absl flags (never absl's global
    FLAGS, so that notebooks and tests can parse again and again)."""
    fv = flags.FlagValues()
    help_text = {
        "workdir": "where checkpoints, metrics and samples go (resumes if it "
                   "holds checkpoints)",
        "preset": "the recipe's preset: smoke, cpu (default) or paper",
        "mode": "train (default), eval, sample, or a mode of the task",
        "num_samples": "--mode=sample: how many samples",
        "prompt": "text experiments: config.sample.prompt",
        "max_new_tokens": "text experiments: config.sample.max_new_tokens",
        "coordinator_address": "several processes: process 0's HOST:PORT "
                               "(jax.distributed.initialize)",
        "num_processes": "several processes: how many (jax.distributed.initialize)",
        "process_id": "several processes: this one's index, 0 to "
                      "num_processes - 1 (jax.distributed.initialize)",
    }
    for name in PLAIN_FLAGS:
        flags.DEFINE_string(name, None, help_text[name], flag_values=fv)
    flags.DEFINE_bool("help", False, "show the usage and presets", flag_values=fv)
    config_flags.DEFINE_config_file(
        "config", None, "a recipe file and preset, PATH.py:PRESET",
        flag_values=fv, lock_config=False)
    return fv


def _split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) overrides, in order,
    and the other arguments. Overrides are applied by ``build_config`` with
    genjax's type checks and one-line errors, not by absl."""
    rest: list[str] = []
    overrides: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            name, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag --{name} needs a value (--{name}=VALUE)")
                value = argv[i + 1]
                i += 1
            overrides.append((name[len("config."):], value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def parse_args(argv: list[str]) -> tuple[dict, list[tuple[str, str]]]:
    """Splits argv into the plain flags given (absl-parsed, ``--flagfile``
    expanded) and ``(config_key, raw_value)`` overrides, in order.

    ``flags`` holds the flags that were set, by name; ``config`` is the raw
    ``--config`` value, ``help`` is present if asked for.
    """
    fv = _flag_values()
    try:
        argv = fv.read_flags_from_files(list(argv), force_gnu=True)
    except flags.Error as e:
        raise UsageError(f"--flagfile: {e}") from None
    rest, overrides = _split_overrides(argv)
    # A --config that names a registered experiment rather than a file is
    # genjax's; only files go to config_flags.
    plain = []
    config_value = None
    for arg in rest:
        if arg.startswith("--config="):
            config_value = arg[len("--config="):]
            if _is_config_file(config_value):
                _check_config_file(config_value)
                plain.append(arg)
        else:
            plain.append(arg)
    try:
        leftover = fv(["genjax"] + plain)[1:]
    except flags.UnrecognizedFlagError as e:
        raise UsageError(
            f"unknown flag --{e.flagname}; valid: --workdir, --preset, --mode, "
            "--num_samples, --prompt, --max_new_tokens, --flagfile, --config, "
            "--config.KEY, --coordinator_address, --num_processes, "
            "--process_id") from None
    except flags.Error as e:
        message = str(e).strip().splitlines()[0]
        raise UsageError(message) from None
    if leftover:
        raise UsageError(f"unexpected argument '{leftover[0]}'; flags look like "
                         "--name=value")
    given = {name: fv[name].value for name in PLAIN_FLAGS if fv[name].present}
    if fv["help"].value:
        given["help"] = ""
    if config_value is not None:
        given["config"] = config_value
        if fv["config"].present:  # A file, loaded by config_flags.
            given["config_dict"] = fv.config
    return given, overrides


def _is_config_file(value: str) -> bool:
    path = value.partition(":")[0]
    return path.endswith(".py") or os.sep in path


def _check_config_file(value: str) -> None:
    """A recipe file that exists, of a registered experiment, with one of its
    presets (checked before config_flags runs the file's ``get_config``)."""
    path, _, preset = value.partition(":")
    if not os.path.isfile(path):
        raise UsageError(f"--config={value}: no such file {path}; give "
                         "experiments/<name>.py:PRESET or <name>:PRESET")
    experiment = registry.get(os.path.splitext(os.path.basename(path))[0])
    if not preset:
        raise UsageError(f"--config={value} names no preset; add one: "
                         f"{path}:{experiment.presets[0]} (valid: "
                         f"{', '.join(experiment.presets)})")
    _check_preset(experiment, preset)


def _check_preset(experiment, preset: str) -> None:
    if preset not in experiment.presets:
        raise UsageError(
            f"unknown preset '{preset}' for {experiment.name}; valid: "
            f"{', '.join(experiment.presets)}")


def _experiment_and_preset(experiment_name: str | None, flags_: dict):
    """The experiment and preset named by the module run, ``--config`` and
    ``--preset``."""
    preset = flags_.get("preset")
    config_value = flags_.get("config")
    if config_value is not None:
        source, colon, config_preset = config_value.partition(":")
        name = (os.path.splitext(os.path.basename(source))[0]
                if _is_config_file(config_value) else source)
        if experiment_name is not None and name != experiment_name:
            raise UsageError(
                f"--config={config_value} is a recipe of {name}, not of "
                f"{experiment_name}; run python -m experiments.{name}")
        experiment_name = name
        if colon:
            if preset is not None and preset != config_preset:
                raise UsageError(f"--preset={preset} contradicts --config="
                                 f"{config_value}; give the preset once")
            preset = config_preset
    if experiment_name is None:
        raise UsageError("name an experiment: python -m experiments.<name> or "
                         "--config=<name>:PRESET")
    return registry.get(experiment_name), preset or "cpu"


def build_config(experiment: registry.Experiment, preset: str,
                 overrides: list[tuple[str, str]], flags: dict | None = None):
    """The experiment's config for ``preset`` with ``overrides`` applied, then
    the ``CONFIG_FLAGS`` among ``flags``."""
    _check_preset(experiment, preset)
    # A recipe file given as --config=PATH.py:PRESET was loaded by config_flags.
    config = (flags or {}).get("config_dict")
    if config is None:
        config = experiment.get_config(preset)
    config_lib.check_required_keys(config, experiment.name)
    for key, raw in overrides:
        config_lib.apply_override(config, key, raw)
    for flag, key in CONFIG_FLAGS.items():
        if flag not in (flags or {}):
            continue
        group, leaf = key.split(".")
        if leaf not in config.get(group, {}):
            raise UsageError(
                f"--{flag} is for text experiments; {experiment.name} has no "
                f"config.{key}")
        if flag == "prompt":  # Verbatim: "none" is a prompt, not None.
            config[group][leaf] = flags[flag]
        else:
            config_lib.apply_override(config, key, flags[flag])
    return config


def setup_logging() -> None:
    """genjax's INFO lines (progress, results) on stdout; libraries' noise off."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        stream=sys.stdout, force=True)
    logging.getLogger("genjax").setLevel(logging.INFO)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run(experiment_name: str | None, argv: list[str]) -> int:
    """Runs one experiment from command-line arguments; returns the exit code.

    ``experiment_name`` is the module run (``python -m experiments.<name>``),
    or None when ``--config`` names the experiment.
    """
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import loop  # pylint: disable=import-outside-toplevel
    from genjax.train import modes  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    setup_logging()
    try:
        if experiment_name is not None:
            registry.get(experiment_name)  # An unknown name fails first.
        flags, overrides = parse_args(argv)
        experiment, preset = _experiment_and_preset(experiment_name, flags)
        if "help" in flags:
            print(USAGE.format(name=experiment.name))
            print(f"presets: {', '.join(experiment.presets)}")
            print(f"modes: {', '.join(modes.available_modes(experiment.make_task))}")
            return 0
        mode = flags.get("mode", "train")
        valid_modes = modes.available_modes(experiment.make_task)
        if mode not in valid_modes:
            raise UsageError(f"unknown --mode={mode}; valid: {', '.join(valid_modes)}")
        if "workdir" not in flags:
            raise UsageError("--workdir=DIR is required (where checkpoints, "
                             "metrics and samples go)")
        num_samples = None  # The mode's default.
        if "num_samples" in flags:
            try:
                num_samples = int(flags["num_samples"])
            except ValueError:
                raise UsageError(
                    f"--num_samples={flags['num_samples']}: expected an int") from None
            if num_samples <= 0:
                raise UsageError(f"--num_samples={num_samples} must be positive")
        config = build_config(experiment, preset, overrides, flags)
        step_lib.split_host_cpu(config.get("cpu_devices", 0))
        distributed.initialize(**_distributed_flags(flags))
        if not distributed.is_chief():  # Process 0 speaks for the run.
            logging.getLogger("genjax").setLevel(logging.WARNING)
        loop.validate(config)
    except (UsageError, config_lib.ConfigError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2

    workdir = os.path.abspath(os.path.expanduser(flags["workdir"]))
    make_task = experiment.make_task
    try:
        if mode == "train":
            loop.train_and_evaluate(config, workdir, make_task)
        else:
            modes.run_mode(mode, config, workdir, make_task,
                           num_samples=num_samples)
    except config_lib.ConfigError as e:  # Found by the task, before writing.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (data_lib.DatasetError, ckpt_lib.CheckpointError,
            loop.TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except loop.Preempted as e:  # A checkpoint was saved: not an error.
        print(f"genjax: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def _distributed_flags(flags_: dict) -> dict:
    """``--coordinator_address``, ``--num_processes``, ``--process_id`` as
    ``genjax.distributed.initialize``'s arguments."""
    out = {"coordinator_address": flags_.get("coordinator_address")}
    for name in ("num_processes", "process_id"):
        value = flags_.get(name)
        if value is not None:
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"--{name}={value}: expected an int") from None
        out[name] = value
    return out


def main(experiment_name: str) -> None:
    """``if __name__ == '__main__'`` body of every experiment module."""
    sys.exit(run(experiment_name, sys.argv[1:]))
