"""A user's own unlabelled images, end to end.

A flat folder of 28x28 grey PNGs (``image_folder`` without class folders:
scikit-learn's 8x8 digits, upscaled) trains every image family's smoke
preset through the command line, and the final evaluation judges the
samples with label-free metrics in the features of a self-supervised
encoder (``eval/ssl_...``): Frechet distance and KID with their floors, and
improved precision and recall (Kynkaanniemi et al. 2019, checked here
against a brute-force computation). What cannot work on the data fails at
start-up, before any training step.

The encoder trains once per module, with the pinned recipe shortened to
60 steps (the recipe is data, the code path is the one every run uses).
"""

from __future__ import annotations

import json
import math
import os

import ml_collections
import numpy as np
import pytest
from conftest import assert_one_error_line, read_json, run_cli
from PIL import Image

from genjax.data import load_dataset
from genjax.evaluate import classifier as classifier_lib
from genjax.evaluate import metrics
from genjax.evaluate import sample_quality as sq

NUM_IMAGES = 300  # 270 train (225 for the encoder, 45 floor), 30 test.
CLASS_KEYS = {"classifier_test_accuracy", "classifier_score", "classifier_score_std",
              "classifier_score_data", "classes_hit", "class_kl"}
SSL_KEYS = {"ssl_pretext_accuracy", "ssl_fd", "ssl_fd_floor", "ssl_kid", "ssl_kid_std",
            "ssl_kid_floor", "ssl_precision", "ssl_recall", "ssl_precision_floor",
            "ssl_recall_floor", "num_samples"}
# evaluate_samples' keys on labelled data, as they were before unlabelled
# data was judged: they must not change.
LABELLED_KEYS = {"classifier_test_accuracy", "fd", "fd_floor", "kid", "kid_std",
                 "kid_floor", "classifier_score", "classifier_score_std",
                 "classifier_score_data", "classes_hit", "class_kl", "num_samples",
                 "precision", "recall", "density", "coverage", "precision_floor",
                 "recall_floor", "density_floor", "coverage_floor"}


# --------------------------------------------------------------------------
# metrics.precision_recall against a brute-force computation.


def _brute_precision_recall(real, fake, k):
    """Loops over pairs: a point is in a set's manifold if it lies within
    the distance from some member to that member's k-th nearest other member."""

    def radii(x):
        out = []
        for i, a in enumerate(x):
            d = sorted(math.dist(a, b) for j, b in enumerate(x) if j != i)
            out.append(d[k - 1])
        return out

    def inside(points, centres):
        r = radii(centres)
        hits = sum(any(math.dist(p, c) <= rc for c, rc in zip(centres, r))
                   for p in points)
        return hits / len(points)

    return inside(fake, real), inside(real, fake)


@pytest.mark.parametrize("n,m,d,k,shift", [(30, 40, 3, 3, 0.5), (25, 20, 8, 1, 1.0),
                                           (40, 40, 2, 5, 0.0), (12, 50, 5, 3, 2.0)])
def test_precision_recall_matches_brute_force(n, m, d, k, shift):
    rng = np.random.default_rng(n + m + d + k)
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(m, d)) * 1.3 + shift
    precision, recall = metrics.precision_recall(real_features=real, sample_features=fake, k=k)
    expected = _brute_precision_recall(real.tolist(), fake.tolist(), k)
    assert (precision, recall) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < precision < 1.0 or 0.0 < recall < 1.0  # not a trivial case


