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
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from genjax import config as config_lib
from genjax import data as data_lib
from genjax import registry
from genjax.evaluate import images as image_lib
from genjax.evaluate import sample_quality
from genjax.train import artifacts, evaluation, loop, modes

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
    """

    family: str
    experiment: str
    likelihood_key: str = ""
    likelihood: str = ""
    likelihood_kind: str = ""
    recipe: str = ""
    nfe: int | None = 1


ROWS = (
    Row("VAE", "vae_mnist", "eval/nll_iwae", "nats", "bound (IWAE, k = 1000)",
        "MLP encoder/decoder, Bernoulli"),
    Row("GAN", "dcgan_mnist", recipe="DCGAN, non-saturating, EMA generator"),
    Row("diffusion", "ddpm_mnist", "eval/bits_per_dim", "bits/dim",
        "bound (variational)", "DDPM U-Net, class-conditional, DPM-Solver++ 20"),
    Row("score SDE", "score_sde_mnist", "eval/bits_per_dim", "bits/dim",
        "ODE estimate", "VP SDE, class-conditional, DPM-Solver++ 20"),
    Row("flow matching", "flow_matching_mnist", "eval/bits_per_dim", "bits/dim",
        "ODE estimate", "linear path, class-conditional, Euler 20"),
    Row("GAN-diffusion", "ddgan_mnist", recipe="denoising diffusion GAN, 4 steps"),
    Row("flow", "realnvp_mnist", "eval/bits_per_dim", "bits/dim",
        "exact (one dequantisation)", "RealNVP, affine couplings"),
    Row("flow", "glow_mnist", "eval/bits_per_dim", "bits/dim",
        "exact (one dequantisation)", "Glow"),
    Row("autoregressive", "pixelcnn_mnist", "eval/nll", "nats", "exact",
        "gated PixelCNN, Bernoulli"),
    Row("autoregressive", "pixelcnn_mnist_8bit", "eval/bits_per_dim", "bits/dim",
        "exact", "gated PixelCNN, 256-way softmax"),
    Row("mixture (EM)", "bmm_mnist", "eval/nll", "nats", "exact",
        "Bernoulli mixture, batch EM", nfe=None),
    Row("mixture (EM)", "gmm_mnist", "eval/bits_per_dim", "bits/dim",
        "bound (one dequantisation)", "full-covariance Gaussian mixture on logits", nfe=None),
)
PRESETS = ("smoke", "cpu", "paper")
# The sample-quality metrics every row reports (``eval/`` dropped).
QUALITY_KEYS = ("fd", "fd_floor", "kid", "precision", "recall", "density", "coverage",
                "classifier_score", "classes_hit", "class_kl")
TIMING_FILE = "compare_train.json"


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


def row_config(row: Row, preset: str, dataset: str, manual_dir: str | None,
               data_dir: str | None = None):
    """The row's recipe at ``preset``, reading ``dataset``."""
    config = registry.get(row.experiment).get_config(preset)
    config.data.name = dataset
    config.data.manual_dir = manual_dir
    if data_dir is not None:
        config.data.data_dir = data_dir
    return config


def finished(config, workdir: str) -> bool:
    """Whether ``workdir`` holds a run of this config that finished training
    and wrote its final evaluation."""
    path = os.path.join(workdir, "eval.json")
    saved_path = os.path.join(workdir, "config.json")
    if not (os.path.isfile(path) and os.path.isfile(saved_path)):
        return False
    with open(path, encoding="utf-8") as f:
        step = json.load(f).get("step")
    with open(saved_path, encoding="utf-8") as f:
        saved = json.load(f)
    same = not config_lib.diff(saved.get("model", {}),
                               config_lib.to_dict(config).get("model", {}))
    return same and step == config.train.num_steps and saved.get(
        "data", {}).get("name") == config.data.name


def train_or_reuse(row: Row, config, workdir: str) -> float | None:
    """Trains ``row`` in ``workdir`` unless a finished run is there; returns
    the training wall time in seconds (measured now, or recorded when this
    study trained it), or None if unknown."""
    timing = os.path.join(workdir, TIMING_FILE)
    if finished(config, workdir):
        log.info("compare: reusing the finished run in %s", workdir)
    else:
        log.info("compare: training %s in %s", row.experiment, workdir)
        t0 = time.perf_counter()
        loop.train_and_evaluate(config, workdir, registry.get(row.experiment).make_task)
        artifacts.write_json(timing, {"train_seconds": time.perf_counter() - t0})
    if os.path.isfile(timing):
        with open(timing, encoding="utf-8") as f:
            return float(json.load(f)["train_seconds"])
    return None


