"""Data augmentation with class-conditional generators, in the low-data regime.

    python -m experiments.augment --dataset=mnist:../shared/data/mnist --workdir=DIR

For each labelled subset size (``--sizes``, examples per class: 10, 50 and
100) and seed (``--seeds``: 0, 1, 2; the seed draws the subset and
initialises the classifier):

1. a labelled subset of the training split, ``size`` per class, drawn with
   the seed (``config.data.examples_per_class``, ``subset_seed``);
2. each family's class-conditional generator trained on that subset only
   (nothing else of the training split leaks in), its recipe at ``--preset``
   for a fraction of its steps, in ``DIR/generators/<experiment>_n<size>_s<seed>``;
3. a small CNN (the LeNet of ``genjax.evaluate.classifier``, a fixed number
   of steps whatever its data) trained on the real subset alone, and on the
   real subset plus ``ratio`` times as many synthetic images (class-balanced,
   ``--ratios``: 0.5, 1, 2, 4, 8) from each generator; test accuracy on the
   whole real test split;
4. the Classification Accuracy Score (Ravuri & Vinyals 2019): the same CNN
   trained on synthetic images alone, as many as the real subset holds,
   beside the real-data classifier of the same size.

It writes ``DIR/augment.json`` (``records``: one per family, size, seed and
ratio, ``cas``: one per family, size and seed; ``summary``: mean and
standard deviation over seeds), ``DIR/augment.md`` (the tables, a gain
marked where the error bars do not overlap) and ``DIR/augment.png``
(accuracy against ratio, a panel per size, a line per family). Every
generator, sample set and classifier result is kept: a rerun trains nothing
it has. ``--preset=smoke`` checks the pipeline in minutes.
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

from experiments import compare
from genjax import data as data_lib
from genjax import registry
from genjax.data import subsets
from genjax.evaluate import classifier as classifier_lib
from genjax.evaluate import images as image_lib
from genjax.train import artifacts, modes

log = logging.getLogger("genjax")


@dataclasses.dataclass(frozen=True)
class Generator:
    """A family's class-conditional recipe (``model.class_conditional``),
    trained for ``steps_scale`` times the study's ``STEP_FRACTION`` of its
    steps."""

    family: str
    experiment: str
    steps_scale: float = 1.0


GENERATORS = (
    Generator("VAE", "vae_mnist"),
    # A DCGAN step is cheap (1,500 of them take about as long as 275 of the
    # DDPM's), and the few-shot GAN with DiffAugment keeps improving past an
    # eighth of its steps (seed 0 at 10 per class: CAS 75.8% at 1,500 steps,
    # 79.3% at 3,000), as Zhao et al. 2020 train theirs long.
    Generator("GAN", "dcgan_mnist", steps_scale=2.0),
    Generator("diffusion", "ddpm_mnist"),
    Generator("flow matching", "flow_matching_mnist"),
)
PRESETS = ("smoke", "cpu")
DEFAULTS = {
    "smoke": {"sizes": (10,), "seeds": (0,), "ratios": (1.0,)},
    "cpu": {"sizes": (10, 50, 100), "seeds": (0, 1, 2),
            "ratios": (0.5, 1.0, 2.0, 4.0, 8.0)},
}
# A generator sees at most a sixtieth of the data: it trains for this
# fraction of its recipe's steps (times its ``steps_scale``; at most as many
# as the recipe).
STEP_FRACTION = {"smoke": 1.0, "cpu": 0.125}
# The downstream classifier: the domain classifier's LeNet and optimiser, a
# fixed number of steps of 32 images whatever the training set's size,
# nothing held out, and its own seed per run.
CLASSIFIER_RECIPE = {**classifier_lib.RECIPE, "version": "augment-1", "batch_size": 32,
                     "epochs": 1, "holdout_every": 10 ** 9}
CLASSIFIER_STEPS = {"smoke": 60, "cpu": 1500}
LOW_DATA_DIFF_AUGMENT = "color,translation,cutout"
LOW_DATA_MODE_SEEKING = 1.0  # MSGAN's weight (Mao et al. 2019)


class AugmentError(compare.CompareError):
    """A usage mistake: one line, exit 2."""


def generator_config(gen: Generator, preset: str, dataset: str, manual_dir: str | None,
                     size: int, seed: int, data_dir: str | None = None):
    """``gen``'s class-conditional recipe on ``size`` examples per class of
    ``dataset`` drawn with ``seed``, for a fraction of its steps, without
    the sample-quality protocol."""
    config = compare.row_config(gen, preset, dataset, manual_dir, data_dir)
    config.model.class_conditional = True
    if config.model.get("code_classes"):
        # The label takes the place of InfoGAN's unsupervised categorical
        # code (both are the latent's one-hot slot).
        config.model.code_classes = 0
    if "gan" in config and "diff_augment" in config.gan:
        # A discriminator trained on a few hundred images memorises them and
        # the generator learns nothing (at 10 per class, D calls held-out
        # real digits fake); DiffAugment is the few-shot fix (Zhao et al.
        # 2020, their 100-shot policy).
        config.gan.diff_augment = LOW_DATA_DIFF_AUGMENT
        # With it alone the generator draws one image per class, whatever the
        # noise; the mode-seeking term makes two latents of a label differ.
        config.gan.mode_seeking = LOW_DATA_MODE_SEEKING
    config.data.examples_per_class = int(size)
    config.data.subset_seed = int(seed)
    config.seed = int(seed)
    compare.without_sample_quality(config)
    # A batch no larger than the subset.
    compare.shorten(config, step_fraction(gen, preset), size * 10)
    return config


def step_fraction(gen: Generator, preset: str) -> float:
    """The fraction of its recipe's steps ``gen`` trains for (at most 1)."""
    return min(1.0, STEP_FRACTION[preset] * gen.steps_scale)


