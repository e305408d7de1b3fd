"""The head-to-head: every family on the same data and metrics, in one table.

    python -m experiments.compare --dataset=mnist:../shared/data/mnist \\
        --preset=cpu --workdir=DIR

trains each row's experiment at ``--preset`` in ``DIR/<experiment>`` (or
reuses a run that finished there), then judges every model the same way:

- its likelihood as its own evaluation reported it: NLL in nats per example
  on binarised images, or bits/dim on dequantised 8-bit images, labelled
  exact, bound or ODE estimate;
- ``--num_samples`` new samples from each model, drawn with the same keys,
  against the test split by the shared sample-quality protocol
  (``genjax.evaluate.sample_quality``): FD and KID in the domain
  classifier's features, improved precision and recall (k = 3), density and
  coverage (k = 5), classifier score, classes hit and class KL;
- the sampling time per 1,000 samples (compilation excluded) and the
  network evaluations per sample, the training time, the parameter count.

It writes ``DIR/compare.json`` (a list of rows, each with ``family``,
``experiment`` and its metrics), ``DIR/compare.md`` (the table),
``DIR/compare_quality_vs_time.png`` (FD against sampling time) and
``DIR/samples/<experiment>.png`` (64 samples each). ``--dataset`` is any
registered image dataset as ``NAME[:DIR]``, ``DIR`` its ``manual_dir``
(``fashion_mnist:../shared/data/fashion_mnist`` too): each recipe keeps its
network and schedule and reads that dataset instead of MNIST.
``--experiments=a,b`` restricts the rows; ``--preset=smoke`` checks the
whole pipeline in minutes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from genjax import cli
from genjax import config as config_lib
from genjax import data as data_lib
from genjax import registry
from genjax.data import subsets
from genjax.evaluate import images as image_lib
from genjax.evaluate import sample_quality
from genjax.train import artifacts, evaluation, loop, modes
from genjax.train import step as step_lib

log = logging.getLogger("genjax")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: a family's recipe and how its likelihood reads.

    Attributes:
      family: the family as the table names it.
      experiment: the registered experiment that is its recipe.
      likelihood_key: the ``eval.json`` key of its likelihood, or "".
      likelihood: ``nats`` (binarised) or ``bits/dim`` (8-bit), or "".
      likelihood_kind: exact, bound, ODE estimate.
      recipe: a few words on the recipe.
      nfe: network evaluations per sample where the sampler does not report
        them (one pass for a VAE, GAN or flow; None for a mixture: no network).
      published: the family's published number on this data in the same
        unit (MNIST), or None where the papers report none comparable.
      published_by: who published it, with what, and how long they trained.
    """

    family: str
    experiment: str
    likelihood_key: str = ""
    likelihood: str = ""
    likelihood_kind: str = ""
    recipe: str = ""
    nfe: int | None = 1
    published: float | None = None
    published_by: str = ""