def count_parameters(params) -> int:
    """Parameters a sampler needs: everything but a discriminator's."""
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
    """The row's numbers (see the module docstring) from its finished run."""
    experiment = registry.get(row.experiment)
    run, step, params = modes.restore_for_inference(config, workdir, experiment.make_task)
    try:
        quality = evaluation.sample_quality_metrics(
            run, params, protocol, int(protocol.num_samples), samplers=("",))
        grid = evaluation.draw(run, params, 64, jax.random.key(config.seed))
    finally:
        run.checkpointer.close()
    with open(os.path.join(workdir, "eval.json"), encoding="utf-8") as f:
        own = json.load(f)
    n = int(protocol.num_samples)
    result = {
        "family": row.family, "experiment": row.experiment, "recipe": row.recipe,
        "step": step, "parameters": count_parameters(params),
        "likelihood": own.get(row.likelihood_key) if row.likelihood_key else None,
        "likelihood_unit": row.likelihood, "likelihood_kind": row.likelihood_kind,
        "num_samples": n,
        "sample_seconds_per_1000": quality["eval/sample_seconds"] * 1000.0 / n,
        "nfe": quality.get("eval/nfe", row.nfe),
    }
    result.update({key: quality.get(f"eval/{key}") for key in QUALITY_KEYS})
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    image_lib.save_png(os.path.join(out_dir, "samples", f"{row.experiment}.png"),
                       image_lib.make_grid(np.asarray(grid), 8))
    return result


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) > 100:
        return f"{int(value):,}"
    return f"{float(value):.{digits}g}"


def markdown(rows: list[dict], dataset: str, preset: str, protocol) -> str:
    """``compare.md``: the table, then how each number was measured."""
    head = ("| family | experiment | NLL | FD (floor) | KID | precision | recall | "
            "density | coverage | score | classes | class KL | s / 1000 samples | "
            "NFE | train | parameters |")
    lines = [f"# Every family on {dataset} (`--preset={preset}`)", "", head,
             "|" + "---|" * 16]
    for r in rows:
        if r.get("likelihood") is None:
            nll = "—"
        else:
            nll = f"{_cell(r['likelihood'], 4)} {r['likelihood_unit']} ({r['likelihood_kind']})"
        train = "—" if r.get("train_seconds") is None else f"{r['train_seconds'] / 60:.1f} min"
        lines.append(
            f"| {r['family']} | `{r['experiment']}` | {nll} | {_cell(r['fd'])} "
            f"({_cell(r['fd_floor'])}) | {_cell(r['kid'])} | {_cell(r['precision'])} | "
            f"{_cell(r['recall'])} | {_cell(r['density'])} | {_cell(r['coverage'])} | "
            f"{_cell(r['classifier_score'])} | {_cell(r['classes_hit'])} | "
            f"{_cell(r['class_kl'])} | {_cell(r['sample_seconds_per_1000'])} | "
            f"{_cell(r['nfe'])} | {train} | {_cell(r['parameters'])} |")
    lines += ["", f"{int(protocol.num_samples)} samples per model against the test "
              f"split, the same keys for every model; FD and KID (x 1000) in the "
              f"domain classifier's features (floor: as many real images the "
              f"classifier never saw); precision/recall k = "
              f"{protocol.precision_recall_k}, density/coverage k = "
              f"{protocol.density_coverage_k}. NLL as each model's own final "
              f"evaluation reported it (nats per example on binarised test "
              f"images, or bits/dim on 8-bit ones). Sampling time excludes "
              f"compilation. Written by `python -m experiments.compare`."]
    return "\n".join(lines) + "\n"


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
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


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
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for row, config in zip(chosen, configs):
        run_dir = os.path.join(workdir, row.experiment)
        train_seconds = train_or_reuse(row, config, run_dir)
        result = measure(row, config, run_dir, protocol, workdir)
        result["train_seconds"] = train_seconds
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


def parse_args(argv: list[str]) -> dict:
    """``--key=value`` flags -> a dict; a one-line CompareError otherwise."""
    known = {"dataset", "workdir", "preset", "experiments", "num_samples", "data_dir"}
    args = {"preset": "cpu"}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise CompareError(f"unexpected argument {arg!r}; {USAGE}")
        key, value = arg[2:].split("=", 1)
        if key not in known:
            raise CompareError(f"unknown flag --{key}; {USAGE}")
        args[key] = value
    for key in ("dataset", "workdir"):
        if not args.get(key):
            raise CompareError(f"--{key} is required; {USAGE}")
    if "num_samples" in args:
        try:
            args["num_samples"] = int(args["num_samples"])
        except ValueError:
            raise CompareError(f"--num_samples={args['num_samples']!r} is not an "
                               f"integer") from None
    if "experiments" in args:
        args["experiments"] = tuple(e for e in args["experiments"].split(",") if e)
    return args


def main(argv: list[str]) -> int:
    """The command line: 0 on success, 2 for a usage mistake."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        args = parse_args(argv)
        compare(args["dataset"], args["preset"], args["workdir"],
                experiments=args.get("experiments"), num_samples=args.get("num_samples"),
                data_dir=args.get("data_dir"))
    except (CompareError, config_lib.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


registry.register_study(registry.Study(
    name="compare",
    description="every family on the same data and metrics in one table",
    presets=PRESETS,
    command="python -m experiments.compare --dataset=mnist:../shared/data/mnist "
            "--preset=cpu --workdir=/tmp/compare",
))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