def synthetic(config, run_dir: str, experiment: str, num_per_class: int,
              num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_per_class`` samples of every class from the generator in
    ``run_dir``, class-balanced in every prefix of ``num_classes`` (labels
    cycle 0, 1, ..., K-1), kept in ``run_dir/synthetic.npz``."""
    path = os.path.join(run_dir, "synthetic.npz")
    step = artifacts.evaluated_step(run_dir)
    if os.path.isfile(path):
        with np.load(path) as saved:
            if int(saved["step"]) == step and len(saved["label"]) >= num_per_class * num_classes:
                n = num_per_class * num_classes
                return saved["image"][:n], saved["label"][:n]
    run, _, params = modes.restore_for_inference(config, run_dir,
                                                 registry.get(experiment).make_task,
                                                 devices=compare.row_devices(config))
    try:
        labels = np.tile(np.arange(num_classes, dtype=np.int32), num_per_class)
        out = []
        draw = jax.jit(lambda p, k, y: run.task.sample(p, k, len(y), labels=y))
        batch = 500
        for i, start in enumerate(range(0, len(labels), batch)):
            y = labels[start:start + batch]
            images = np.asarray(draw(params, jax.random.fold_in(
                jax.random.key(config.seed), 1000 + i), y))
            out.append(np.clip(images, 0.0, 1.0).astype(np.float32))
        images = np.concatenate(out)
    finally:
        run.checkpointer.close()
    artifacts.write_npz(path, image=images, label=labels, step=np.array(step))
    return images, labels


def train_classifier(train_images, train_labels, test, num_classes: int, seed: int,
                     steps: int, name: str) -> float:
    """Test accuracy of the downstream CNN trained on the given images."""
    dataset = data_lib.Dataset(
        name=name, kind="image",
        splits={"train": {"image": np.asarray(train_images, np.float32),
                          "label": np.asarray(train_labels, np.int32)},
                "test": test},
        element_spec={"image": tuple(test["image"].shape[1:]), "label": ()},
        num_classes=num_classes, description=name)
    recipe = dict(CLASSIFIER_RECIPE, seed=int(seed), min_steps=int(steps))
    _, meta = classifier_lib.train_classifier(dataset, recipe, log=lambda m: None)
    return float(meta["test_accuracy"])


def _result(workdir: str, key: dict, compute, generator: str = "") -> float:
    """A classifier's accuracy, kept in ``workdir/classifiers/<key>.json``
    with ``generator``, the digest of the recipe its synthetic images come
    from (``compare.recipe_id``): a generator trained again to another
    recipe gets its classifiers trained again."""
    name = "_".join(f"{k}{v}" for k, v in key.items()).replace(" ", "")
    path = os.path.join(workdir, "classifiers", f"{name}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("key") == key and saved.get("generator", "") == generator:
            return float(saved["accuracy"])
    t0 = time.perf_counter()
    accuracy = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    artifacts.write_json(path, {"key": key, "generator": generator, "accuracy": accuracy,
                                "seconds": round(time.perf_counter() - t0, 2)})
    return accuracy


def augment(dataset_spec: str, workdir: str, *, preset: str = "cpu",
            generators: tuple[str, ...] | None = None, sizes=None, seeds=None,
            ratios=None, data_dir: str | None = None) -> dict:
    """Runs the study (see the module docstring); returns ``augment.json``."""
    if preset not in PRESETS:
        raise AugmentError(f"--preset={preset!r}; valid: {', '.join(PRESETS)}")
    name, manual_dir = compare.parse_dataset(dataset_spec)
    names = [g.experiment for g in GENERATORS]
    chosen = GENERATORS
    if generators:
        unknown = [g for g in generators if g not in names]
        if unknown:
            raise AugmentError(f"--generators: unknown {', '.join(unknown)}; valid: "
                               f"{', '.join(names)}")
        chosen = tuple(g for g in GENERATORS if g.experiment in generators)
    sizes = tuple(sizes or DEFAULTS[preset]["sizes"])
    seeds = tuple(seeds or DEFAULTS[preset]["seeds"])
    ratios = tuple(ratios or DEFAULTS[preset]["ratios"])
    if min(sizes) < 1 or min(ratios) <= 0 or min(seeds) < 0:
        raise AugmentError(f"--sizes {sizes}, --ratios {ratios} and --seeds {seeds}: "
                           f"sizes at least 1, ratios above 0, seeds non-negative")
    dataset = compare.load_dataset(name, manual_dir, data_dir)
    if dataset.num_classes is None:
        raise AugmentError(f"--dataset={dataset_spec!r}: {name!r} has no labels")
    k = int(dataset.num_classes)
    train, test = dataset.arrays("train"), dataset.arrays("test")
    for size in sizes:  # every subset must exist before anything trains
        try:
            subsets.labelled_subset(train["label"], size, 0)
        except data_lib.DatasetError as e:
            raise AugmentError(f"--sizes: {e}") from None
    steps = CLASSIFIER_STEPS[preset]
    configs = {(g.experiment, s, sd): generator_config(g, preset, name, manual_dir, s, sd,
                                                       data_dir)
               for g in chosen for s in sizes for sd in seeds}
    compare.split_cpu_for(list(configs.values()))
    fractions = {g.experiment: step_fraction(g, preset) for g in chosen}
    os.makedirs(workdir, exist_ok=True)
    records, cas = [], []

    def write_result() -> dict:
        """``augment.json`` as it stands (written after every family)."""
        result = {"records": records, "cas": cas, "summary": summarise(records, cas),
                  "preset": preset, "dataset": name, "classifier_steps": steps,
                  "step_fraction": fractions}
        artifacts.write_json(os.path.join(workdir, "augment.json"), result)
        return result

    total = len(sizes) * len(seeds)
    done = 0
    for size in sizes:
        for seed in seeds:
            done += 1
            index = subsets.labelled_subset(train["label"], size, seed)
            real_x, real_y = train["image"][index], train["label"][index]
            log.info("augment: [%d/%d] %d per class, seed %d", done, total, size, seed)
            base_key = {"n": size, "seed": seed, "steps": steps}
            real_acc = _result(workdir, dict(base_key, family="real", ratio=0),
                               lambda: train_classifier(real_x, real_y, test, k, seed,
                                                        steps, f"{name}_real"))
            records.append({"family": "real only", "experiment": None, "per_class": size,
                            "seed": seed, "ratio": 0.0, "accuracy": real_acc})
            for g in chosen:
                config = configs[(g.experiment, size, seed)]
                run_dir = os.path.join(workdir, "generators",
                                       f"{g.experiment}_n{size}_s{seed}")
                train_seconds, _ = compare.train_or_reuse(g, config, run_dir)
                most = int(np.ceil(max(max(ratios), 1.0) * size))
                syn_x, syn_y = synthetic(config, run_dir, g.experiment, most, k)
                recipe = compare.recipe_id(run_dir)
                if size == sizes[0] and seed == seeds[0]:
                    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
                    image_lib.save_png(
                        os.path.join(workdir, "samples", f"{g.experiment}_n{size}.png"),
                        image_lib.make_grid(syn_x[:10 * min(most, 8)], 10))
                for ratio in ratios:
                    m = int(round(ratio * size)) * k
                    x = np.concatenate([real_x, syn_x[:m]])
                    y = np.concatenate([real_y, syn_y[:m]])
                    acc = _result(workdir, dict(base_key, family=g.experiment, ratio=ratio),
                                  lambda x=x, y=y: train_classifier(
                                      x, y, test, k, seed, steps, f"{name}_aug"),
                                  recipe)
                    records.append({"family": g.family, "experiment": g.experiment,
                                    "per_class": size, "seed": seed, "ratio": ratio,
                                    "accuracy": acc, "generator_train_seconds": train_seconds})
                n_syn = size * k
                cas_acc = _result(workdir, dict(base_key, family=g.experiment, ratio="cas"),
                                  lambda: train_classifier(syn_x[:n_syn], syn_y[:n_syn], test,
                                                           k, seed, steps, f"{name}_cas"),
                                  recipe)
                cas.append({"family": g.family, "experiment": g.experiment,
                            "per_class": size, "seed": seed, "cas": cas_acc,
                            "real_accuracy": real_acc})
                write_result()
    result = write_result()
    artifacts.write_text(os.path.join(workdir, "augment.md"),
                         f"# Data augmentation on {name} (`--preset={preset}`)\n\n"
                         + render(result) + "\n")
    plot(result, os.path.join(workdir, "augment.png"))
    return result


def _stats(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": round(float(values.mean()), 4),
            "std": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
            "n": int(len(values))}


def summarise(records: list[dict], cas: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds: per family, size and ratio
    (real only at ratio 0), and each family's CAS per size; ``gain``: the
    mean accuracy over real only, ``significant`` where the two ranges mean
    +- std do not overlap (with at least two seeds on each side)."""
    groups: dict[tuple, list] = {}
    for r in records:
        groups.setdefault((r["family"], r["experiment"], r["per_class"], r["ratio"]),
                          []).append(r["accuracy"])
    real = {size: _stats(v) for (f, _, size, _), v in groups.items() if f == "real only"}
    out = []
    for (family, experiment, size, ratio), values in groups.items():
        s = _stats(values)
        row = {"family": family, "experiment": experiment, "per_class": size,
               "ratio": ratio, **{f"accuracy_{k}": v for k, v in s.items()}}
        if family != "real only":
            base = real[size]
            row["gain"] = round(s["mean"] - base["mean"], 4)
            # An error bar needs two seeds on each side.
            row["significant"] = bool(
                min(s["n"], base["n"]) >= 2
                and (s["mean"] - s["std"] > base["mean"] + base["std"]
                     or s["mean"] + s["std"] < base["mean"] - base["std"]))
        out.append(row)
    cas_groups: dict[tuple, list] = {}
    for c in cas:
        cas_groups.setdefault((c["family"], c["experiment"], c["per_class"]), []).append(
            c["cas"])
    for (family, experiment, size), values in cas_groups.items():
        s = _stats(values)
        out.append({"family": family, "experiment": experiment, "per_class": size,
                    "ratio": "cas", **{f"accuracy_{k}": v for k, v in s.items()}})
    return out


def _pm(row: dict) -> str:
    return f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f}"


