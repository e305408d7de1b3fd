"""Synthetic 2-D distributions for density models: ``two_moons``,
``eight_gaussians``, ``checkerboard`` and ``swiss_roll``.

Each is a 'points' dataset: float32 ``[N, 2]``, drawn with numpy from a fixed
dataset seed (``config.data.dataset_seed``, default 0, independent of the
experiment seed) and standardised to zero mean and unit scale. Sizes come
from ``config.data.num_train`` (default 50,000) and ``config.data.num_test``
(default 10,000).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from genjax.data.registry import Dataset, DatasetError, register_dataset

_SPLIT_STREAMS = {"train": 0, "test": 1}


def _two_moons(rng: np.random.Generator, n: int):
    """Two interleaved half circles with Gaussian noise; label = moon."""
    label = rng.integers(0, 2, size=n)
    angle = rng.uniform(0.0, np.pi, size=n)
    # The lower moon is flipped and shifted so the two interlock.
    x = np.where(label == 0, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(label == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2))
    return points, label


def _eight_gaussians(rng: np.random.Generator, n: int):
    """A ring of 8 equal Gaussians; label = component."""
    label = rng.integers(0, 8, size=n)
    angle = label * (2.0 * np.pi / 8.0)
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    # Component std 0.1 on a unit circle keeps the modes well separated.
    return centres + 0.1 * rng.standard_normal((n, 2)), label


def _checkerboard(rng: np.random.Generator, n: int):
    """Uniform on the 8 dark squares of a 4x4 checkerboard on [-2, 2]^2."""
    x = rng.uniform(-2.0, 2.0, size=n)
    column = np.floor(x).astype(np.int64) + 2  # 0..3
    # Dark squares have (row + column) even: two rows per column.
    row = column % 2 + 2 * rng.integers(0, 2, size=n)
    y = row - 2.0 + rng.uniform(0.0, 1.0, size=n)
    return np.stack([x, y], axis=1), None


def _swiss_roll(rng: np.random.Generator, n: int):
    """A 2-D spiral ``t (cos t, sin t)``, ``t`` in [1.5 pi, 4.5 pi], with noise."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    points = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    return points + 0.5 * rng.standard_normal((n, 2)), None


def _positive_int(data_config, key: str, default: int) -> int:
    value = data_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DatasetError(f"config.data.{key}={value!r}: expected a positive int")
    return value


def _make_toy(name: str, sampler: Callable, num_classes: int | None, description: str):
    """Returns the loader of toy distribution ``name``."""

    def loader(data_config) -> Dataset:
        seed = data_config.get("dataset_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DatasetError(
                f"config.data.dataset_seed={seed!r}: expected a non-negative int"
            )
        sizes = {
            "train": _positive_int(data_config, "num_train", 50_000),
            "test": _positive_int(data_config, "num_test", 10_000),
        }
        raw = {}
        for split, n in sizes.items():
            # One independent stream per split: the test set does not change
            # when num_train does.
            rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
            raw[split] = sampler(rng, n)
        # Standardise with train statistics and one scalar scale (not one per
        # axis), which keeps the shape's aspect ratio.
        train_points = raw["train"][0]
        mean = train_points.mean(axis=0)
        scale = np.sqrt(((train_points - mean) ** 2).sum(axis=1).mean() / 2.0)
        splits = {}
        for split, (points, label) in raw.items():
            fields = {"points": ((points - mean) / scale).astype(np.float32)}
            if label is not None:
                fields["label"] = label.astype(np.int32)
            splits[split] = fields
        element_spec = {"points": (2,)}
        if num_classes is not None:
            element_spec["label"] = ()
        return Dataset(
            name=name,
            kind="points",
            splits=splits,
            element_spec=element_spec,
            num_classes=num_classes,
            description=description,
        )

    loader.__name__ = loader.__qualname__ = f"load_{name}"
    loader.__doc__ = f"Loads the 2-D toy dataset {name!r}: {description}."
    return register_dataset(name, "points", description)(loader)


load_two_moons = _make_toy("two_moons", _two_moons, 2, "two interleaved half circles (2-D)")
load_eight_gaussians = _make_toy(
    "eight_gaussians", _eight_gaussians, 8, "ring of 8 Gaussians (2-D)"
)
load_checkerboard = _make_toy(
    "checkerboard", _checkerboard, None, "uniform on a 4x4 checkerboard's dark squares (2-D)"
)
load_swiss_roll = _make_toy("swiss_roll", _swiss_roll, None, "noisy 2-D spiral (2-D)")
