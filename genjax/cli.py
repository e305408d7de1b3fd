"""The command line every experiment shares.

    python -m experiments.<name> --workdir=DIR [--preset=P]
        [--config.KEY=VALUE ...] [--mode=train|eval|sample|inpaint] [--num_samples=N]
        [--prompt=TEXT] [--max_new_tokens=N]

``--prompt`` and ``--max_new_tokens`` (text experiments) set
``config.sample.prompt`` and ``config.sample.max_new_tokens``.

Usage mistakes (unknown experiment, flag, preset or config key; a value of the
wrong type; a batch the devices do not divide) print one line naming the bad
value and the valid choices, exit with code 2, and write nothing. Problems
found later (a missing or corrupt data file, no usable checkpoint) print one
line and exit with code 1; nothing already written is lost.
"""

from __future__ import annotations

import logging
import os
import sys

from genjax import config as config_lib
from genjax import registry

MODES = ("train", "eval", "sample")  # plus the task's own (modes.available_modes)
USAGE = ("usage: python -m experiments.{name} --workdir=DIR [--preset=P] "
         "[--config.KEY=VALUE ...] [--mode=train|eval|sample|inpaint] [--num_samples=N] "
         "[--prompt=TEXT] [--max_new_tokens=N]")
# Flags that are spellings of config keys (text experiments' sampling).
CONFIG_FLAGS = {"prompt": "sample.prompt", "max_new_tokens": "sample.max_new_tokens"}


class UsageError(ValueError):
    """A command-line mistake: exit code 2, nothing written."""


def parse_args(argv: list[str]) -> tuple[dict, list[tuple[str, str]]]:
    """Splits argv into plain flags and ``(config_key, raw_value)`` overrides."""
    flags: dict[str, str] = {}
    overrides: list[tuple[str, str]] = []
    valid = ("workdir", "preset", "mode", "num_samples", "help") + tuple(CONFIG_FLAGS)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument '{arg}'; flags look like --name=value")
        name, eq, value = arg[2:].partition("=")
        if not eq and name != "help":
            if i + 1 >= len(argv):
                raise UsageError(f"flag --{name} needs a value (--{name}=VALUE)")
            value = argv[i + 1]
            i += 1
        i += 1
        if name.startswith("config."):
            overrides.append((name[len("config."):], value))
        elif name in valid:
            flags[name] = value
        else:
            raise UsageError(
                f"unknown flag --{name}; valid: --workdir, --preset, --mode, "
                "--num_samples, --prompt, --max_new_tokens, --config.KEY")
    return flags, overrides


def build_config(experiment: registry.Experiment, preset: str,
                 overrides: list[tuple[str, str]], flags: dict | None = None):
    """The experiment's config for ``preset`` with ``overrides`` applied, then
    the ``CONFIG_FLAGS`` among ``flags``."""
    if preset not in experiment.presets:
        raise UsageError(
            f"unknown preset '{preset}' for {experiment.name}; valid: "
            f"{', '.join(experiment.presets)}")
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


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        stream=sys.stdout, force=True)
    logging.getLogger("genjax").setLevel(logging.INFO)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run(experiment_name: str, argv: list[str]) -> int:
    """Runs one experiment from command-line arguments; returns the exit code."""
    from genjax import data as data_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
    from genjax.train import loop  # pylint: disable=import-outside-toplevel
    from genjax.train import modes  # pylint: disable=import-outside-toplevel
    from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

    _setup_logging()
    try:
        experiment = registry.get(experiment_name)
        flags, overrides = parse_args(argv)
        if "help" in flags:
            print(USAGE.format(name=experiment_name))
            print(f"presets: {', '.join(experiment.presets)}")
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
        config = build_config(experiment, flags.get("preset", "cpu"), overrides,
                              flags)
        step_lib.split_host_cpu(config.get("cpu_devices", 0))
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
    return 0


def main(experiment_name: str) -> None:
    """``if __name__ == '__main__'`` body of every experiment module."""
    sys.exit(run(experiment_name, sys.argv[1:]))
