"""Config helpers: the keys every experiment has, and command-line overrides.

Every experiment's ``get_config(preset)`` returns an ``ml_collections``
``ConfigDict``. Overrides use ml_collections' flag style,
``--config.train.batch_size=64``; they are applied here (instead of through
absl's config flags) so that a wrong key or a wrong type gets a one-line error
that names the bad value and the valid choices.
"""

from __future__ import annotations

import ast
import json
from typing import Any

import ml_collections
from ml_collections import config_dict

# Keys that every experiment's config must have (see README, "Config keys").
REQUIRED_KEYS = (
    "seed",
    "data.name",
    "data.data_dir",
    "data.manual_dir",
    "train.batch_size",
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
)


class ConfigError(ValueError):
    """A user-facing config problem; the message is one actionable line."""


def base_config(*, data_name: str) -> ml_collections.ConfigDict:
    """Returns the skeleton every experiment fills in, with the shared keys.

    Args:
      data_name: the default dataset name (``config.data.name``).
    """
    config = ml_collections.ConfigDict()
    config.seed = 0
    # CPU hosts only: split the CPU into this many JAX devices, 0 = JAX's
    # default (see genjax.train.step.split_host_cpu).
    config.cpu_devices = 0
    # The device mesh: data x fsdp (genjax.train.step.make_mesh). fsdp = 1
    # is pure data parallelism (every device holds the whole state); fsdp =
    # k shards each parameter and its optimiser state over k devices along
    # its largest dimension that k divides (arrays of fewer than
    # fsdp_min_size elements stay whole), and the batch is split over all
    # devices either way.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.fsdp = 1
    config.mesh.fsdp_min_size = 2 ** 14
    config.data = ml_collections.ConfigDict()
    config.data.name = data_name
    # None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    config.data.data_dir = config_dict.placeholder(str)
    # A directory of raw files genjax prepares offline (e.g. MNIST idx files).
    config.data.manual_dir = config_dict.placeholder(str)
    # Which examples train (genjax.data.subsets), all off by default: only
    # these labels ("3", "0,1"; every split), a labelled subset of this many
    # per class drawn with subset_seed (training split), and each training
    # pixel replaced by uniform noise with this probability, fresh each step
    # (a likelihood-ratio background model).
    config.data.classes = ""
    config.data.examples_per_class = 0
    config.data.subset_seed = 0
    config.data.perturb_rate = 0.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128
    config.train.num_steps = 1000
    config.train.log_every = 100
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    # A workdir whose checkpoints were all set aside as damaged refuses to
    # train from scratch unless this is true (see genjax.train.checkpoint).
    config.train.allow_fresh_start = False
    config.train.optimizer = "adam"
    config.train.learning_rate = 1e-3
    config.train.lr_schedule = "constant"  # constant | cosine
    config.train.warmup_steps = 0
    config.train.min_lr_ratio = 0.0
    config.train.b1 = 0.9
    config.train.b2 = 0.999
    config.train.weight_decay = 0.0
    config.train.grad_clip_norm = 0.0  # 0 disables clipping.
    config.train.ema_decay = 0.0  # 0 disables the EMA copy of the parameters.
    # float32 | bfloat16: what the networks and the objective compute in while
    # training; weights, gradients and optimiser state stay float32
    # (genjax.train.step.mixed_precision). Evaluation computes in float32.
    config.train.compute_dtype = "float32"

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 500
    config.eval.use_ema = False
    # The main evaluation pass covers the whole test split (0), or its first
    # this many examples: a quick check of a large split, never a result.
    config.eval.num_examples = 0

    config.sample = ml_collections.ConfigDict()
    config.sample.num_samples = 64
    return config


def check_choice(key: str, value, valid) -> None:
    """Raises ConfigError naming ``key``, its bad ``value`` and the valid ones."""
    if value not in valid:
        raise ConfigError(f"{key}={value!r}; valid: {', '.join(valid)}")


def smoke_schedule(config: ml_collections.ConfigDict) -> None:
    """Shrinks the schedule for ``smoke`` presets: 20 steps that still log,
    evaluate, sample and checkpoint twice, so tests exercise every path."""
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.sample.num_samples = 16


