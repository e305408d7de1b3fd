"""Sample quality against the number of network evaluations (NFE), for
every sampler on trained diffusion-like models, under the shared protocol.

    python -m genjax.tools.nfe ddpm_mnist=/tmp/ddpm_mnist \\
        score_sde_mnist=/tmp/score_sde_mnist flow_matching_mnist=/tmp/fm_mnist \\
        --nfe=5,10,20,50 --samplers=ddim,dpm2,heun,adaptive --out=/tmp/nfe \
        [--config.KEY=VALUE ...]

Each positional ``EXPERIMENT=WORKDIR`` names a finished run (its latest
checkpoint, restored with the data, model and process settings saved in
``WORKDIR/config.json`` and the ``--preset`` recipe's sampling settings,
guidance included, as ``--mode=eval`` uses them). Every sampler is judged at every NFE:
``ddim:N``, ``dpm2:N``, ``dpm3:N`` (N evaluations), ``heun`` with ``(N +
1) // 2`` noise levels (``2 levels - 1`` evaluations), the score SDE's
``em:N-1`` (one more for the final denoising), and ``adaptive`` once (its
NFE is what the solver needs). Each row holds the protocol's FD (and its
floor), KID, classifier score, classes hit, class KL, the measured NFE and
the sampling seconds of ``--num_samples`` samples. Writes, after every row
(so an interrupted sweep keeps what it measured), ``OUT/nfe.json`` (a list
of rows), ``OUT/nfe.md`` (FD and classifier score per sampler and NFE) and
``OUT/nfe.png`` (both against NFE, one line per model and sampler).
A key the saved config lacks (a run of older code) keeps the preset's
value. ``--config.KEY=VALUE`` overrides apply to every run after its saved
settings (e.g. ``--config.sample.guidance_scale=1.5`` to judge another
guidance); a ``--tag`` names such a setting in the rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from genjax import config as config_lib
from genjax import registry
from genjax.config import ConfigError

log = logging.getLogger("genjax")

METRICS = ("fd", "fd_floor", "kid", "classifier_score", "classes_hit", "class_kl",
           "nfe", "sample_seconds", "num_samples")


def sampler_spec(sampler: str, nfe: int) -> str | None:
    """The spec of ``sampler`` that spends about ``nfe`` evaluations, or
    None if it has no such setting."""
    if sampler in ("ddim", "dpm2", "dpm3", "euler"):
        return f"{sampler}:{nfe}"
    if sampler == "heun":
        return f"heun:{(nfe + 1) // 2}" if nfe >= 3 else None
    if sampler in ("em", "pc"):
        per_step = 1 if sampler == "em" else 2
        steps = (nfe - 1) // per_step
        return f"{sampler}:{steps}" if steps >= 1 else None
    raise ConfigError(f"--samplers: {sampler!r} has no NFE setting here")


def parse_runs(specs: list[str]) -> list[tuple[str, str]]:
    runs = []
    for spec in specs:
        name, sep, workdir = spec.partition("=")
        if not sep or not workdir:
            raise ConfigError(f"run {spec!r}: write EXPERIMENT=WORKDIR, e.g. "
                              "ddpm_mnist=/tmp/ddpm_mnist")
        registry.get(name)  # a one-line error for an unknown name
        if not os.path.isfile(os.path.join(workdir, "config.json")):
            raise ConfigError(f"run {spec!r}: {workdir}/config.json is missing; "
                              "train it first")
        runs.append((name, workdir))
    return runs


def restore(name: str, workdir: str, preset: str, num_samples: int,
            overrides: list[tuple[str, str]] = ()):
    """``(run, params)`` of ``workdir``'s latest checkpoint, with the config
    ``overrides`` (key, raw value) applied last."""
    from genjax.train import modes  # pylint: disable=import-outside-toplevel

    exp = registry.get(name)
    config = exp.get_config(preset)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    # The run's own data, model and process settings (whatever overrides it
    # was trained with); sampling follows the preset and the overrides, as
    # --mode=eval does, and evaluation follows this tool.
    for section, values in saved.items():
        if (section not in ("eval", "train", "sample") and isinstance(values, dict)
                and section in config):
            _update(config[section], values)
    config.eval.compare_samplers = ()
    config.eval.sample_quality.num_samples = num_samples
    for key, raw in overrides:
        config_lib.apply_override(config, key, raw)
    run, step, params = modes.restore_for_inference(config, workdir, exp.make_task)
    log.info("restored %s at step %d from %s", name, step, workdir)
    return run, params


def _update(config, values: dict) -> None:
    """Sets ``config``'s existing keys from JSON ``values`` (lists back to
    tuples where the config holds a tuple)."""
    for key, value in values.items():
        if key not in config:
            continue
        if isinstance(value, dict):
            _update(config[key], value)
        elif isinstance(value, list) and isinstance(config[key], tuple):
            config[key] = tuple(value)
        else:
            config[key] = value


def measure(run, params, spec: str, num_samples: int) -> dict:
    """The protocol's metrics of ``num_samples`` samples of sampler ``spec``."""
    from genjax.train import evaluation  # pylint: disable=import-outside-toplevel

    run.task.config.sample.sampler = spec
    run.compiled.clear()
    metrics = evaluation.sample_quality_metrics(run, params,
                                                run.config.eval.sample_quality,
                                                num_samples)
    return {k.rsplit("/", 1)[-1]: v for k, v in metrics.items()
            if k.rsplit("/", 1)[-1] in METRICS}


