"""The dataset registry: every dataset genjax can load, by name.

A dataset is loaded whole into memory as numpy arrays (``Dataset``). Every
dataset genjax ships is small enough for that (MNIST is 220 MB as float32), and
in-memory arrays make the input pipeline a cheap gather (see ``pipeline.py``).

Loaders are registered with ``@register_dataset(name, kind, description)`` and
called as ``loader(data_config) -> Dataset``, where ``data_config`` is the
``config.data`` block of an experiment.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

# 'text' datasets are in text.py; nothing here may assume images.
KINDS = ("image", "points", "text")
REQUIRED_SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A user-facing data problem; the message is one line that says what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset held in memory as numpy arrays, one dict of fields per split.

    ``eq=False``: comparing two datasets field by field would compare arrays,
    which is ambiguous; datasets compare by identity.

    Attributes:
      name: the registered name, e.g. ``"mnist"``.
      kind: ``"image"``, ``"points"`` or ``"text"``.
      splits: split name -> field name -> array, all arrays of a split with the
        same leading length. At least ``"train"`` and ``"test"``. Image
        datasets have ``"image"`` (float32 ``[N, H, W, C]`` in [0, 1]) and,
        when labelled, ``"label"`` (int32 ``[N]``); points datasets have
        ``"points"`` (float32 ``[N, 2]``) and optionally ``"label"``; text
        datasets have ``"tokens"`` (int32 ``[N]``, one whole split as one
        token sequence; see ``text.py``).
      element_spec: field name -> shape of one example, e.g.
        ``{"image": (28, 28, 1), "label": ()}``.
      num_classes: the number of label values, or None without labels.
      description: one human-readable line.
    """

    name: str
    kind: str
    # repr=False: printing a dataset must not print 200 MB of pixels.
    splits: dict[str, dict[str, np.ndarray]] = dataclasses.field(repr=False)
    element_spec: dict[str, tuple]
    num_classes: int | None
    description: str

    def __post_init__(self):
        # Checked here, once, so that every consumer (pipeline, models, eval)
        # can trust the shapes instead of re-validating them.
        where = f"dataset {self.name!r}"
        if self.kind not in KINDS:
            raise DatasetError(
                f"{where}: kind {self.kind!r} is not one of {list(KINDS)}"
            )
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if missing:
            raise DatasetError(
                f"{where}: missing splits {missing}; has {sorted(self.splits)}"
            )
        for split, fields in self.splits.items():
            _check_split(where, split, fields, self.element_spec)
        if self.kind == "image":
            _check_field(where, self.splits, "image", ndim=4, dtype=np.float32)
        if self.kind == "points":
            _check_field(where, self.splits, "points", ndim=2, dtype=np.float32)
        if self.kind == "text":
            _check_field(where, self.splits, "tokens", ndim=1, dtype=np.int32)
        if "label" in self.element_spec:
            _check_field(where, self.splits, "label", ndim=1, dtype=np.int32)
            if self.num_classes is None:
                raise DatasetError(f"{where}: has labels but num_classes=None")

    def num_examples(self, split: str) -> int:
        """Returns the number of examples in ``split``."""
        fields = self.arrays(split)
        return len(next(iter(fields.values())))

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """Returns the field dict of ``split``.

        Raises:
          DatasetError: if the dataset has no such split; names the valid ones.
        """
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.name!r} has no split {split!r}; "
                f"valid splits: {sorted(self.splits)}"
            )
        return self.splits[split]


def _check_split(where: str, split: str, fields: dict, element_spec: dict):
    """Raises DatasetError unless ``fields`` are equal-length arrays matching
    ``element_spec``."""
    if not fields:
        raise DatasetError(f"{where}: split {split!r} has no fields")
    if set(fields) != set(element_spec):
        raise DatasetError(
            f"{where}: split {split!r} has fields {sorted(fields)}, "
            f"but element_spec has {sorted(element_spec)}"
        )
    lengths = {}
    for key, value in fields.items():
        if not isinstance(value, np.ndarray):
            raise DatasetError(
                f"{where}: split {split!r} field {key!r} is a "
                f"{type(value).__name__}, expected a numpy array"
            )
        if value.shape[1:] != tuple(element_spec[key]):
            raise DatasetError(
                f"{where}: split {split!r} field {key!r} has per-example shape "
                f"{value.shape[1:]}, element_spec says {tuple(element_spec[key])}"
            )
        lengths[key] = len(value)
    if len(set(lengths.values())) != 1:
        raise DatasetError(
            f"{where}: split {split!r} fields have different lengths {lengths}"
        )
    if next(iter(lengths.values())) == 0:
        raise DatasetError(f"{where}: split {split!r} is empty")