def test_precision_recall_sanity_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    assert metrics.precision_recall(real_features=x, sample_features=x.copy()) == (1.0, 1.0)
    far = rng.normal(size=(50, 4)) + 1000.0
    assert metrics.precision_recall(real_features=x, sample_features=far) == (0.0, 0.0)
    # A collapsed model: all samples on one real point. Realistic (precision
    # 1) but covering only what lies within one zero-radius ball (recall).
    collapsed = np.repeat(x[:1], 30, axis=0)
    precision, recall = metrics.precision_recall(real_features=x, sample_features=collapsed)
    assert precision == 1.0 and recall == pytest.approx(1 / 60)
    # The k-th neighbour radii against a direct computation.
    r = metrics.knn_radii(x, 3)
    direct = np.sort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, 3]
    np.testing.assert_allclose(r, direct, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="more than 3 rows in sample_features"):
        metrics.precision_recall(real_features=x, sample_features=x[:3])
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.precision_recall(real_features=x, sample_features=x[:, :2])


def test_transformations_flip_and_rotate_any_shape():
    images = np.arange(2 * 3 * 5 * 2, dtype=np.float32).reshape(2, 3, 5, 2)
    for t, expected in enumerate((images, images[:, :, ::-1], images[:, ::-1],
                                  np.rot90(images, 2, axes=(1, 2)))):
        ids = np.full((2,), t, np.int32)
        np.testing.assert_array_equal(classifier_lib.transform_images(images, ids),
                                      expected)
        import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
        np.testing.assert_array_equal(
            np.asarray(classifier_lib.transform_images(jnp.asarray(images),
                                                       jnp.asarray(ids))), expected)


# --------------------------------------------------------------------------
# A folder of the user's images, and the encoder trained once.


def _digit_pngs(directory, num, labelled=False, offset=0):
    """``num`` scikit-learn digits as 28x28 grey PNGs (flat, or in class folders)."""
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    for i in range(offset, offset + num):
        image = Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8))
        image = image.resize((28, 28), Image.BILINEAR)
        folder = os.path.join(directory, str(digits.target[i])) if labelled else directory
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{i:04d}.png"))
    return str(directory)


def _load_folder(directory):
    return load_dataset(ml_collections.ConfigDict(
        {"name": "image_folder", "manual_dir": directory, "data_dir": None}))