def write_outputs(rows: list[dict], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "nfe.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    os.replace(tmp, os.path.join(out, "nfe.json"))
    with open(os.path.join(out, "nfe.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows))
    if rows:
        plot(rows, os.path.join(out, "nfe.png"))


def _key(row: dict) -> tuple[str, str, str]:
    return row["experiment"], row["sampler"], row.get("tag", "")


def _series(rows: list[dict]) -> list[tuple[str, str, str]]:
    """The (experiment, sampler, tag) series in order of first appearance."""
    keys = []
    for r in rows:
        if _key(r) not in keys:
            keys.append(_key(r))
    return keys


def markdown(rows: list[dict]) -> str:
    """FD / classifier score per (experiment, sampler) row and NFE column."""
    targets = sorted({r["target_nfe"] for r in rows if r["target_nfe"]})
    keys = _series(rows)
    head = ("| experiment | sampler | " + " | ".join(f"NFE {n}" for n in targets)
            + " | adaptive |")
    lines = ["FD (floor in brackets) / classifier score, each cell one run of the "
             "protocol; adaptive: the solver's mean NFE.", "", head,
             "|" + "---|" * (len(targets) + 3)]
    for key in keys:
        exp, sampler, tag = key
        cells = []
        by = {r["target_nfe"]: r for r in rows if _key(r) == key}
        for n in targets + [0]:
            r = by.get(n)
            cells.append("" if r is None else
                         f"{r['fd']:.1f} ({r['fd_floor']:.1f}) / "
                         f"{r['classifier_score']:.2f}"
                         + (f" @ {r['nfe']:.0f}" if n == 0 else ""))
        name = f"{sampler} ({tag})" if tag else sampler
        lines.append(f"| {exp} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = _series(rows)
    # One colour per sampler, one line style and marker per experiment (and
    # tag), so that a dozen series stay apart.
    samplers = list(dict.fromkeys(k[1] for k in keys))
    models = list(dict.fromkeys((k[0], k[2]) for k in keys))
    colours = plt.get_cmap("tab10").colors
    lines, markers = ("-", "--", ":", "-."), "osD^v<>"
    for key in keys:
        exp, sampler, tag = key
        pts = sorted((r["nfe"], r["fd"], r["classifier_score"]) for r in rows
                     if _key(r) == key)
        m = models.index((exp, tag))
        for ax, i in zip(axes, (1, 2)):
            ax.plot([p[0] for p in pts], [p[i] for p in pts],
                    ls="none" if sampler == "adaptive" else lines[m % len(lines)],
                    marker=markers[m % len(markers)], ms=4,
                    color=colours[samplers.index(sampler) % len(colours)],
                    label=" ".join(x for x in (exp, sampler, tag) if x))
    floor = min(r["fd_floor"] for r in rows)
    axes[0].axhline(floor, color="grey", ls=":", label="FD floor")
    axes[0].set(xscale="log", yscale="log", xlabel="network evaluations (NFE)",
                ylabel="FD (domain classifier features)")
    axes[1].set(xscale="log", xlabel="network evaluations (NFE)",
                ylabel="classifier score")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genjax.tools.nfe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="EXPERIMENT=WORKDIR")
    parser.add_argument("--nfe", default="5,10,20,50")
    parser.add_argument("--samplers", default="ddim,dpm2,heun,adaptive")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", default="", help="names the overrides in the rows")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        overrides = []
        for item in rest:
            key, sep, raw = item.partition("=")
            if not key.startswith("--config.") or not sep:
                raise ConfigError(f"unknown argument {item!r}; overrides are "
                                  "--config.KEY=VALUE")
            overrides.append((key[len("--config."):], raw))
        runs = parse_runs(args.runs)
        nfes = [int(n) for n in args.nfe.split(",") if n]
        samplers = [s for s in args.samplers.split(",") if s]
        if not nfes or min(nfes) < 1:
            raise ConfigError(f"--nfe={args.nfe!r}: give positive integers, e.g. 5,10,20")
    except (ConfigError, ValueError, KeyError) as e:
        print(f"nfe: {str(e).strip(chr(34))}", file=sys.stderr)
        return 2
    path = os.path.join(args.out, "nfe.json")
    rows = []
    if os.path.isfile(path):  # Resume: keep what an earlier sweep measured.
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    done = {(r["experiment"], r["spec"], r.get("tag", "")) for r in rows}
    for name, workdir in runs:
        run, params = restore(name, workdir, args.preset, args.num_samples, overrides)
        try:
            for sampler in samplers:
                if sampler not in run.task.sampler_names:
                    log.info("%s has no sampler %s; skipped", name, sampler)
                    continue
                targets = [0] if sampler == "adaptive" else nfes
                for n in targets:
                    spec = "adaptive" if n == 0 else sampler_spec(sampler, n)
                    if spec is None or (name, spec, args.tag) in done:
                        continue
                    t0 = time.perf_counter()
                    row = {"experiment": name, "sampler": sampler, "spec": spec,
                           "target_nfe": n, "tag": args.tag,
                           **measure(run, params, spec, args.num_samples)}
                    rows.append(row)
                    write_outputs(rows, args.out)
                    log.info("%s %s: FD %.2f (floor %.2f), score %.2f, NFE %.1f, %.0f s",
                             name, spec, row["fd"], row["fd_floor"],
                             row["classifier_score"], row["nfe"],
                             time.perf_counter() - t0)
        finally:
            run.checkpointer.close()
    write_outputs(rows, args.out)
    print(f"wrote {args.out}/nfe.json, nfe.md, nfe.png ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