def _all_keys(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def check_required_keys(cfg: ml_collections.ConfigDict, where: str) -> None:
    """Raises ConfigError if ``cfg`` lacks a key every experiment must have."""
    present = set(_all_keys(cfg))
    missing = [k for k in REQUIRED_KEYS if k not in present]
    if missing:
        raise ConfigError(f"{where}: config lacks required keys {missing}")


def _field_type(parent: ml_collections.ConfigDict, leaf: str):
    ref = parent.get_ref(leaf)
    return ref.get_type() if ref is not None else type(parent[leaf])


def _parse_value(raw: str, field_type, key: str) -> Any:
    """Converts the command-line string ``raw`` to the type of config ``key``."""
    def fail(expected):
        raise ConfigError(
            f"--config.{key}={raw}: expected {expected}, got {raw!r}"
        )

    if raw.lower() in ("none", "null") and field_type is not bool:
        return None
    if field_type is bool:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        fail("a bool (true or false)")
    if field_type is int:
        try:
            return int(raw)
        except ValueError:
            fail("an int")
    if field_type is float:
        try:
            return float(raw)
        except ValueError:
            fail("a float")
    if field_type is str:
        return raw
    if field_type in (tuple, list):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            fail("a tuple such as (256,256)")
        if isinstance(value, (int, float, str)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            fail("a tuple such as (256,256)")
        return field_type(value)
    # Untyped fields (None placeholders without a type): best-effort literal.
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_override(cfg: ml_collections.ConfigDict, key: str, raw: str) -> None:
    """Sets ``cfg.<key>`` from the command-line string ``raw``, type-checked.

    Raises:
      ConfigError: unknown key (the message lists the valid keys at that
        level) or a value that does not parse as the key's type.
    """
    parts = key.split(".")
    node = cfg
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "config"
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if isinstance(node, ml_collections.ConfigDict):
                valid = ", ".join(sorted(node.keys()))
                raise ConfigError(
                    f"unknown config key '{key}': '{part}' is not in {here}; "
                    f"valid keys there: {valid}"
                )
            raise ConfigError(
                f"unknown config key '{key}': {here} is a value, not a group"
            )
        if depth < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    if isinstance(node[leaf], ml_collections.ConfigDict):
        valid = ", ".join(sorted(node[leaf].keys()))
        raise ConfigError(
            f"config key '{key}' is a group; set one of its keys: {valid}"
        )
    field_type = _field_type(node, leaf)
    value = _parse_value(raw, field_type, key)
    try:
        setattr(node, leaf, value)
    except TypeError as e:  # ml_collections' own type safety.
        raise ConfigError(f"--config.{key}={raw}: {e}") from None


def to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """A JSON-serialisable plain dict of ``cfg`` (tuples become lists)."""
    return json.loads(cfg.to_json())


def from_dict(d: dict) -> ml_collections.ConfigDict:
    """Inverse of ``to_dict`` for configs saved next to checkpoints."""
    return ml_collections.ConfigDict(d)


# Keys added after runs were saved whose value that reproduces those runs is
# not an "off" value: a saved config that lacks one reads as this value.
BEFORE_KEY_EXISTED = {
    "vae.importance_samples": 1,  # the ELBO, as every VAE trained before
    "model.prior": "standard",  # N(0, I), as every VAE trained before
    "train.compute_dtype": "float32",  # as every run trained before mixed precision
}


def diff(a: dict, b: dict, prefix: str = "", *, absent_as_off: bool = False) -> list[str]:
    """Human-readable differences between two config dicts.

    With ``absent_as_off``, a key that one side lacks and the other sets to
    False, None, 0 or "" (or to its ``BEFORE_KEY_EXISTED`` value) is no
    difference, nor is a section one side lacks whose keys all are: a switch
    added to the config after a run was saved, left off, describes the same
    model (``model.class_conditional`` for runs saved before conditional
    variants existed)."""
    out = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if absent_as_off and isinstance(va, dict) and key not in b:
            vb = {}
        if absent_as_off and isinstance(vb, dict) and key not in a:
            va = {}
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff(va, vb, path + ".", absent_as_off=absent_as_off))
        elif absent_as_off and (key not in a and _reads_as_absent(path, vb)
                                or key not in b and _reads_as_absent(path, va)):
            continue
        elif va != vb:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out


def _reads_as_absent(path: str, value) -> bool:
    if path in BEFORE_KEY_EXISTED:
        return value == BEFORE_KEY_EXISTED[path]
    return (value is None or value is False or value == ""
            or type(value) in (int, float) and value == 0)


def model_diff(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """How ``config``'s model differs from a saved run's (``config.json`` or a
    checkpoint's config); empty when it is the same model."""
    return diff({"model": saved.get("model", {})},
                {"model": to_dict(config).get("model", {})}, absent_as_off=True)