def _check_field(where: str, splits: dict, key: str, ndim: int, dtype):
    """Raises DatasetError unless field ``key`` has rank ``ndim`` and ``dtype``
    in every split."""
    for split, fields in splits.items():
        value = fields.get(key)
        if value is None:
            raise DatasetError(f"{where}: split {split!r} lacks field {key!r}")
        if value.ndim != ndim or value.dtype != dtype:
            raise DatasetError(
                f"{where}: split {split!r} field {key!r} is {value.dtype} of "
                f"rank {value.ndim}, expected {np.dtype(dtype)} of rank {ndim}"
            )


class _Entry(NamedTuple):
    loader: Callable[[Any], Dataset]
    kind: str
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(name: str, kind: str, description: str):
    """Returns a decorator that registers ``loader(data_config) -> Dataset``.

    Args:
      name: the name users put in ``config.data.name``. A name with a colon,
        such as ``"text_file:PATH"``, registers a family: the loader serves
        every name with the same prefix (``text_file:/data/my.txt``) and
        reads its argument from ``data_config.name``.
      kind: ``"image"``, ``"points"`` or ``"text"``.
      description: one line for ``list_datasets()``.

    Raises:
      DatasetError: for an unknown kind, or a name already registered by a
        different loader.
    """
    if kind not in KINDS:
        raise DatasetError(
            f"register_dataset({name!r}): kind {kind!r} is not one of {list(KINDS)}"
        )

    def decorator(loader):
        previous = _REGISTRY.get(name)
        # Re-registering the same function (e.g. after importlib.reload) is
        # harmless; a second loader under one name is a bug worth stopping.
        if previous is not None and _qualified(previous.loader) != _qualified(loader):
            raise DatasetError(
                f"dataset name {name!r} is already registered by "
                f"{_qualified(previous.loader)}; pick another name"
            )
        _REGISTRY[name] = _Entry(loader, kind, description)
        return loader

    return decorator


def _qualified(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def load_dataset(data_config) -> Dataset:
    """Loads the dataset named by ``data_config.name``.

    Args:
      data_config: the ``config.data`` block (an ``ml_collections.ConfigDict``,
        or any mapping with ``.get``). It has ``name``, ``data_dir`` and
        ``manual_dir``; loaders read their extra keys with ``.get``.

    Raises:
      DatasetError: for an unknown name (the message lists the registered
        ones) or any problem the loader finds.
    """
    name = data_config.get("name")
    entry = _lookup(name)
    if entry is None:
        raise DatasetError(
            f"unknown dataset {name!r} (config.data.name); "
            f"registered datasets: {sorted(_REGISTRY)}"
        )
    dataset = entry.loader(data_config)
    # A loader returning the wrong thing would surface much later as a shape
    # error in a model; catch it at the source.
    if not isinstance(dataset, Dataset) or dataset.name != name or dataset.kind != entry.kind:
        raise DatasetError(
            f"loader {_qualified(entry.loader)} for {name!r} returned "
            f"{dataset!r}, expected a Dataset with name={name!r}, kind={entry.kind!r}"
        )
    return dataset


def _lookup(name) -> _Entry | None:
    """The entry registered as ``name``, or as its family ``prefix:ARG``."""
    entry = _REGISTRY.get(name)
    if entry is None and isinstance(name, str) and ":" in name:
        prefix = name.split(":", 1)[0] + ":"
        families = [e for n, e in _REGISTRY.items() if n.startswith(prefix)]
        entry = families[0] if len(families) == 1 else None
    return entry


def dataset_kind(name) -> str | None:
    """The kind (``"image"``, ``"points"``, ``"text"``) registered for
    ``name``, without loading anything; None if ``name`` is unknown."""
    entry = _lookup(name)
    return None if entry is None else entry.kind


def list_datasets() -> list[tuple[str, str, str]]:
    """Returns ``(name, kind, description)`` for every registered dataset, sorted by name."""
    return [(name, e.kind, e.description) for name, e in sorted(_REGISTRY.items())]