ROWS = (
    Row("VAE", "vae_mnist", "eval/nll_iwae", "nats", "bound (IWAE, k = 1000)",
        "MLP encoder/decoder, Bernoulli", published=86.76,
        published_by="VAE with one stochastic layer, Burda et al. 2016, "
                     "3,280 epochs"),
    Row("VAE", "iwae_mnist", "eval/nll_iwae", "nats", "bound (IWAE, k = 1000)",
        "MLP, trained on the IWAE bound (k = 3), VampPrior", published=85.54,
        published_by="IWAE (k = 5) with one stochastic layer, Burda et al. 2016, "
                     "3,280 epochs; the VampPrior alone: 85.57, Tomczak & Welling 2018"),
    Row("GAN", "dcgan_mnist", recipe="DCGAN, non-saturating, EMA generator"),
    Row("diffusion", "ddpm_mnist", "eval/bits_per_dim", "bits/dim",
        "bound (variational)", "DDPM U-Net, class-conditional, DPM-Solver++ 20"),
    Row("score SDE", "score_sde_mnist", "eval/bits_per_dim", "bits/dim",
        "ODE estimate", "VP SDE, class-conditional, DPM-Solver++ 20"),
    Row("flow matching", "flow_matching_mnist", "eval/bits_per_dim", "bits/dim",
        "ODE estimate", "linear path, class-conditional, Euler 20"),
    Row("GAN-diffusion", "ddgan_mnist", recipe="denoising diffusion GAN, 4 steps"),
    Row("flow", "realnvp_mnist", "eval/bits_per_dim", "bits/dim",
        "exact (one dequantisation)", "RealNVP, affine couplings", published=1.06,
        published_by="RealNVP as trained by Grathwohl et al. 2019 (FFJORD)"),
    Row("flow", "glow_mnist", "eval/bits_per_dim", "bits/dim",
        "exact (one dequantisation)", "Glow", published=1.05,
        published_by="Glow as trained by Grathwohl et al. 2019 (FFJORD)"),
    Row("autoregressive", "pixelcnn_mnist", "eval/nll", "nats", "exact",
        "gated PixelCNN, Bernoulli", published=81.30,
        published_by="PixelCNN, van den Oord et al. 2016"),
    Row("autoregressive", "pixelcnn_mnist_8bit", "eval/bits_per_dim", "bits/dim",
        "exact", "gated PixelCNN, 256-way softmax"),
    Row("mixture (EM)", "bmm_mnist", "eval/nll", "nats", "exact",
        "Bernoulli mixture, batch EM", nfe=None, published=137.64,
        published_by="500 Bernoulli components, as tabulated by Germain et al. 2015 (MADE)"),
    Row("mixture (EM)", "gmm_mnist", "eval/bits_per_dim", "bits/dim",
        "bound (one dequantisation)", "full-covariance Gaussian mixture on logits", nfe=None),
)
PRESETS = ("smoke", "cpu", "paper")
# The sample-quality metrics every row reports (``eval/`` dropped).
QUALITY_KEYS = ("fd", "fd_floor", "kid", "precision", "recall", "density", "coverage",
                "classifier_score", "classes_hit", "class_kl")
TIMING_FILE = "compare_train.json"
SCORES_FILE = "compare_scores.json"
PUBLISHED_ON = "mnist"  # the dataset of every row's published number


class CompareError(ValueError):
    """A usage mistake: one line, exit 2, nothing written."""


def parse_dataset(spec: str) -> tuple[str, str | None]:
    """``NAME[:DIR]`` -> ``(name, manual_dir or None)``, checked against the
    dataset registry."""
    name, _, manual_dir = spec.partition(":")
    kind = data_lib.dataset_kind(name)
    if kind is None:
        valid = ", ".join(n for n, k, _ in data_lib.list_datasets() if k == "image")
        raise CompareError(f"--dataset={spec!r}: unknown dataset {name!r}; image "
                           f"datasets: {valid}")
    if kind != "image":
        raise CompareError(f"--dataset={spec!r}: {name!r} is a {kind} dataset; the "
                           f"comparison needs images")
    if manual_dir and not os.path.isdir(manual_dir):
        raise CompareError(f"--dataset={spec!r}: {manual_dir!r} is not a directory")
    return name, manual_dir or None


def load_dataset(name: str, manual_dir: str | None, data_dir: str | None = None):
    """The registered dataset ``name`` as a study reads it (``manual_dir``
    its raw files, ``data_dir`` where it is prepared)."""
    cfg = config_lib.base_config(data_name=name)
    cfg.data.manual_dir = manual_dir
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    return data_lib.load_dataset(cfg.data)


def row_config(row: Row, preset: str, dataset: str, manual_dir: str | None,
               data_dir: str | None = None):
    """The row's recipe at ``preset``, reading ``dataset``."""
    config = registry.get(row.experiment).get_config(preset)
    config.data.name = dataset
    config.data.manual_dir = manual_dir
    if data_dir is not None:
        config.data.data_dir = data_dir
    return config


