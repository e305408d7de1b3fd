"""The experiment registry: every runnable experiment, by name.

Each module ``experiments/<name>.py`` registers one ``Experiment`` at import.
The registry records what a user needs to choose and reproduce a run: family,
dataset, paper, presets, and the number each preset reached when we ran it
(with the date and machine).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable, Mapping

import ml_collections

PRESETS_REQUIRED = ("smoke", "cpu", "paper")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: the module name under ``experiments/``.
      family: model family ("vae", "gan", "diffusion", "transformer", ...).
      dataset: the default dataset name.
      paper: the citation the ``paper`` preset follows.
      get_config: ``preset -> ConfigDict``.
      presets: the preset names ``get_config`` accepts.
      make_task: ``config -> genjax.tasks.Task`` (model + objective + eval).
      expected: preset -> the measured result, e.g.
        ``"eval/nll_iwae 91.3 nats (2026-11-25, 2-core CPU, 14 min)"``.
    """

    name: str
    family: str
    dataset: str
    paper: str
    get_config: Callable[[str], ml_collections.ConfigDict]
    presets: tuple[str, ...]
    make_task: Callable[[ml_collections.ConfigDict], object]
    expected: Mapping[str, str] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Adds ``experiment`` to the registry and returns it."""
    missing = [p for p in PRESETS_REQUIRED if p not in experiment.presets]
    if missing:
        raise ValueError(f"experiment {experiment.name} lacks presets {missing}")
    _REGISTRY[experiment.name] = experiment
    return experiment


def load_all() -> dict[str, Experiment]:
    """Imports every module of the ``experiments`` package; returns the registry."""
    import experiments  # pylint: disable=import-outside-toplevel

    for info in pkgutil.iter_modules(experiments.__path__):
        if not info.name.startswith("_") and info.name not in ("benchmark", "torch_baseline"):
            importlib.import_module(f"experiments.{info.name}")
    return dict(_REGISTRY)


def get(name: str) -> Experiment:
    """Returns the experiment called ``name`` (importing it if needed).

    Raises:
      KeyError: with a message listing the registered names.
    """
    if name not in _REGISTRY:
        load_all()
    if name not in _REGISTRY:
        valid = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown experiment '{name}'; registered: {valid}")
    return _REGISTRY[name]


def table() -> str:
    """The registry as a fixed-width text table."""
    rows = [("name", "family", "dataset", "presets", "paper")]
    for exp in sorted(load_all().values(), key=lambda e: e.name):
        rows.append((exp.name, exp.family, exp.dataset, ",".join(exp.presets),
                     exp.paper))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -----")
    lines.append("")
    lines.append("measured results (preset: metric):")
    for exp in sorted(_REGISTRY.values(), key=lambda e: e.name):
        for preset, result in exp.expected.items():
            lines.append(f"  {exp.name} --preset={preset}: {result}")
    return "\n".join(lines)
