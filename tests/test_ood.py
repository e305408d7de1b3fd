"""Out-of-distribution and one-class anomaly detection (experiments/ood.py)."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_error_line, read_json
from experiments import augment, compare, ood
from genjax import data as data_lib
from genjax import registry


def _never(*args, **kwargs):
    raise AssertionError("trained, restored or sampled again")


def _images(n=6, shape=(5, 4, 1), seed=0):
    return np.random.default_rng(seed).random((n,) + shape).astype(np.float32)


def test_transformed_sets_are_what_they_say():
    x = _images()
    np.testing.assert_array_equal(ood.transformed(x, "hflip"), x[:, :, ::-1])
    np.testing.assert_array_equal(ood.transformed(x, "vflip"), x[:, ::-1])
    np.testing.assert_allclose(ood.transformed(x, "inverted"), 1.0 - x)
    noise = ood.transformed(x, "noise")
    assert noise.shape == x.shape and noise.dtype == np.float32
    np.testing.assert_allclose(noise * 255, np.round(noise * 255), atol=1e-4)
    constant = ood.transformed(x, "constant")
    assert all(np.unique(image).size == 1 for image in constant)
    assert np.unique(constant[:, 0, 0, 0]).size > 1  # one level per image, not one for all
    # Deterministic: every model scores the same images.
    np.testing.assert_array_equal(ood.transformed(x, "noise"), noise)
    with pytest.raises(ValueError, match="unknown transform 'blur'"):
        ood.transformed(x, "blur")


def test_derived_scores_are_the_ratio_and_the_complexity():
    det = ood.Detector("flow", "glow_mnist")
    own = {"nll": np.array([10.0, 20.0])}
    background = {"nll": np.array([4.0, 25.0])}
    bits = np.array([5.0, 50.0])
    out = ood.derived_scores(det, own, background, bits)
    np.testing.assert_allclose(out["likelihood"], [10.0, 20.0])
    np.testing.assert_allclose(out["likelihood_ratio"], [6.0, -5.0])
    np.testing.assert_allclose(out["complexity"], np.array([10.0, 20.0]) / np.log(2) - bits)
    gan = ood.derived_scores(ood.Detector("GAN", "dcgan_mnist", likelihood=False),
                             {"discriminator": np.ones(2), "inversion": np.zeros(2)},
                             None, bits)
    assert set(gan) == {"discriminator", "inversion"}


def test_every_detector_is_a_registered_experiment():
    experiments = registry.load_all()
    assert {d.experiment for d in ood.DETECTORS} <= set(experiments)
    families = {experiments[d.experiment].family for d in ood.DETECTORS}
    assert families >= {"vae", "flow", "autoregressive", "diffusion", "mixture", "gan"}
    assert "ood" in registry.studies()


def test_flags_and_bad_input_are_one_line_errors(tmp_path, capsys):
    args = ood.parse_args(["--in=digits", "--out=mnist", "--workdir=w",
                           "--detectors=vae_mnist", "--num_examples=10"])
    assert args["detectors"] == ("vae_mnist",) and args["num_examples"] == 10
    args = ood.parse_args(["--one_class=digits", "--workdir=w", "--classes=0,3"])
    assert args["classes"] == (0, 3)
    for argv, named in ((["--in=digits", "--workdir=w"], "--out is required"),
                        (["--one_class=digits", "--in=digits", "--workdir=w"],
                         "--one_class takes no --in"),
                        (["--in=a", "--out=b", "--workdir=w", "--oot=c"], "unknown flag --oot"),
                        (["--one_class=digits", "--workdir=w", "--classes=x"],
                         "--classes='x'"),
                        (["--in=a", "--out=b", "--workdir=w", "--reference=c"],
                         "--reference applies to --one_class"),
                        (["--one_class=digits", "--workdir=w", "--models=m"],
                         "reads the --reference models")):
        with pytest.raises(ood.OODError, match=named):
            ood.parse_args(argv)
    wd = tmp_path / "wd"
    assert ood.main(["--in=nosuch", "--out=digits", f"--workdir={wd}"]) == 2
    assert_one_error_line(capsys.readouterr().err, "unknown dataset 'nosuch'")
    assert ood.main(["--in=digits", "--out=digits", f"--workdir={wd}",
                     "--detectors=nope"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--detectors: unknown nope")
    assert ood.main(["--one_class=digits", f"--workdir={wd}", "--classes=12",
                     "--detectors=gmm_mnist"]) == 2
    assert_one_error_line(capsys.readouterr().err, "label 12 is outside [0, 9]")
    # A folder of images of another size: named, before anything is written.
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / f"{i}.png")
    assert ood.main(["--in=digits", f"--out=image_folder:{folder}", f"--workdir={wd}",
                     "--detectors=gmm_mnist"]) == 2
    assert_one_error_line(capsys.readouterr().err, "images of shape (28, 28, 1)",
                          "has (8, 8, 1)")
    # A one-class reference of another size, or the dataset itself.
    assert ood.main(["--one_class=digits", f"--reference=image_folder:{folder}",
                     f"--workdir={wd}", "--detectors=gmm_mnist"]) == 2
    assert_one_error_line(capsys.readouterr().err, "(28, 28, 1)", "(8, 8, 1)")
    assert ood.main(["--one_class=digits", "--reference=digits", f"--workdir={wd}",
                     "--detectors=gmm_mnist"]) == 2
    assert_one_error_line(capsys.readouterr().err, "is the one-class dataset itself")
    assert not wd.exists()


def _fake_dataset(shape=(28, 28, 1), n=16):
    rng = np.random.default_rng(0)
    split = {"image": rng.random((n,) + shape, dtype=np.float32),
             "label": (np.arange(n) % 10).astype(np.int32)}
    return data_lib.Dataset(name="mnist", kind="image", splits={"train": split, "test": split},
                            element_spec={"image": shape, "label": ()}, num_classes=10,
                            description="fake")


def test_the_gan_scores_its_discriminator_and_a_latent_inversion():
    exp = registry.get("dcgan_mnist")
    config = exp.get_config("smoke")
    dataset = _fake_dataset()
    task = exp.make_task(config, dataset)
    params = task.inference_params(
        task.init_state(jax.random.key(0), jax.random.key(1), task.example_batch(dataset),
                        task.make_optimizer()[0]), use_ema=False)
    images = dataset.arrays("test")["image"][:6]
    before = task.ood_scores(params, images, jax.random.key(2), inversion_steps=0)
    after = jax.jit(lambda p, x, k: task.ood_scores(p, x, k, inversion_steps=40))(
        params, images, jax.random.key(2))
    assert before["discriminator"].shape == (6,)
    np.testing.assert_allclose(after["discriminator"], before["discriminator"], rtol=1e-5)
    # Adam on the latent brings the generator's images closer to the targets.
    closer = np.asarray(after["inversion"]) < np.asarray(before["inversion"])
    assert closer.mean() >= 0.8 and np.mean(after["inversion"]) < np.mean(before["inversion"])


@pytest.fixture(scope="module")
def ood_study(shared_data_dir, tmp_path_factory):
    """Two detectors on digits against a folder of 8x8 PNGs and the
    transformed sets, backgrounds trained on perturbed digits (the models
    are reused by the detect_generated test)."""
    base = tmp_path_factory.mktemp("ood_study")
    folder = base / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):  # squares of one random level on black
        image = np.zeros((8, 8), np.uint8)
        image[2:6, 2:6] = rng.integers(60, 255)
        Image.fromarray(image).save(folder / f"{i}.png")
    workdir = base / "ood"
    kwargs = dict(preset="smoke", detectors=("vae_mnist", "gmm_mnist"), num_examples=40,
                  data_dir=str(shared_data_dir))
    records = ood.ood("digits", f"image_folder:{folder}", str(workdir), **kwargs)
    return records, workdir, folder, kwargs


@pytest.mark.slow
def test_the_smoke_study_scores_every_set_and_reuses_its_scores(ood_study, monkeypatch):
    """Every score of both detectors on every out set; a second call
    restores nothing."""
    records, workdir, folder, kwargs = ood_study
    saved = read_json(workdir / "ood.json")["records"]
    assert saved == json.loads(json.dumps(records))
    outs = {"image_folder", "hflip", "vflip", "inverted", "noise", "constant"}
    by = {(r["experiment"], r["score"], r["out"]): r for r in saved}
    for experiment, scores in (("vae_mnist", ("likelihood", "likelihood_ratio", "complexity",
                                              "neg_elbo", "reconstruction")),
                               ("gmm_mnist", ("likelihood", "likelihood_ratio",
                                              "complexity"))):
        for score in scores:
            for out in outs:
                r = by[(experiment, score, out)]
                for key in ("auroc", "auprc", "fpr_at_80_tpr"):
                    assert 0.0 <= r[key] <= 1.0, r
                assert r["num_in"] == 40 and r["num_out"] == (30 if out == "image_folder"
                                                              else 40)
    # Uniform noise is far from digits for any likelihood.
    assert by[("gmm_mnist", "likelihood", "noise")]["auroc"] > 0.9
    background = read_json(workdir / "gmm_mnist_background" / "config.json")
    assert background["data"]["perturb_rate"] == ood.BACKGROUND_RATE
    for name in ("ood.md", "ood_roc.png", "ood_hist.png", "ood_sets.png"):
        assert (workdir / name).is_file(), name
    assert "| VAE | `vae_mnist` | likelihood_ratio |" in (workdir / "ood.md").read_text()

    def no_restore(*args, **kwargs):
        raise AssertionError("restored a model again")
    monkeypatch.setattr(ood.modes, "restore_for_inference", no_restore)
    again = ood.ood("digits", f"image_folder:{folder}", str(workdir), **kwargs)
    assert again == records


@pytest.mark.slow
def test_the_one_class_smoke_study_averages_over_classes(shared_data_dir, tmp_path):
    workdir = tmp_path / "one_class"
    # A general-domain reference of the digits' shape: blurred blobs.
    reference = tmp_path / "blobs"
    reference.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):
        blob = np.zeros((8, 8))
        y, x = rng.integers(1, 7, 2)
        blob[y - 1:y + 2, x - 1:x + 2] = rng.uniform(0.5, 1.0)
        Image.fromarray((blob * 255).astype(np.uint8)).save(reference / f"{i}.png")
    result = ood.one_class("digits", str(workdir), preset="smoke", detectors=("gmm_mnist",),
                           classes=(0, 1), num_examples=30, data_dir=str(shared_data_dir),
                           reference=f"image_folder:{reference}")
    assert read_json(workdir / "one_class.json") == json.loads(json.dumps(result))
    summary = {r["score"]: r for r in result["summary"]}
    assert set(summary) == {"likelihood", "complexity", "reference_ratio"}
    # The reference model: trained once, on the reference images alone; the
    # ratio is the one-class NLL minus its NLL on the same images.
    saved = read_json(workdir / "reference_image_folder" / "gmm_mnist" / "config.json")
    assert saved["data"]["name"] == "image_folder" and not saved["data"].get("classes")
    for label in (0, 1):
        scores = workdir / "scores"
        own = np.load(scores / f"gmm_mnist_class{label}" / "normal.npz")["nll"]
        ref = np.load(scores / f"gmm_mnist_class{label}_reference_image_folder"
                      / "normal.npz")["nll"]
        assert not np.allclose(own, ref)
    ratio_records = [r for r in result["records"] if r["score"] == "reference_ratio"]
    assert {r["reference"] for r in ratio_records} == {"image_folder"}
    for r in summary.values():
        assert r["classes"] == [0, 1]
        assert r["mean_auroc"] == pytest.approx(np.mean(r["per_class_auroc"]), abs=1e-4)
        # The AUROC against each anomalous class: the other digits, each
        # scored on its own; their mean over normal classes in the summary.
        assert set(r["mean_auroc_by_anomaly"]) <= {str(d) for d in range(10)}
    for record in result["records"]:
        by_anomaly = record["auroc_by_anomaly"]
        others = {str(d) for d in range(10)} - {str(record["normal_class"])}
        assert set(by_anomaly) <= others and len(by_anomaly) >= 6  # 30 anomalies
        assert min(by_anomaly.values()) <= record["auroc"] <= max(by_anomaly.values())
    # Each model saw its own class alone.
    saved = read_json(workdir / "gmm_mnist_class1" / "config.json")
    assert saved["data"]["classes"] == "1"
    # A digits mixture of one class tells that class from the others.
    assert summary["likelihood"]["mean_auroc"] > 0.8
    md = (workdir / "one_class.md").read_text()
    assert "| mixture (EM) | `gmm_mnist` | likelihood |" in md
    assert "best score against each anomalous class" in md


def test_kept_scores_are_reused_only_for_the_same_recipe(shared_data_dir, tmp_path,
                                                          monkeypatch):
    workdir = tmp_path / "one_class"
    ood.one_class("digits", str(workdir), preset="smoke", detectors=("gmm_mnist",),
                  classes=(3,), num_examples=20, data_dir=str(shared_data_dir))
    run_dir, cache = str(workdir / "gmm_mnist_class3"), workdir / "scores" / "gmm_mnist_class3"
    config = ood.one_class_config(
        ood.detector_config(ood.DETECTORS[4], "smoke", "digits", None, str(shared_data_dir)),
        3, "gmm_mnist", 100)
    dataset = ood.compare.load_dataset("digits", None, str(shared_data_dir)).arrays("test")
    sets = {"normal": ood._first(dataset["image"][dataset["label"] == 3], 20)}
    ids = {"normal": json.dumps({"in": "digits", "class": 3, "set": "normal", "n": 20})}

    class Restored(Exception):
        pass

    def restore(*args, **kwargs):
        raise Restored
    monkeypatch.setattr(ood.modes, "restore_for_inference", restore)
    kept = ood.model_scores(config, run_dir, "gmm_mnist", sets, ids, str(cache))
    assert set(kept["normal"]) == {"nll"}  # from the cache, nothing restored
    # The same place trained again to another recipe: scored again.
    monkeypatch.setattr(compare, "recipe_id", lambda run_dir: "another recipe")
    with pytest.raises(Restored):
        ood.model_scores(config, run_dir, "gmm_mnist", sets, ids, str(cache))


# --------------------------------------------------------------------------
# Data augmentation (experiments/augment.py).


@pytest.mark.parametrize("preset", augment.PRESETS)
def test_every_generator_recipe_builds_class_conditional(shared_data_dir, preset):
    # The cpu presets differ from smoke (the DCGAN's InfoGAN code): each
    # generator's task must accept its conditional recipe before a study
    # spends hours on the generators before it.
    dataset = augment.compare.load_dataset("digits", None, str(shared_data_dir))
    for gen in augment.GENERATORS:
        config = augment.generator_config(gen, preset, "digits", None, 10, 0,
                                          str(shared_data_dir))
        task = registry.get(gen.experiment).make_task(config, dataset)
        assert config.model.class_conditional and task is not None
        if preset == "cpu":  # an eighth of the recipe's steps; the cheap GAN's a quarter
            full = registry.get(gen.experiment).get_config(preset).train.num_steps
            share = 0.25 if gen.experiment == "dcgan_mnist" else 0.125
            assert config.train.num_steps == round(full * share)
        if "gan" in config:  # the few-shot GAN trains with DiffAugment
            assert config.gan.diff_augment == augment.LOW_DATA_DIFF_AUGMENT
            assert config.gan.mode_seeking == augment.LOW_DATA_MODE_SEEKING > 0
            assert task.diff_augment == ("color", "translation", "cutout")


def test_augment_gain_is_marked_only_where_error_bars_of_two_seeds_part():
    def records(real, aug):
        return ([{"family": "real only", "experiment": None, "per_class": 10, "seed": i,
                  "ratio": 0.0, "accuracy": a} for i, a in enumerate(real)]
                + [{"family": "GAN", "experiment": "dcgan_mnist", "per_class": 10,
                    "seed": i, "ratio": 1.0, "accuracy": a} for i, a in enumerate(aug)])

    def gan_row(real, aug):
        return next(r for r in augment.summarise(records(real, aug), [])
                    if r["experiment"] == "dcgan_mnist")

    apart = gan_row([0.80, 0.82], [0.86, 0.88])
    assert apart["significant"] and apart["gain"] == pytest.approx(0.06)
    assert not gan_row([0.80, 0.84], [0.83, 0.87])["significant"]  # bars overlap
    assert gan_row([0.82, 0.84], [0.76, 0.78])["significant"]  # a loss is marked too
    assert not gan_row([0.82], [0.90])["significant"]  # one seed: no error bar


def test_augment_flags_and_bad_input_are_one_line_errors(tmp_path, capsys):
    from experiments import augment  # pylint: disable=import-outside-toplevel
    args = augment.parse_args(["--dataset=digits", "--workdir=w", "--sizes=10,50",
                               "--ratios=0.5,2", "--seeds=0,1"])
    assert args["sizes"] == (10, 50) and args["ratios"] == (0.5, 2.0)
    with pytest.raises(augment.AugmentError, match="--ratios='a'"):
        augment.parse_args(["--dataset=digits", "--workdir=w", "--ratios=a"])
    wd = tmp_path / "wd"
    assert augment.main(["--dataset=digits", f"--workdir={wd}", "--generators=nope"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--generators: unknown nope")
    # Digits has about 180 training images a class: 500 a class cannot be drawn.
    assert augment.main(["--dataset=digits", f"--workdir={wd}", "--sizes=500",
                         "--generators=vae_mnist", "--preset=smoke"]) == 2
    assert_one_error_line(capsys.readouterr().err, "examples_per_class=500")
    assert not wd.exists()


@pytest.mark.slow
def test_the_augment_smoke_study_trains_on_the_subset_alone_and_reuses(
        shared_data_dir, tmp_path, monkeypatch):
    from experiments import augment  # pylint: disable=import-outside-toplevel
    workdir = tmp_path / "augment"
    kwargs = dict(preset="smoke", generators=("vae_mnist",), sizes=(10,), seeds=(0, 1),
                  ratios=(1.0, 2.0), data_dir=str(shared_data_dir))
    result = augment.augment("digits", str(workdir), **kwargs)
    assert read_json(workdir / "augment.json") == json.loads(json.dumps(result))
    records = result["records"]
    assert {(r["family"], r["seed"], r["ratio"]) for r in records} == {
        ("real only", 0, 0.0), ("real only", 1, 0.0), ("VAE", 0, 1.0), ("VAE", 0, 2.0),
        ("VAE", 1, 1.0), ("VAE", 1, 2.0)}
    assert all(0.0 < r["accuracy"] <= 1.0 for r in records)
    assert [c["seed"] for c in result["cas"]] == [0, 1]
    # Each generator trained conditionally on its seed's 10 a class and nothing else.
    for seed in (0, 1):
        saved = read_json(workdir / "generators" / f"vae_mnist_n10_s{seed}" / "config.json")
        assert saved["model"]["class_conditional"] is True
        assert saved["data"]["examples_per_class"] == 10
        assert saved["data"]["subset_seed"] == seed
        synthetic = np.load(workdir / "generators" / f"vae_mnist_n10_s{seed}" /
                            "synthetic.npz")
        assert np.bincount(synthetic["label"]).tolist() == [20] * 10
    summary = {(r["experiment"], r["ratio"]): r for r in result["summary"]}
    real = summary[(None, 0.0)]
    assert real["accuracy_n"] == 2 and real["accuracy_mean"] == pytest.approx(
        np.mean([r["accuracy"] for r in records if r["family"] == "real only"]), abs=1e-4)
    assert summary[("vae_mnist", 1.0)]["gain"] == pytest.approx(
        summary[("vae_mnist", 1.0)]["accuracy_mean"] - real["accuracy_mean"], abs=1e-4)
    assert "cas" in {r["ratio"] for r in result["summary"]}
    table = (workdir / "augment.md").read_text()
    assert "**10 labelled examples per class**" in table and "`vae_mnist`" in table
    assert (workdir / "augment.png").stat().st_size > 1000

    monkeypatch.setattr(augment.classifier_lib, "train_classifier", _never)
    monkeypatch.setattr(augment.modes, "restore_for_inference", _never)
    monkeypatch.setattr(augment.compare.loop, "train_and_evaluate", _never)
    assert augment.augment("digits", str(workdir), **kwargs) == result

    # A generator of another recipe in the same place: its classifiers train
    # again (the real-only ones do not).
    trained = []
    monkeypatch.setattr(augment.classifier_lib, "train_classifier",
                        lambda dataset, recipe, log: trained.append(dataset.name)
                        or (None, {"test_accuracy": 0.5}))
    monkeypatch.setattr(augment.compare, "recipe_id", lambda run_dir: "another recipe")
    again = augment.augment("digits", str(workdir), **kwargs)
    assert sorted(trained) == sorted(["digits_aug"] * 4 + ["digits_cas"] * 2)
    assert {r["accuracy"] for r in again["records"] if r["family"] == "VAE"} == {0.5}
    assert [r["accuracy"] for r in again["records"] if r["family"] == "real only"] == [
        r["accuracy"] for r in records if r["family"] == "real only"]


# --------------------------------------------------------------------------
# Telling generated from real (experiments/detect_generated.py).


@pytest.mark.slow
def test_the_detect_generated_smoke_study_writes_a_cross_family_matrix(
        ood_study, shared_data_dir, tmp_path, monkeypatch):
    """Reading the OOD study's models (trained by the same smoke recipes, so
    reused as they are): samples, a detector per family, the matrix."""
    from experiments import detect_generated as dg  # pylint: disable=import-outside-toplevel
    workdir = tmp_path / "detect"
    models = ood_study[1]
    kwargs = dict(preset="smoke", experiments=("vae_mnist", "gmm_mnist"), num_train=96,
                  num_test=40, models=str(models), data_dir=str(shared_data_dir))
    monkeypatch.setattr(dg.compare.loop, "train_and_evaluate", _never)
    result = dg.detect_generated("digits", str(workdir), **kwargs)
    pairs = {(m["train_experiment"], m["test_experiment"]): m["auroc"]
             for m in result["matrix"]}
    assert set(pairs) == {(a, b) for a in ("vae_mnist", "gmm_mnist")
                          for b in ("vae_mnist", "gmm_mnist")}
    assert all(0.0 <= v <= 1.0 for v in pairs.values())
    # Blurry 20-step smoke samples against real digits: easy to tell apart.
    assert pairs[("vae_mnist", "vae_mnist")] > 0.8
    assert {d["experiment"] for d in result["detectability"]} == {"vae_mnist", "gmm_mnist"}
    assert read_json(workdir / "detect_generated.json") == json.loads(json.dumps(result))
    assert "| `vae_mnist` | **" in (workdir / "detect_generated.md").read_text()
    assert (workdir / "detect_generated.png").stat().st_size > 1000

    monkeypatch.setattr(dg.classifier_lib, "train_classifier", _never)
    monkeypatch.setattr(dg.modes, "restore_for_inference", _never)
    assert dg.detect_generated("digits", str(workdir), **kwargs) == result
    with pytest.raises(dg.DetectError, match="--experiments: unknown nope"):
        dg.detect_generated("digits", str(workdir), experiments=("nope",))


def test_registered_ood_results_render_from_the_json_the_command_wrote(tmp_path):
    record = {"family": "flow", "experiment": "glow_mnist", "score": "likelihood",
              "in": "fashion_mnist", "out": "mnist", "num_in": 1000, "num_out": 1000,
              "auroc": 0.1234, "auprc": 0.3, "fpr_at_80_tpr": 0.97}
    (tmp_path / "ood.json").write_text(json.dumps({"records": [
        record, dict(record, out="noise", auroc=1.0)]}))
    result = registry.StudyResult(preset="cpu", dataset="fashion_mnist", rows_file="ood.json",
                                  command="c", date="d", host="h", wall_time="w")
    table = registry.studies()["ood"].render(result.rows(tmp_path))
    assert "| flow | `glow_mnist` | likelihood | 0.123 | 1.000 | 0.300 | 0.970 |" in table
    one = {"records": [], "summary": [{"family": "VAE", "experiment": "vae_mnist",
                                       "score": "likelihood", "classes": [0, 1],
                                       "mean_auroc": 0.9, "min_auroc": 0.85,
                                       "per_class_auroc": [0.95, 0.85]}]}
    (tmp_path / "one.json").write_text(json.dumps(one))
    result = dataclasses.replace(result, rows_file="one.json")
    table = registry.studies()["ood"].render(result.rows(tmp_path))
    assert "| VAE | `vae_mnist` | likelihood | **0.900** | 0.850 | 0.950 | 0.850 |" in table