# What does not change the trained model: where the data lives, how it is
# evaluated and sampled, on which devices, and how often the loop reports.
_NOT_RECIPE = ("data", "eval", "sample", "cpu_devices", "mesh")
_NOT_RECIPE_TRAIN = ("allow_fresh_start", "checkpoint_every", "eval_every",
                     "keep_checkpoints", "log_every")


def recipe_of(config: dict) -> dict:
    """What of a saved config (a dict) makes the trained model: the
    recipe that ``finished`` compares."""
    recipe = {k: v for k, v in config.items() if k not in _NOT_RECIPE}
    # Which examples train is part of the recipe (genjax.data.subsets).
    recipe["data_subset"] = {k: v for k, v in config.get("data", {}).items()
                             if k in subsets.KEYS}
    recipe["train"] = {k: v for k, v in recipe.get("train", {}).items()
                       if k not in _NOT_RECIPE_TRAIN}
    return recipe


def recipe_id(run_dir: str) -> str:
    """A digest of the recipe the run in ``run_dir`` was trained to ("" for
    a folder without a run): what a study keeps beside anything it computed
    from the run, so that a run trained again to another recipe in the same
    place is not read through the old one's results."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    return hashlib.sha256(json.dumps(recipe_of(saved), sort_keys=True)
                          .encode()).hexdigest()[:16]


def finished(config, workdir: str) -> bool:
    """Whether ``workdir`` holds a run of this recipe (model, objective,
    optimiser, schedule, seed) on this dataset that finished training and
    wrote its final evaluation; False for an empty or unfinished one (which
    training resumes).

    Raises:
      CompareError: ``workdir`` holds a run of another recipe or dataset.
    """
    saved_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(saved_path):
        return False
    with open(saved_path, encoding="utf-8") as f:
        saved = json.load(f)
    changes = config_lib.diff(recipe_of(saved), recipe_of(config_lib.to_dict(config)),
                              absent_as_off=True)
    dataset = saved.get("data", {}).get("name")
    if dataset != config.data.name:
        changes.append(f"data.name: {dataset!r} -> {config.data.name!r}")
    if changes:
        raise CompareError(
            f"{workdir} holds a run of another recipe ({'; '.join(changes)}); move it "
            f"away or pass another --workdir")
    path = os.path.join(workdir, "eval.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("step") == config.train.num_steps


def logged_training_seconds(workdir: str) -> float | None:
    """How long a run that this study did not train took, read from its
    TensorBoard log: each event file is named after the second its writer
    started and last written when that session ended, so the spans summed
    over files (one per session, resumptions included) are the training time,
    data preparation before the writer started excluded. None without a log."""
    directory = os.path.join(workdir, "tensorboard")
    if not os.path.isdir(directory):
        return None
    total = 0.0
    for name in os.listdir(directory):
        parts = name.split(".")
        if not name.startswith("events.out.tfevents.") or not parts[3].isdigit():
            continue
        total += max(0.0, os.path.getmtime(os.path.join(directory, name)) - int(parts[3]))
    return total or None


def train_or_reuse(row: Row, config, workdir: str) -> tuple[float | None, str]:
    """Trains ``row`` in ``workdir`` unless a finished run is there; returns
    the training wall time in seconds and where it comes from: ``study`` (this
    study trained it in one call, end to end), ``log`` (a reused run's
    TensorBoard log, or a run this study resumed) or ``""`` (unknown)."""
    timing = os.path.join(workdir, TIMING_FILE)
    if finished(config, workdir):
        log.info("compare: reusing the finished run in %s", workdir)
    else:
        # An interrupted study resumes the run from its last checkpoint; its
        # time is then the sum of its sessions, read from its log.
        resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
        log.info("compare: %s %s in %s", "resuming" if resumed else "training",
                 row.experiment, workdir)
        t0 = time.perf_counter()
        loop.train_and_evaluate(config, workdir, registry.get(row.experiment).make_task,
                                devices=row_devices(config))
        if resumed:
            timed = {"train_seconds": logged_training_seconds(workdir), "source": "log"}
        else:
            timed = {"train_seconds": time.perf_counter() - t0, "source": "study"}
        artifacts.write_json(timing, timed)
    if os.path.isfile(timing):
        with open(timing, encoding="utf-8") as f:
            saved = json.load(f)
        return float(saved["train_seconds"]), saved.get("source", "study")
    seconds = logged_training_seconds(workdir)
    return seconds, "log" if seconds is not None else ""


def split_cpu_for(configs) -> None:
    """Before the study's first JAX operation: as many CPU devices as the
    rows' presets ask for at most (``config.cpu_devices``), so that each row
    trains and samples as its own command would (``row_devices``)."""
    step_lib.split_host_cpu(max([c.get("cpu_devices", 0) for c in configs] + [0]))


def row_devices(config):
    """The devices a row's run uses: on a CPU host, the first
    ``cpu_devices`` (one for a preset that leaves it at 0), as its own
    command would have; on accelerators, all of them."""
    devices = jax.devices()
    if devices[0].platform != "cpu":
        return None
    return devices[:max(1, config.get("cpu_devices", 0))]


def count_parameters(params, task=None) -> int:
    """Parameters a sampler needs: everything but a discriminator's; a task
    that counts its own free parameters (a mixture: its covariances'
    eigenvectors are stored whole but are not all free) is asked."""
    if hasattr(task, "num_parameters"):
        return int(task.num_parameters)
    if isinstance(params, dict):
        params = {k: v for k, v in params.items() if not k.startswith("discriminator")}
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def protocol_for(preset: str, num_samples: int | None):
    """The one sample-quality protocol every row is judged by."""
    protocol = sample_quality.default_protocol()
    n = num_samples or {"smoke": 100, "cpu": 1000, "paper": 10_000}[preset]
    protocol.num_samples = n
    protocol.num_samples_during_training = 0
    protocol.batch_size = min(500, n)
    protocol.kid_subset_size = min(1000, n)
    return protocol


def measure(row: Row, config, workdir: str, protocol, out_dir: str) -> dict:
    """The row's numbers (see the module docstring) from its finished run.

    They are kept in ``workdir/compare_scores.json`` with the protocol and
    the checkpoint step they were measured at: a rerun with the same protocol
    on the same checkpoint reuses them instead of sampling again."""
    cache = os.path.join(workdir, SCORES_FILE)
    grid_path = os.path.join(out_dir, "samples", f"{row.experiment}.png")
    with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
        own = json.load(f)  # the run's own final evaluation
    key = {"protocol": config_lib.to_dict(protocol), "step": own.get("step")}
    if os.path.isfile(cache) and os.path.isfile(grid_path):
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        if {k: cached.get(k) for k in key} == key:
            log.info("compare: reusing the scores in %s", cache)
            return dict(cached["row"], **_row_text(row))
    experiment = registry.get(row.experiment)
    run, step, params = modes.restore_for_inference(config, workdir, experiment.make_task,
                                                    devices=row_devices(config))
    try:
        quality = evaluation.sample_quality_metrics(
            run, params, protocol, int(protocol.num_samples), samplers=("",))
        grid = evaluation.draw(run, params, 64, jax.random.key(config.seed))
    finally:
        run.checkpointer.close()
    n = int(protocol.num_samples)
    result = dict(_row_text(row), **{
        "step": step, "parameters": count_parameters(params, run.task),
        "likelihood": own.get(row.likelihood_key) if row.likelihood_key else None,
        "num_samples": n,
        "sample_seconds_per_1000": quality["eval/sample_seconds"] * 1000.0 / n,
        "nfe": quality.get("eval/nfe", row.nfe),
    })
    result.update({key: quality.get(f"eval/{key}") for key in QUALITY_KEYS})
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    image_lib.save_png(grid_path, image_lib.make_grid(np.asarray(grid), 8))
    artifacts.write_json(cache, dict(key, row=result))
    return result


def _row_text(row: Row) -> dict:
    """What a row says about itself (not measured): recipe, units, paper."""
    return {"family": row.family, "experiment": row.experiment, "recipe": row.recipe,
            "likelihood_unit": row.likelihood, "likelihood_kind": row.likelihood_kind,
            "published": row.published, "published_by": row.published_by}


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) > 100:
        return f"{int(value):,}"
    return f"{float(value):.{digits}g}"


def _published_cell(r: dict) -> str:
    """The paper's number and how far this row is from it (lower is better)."""
    if r.get("published") is None:
        return "—"
    if r.get("likelihood") is None:
        return f"{r['published']:g}"
    return f"{r['published']:g} ({r['likelihood'] - r['published']:+.3g})"