@pytest.fixture(scope="module")
def short_recipes():
    """The pinned recipes, shortened to 60 steps for this module."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("RECIPE", "SSL_RECIPE"):
            patch.setattr(classifier_lib, name,
                          {**getattr(classifier_lib, name), "min_steps": 60})
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory, short_recipes):
    """``(image folder, cache dir, encoder)``: the encoder trained once here;
    every run of the module loads it from the cache."""
    del short_recipes
    root = tmp_path_factory.mktemp("unlabelled")
    directory = _digit_pngs(root / "images", NUM_IMAGES)
    cache_dir = str(root / "cache")
    lines = []
    encoder = classifier_lib.get_classifier(
        _load_folder(directory), cache_dir, recipe=classifier_lib.SSL_RECIPE,
        log=lines.append)
    assert any("training the image_folder self-supervised encoder" in line
               for line in lines)
    return directory, cache_dir, encoder


def test_encoder_is_cached_like_the_classifier(folder):
    directory, cache_dir, encoder = folder
    dataset = _load_folder(directory)
    assert not classifier_lib.has_labels(dataset)
    assert encoder.kind == "transformations" and encoder.num_classes == 4
    # Four transformations, told apart well above chance on unseen images.
    assert encoder.test_accuracy > 0.6
    # Trained on the train split less the floor's held-out images.
    num_train = dataset.num_examples("train")
    assert encoder.meta["num_train"] == len(classifier_lib.training_indices(num_train))
    np.testing.assert_array_equal(
        sq.floor_pool(dataset, "train"),
        dataset.arrays("train")["image"][classifier_lib.holdout_indices(num_train)])
    path = classifier_lib.cache_path(cache_dir, dataset, recipe=classifier_lib.SSL_RECIPE)
    assert encoder.path == path and os.path.basename(path).startswith("image_folder-ssl-")
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
        assert json.load(f)["recipe"]["kind"] == "transformations"
    lines = []
    loaded = classifier_lib.get_classifier(dataset, cache_dir,
                                           recipe=classifier_lib.SSL_RECIPE,
                                           log=lines.append)
    assert any("loaded the image_folder self-supervised encoder" in l for l in lines)
    assert loaded.test_accuracy == encoder.test_accuracy
    # The domain classifier still refuses unlabelled data.
    with pytest.raises(classifier_lib.ClassifierError, match="no labels"):
        classifier_lib.get_classifier(dataset, cache_dir)


def test_unlabelled_metrics_see_noise(folder):
    directory, cache_dir, _ = folder
    dataset = _load_folder(directory)
    protocol = {"kid_subset_size": 50, "kid_subsets": 20}
    real = dataset.arrays("train")["image"][:100]
    out = sq.evaluate_samples(real, dataset, protocol, cache_dir, seed=1)
    assert set(out) == SSL_KEYS
    assert all(math.isfinite(v) for v in out.values())
    noise = np.random.default_rng(0).uniform(size=(100, 28, 28, 1)).astype(np.float32)
    bad = sq.evaluate_samples(noise, dataset, protocol, cache_dir, seed=1)
    assert bad["ssl_fd_floor"] == out["ssl_fd_floor"]
    assert bad["ssl_fd"] > 3 * out["ssl_fd"] and bad["ssl_fd"] > 3 * out["ssl_fd_floor"]
    assert bad["ssl_kid"] > out["ssl_kid"] + 3 * bad["ssl_kid_std"]
    assert bad["ssl_recall"] < 0.5 * out["ssl_recall"]


def test_labelled_folder_keeps_the_class_metrics(tmp_path, short_recipes):
    """The same images in class folders: the domain classifier's metrics
    with the manifold metrics in its features, and no ``ssl_`` key."""
    del short_recipes
    dataset = _load_folder(_digit_pngs(tmp_path / "labelled", NUM_IMAGES, labelled=True))
    assert classifier_lib.has_labels(dataset)
    out = sq.evaluate_samples(dataset.arrays("test")["image"], dataset,
                              {"kid_subset_size": 20}, str(tmp_path / "cache"))
    assert set(out) == LABELLED_KEYS
    assert os.listdir(tmp_path / "cache" / classifier_lib.CACHE_SUBDIR)[0].startswith(
        f"image_folder-{classifier_lib.fingerprint(dataset)}")


def test_labelled_fingerprint_is_unchanged(tmp_path):
    """The recipe and the hash of labelled data are as before, so existing
    classifier caches are found (a changed hash would retrain them)."""
    digits = load_dataset(ml_collections.ConfigDict({"name": "digits"}))
    assert "kind" not in classifier_lib.RECIPE
    import hashlib  # pylint: disable=import-outside-toplevel
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": classifier_lib.RECIPE, "num_classes": 10},
                        sort_keys=True).encode())
    for split in ("test", "train"):
        for field in ("image", "label"):
            array = np.ascontiguousarray(digits.arrays(split)[field])
            h.update(f"|{split}/{field}/{array.dtype.str}/{array.shape}|".encode())
            h.update(memoryview(array).cast("B"))
    assert classifier_lib.fingerprint(digits) == h.hexdigest()[:16]
    assert classifier_lib.cache_path(str(tmp_path), digits).endswith(
        f"digits-{h.hexdigest()[:16]}")


# --------------------------------------------------------------------------
# Every image family, end to end through the command line.


def _argv(workdir, directory, cache_dir, *extra):
    return ["--preset=smoke", f"--workdir={workdir}",
            "--config.data.name=image_folder", f"--config.data.manual_dir={directory}",
            f"--config.data.data_dir={cache_dir}", *extra]


def _assert_no_class_keys(metrics_dict):
    for key in metrics_dict:
        assert key.rsplit("/", 1)[-1] not in CLASS_KEYS, key


@pytest.mark.parametrize("name,extra,samplers", [
    # One sample count for the evaluations during training, the final one and
    # the figures: one sampler compiled.
    pytest.param("dcgan_mnist", ("--config.eval.sample_quality.num_samples=100",
                                 "--config.sample.num_samples=100"), ("",),
                 marks=pytest.mark.slow),
    # A class-conditional, guided recipe on unlabelled data trains the
    # unconditional model, with one warning naming the key.
    # (The bound and the evaluation during training are the smoke preset's
    # business, tested elsewhere; skipped here to save compilations.)
    pytest.param("ddpm_mnist", ("--config.model.class_conditional=True",
                                "--config.sample.guidance_scale=2.0",
                                "--config.eval.bound_num_examples=0",
                                "--config.train.eval_every=20",
                                "--config.model.channel_mults=(1,)",
                                "--config.eval.sample_quality.num_samples=60",
                                "--config.eval.sample_quality.batch_size=60",
                                "--config.sample.num_samples=60"), ("",),
                 marks=pytest.mark.slow),
    # The VAE reports likelihoods, no sample quality: it must simply run.
    ("vae_mnist", ("--config.train.eval_every=20",), ()),
])
def test_unlabelled_folder_end_to_end(folder, tmp_path, capsys, name, extra, samplers):
    directory, cache_dir, _ = folder
    workdir = tmp_path / "wd"
    code, out, err = run_cli(capsys, name, _argv(workdir, directory, cache_dir, *extra))
    assert code == 0, err
    assert "Traceback" not in err
    result = read_json(workdir / "eval.json")
    assert all(math.isfinite(v) for v in result.values()), result
    _assert_no_class_keys(result)
    for sampler in samplers:
        prefix = f"eval/{sampler}/" if sampler else "eval/"
        assert {k[len(prefix):] for k in result
                if k.startswith(prefix + "ssl_")} == SSL_KEYS - {"num_samples"}
        assert 0.0 <= result[prefix + "ssl_precision"] <= 1.0
        assert result[prefix + "ssl_fd"] > 0.0
    # Every evaluation during training logged label-free metrics only.
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        for row in map(json.loads, f):
            _assert_no_class_keys(row)
    assert "training the image_folder self-supervised encoder" not in out
    warnings = [line for line in out.splitlines() if "has no labels" in line]
    if "--config.model.class_conditional=True" in extra:
        assert len(warnings) == 1, out
        assert "model.class_conditional=True and sample.guidance_scale=2.0" in warnings[0]
    else:
        assert not warnings, out


# --------------------------------------------------------------------------
# What cannot work fails at start-up: one line, exit 2, nothing trained.


@pytest.mark.parametrize("extra,must_contain", [
    (("--config.eval.sample_quality.floor_split=validation",),
     ("eval.sample_quality.floor_split='validation'", "['test', 'train']")),
    (("--config.eval.sample_quality.floor_split=test",),
     ("floor_split='test' equals reference_split",)),
    (("--config.eval.sample_quality.num_samples_during_training=3",),
     ("num_samples_during_training=3", "precision_recall_k=3")),
])
def test_start_up_check_fails_before_training(folder, tmp_path, capsys, extra,
                                              must_contain):
    directory, cache_dir, _ = folder
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "dcgan_mnist",
                           _argv(workdir, directory, cache_dir, *extra))
    assert code == 2
    assert_one_error_line(err, *must_contain)
    assert not os.path.exists(workdir / "checkpoints")
    assert not os.path.exists(workdir / "metrics.jsonl")


def test_too_few_images_for_the_encoder_fail_at_start_up(tmp_path, capsys):
    directory = _digit_pngs(tmp_path / "few", 120)
    workdir = tmp_path / "wd"
    code, _, err = run_cli(capsys, "ddpm_mnist",
                           _argv(workdir, directory, str(tmp_path / "cache")))
    needed = classifier_lib.min_train_images(classifier_lib.SSL_RECIPE)
    assert code == 2
    assert_one_error_line(err, "self-supervised encoder", f"at least {needed} train images",
                          "the dataset has 108", "num_samples=0")
    assert not os.path.exists(workdir / "checkpoints")