def _fractions(result: dict) -> str:
    """"0.125 (`dcgan_mnist`: 0.25)": the fraction of its steps each
    generator trained for (a result written before ``step_fraction`` was
    recorded: the study's one fraction)."""
    fractions = result.get("step_fraction") or {}
    values = list(fractions.values()) or [STEP_FRACTION[result["preset"]]]
    common = max(set(values), key=values.count)
    others = ", ".join(f"`{e}`: {f:g}" for e, f in fractions.items() if f != common)
    return f"{common:g}" + (f" ({others})" if others else "")


def render(result: dict) -> str:
    """Test accuracy (%, mean ± std over seeds) per family and ratio, a
    table per size; then CAS beside the real-data classifier."""
    summary = result["summary"]
    sizes = sorted({r["per_class"] for r in summary})
    ratios = sorted({r["ratio"] for r in summary if r["ratio"] not in ("cas", 0.0)})
    lines = []
    for size in sizes:
        rows = [r for r in summary if r["per_class"] == size]
        real = next(r for r in rows if r["family"] == "real only")
        lines += [f"**{size} labelled examples per class** (real only: {_pm(real)}%, "
                  f"{real['accuracy_n']} seed{'s' if real['accuracy_n'] != 1 else ''})", "",
                  "| family | experiment | " + " | ".join(f"+{r:g}x synthetic"
                                                         for r in ratios) + " | CAS |",
                  "|" + "---|" * (len(ratios) + 3)]
        for exp in dict.fromkeys(r["experiment"] for r in rows if r["experiment"]):
            by = {r["ratio"]: r for r in rows if r["experiment"] == exp}
            cells = []
            for ratio in ratios:
                r = by.get(ratio)
                if r is None:
                    cells.append("—")
                    continue
                mark = " **↑**" if r.get("significant") and r["gain"] > 0 else (
                    " ↓" if r.get("significant") else "")
                cells.append(f"{_pm(r)} ({100 * r['gain']:+.1f}){mark}")
            c = by.get("cas")
            family = next(r["family"] for r in rows if r["experiment"] == exp)
            lines.append(f"| {family} | `{exp}` | " + " | ".join(cells)
                         + f" | {_pm(c) if c else '—'} |")
        lines.append("")
    lines += [f"Each generator: its family's class-conditional recipe at "
              f"`--preset={result['preset']}` for {_fractions(result)} of its steps, "
              f"on the labelled subset alone (the GAN with DiffAugment, "
              f"`{LOW_DATA_DIFF_AUGMENT}`, and the mode-seeking term at weight "
              f"{LOW_DATA_MODE_SEEKING:g}). "
              f"Test accuracy (%) on the whole real test split of a LeNet trained for "
              f"{result['classifier_steps']} steps of 32, mean ± std over seeds (each "
              f"seed: its own labelled subset, generators and classifier "
              f"initialisation); in brackets the gain over real only; **↑** (↓) where "
              f"mean ± std does not overlap real only's. +rx: r times as many "
              f"class-balanced synthetic images as real ones. CAS: the classifier "
              f"trained on synthetic images alone, as many as the real subset holds "
              f"(Ravuri & Vinyals 2019). Written by `python -m experiments.augment`."]
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    summary = [r for r in result["summary"] if r["ratio"] != "cas"]
    sizes = sorted({r["per_class"] for r in summary})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rows = [r for r in summary if r["per_class"] == size]
        real = next(r for r in rows if r["family"] == "real only")
        for exp in dict.fromkeys(r["experiment"] for r in rows if r["experiment"]):
            pts = sorted((r["ratio"], r["accuracy_mean"], r["accuracy_std"])
                         for r in rows if r["experiment"] == exp)
            xs = [0.0] + [p[0] for p in pts]
            ys = [real["accuracy_mean"]] + [p[1] for p in pts]
            es = [real["accuracy_std"]] + [p[2] for p in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=exp)
        ax.axhline(real["accuracy_mean"], color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(f"{size} per class", fontsize=9)
        ax.set_xlabel("synthetic : real")
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    compare.save_figure(fig, path, dpi=110)


USAGE = ("usage: python -m experiments.augment --dataset=NAME[:DIR] --workdir=DIR "
         "[--preset=smoke|cpu] [--generators=a,b] [--sizes=10,50,100] [--seeds=0,1,2] "
         "[--ratios=0.5,1,2,4,8] [--data_dir=DIR]")


def parse_args(argv: list[str]) -> dict:
    return compare.parse_flags(
        argv, {"dataset", "workdir", "preset", "generators", "sizes", "seeds", "ratios",
               "data_dir"}, ("dataset", "workdir"), USAGE, AugmentError,
        int_lists=("sizes", "seeds"), float_lists=("ratios",), name_lists=("generators",))


def main(argv: list[str]) -> int:
    def run():
        args = parse_args(argv)
        augment(args["dataset"], args["workdir"], preset=args["preset"],
                generators=args.get("generators"), sizes=args.get("sizes"),
                seeds=args.get("seeds"), ratios=args.get("ratios"),
                data_dir=args.get("data_dir"))
    return compare.run_study(run)


registry.register_study(registry.Study(
    name="augment",
    description="low-data augmentation with class-conditional generators",
    presets=PRESETS,
    command="python -m experiments.augment --dataset=mnist:../shared/data/mnist "
            "--workdir=/tmp/augment",
    render=render,
))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