def markdown(rows: list[dict], dataset: str, preset: str, protocol) -> str:
    """``compare.md``: a title, then ``render``."""
    return (f"# Every family on {dataset} (`--preset={preset}`)\n\n"
            + render(rows, protocol) + "\n")


def render(rows: list[dict], protocol=None) -> str:
    """The table, each row's recipe and published number, then how each
    number was measured (``protocol``: the study's; by default the shared
    one, as README's copy is rendered)."""
    protocol = protocol or sample_quality.default_protocol()
    head = ("| family | experiment | NLL | published (gap) | FD (floor) | KID | "
            "precision | recall | density | coverage | score | classes | class KL | "
            "s / 1000 samples | NFE | train | parameters |")
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        if r.get("likelihood") is None:
            nll = "—"
        else:
            nll = f"{_cell(r['likelihood'], 4)} {r['likelihood_unit']}, {r['likelihood_kind']}"
        train = "—"
        if r.get("train_seconds") is not None:
            mark = "†" if r.get("train_seconds_source") == "log" else ""
            train = f"{r['train_seconds'] / 60:.1f} min{mark}"
        lines.append(
            f"| {r['family']} | `{r['experiment']}` | {nll} | {_published_cell(r)} | "
            f"{_cell(r['fd'])} ({_cell(r['fd_floor'])}) | {_cell(r['kid'])} | "
            f"{_cell(r['precision'])} | {_cell(r['recall'])} | {_cell(r['density'])} | "
            f"{_cell(r['coverage'])} | {_cell(r['classifier_score'])} | "
            f"{_cell(r['classes_hit'])} | {_cell(r['class_kl'])} | "
            f"{_cell(r['sample_seconds_per_1000'])} | {_cell(r['nfe'])} | {train} | "
            f"{_cell(r['parameters'])} |")
    lines += ["", "Recipes and the published numbers they are held against:", ""]
    for r in rows:
        paper = (f"; published: {r['published']:g} {r['likelihood_unit']}, "
                 f"{r['published_by']}") if r.get("published") is not None else ""
        lines.append(f"- `{r['experiment']}` (step {r['step']:,}): {r['recipe']}{paper}.")
    n = rows[0]["num_samples"] if rows else int(protocol.num_samples)
    lines += ["", f"{n} samples per model against the test "
              f"split, the same keys for every model; FD and KID (x 1000) in the "
              f"domain classifier's features (floor: as many real images the "
              f"classifier never saw); precision/recall k = "
              f"{protocol.precision_recall_k}, density/coverage k = "
              f"{protocol.density_coverage_k}. NLL as each model's own final "
              f"evaluation reported it (nats per example on binarised test "
              f"images, or bits/dim on 8-bit ones); published numbers (MNIST "
              f"only) with this row's gap to them. Binarised models "
              f"(Bernoulli likelihoods) draw binary samples, judged against the "
              f"grey-level test images like every row, which costs them FD and "
              f"precision. Sampling time excludes compilation. Training time: "
              f"the study's own end-to-end run, or, marked †, a reused run's "
              f"TensorBoard log (first to last write, data preparation "
              f"excluded). Written by `python -m experiments.compare`."]
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """FD against sampling time per 1,000 samples, one labelled point a row."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("fd") is None:
            continue
        seconds = max(r["sample_seconds_per_1000"], 1e-3)
        ax.scatter(seconds, r["fd"])
        ax.annotate(r["experiment"], (seconds, r["fd"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    floors = [r["fd_floor"] for r in rows if r.get("fd_floor") is not None]
    if floors:
        ax.axhline(float(np.mean(floors)), color="grey", linestyle="--", linewidth=0.8,
                   label="FD floor (real images)")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sampling time per 1,000 samples (s, 2-core CPU)")
    ax.set_ylabel("FD (classifier features)")
    ax.set_title("quality against sampling time")
    fig.tight_layout()
    save_figure(fig, path)


def compare(dataset_spec: str, preset: str, workdir: str, *,
            experiments: tuple[str, ...] | None = None, num_samples: int | None = None,
            data_dir: str | None = None) -> list[dict]:
    """Trains or reuses every row, measures it, writes the outputs; returns
    the rows (what ``compare.json`` holds)."""
    if preset not in PRESETS:
        raise CompareError(f"--preset={preset!r}; valid: {', '.join(PRESETS)}")
    dataset, manual_dir = parse_dataset(dataset_spec)
    names = [r.experiment for r in ROWS]
    chosen = ROWS
    if experiments:
        unknown = [e for e in experiments if e not in names]
        if unknown:
            raise CompareError(f"--experiments: unknown {', '.join(unknown)}; "
                               f"valid: {', '.join(names)}")
        chosen = tuple(r for r in ROWS if r.experiment in experiments)
    if num_samples is not None and num_samples < 6:
        raise CompareError(f"--num_samples={num_samples} must be at least 6 (the "
                           f"neighbour counts of precision and coverage)")
    protocol = protocol_for(preset, num_samples)
    configs = [row_config(r, preset, dataset, manual_dir, data_dir) for r in chosen]
    split_cpu_for(configs)
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for i, (row, config) in enumerate(zip(chosen, configs)):
        log.info("compare: [%d/%d] %s (%s)", i + 1, len(chosen), row.experiment, row.family)
        run_dir = os.path.join(workdir, row.experiment)
        train_seconds, source = train_or_reuse(row, config, run_dir)
        result = measure(row, config, run_dir, protocol, workdir)
        result["train_seconds"] = train_seconds
        result["train_seconds_source"] = source
        if dataset != PUBLISHED_ON:
            result.update(published=None, published_by="")
        result["preset"] = preset
        result["dataset"] = dataset
        rows.append(result)
        log.info("compare: %s  %s", row.experiment, json.dumps(
            {k: v for k, v in result.items() if isinstance(v, (int, float))}))
        # Written after every row: an interrupted study keeps what it measured.
        artifacts.write_json(os.path.join(workdir, "compare.json"), {"rows": rows})
    artifacts.write_text(os.path.join(workdir, "compare.md"),
                         markdown(rows, dataset, preset, protocol))
    plot(rows, os.path.join(workdir, "compare_quality_vs_time.png"))
    return rows


USAGE = ("usage: python -m experiments.compare --dataset=NAME[:DIR] --workdir=DIR "
         "[--preset=smoke|cpu|paper] [--experiments=a,b] [--num_samples=N] "
         "[--data_dir=DIR]")


def parse_flags(argv: list[str], known: set[str], required: tuple[str, ...], usage: str,
                error=None, *, ints=(), int_lists=(), float_lists=(), name_lists=(),
                bools=()) -> dict:
    """A study's ``--key=value`` flags -> a dict (``preset`` defaults to
    ``cpu``), the values of ``ints`` as integers, of ``bools`` as booleans
    (``true`` or ``false``) and of the ``*_lists`` as tuples split at commas;
    a one-line ``error`` (CompareError) otherwise."""
    error = error or CompareError
    args = {"preset": "cpu"}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise error(f"unexpected argument {arg!r}; {usage}")
        key, value = arg[2:].split("=", 1)
        if key not in known:
            raise error(f"unknown flag --{key}; {usage}")
        args[key] = value
    for key in required:
        if not args.get(key):
            raise error(f"--{key} is required; {usage}")
    for keys, kind, single, what in ((ints, int, True, "an integer"),
                                     (int_lists, int, False, "integers separated by commas"),
                                     (float_lists, float, False,
                                      "numbers separated by commas")):
        for key in (k for k in keys if k in args):
            try:
                args[key] = (kind(args[key]) if single else
                             tuple(kind(v) for v in args[key].split(",") if v))
            except ValueError:
                raise error(f"--{key}={args[key]!r}: not {what}") from None
    for key in name_lists:
        if key in args:
            args[key] = tuple(v for v in args[key].split(",") if v)
    for key in (k for k in bools if k in args):
        if args[key].lower() not in ("true", "false"):
            raise error(f"--{key}={args[key]!r}: expected true or false")
        args[key] = args[key].lower() == "true"
    return args


def parse_args(argv: list[str]) -> dict:
    """``--key=value`` flags -> a dict; a one-line CompareError otherwise."""
    return parse_flags(argv, {"dataset", "workdir", "preset", "experiments", "num_samples",
                              "data_dir"}, ("dataset", "workdir"), USAGE,
                       ints=("num_samples",), name_lists=("experiments",))


def run_study(run) -> int:
    """A study's command line: ``run()`` with the experiments' progress lines
    on stdout; 0 on success, 2 with one line for a usage mistake (a bad flag,
    config value or dataset)."""
    cli.setup_logging()
    try:
        run()
    except (CompareError, config_lib.ConfigError, data_lib.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def without_sample_quality(config):
    """``config`` without the sample-quality protocol (not part of a recipe:
    a run of it is reused as it is); returns it."""
    q = config.eval.get("sample_quality")
    if q is not None:
        q.num_samples = 0
        q.num_samples_during_training = 0
    return config


def shorten(config, fraction: float, max_batch: int):
    """``config`` trained for ``fraction`` of its steps (at least 20; its
    warm-up and its weight average's horizon in proportion, one evaluation
    at the end) on a batch of at most ``max_batch`` (rounded down to a
    multiple of 8, which any CPU device count divides); returns it.

    The average starts at the initial weights: kept at its full-length
    decay, a run an eighth as long would still hold a quarter of them (0.995
    over 275 steps), and sample noise."""
    t = config.train
    steps = max(20, int(round(t.num_steps * fraction)))
    if steps < t.num_steps:
        if t.get("ema_decay", 0.0) > 0:
            t.ema_decay = max(0.0, 1.0 - (1.0 - t.ema_decay) * t.num_steps / steps)
        t.warmup_steps = int(round(t.get("warmup_steps", 0) * steps / t.num_steps))
        t.num_steps = steps
        t.eval_every = steps
        t.checkpoint_every = min(t.checkpoint_every, steps)
    if t.batch_size > max_batch:
        t.batch_size = max(8, max_batch - max_batch % 8)
    return config


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Writes ``fig`` to ``path`` atomically and closes it."""
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """The command line: 0 on success, 2 for a usage mistake."""
    def run():
        args = parse_args(argv)
        compare(args["dataset"], args["preset"], args["workdir"],
                experiments=args.get("experiments"), num_samples=args.get("num_samples"),
                data_dir=args.get("data_dir"))
    return run_study(run)


