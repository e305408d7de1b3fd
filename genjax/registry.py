"""The experiment registry: every runnable experiment, by name, and its results.

Each module ``experiments/<name>.py`` registers one ``Experiment`` at import.
The registry records what a user needs to choose and reproduce a run: family,
dataset, paper, presets, and every result measured with them (``Result``: the
numbers, the exact command, date, host and wall time). A result is written in
its experiment's registration and nowhere else; the results tables of
README.md and ``docs/<family>.md`` are generated from these records:

    python -m genjax.registry --readme   # rewrite the generated blocks
    python -m genjax.registry --check    # exit 1 if any block is stale
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pathlib
import pkgutil
import re
import sys
from typing import Callable, Mapping, Sequence

import ml_collections

PRESETS_REQUIRED = ("smoke", "cpu", "paper")

# The generated part of README.md and of each docs/<family>.md lies between
# these two lines.
BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
GENERATE_COMMAND = "python -m genjax.registry --readme"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Result:
    """One measured run: its numbers and how to get them again.

    Attributes:
      preset: the preset that was run (one of the experiment's presets).
      metrics: ``eval.json`` key -> measured value, as the run reported it
        (``{"eval/nll_iwae": 22.02}``; an int for counts). Printed as Python
        prints the number, so ``52.0`` keeps its written precision.
      units: metric -> its unit, for the metrics that have one
        (``{"eval/nll_iwae": "nats/example"}``); scores and counts have none.
      command: the exact command that produced the numbers, starting with
        ``python -m experiments.<name>``.
      date: the day it was measured, ``YYYY-MM-DD``.
      host: the machine, e.g. ``"2-core CPU"`` or ``"2-core CPU, 2 devices"``.
      wall_time: end to end, as measured (``"11 min 53 s"``); ``""`` if the
        run's wall time was not recorded.
      summary: what the run measured, when it is more than the preset's
        train-and-evaluate run (``"inpainting ..."``); shown before the metrics.
      notes: everything else measured in the same run, and the conditions.
      stale: empty for a result the command reproduces with today's code;
        else which change since the measurement moves its numbers (e.g. a new
        evaluation protocol), until it is measured again. Shown beside the
        numbers in every generated table.
    """

    preset: str
    metrics: Mapping[str, float]
    command: str
    date: str
    host: str
    wall_time: str
    units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    summary: str = ""
    notes: str = ""
    stale: str = ""

    def __post_init__(self):
        for key, value in self.metrics.items():
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                raise ValueError(f"metric {key}={value!r}: must be a finite number")
        extra = sorted(set(self.units) - set(self.metrics))
        if extra:
            raise ValueError(f"units for {extra}, which are not among the metrics "
                             f"{sorted(self.metrics)}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.date):
            raise ValueError(f"date {self.date!r}: use YYYY-MM-DD")
        if not self.command.strip():
            raise ValueError("a result needs the command that produced it")
        if not self.metrics and not self.summary:
            raise ValueError("a result needs metrics or a summary")

    def metric_items(self, code: str = "") -> list[str]:
        """Each metric as ``key value [unit]``; ``code`` wraps the key (``"`"``
        for markdown)."""
        return [" ".join(filter(None, (f"{code}{key}{code}", format_value(value),
                                       self.units.get(key))))
                for key, value in self.metrics.items()]

    def metrics_text(self, code: str = "") -> str:
        """The metrics as ``key value unit, ...``."""
        return ", ".join(self.metric_items(code))


def format_value(value: float) -> str:
    """A measured value as written: ``22.02``, ``0.0015``, ``52.0``, ``10``."""
    return str(value)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: the module name under ``experiments/``.
      family: model family ("vae", "gan", "diffusion", "transformer", ...);
        its tuning notes live in ``docs/<family>.md``.
      dataset: the default dataset name.
      paper: the citation the ``paper`` preset follows.
      get_config: ``preset -> ConfigDict``.
      presets: the preset names ``get_config`` accepts.
      make_task: ``config -> genjax.tasks.Task`` (model + objective + eval).
      results: every measured run of a preset (``Result``), the only place
        its numbers are written.
    """

    name: str
    family: str
    dataset: str
    paper: str
    get_config: Callable[[str], ml_collections.ConfigDict]
    presets: tuple[str, ...]
    make_task: Callable[[ml_collections.ConfigDict], object]
    results: tuple[Result, ...] = ()


@dataclasses.dataclass(frozen=True)
class Study:
    """A registered study: a protocol run over many experiments (the
    head-to-head table, the applications), listed apart from the model
    recipes.

    Attributes:
      name: the module name under ``experiments/``.
      description: what it measures, in a few words.
      presets: the presets its command accepts (``--preset``).
      command: how to run it.
    """

    name: str
    description: str
    presets: tuple[str, ...]
    command: str
    results: tuple["StudyResult", ...] = ()
    render: Callable[[list], str] | None = None


@dataclasses.dataclass(frozen=True)
class StudyResult:
    """One measured run of a study, its rows kept as the command wrote them.

    Attributes:
      preset, dataset: what it ran.
      rows_file: the JSON the command wrote (a ``{"rows": [...]}`` file, or
        the study's own object), copied unedited into the repository,
        relative to its root.
      command, date, host, wall_time: as for ``Result``.
      notes: anything a reader needs besides the table.
    """

    preset: str
    dataset: str
    rows_file: str
    command: str
    date: str
    host: str
    wall_time: str
    notes: str = ""

    def rows(self, root: pathlib.Path | None = None):
        """What ``rows_file`` holds for the study's ``render``: the list under
        ``"rows"`` (the head-to-head), else the whole JSON object."""
        path = (root or REPO_ROOT) / self.rows_file
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data["rows"] if isinstance(data, dict) and "rows" in data else data


_REGISTRY: dict[str, Experiment] = {}
_STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Adds ``study`` to the registry of studies and returns it."""
    _STUDIES[study.name] = study
    return study


def studies() -> dict[str, Study]:
    """Every registered study, by name (importing the experiments package)."""
    load_all()
    return dict(_STUDIES)


def register(experiment: Experiment) -> Experiment:
    """Adds ``experiment`` to the registry and returns it."""
    missing = [p for p in PRESETS_REQUIRED if p not in experiment.presets]
    if missing:
        raise ValueError(f"experiment {experiment.name} lacks presets {missing}")
    for result in experiment.results:
        if result.preset not in experiment.presets:
            raise ValueError(
                f"experiment {experiment.name}: a result for unknown preset "
                f"{result.preset!r}; valid: {', '.join(experiment.presets)}")
    _REGISTRY[experiment.name] = experiment
    return experiment


def load_all() -> dict[str, Experiment]:
    """Imports every module of the ``experiments`` package; returns the registry."""
    import experiments  # pylint: disable=import-outside-toplevel

    for info in pkgutil.iter_modules(experiments.__path__):
        if not info.name.startswith("_"):
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
    """The registry as a fixed-width text table, then every measured result."""
    experiments = sorted(load_all().values(), key=lambda e: e.name)
    rows = [("name", "family", "dataset", "presets", "paper")]
    for exp in experiments:
        rows.append((exp.name, exp.family, exp.dataset, ",".join(exp.presets),
                     exp.paper))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -----")
    if _STUDIES:
        lines.append("")
        lines.append("studies (each runs many experiments under one protocol):")
        for study in sorted(_STUDIES.values(), key=lambda s: s.name):
            lines.append(f"  {study.name}: {study.description}; presets "
                         f"{','.join(study.presets)}")
            lines.append(f"    {study.command}")
    lines.append("")
    lines.append("measured results (details: docs/<family>.md):")
    for exp in experiments:
        for r in exp.results:
            what = "; ".join(filter(None, (r.summary, r.metrics_text())))
            when = ", ".join(filter(None, (r.date, r.host, r.wall_time)))
            lines.append(f"  {exp.name} --preset={r.preset}: {what} ({when})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The generated results blocks of README.md and docs/<family>.md.

def docs_page(family: str) -> str:
    """The path, relative to the repository, of ``family``'s docs page."""
    return f"docs/{family}.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_results(experiments: Sequence[Experiment]) -> str:
    """README's results block: one row per result (a row saying so for an
    experiment with none), then the command behind each row."""
    lines = [
        f"<!-- Generated by `{GENERATE_COMMAND}` from the `results` of each "
        "experiment's registration; edit those, not this block. -->",
        "",
        "| experiment | preset | result | wall time | host | date | details |",
        "|---|---|---|---|---|---|---|",
    ]
    commands = []
    for exp in sorted(experiments, key=lambda e: e.name):
        link = f"[{docs_page(exp.family)}]({docs_page(exp.family)})"
        if not exp.results:
            lines.append(f"| `{exp.name}` | | not measured yet | | | | {link} |")
        for i, r in enumerate(exp.results, 1):
            what = ": ".join(filter(None, (r.summary, r.metrics_text("`"))))
            if r.stale:
                what = f"**stale, to re-measure** ({r.stale}): {what}"
            lines.append(
                f"| `{exp.name}` | `{r.preset}` | {_cell(what)} | "
                f"{r.wall_time or 'not recorded'} | {r.host} | {r.date} | {link} |")
            run = f" (run {i})" if len(exp.results) > 1 else ""
            commands.append(f"- `{exp.name}` `{r.preset}`{run}: `{r.command}`")
    lines += ["", "Commands:", "", *commands]
    return "\n".join(lines)


def study_results(root: pathlib.Path | None = None) -> str:
    """Every study's measured tables (rendered by the study from the rows its
    command wrote, read under ``root``, this repository by default), each
    with its command; "" when none is measured."""
    lines = []
    for study in sorted(_STUDIES.values(), key=lambda s: s.name):
        for r in study.results:
            if study.render is None:
                raise ValueError(f"study {study.name!r} has results but no render")
            lines += ["", f"### {study.description[:1].upper()}{study.description[1:]}: "
                      f"{r.dataset}, `--preset={r.preset}`", "",
                      study.render(r.rows(root)), "",
                      f"`{r.command}`: {r.wall_time} end to end, {r.host}, {r.date}."]
            if r.notes:
                lines += ["", r.notes]
    return "\n".join(lines)


def family_results(experiments: Sequence[Experiment], family: str) -> str:
    """``docs/<family>.md``'s results block: each of the family's results in
    full, notes included."""
    lines = [
        f"<!-- Generated by `{GENERATE_COMMAND}` from the `results` of each "
        "experiment's registration; edit those, not this block. -->",
    ]
    for exp in sorted(experiments, key=lambda e: e.name):
        if exp.family != family:
            continue
        lines += ["", f"### `{exp.name}`", ""]
        if not exp.results:
            lines.append("Not measured yet.")
        for r in exp.results:
            head = f"`{r.preset}` preset, {r.date}, {r.host}"
            if r.wall_time:
                head += f", {r.wall_time} end to end"
            lines += [f"**{head}**" + (f": {r.summary}" if r.summary else ""),
                      "", "```", r.command, "```", ""]
            if r.stale:
                lines += [f"**Stale, to re-measure:** {r.stale}", ""]
            lines += [f"- {item}" for item in r.metric_items("`")]
            if r.notes:
                lines += ["", r.notes]
            lines.append("")
        while lines[-1] == "":
            lines.pop()
    return "\n".join(lines)


def replace_block(text: str, body: str, where: str = "the file") -> str:
    """``text`` with the lines between the results markers replaced by ``body``.

    Raises:
      ValueError: if ``text`` lacks the markers, or has them more than once
        or in the wrong order.
    """
    begins, ends = text.count(BEGIN_MARKER), text.count(END_MARKER)
    start, stop = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begins != 1 or ends != 1 or stop < start:
        raise ValueError(
            f"{where} needs exactly one '{BEGIN_MARKER}' line followed by one "
            f"'{END_MARKER}' line (found {begins} and {ends}); add them where "
            "the generated results belong")
    head = text[:start + len(BEGIN_MARKER)]
    return f"{head}\n{body}\n{text[stop:]}"


def generated_files(root: pathlib.Path) -> dict[pathlib.Path, tuple[str, str]]:
    """``{path: (current text, text with fresh results blocks)}`` for
    ``root``'s README.md and every family's docs page, from the registry.

    Raises:
      ValueError: a file lacks its markers (or a docs page is missing).
    """
    experiments = list(load_all().values())
    pages = {root / "README.md": readme_results(experiments) + study_results()}
    for family in sorted({e.family for e in experiments}):
        pages[root / docs_page(family)] = family_results(experiments, family)
    out = {}
    for path, body in pages.items():
        if not path.is_file():
            raise ValueError(f"{path} does not exist; every family needs a docs "
                             f"page with the results markers ({BEGIN_MARKER})")
        text = path.read_text(encoding="utf-8")
        out[path] = (text, replace_block(text, body, str(path)))
    return out


def main(argv: Sequence[str], root: pathlib.Path = REPO_ROOT) -> int:
    """``--readme`` rewrites the generated blocks of the repository at
    ``root``; ``--check`` exits 1 if any is stale. Returns the exit code."""
    usage = ("usage: python -m genjax.registry --readme | --check\n"
             "  --readme  rewrite the results blocks of README.md and docs/<family>.md\n"
             "            from the registry\n"
             "  --check   exit 1 if any of them differs from the registry")
    if list(argv) not in (["--readme"], ["--check"]):
        print(f"error: expected one of --readme, --check; got {' '.join(argv) or 'nothing'}\n"
              f"{usage}", file=sys.stderr)
        return 2
    try:
        files = generated_files(root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stale = [path for path, (old, new) in files.items() if old != new]
    names = [path.relative_to(root).as_posix() for path in stale]
    if argv[0] == "--check":
        if stale:
            print(f"stale results in {', '.join(names)}; run `{GENERATE_COMMAND}`",
                  file=sys.stderr)
            return 1
        print("results blocks match the registry")
        return 0
    for path, name in zip(stale, names):
        path.write_text(files[path][1], encoding="utf-8")
        print(f"rewrote {name}")
    if not stale:
        print("results blocks already match the registry")
    return 0


if __name__ == "__main__":
    # Run as a script this file is ``__main__``, while the experiments register
    # with ``genjax.registry``: use that module's registry.
    from genjax import registry as _registry  # pylint: disable=import-self
    sys.exit(_registry.main(sys.argv[1:]))