registry.register_study(registry.Study(
    name="compare",
    description="every family on the same data and metrics in one table",
    presets=PRESETS,
    command="python -m experiments.compare --dataset=mnist:../shared/data/mnist "
            "--preset=cpu --workdir=/tmp/compare",
    render=render,
    results=(
        registry.StudyResult(
            preset="cpu", dataset="mnist",
            rows_file="experiments/results/compare_mnist_cpu.json",
            command="python -m experiments.compare --dataset=mnist:../shared/data/mnist "
                    "--preset=cpu --workdir=/tmp/cmp_mnist",
            date="2026-12-07", host="2-core CPU",
            wall_time="1 h 4 min over six calls, then 29 min 9 s re-measuring "
                      "the two PixelCNN rows",
            notes="`experiments/results/compare_mnist_cpu.json` is the "
                  "`compare.json` the command wrote. It trained `dcgan_mnist`, "
                  "`flow_matching_mnist` and `pixelcnn_mnist_8bit` (train column "
                  "without †; calls of 9 min 50 s and 38 min 59 s with the other "
                  "rows' sampling, one of 14 min 30 s that trained the previous "
                  "`iwae_mnist` preset, since superseded, then three of 10 to 14 "
                  "s writing the table from the kept scores) and reused finished `cpu` runs of the other "
                  "ten recipes (linked into `/tmp/cmp_mnist`; train column †), "
                  "`iwae_mnist`'s being its registered run, judging every model "
                  "afresh by the one protocol. The two PixelCNN rows were measured "
                  "again after their sampler got faster (each stack on the 13 rows "
                  "or columns a pixel reads; the same draws and metrics): `python -m "
                  "experiments.compare --dataset=mnist:../shared/data/mnist "
                  "--preset=cpu --workdir=/tmp/cmp_mnist_pcnn --experiments="
                  "pixelcnn_mnist,pixelcnn_mnist_8bit` trained both from scratch in "
                  "one call of 29 min 9 s (its first row's time includes training "
                  "the MNIST domain classifier, 31 s), and its two rows replace "
                  "theirs in the file (before: 15.7 and 15.3 min, 115 and 146 s "
                  "per 1,000 samples)."),
        registry.StudyResult(
            preset="cpu", dataset="fashion_mnist",
            rows_file="experiments/results/compare_fashion_mnist_cpu.json",
            command="python -m experiments.compare "
                    "--dataset=fashion_mnist:../shared/data/fashion_mnist --preset=cpu "
                    "--workdir=/tmp/cmp_fashion",
            date="2026-12-07", host="2-core CPU",
            wall_time="2 h 30 min in one call, then 28 min 24 s re-measuring "
                      "the two PixelCNN rows",
            notes="`experiments/results/compare_fashion_mnist_cpu.json` is the "
                  "`compare.json` the command wrote. It trained all 13 recipes "
                  "from scratch on Fashion-MNIST in one call, each with its MNIST "
                  "network and schedule (no published numbers: the papers report "
                  "MNIST's), and its domain classifier (89.7% test accuracy; FD "
                  "floor 1.16). Short test runs at idle priority shared the CPU "
                  "for about 14 minutes in all during the `iwae_mnist` to "
                  "`flow_matching_mnist` rows, measured to slow the training by 7 "
                  "to 15% while they ran: those five rows' times are long by up to "
                  "about half a minute each. The two PixelCNN rows were trained "
                  "again from scratch after their sampler got faster (the same "
                  "draws and metrics; before: 15.3 and 13.7 min, 110 and 123 s per "
                  "1,000 samples), by the same command with `--experiments="
                  "pixelcnn_mnist,pixelcnn_mnist_8bit` in one call of 28 min 24 s, "
                  "the machine otherwise idle, then the command as shown wrote the "
                  "table from the kept models and scores in 1 min 18 s."),
    ),
))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
