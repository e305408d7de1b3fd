"""Tests of the shared sample-quality evaluation (genjax/evaluate/).

The formulas (metrics.py) are checked against independent computations; the
domain classifier and the protocol run on scikit-learn's 8x8 digits only
(the classifier trains once per session, in a few seconds).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import types

import ml_collections
import numpy as np
import pytest
import scipy.linalg

from genjax.data import Dataset, load_dataset
from genjax.evaluate import classifier as classifier_lib
from genjax.evaluate import metrics
from genjax.evaluate import sample_quality as sq

# --------------------------------------------------------------------------
# metrics.frechet_distance


def _random_stats(rng, n, d, shift=0.0):
    a = rng.normal(size=(d, d)) / math.sqrt(d)
    x = rng.normal(size=(n, d)) @ a + shift
    return metrics.gaussian_statistics(x)


def _fd_with_sqrtm(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def test_gaussian_statistics_match_numpy():
    x = np.random.default_rng(0).normal(size=(50, 4))
    mu, sigma = metrics.gaussian_statistics(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.gaussian_statistics(x[:1])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        metrics.gaussian_statistics(x[0])


@pytest.mark.parametrize("n1,n2,d", [(200, 300, 2), (100, 150, 5), (400, 300, 16),
                                     (500, 600, 64)])
def test_frechet_distance_matches_sqrtm(n1, n2, d):
    rng = np.random.default_rng(d)
    mu1, s1 = _random_stats(rng, n1, d)
    mu2, s2 = _random_stats(rng, n2, d, shift=0.3)
    expected = _fd_with_sqrtm(mu1, s1, mu2, s2)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    # Symmetric in its two Gaussians.
    assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_singular_covariances_are_finite():
    # Fewer samples than dimensions: both covariances are singular.
    rng = np.random.default_rng(1)
    d = 32
    mu1, s1 = _random_stats(rng, 10, d)
    mu2, s2 = _random_stats(rng, 12, d, shift=0.5)
    assert np.linalg.matrix_rank(s1) < d and np.linalg.matrix_rank(s2) < d
    value = metrics.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0.0
    assert value == pytest.approx(_fd_with_sqrtm(mu1, s1, mu2, s2), rel=1e-5)
    # Identical singular statistics: ~0, never NaN.
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # All-zero covariances (e.g. a collapsed model): only the means count.
    zero = np.zeros((d, d))
    assert metrics.frechet_distance(mu1, zero, mu2, zero) == pytest.approx(
        float(np.sum((mu1 - mu2) ** 2)), rel=1e-12)


def test_frechet_distance_identical_and_mean_shift():
    rng = np.random.default_rng(2)
    mu, s = _random_stats(rng, 300, 20)
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-10)
    shift = rng.normal(size=20)
    assert metrics.frechet_distance(mu, s, mu + shift, s) == pytest.approx(
        float(shift @ shift), rel=1e-9)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.0, 2.0, size=8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(
        expected, rel=1e-10)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="means"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------
# metrics.kernel_distance


def _direct_unbiased_mmd2(x, y):
    """O(n^2) loops over pairs with k(a, b) = (a.b / d + 1)^3."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def test_kernel_distance_matches_direct_computation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(25, 6))
    y = rng.normal(size=(25, 6)) + 0.4
    mean, std = metrics.kernel_distance(x, y, num_subsets=1, subset_size=25)
    assert mean == pytest.approx(_direct_unbiased_mmd2(x, y), rel=1e-9)
    assert std == 0.0


def test_kernel_distance_identical_shifted_and_deterministic():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 16))
    same_mean, _ = metrics.kernel_distance(x, x, num_subsets=20, subset_size=200)
    shifted_mean, shifted_std = metrics.kernel_distance(
        x, x + 0.5, num_subsets=20, subset_size=200)
    assert shifted_mean > 0.5 and shifted_mean > 10 * shifted_std
    # Identical sets: ~0. (Slightly negative: rows shared by the two subsets
    # make k(x, x) terms enter the cross term, which the unbiased estimator
    # does not expect.)
    assert abs(same_mean) < 0.05 * shifted_mean
    # A fresh sample of the same distribution is ~0 too.
    other = rng.normal(size=(600, 16))
    other_mean, _ = metrics.kernel_distance(x, other, num_subsets=20, subset_size=200)
    assert abs(other_mean) < 0.05 * shifted_mean
    # Deterministic from the seed; the subset size is capped at the set sizes.
    a = metrics.kernel_distance(x, x + 0.5, num_subsets=5, subset_size=100, seed=7)
    b = metrics.kernel_distance(x, x + 0.5, num_subsets=5, subset_size=100, seed=7)
    c = metrics.kernel_distance(x, x + 0.5, num_subsets=5, subset_size=100, seed=8)
    assert a == b and a != c
    capped = metrics.kernel_distance(x[:30], x[:40] + 0.5, num_subsets=2, subset_size=1000)
    assert np.isfinite(capped[0])
    with pytest.raises(ValueError, match="dimensions"):
        metrics.kernel_distance(x, x[:, :3])


# --------------------------------------------------------------------------
# metrics.classifier_score and metrics.mode_coverage


def test_classifier_score_extremes_and_hand_computed_case():
    k = 10
    one_hot_uniform = np.eye(k)[np.arange(k * 20) % k]  # Each split is balanced.
    mean, std = metrics.classifier_score(one_hot_uniform, num_splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    identical = np.tile(np.array([[0.2, 0.5, 0.3]]), (40, 1))
    assert metrics.classifier_score(identical, num_splits=4) == pytest.approx((1.0, 0.0))
    # p(y) = [0.75, 0.25]: KL rows log(4/3) and 0.5 log(4/3) -> exp(0.75 log(4/3)).
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    mean, _ = metrics.classifier_score(probs, num_splits=1)
    assert mean == pytest.approx((4.0 / 3.0) ** 0.75, rel=1e-12)
    # Two splits of one row each: every split's score is 1.
    assert metrics.classifier_score(probs, num_splits=2) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="num_splits"):
        metrics.classifier_score(probs, num_splits=3)
    with pytest.raises(ValueError, match="logits"):
        metrics.classifier_score(np.array([[2.0, -1.0]]), num_splits=1)


def test_mode_coverage_hand_computed():
    reference = np.array([0, 0, 1, 2])  # r = [0.5, 0.25, 0.25]
    probs = np.eye(3)[[0, 1, 1, 1]]  # s = [0.25, 0.75, 0]
    out = metrics.mode_coverage(probs, reference, 3, min_class_fraction=0.1)
    assert out["class_histogram"] == [0.25, 0.75, 0.0]
    assert out["classes_hit"] == 2  # Class 2 has no sample.
    expected_kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.25)
    assert out["class_kl"] == pytest.approx(expected_kl, rel=1e-12)
    # Class 0 needs 0.6 * 0.5 = 0.3 of the samples, it has 0.25.
    assert metrics.mode_coverage(probs, reference, 3, min_class_fraction=0.6)["classes_hit"] == 1
    # Matching histograms: every class hit, KL 0.
    exact = metrics.mode_coverage(np.eye(3)[reference], reference, 3)
    assert exact["classes_hit"] == 3 and exact["class_kl"] == pytest.approx(0.0, abs=1e-15)
    # A sample class the reference never has: KL is infinite.
    assert metrics.mode_coverage(np.eye(3)[[2, 2]], np.array([0, 1]), 3)["class_kl"] == math.inf


def test_mode_coverage_collapse_to_one_class():
    k = 10
    reference = np.arange(1000) % k
    probs = np.full((500, k), 0.01)
    probs[:, 3] = 1.0 - 0.01 * (k - 1)
    out = metrics.mode_coverage(probs, reference, k)
    assert out["classes_hit"] == 1
    assert out["class_kl"] == pytest.approx(math.log(k), rel=1e-12)
    assert out["class_histogram"][3] == 1.0


# --------------------------------------------------------------------------
# The domain classifier (digits).


@pytest.fixture(scope="session")
def digits():
    return load_dataset(ml_collections.ConfigDict({"name": "digits"}))


@pytest.fixture(scope="session")
def trained(digits, tmp_path_factory):
    """``(cache_dir, classifier, log lines)`` of one training run, shared."""
    cache_dir = str(tmp_path_factory.mktemp("classifier_cache"))
    lines: list[str] = []
    clf = classifier_lib.get_classifier(digits, cache_dir, log=lines.append)
    return cache_dir, clf, lines


def _no_training(*args, **kwargs):
    raise AssertionError("the classifier was trained although a valid cache exists")


def test_classifier_trains_caches_and_loads(digits, trained, monkeypatch):
    cache_dir, clf, lines = trained
    assert any("training the digits domain classifier" in line for line in lines)
    assert any("epoch" in line and " s" in line for line in lines)
    assert clf.test_accuracy > 0.9
    assert clf.num_classes == 10 and clf.feature_dim == 128
    path = classifier_lib.cache_path(cache_dir, digits)
    assert clf.path == path
    assert os.path.basename(path) == f"digits-{classifier_lib.fingerprint(digits)}"
    meta = json.loads(open(os.path.join(path, "meta.json"), encoding="utf-8").read())
    for key in ("test_accuracy", "recipe", "fingerprint", "image_shape", "date"):
        assert key in meta
    assert meta["test_accuracy"] == clf.test_accuracy
    # No temporary directories are left behind.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]

    monkeypatch.setattr(classifier_lib, "train_classifier", _no_training)
    loaded_lines: list[str] = []
    loaded = classifier_lib.get_classifier(digits, cache_dir, log=loaded_lines.append)
    assert any("loaded" in line for line in loaded_lines)
    assert loaded.test_accuracy == clf.test_accuracy
    images = digits.splits["test"]["image"][:37]
    f1, p1 = clf.features_and_probs(images, batch_size=16)
    f2, p2 = loaded.features_and_probs(images, batch_size=16)
    assert f1.dtype == np.float64 and p1.dtype == np.float64
    assert f1.shape == (37, 128) and p1.shape == (37, 10)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, rtol=1e-12)
    # Padding the last batch does not change the results.
    f3, _ = loaded.features_and_probs(images, batch_size=500)
    np.testing.assert_allclose(f3, f1, rtol=1e-5, atol=1e-5)
    assert loaded.accuracy(digits.splits["test"]["image"],
                           digits.splits["test"]["label"]) == pytest.approx(clf.test_accuracy)


def _copy_cache(src_dir, dst_dir, digits):
    import shutil  # pylint: disable=import-outside-toplevel

    src = classifier_lib.cache_path(src_dir, digits)
    dst = classifier_lib.cache_path(dst_dir, digits)
    shutil.copytree(src, dst)
    return dst


def _reuse_trainer(clf):
    """A stand-in for ``train_classifier`` returning the session's trained
    parameters (training again would only cost time) and counting calls."""
    calls = []

    def train(dataset, recipe=None, log=None):
        calls.append(dataset.name)
        params = __import__("jax").tree_util.tree_map(np.asarray, clf.params)
        return params, dict(clf.meta)

    return train, calls


@pytest.mark.parametrize("damage", ["truncate_params", "bad_json", "no_meta", "checksum"])
def test_corrupt_cache_is_retrained_with_warning(digits, trained, tmp_path, monkeypatch,
                                                 caplog, damage):
    cache_dir, clf, _ = trained
    path = _copy_cache(cache_dir, str(tmp_path), digits)
    params_file, meta_file = os.path.join(path, "params.msgpack"), os.path.join(path, "meta.json")
    if damage == "truncate_params":
        data = open(params_file, "rb").read()
        open(params_file, "wb").write(data[: len(data) // 2])
    elif damage == "bad_json":
        open(meta_file, "w", encoding="utf-8").write('{"test_accuracy": 0.9')
    elif damage == "no_meta":
        os.remove(meta_file)
    else:  # Same length, one byte flipped: only the checksum notices.
        data = bytearray(open(params_file, "rb").read())
        data[-1] ^= 0xFF
        open(params_file, "wb").write(bytes(data))
    train, calls = _reuse_trainer(clf)
    monkeypatch.setattr(classifier_lib, "train_classifier", train)
    with caplog.at_level(logging.WARNING, logger="genjax"):
        again = classifier_lib.get_classifier(digits, str(tmp_path))
    assert calls == ["digits"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and path in warnings[0] and "retrain" in warnings[0]
    assert again.test_accuracy == clf.test_accuracy
    # The cache was overwritten with a valid one: it now loads without training.
    monkeypatch.setattr(classifier_lib, "train_classifier", _no_training)
    assert classifier_lib.get_classifier(digits, str(tmp_path)).path == path


def test_unwritable_cache_dir_warns_and_continues(digits, trained, tmp_path, monkeypatch,
                                                 caplog):
    _, clf, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    train, calls = _reuse_trainer(clf)
    monkeypatch.setattr(classifier_lib, "train_classifier", train)
    with caplog.at_level(logging.WARNING, logger="genjax"):
        got = classifier_lib.get_classifier(digits, str(blocker / "cache"))
    assert calls == ["digits"] and got.path is None
    assert any("could not cache" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(
        got.features_and_probs(digits.splits["test"]["image"][:5])[0],
        clf.features_and_probs(digits.splits["test"]["image"][:5])[0])


def test_interrupted_cache_write_leaves_no_cache(digits, trained, tmp_path, monkeypatch,
                                                 caplog):
    _, clf, _ = trained
    train, calls = _reuse_trainer(clf)
    monkeypatch.setattr(classifier_lib, "train_classifier", train)
    real_write = classifier_lib._fsync_write

    def write_then_fail(path, data):
        real_write(path, data[: len(data) // 2])
        if path.endswith("meta.json"):
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(classifier_lib, "_fsync_write", write_then_fail)
    with caplog.at_level(logging.WARNING, logger="genjax"):
        classifier_lib.get_classifier(digits, str(tmp_path))
    assert any("could not cache" in r.getMessage() for r in caplog.records)
    path = classifier_lib.cache_path(str(tmp_path), digits)
    assert not os.path.exists(path)
    assert os.listdir(os.path.dirname(path)) == []  # The temporary directory is gone.
    # A process killed mid-write leaves only a hidden temporary directory,
    # which is never loaded: the next call trains (and now caches).
    os.makedirs(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-x"))
    monkeypatch.setattr(classifier_lib, "_fsync_write", real_write)
    classifier_lib.get_classifier(digits, str(tmp_path))
    assert calls == ["digits", "digits"] and os.path.isdir(path)


def _variant(dataset, name="digits", **splits):
    return Dataset(name=name, kind="image", splits={**dataset.splits, **splits},
                   element_spec=dataset.element_spec, num_classes=dataset.num_classes,
                   description="variant")


def test_fingerprint_depends_on_data_and_recipe(digits):
    fp = classifier_lib.fingerprint(digits)
    assert len(fp) == 16
    copy = _variant(digits, train={k: v.copy() for k, v in digits.splits["train"].items()})
    assert classifier_lib.fingerprint(copy) == fp
    images = digits.splits["train"]["image"].copy()
    images[0, 0, 0, 0] += 0.5
    changed = _variant(digits, train={"image": images, "label": digits.splits["train"]["label"]})
    assert classifier_lib.fingerprint(changed) != fp
    labels = digits.splits["test"]["label"].copy()
    labels[0] = (labels[0] + 1) % 10
    relabelled = _variant(digits, test={"image": digits.splits["test"]["image"], "label": labels})
    assert classifier_lib.fingerprint(relabelled) != fp
    recipe = {**classifier_lib.RECIPE, "epochs": classifier_lib.RECIPE["epochs"] + 1}
    assert classifier_lib.fingerprint(digits, recipe) != fp


def _unlabelled(digits):
    splits = {s: {"image": f["image"]} for s, f in digits.splits.items()}
    return Dataset(name="digits", kind="image", splits=splits,
                   element_spec={"image": (8, 8, 1)}, num_classes=None,
                   description="no labels")


def test_classifier_needs_labels(digits, tmp_path):
    with pytest.raises(ValueError, match="no labels"):
        classifier_lib.get_classifier(_unlabelled(digits), str(tmp_path))


def test_lenet_shapes_for_every_dataset_size():
    import jax  # pylint: disable=import-outside-toplevel

    for shape in ((8, 8, 1), (28, 28, 1), (32, 32, 3)):
        model = classifier_lib.LeNet(num_classes=10)
        out = jax.eval_shape(model.init_with_output, jax.random.key(0),
                             jax.ShapeDtypeStruct((2, *shape), np.float32))
        (logits, features), _ = out
        assert logits.shape == (2, 10) and features.shape == (2, 128), shape


# --------------------------------------------------------------------------
# evaluate_samples (digits).

KEYS = {"classifier_test_accuracy", "fd", "fd_floor", "kid", "kid_std", "kid_floor",
        "classifier_score", "classifier_score_std", "classifier_score_data",
        "classes_hit", "class_kl", "num_samples", "precision", "recall", "density",
        "coverage", "precision_floor", "recall_floor", "density_floor", "coverage_floor"}


def _protocol(**overrides):
    protocol = sq.default_protocol()
    protocol.update(overrides)
    return protocol


def test_default_protocol():
    p = sq.default_protocol()
    assert p.num_samples == 10_000 and p.num_samples_during_training == 1_000
    assert (p.reference_split, p.floor_split) == ("test", "train")
    assert p.inception_weights is None
    p.inception_weights = "/some/file.npz"  # A typed placeholder: str is accepted.


def test_real_test_images_score_like_the_data(digits, trained):
    cache_dir = trained[0]
    test_images = digits.splits["test"]["image"]
    out = sq.evaluate_samples(test_images, digits, _protocol(), cache_dir)
    assert set(out) == KEYS
    assert all(isinstance(v, float) for v in out.values())
    assert out["num_samples"] == len(test_images)
    assert out["classifier_test_accuracy"] == trained[1].test_accuracy
    assert out["fd"] == pytest.approx(0.0, abs=1e-6)
    assert out["fd_floor"] > 0.0
    assert out["classes_hit"] == 10.0
    assert out["class_kl"] < 0.01
    assert out["classifier_score"] == pytest.approx(out["classifier_score_data"], rel=1e-9)
    assert out["classifier_score_data"] > 7.0
    # Against themselves the real images are all inside each other's balls.
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["density"] >= 6 / 5 and out["precision_floor"] < 1.0


def test_floor_images_reproduce_the_floor(digits, trained):
    cache_dir = trained[0]
    n = 200
    pool = sq.floor_pool(digits, "train")
    floor = pool[sq._floor_indices(len(pool), n, seed=3)]
    out = sq.evaluate_samples(floor, digits, _protocol(), cache_dir, seed=3)
    assert out["fd"] == pytest.approx(out["fd_floor"], rel=1e-9)
    assert out["kid"] == pytest.approx(out["kid_floor"], rel=1e-9)
    for key in ("precision", "recall", "density", "coverage"):
        assert out[key] == out[f"{key}_floor"], key
    assert out["classes_hit"] == 10.0


def test_floor_images_are_held_out_of_the_classifier_and_the_reference(
        digits, trained):
    """The floor is a floor only if its real images are as new to the
    classifier as the test images: drawn from the train images it held out,
    never from those it fitted, nor from the reference split."""
    clf = trained[1]
    num_train = len(digits.splits["train"]["label"])
    held = classifier_lib.holdout_indices(num_train)
    fitted = classifier_lib.training_indices(num_train)
    assert len(held) == num_train // 6 and len(held) + len(fitted) == num_train
    assert not set(held) & set(fitted)
    assert clf.meta["num_train"] == len(fitted)
    np.testing.assert_array_equal(sq.floor_pool(digits, "train"),
                                  digits.splits["train"]["image"][held])
    with pytest.raises(ValueError, match="floor_split='test' equals reference_split"):
        sq.evaluate_samples(digits.splits["test"]["image"][:50], digits,
                            _protocol(floor_split="test"), trained[0])


def test_noise_is_far_worse_than_the_floor(digits, trained):
    noise = np.random.default_rng(0).uniform(size=(400, 8, 8, 1)).astype(np.float32)
    out = sq.evaluate_samples(noise, digits, _protocol(), trained[0])
    assert out["fd"] > 10.0 * out["fd_floor"]
    assert out["kid"] > out["kid_floor"] + 10.0 * out["kid_std"]
    assert out["classifier_score"] < out["classifier_score_data"]


def test_reference_features_are_computed_once(digits, trained, monkeypatch):
    cache_dir = trained[0]
    samples = digits.splits["train"]["image"][:250]
    first = sq.evaluate_samples(samples, digits, _protocol(), cache_dir, seed=11)
    clf = sq._classifier(digits, cache_dir)
    calls = []
    original = clf.features_and_probs

    def counting(images, batch_size=500):
        calls.append(len(images))
        return original(images, batch_size)

    monkeypatch.setattr(clf, "features_and_probs", counting)
    second = sq.evaluate_samples(samples, digits, _protocol(), cache_dir, seed=11)
    assert calls == [250]  # Only the samples; reference and floor come from memory.
    assert second == first
    # Another seed draws another floor subset; old seeds are evicted, bounded.
    for seed in range(12, 12 + sq._MAX_FLOOR_ENTRIES + 2):
        sq.evaluate_samples(samples[:50], digits, _protocol(kid_subsets=2), cache_dir, seed=seed)
    floor_keys = [k for k in clf.feature_cache if k[0] == "floor_features"]
    assert len(floor_keys) == sq._MAX_FLOOR_ENTRIES


@pytest.mark.parametrize("make_samples,protocol,match", [
    (lambda x: x[..., 0], {}, r"shape \(360, 8, 8\).*\(8, 8, 1\)"),
    (lambda x: np.concatenate([x, x], axis=-1), {}, r"\(8, 8, 1\)"),
    (lambda x: x[:1], {}, "at least 2"),
    (lambda x: (x * 255).astype(np.uint8), {}, "255"),
    (lambda x: x, {"reference_split": "validation"}, r"'validation'.*\['test', 'train'\]"),
    (lambda x: x, {"floor_split": "valid"}, r"floor_split='valid'.*\['test', 'train'\]"),
])
def test_evaluate_samples_errors(digits, trained, make_samples, protocol, match):
    samples = make_samples(digits.splits["test"]["image"])
    with pytest.raises(ValueError, match=match):
        sq.evaluate_samples(samples, digits, _protocol(**protocol), trained[0])


def test_evaluate_samples_counts_non_finite(digits, trained):
    samples = digits.splits["test"]["image"].copy()
    samples[3, 0, 0, 0] = np.nan
    samples[5, 1, 1, 0] = np.inf
    samples[5, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"3 non-finite values .* in 2 of 360 images"):
        sq.evaluate_samples(samples, digits, _protocol(), trained[0])


def test_evaluate_samples_needs_known_keys(digits, trained):
    # (Unlabelled datasets get label-free metrics: tests/test_unlabelled.py.)
    images = digits.splits["test"]["image"]
    with pytest.raises(ValueError, match="kid_subset'"):
        sq.evaluate_samples(images, digits, {"kid_subset": 5}, trained[0])


def _stub_inception(monkeypatch):
    """Installs a fake ``genjax.evaluate.inception``: features are a fixed
    random projection of the pixels. Returns the list of constructed paths."""
    constructed = []

    class InceptionWeightsError(ValueError):
        pass

    class InceptionFeatures:
        def __init__(self, weights_path, batch_size=50):
            constructed.append(weights_path)
            self.projection = np.random.default_rng(0).normal(size=(64, 16))

        def __call__(self, images):
            images = np.asarray(images, np.float64)
            assert images.min() >= 0.0 and images.max() <= 1.0
            return images.reshape((len(images), -1)) @ self.projection

    module = types.ModuleType("genjax.evaluate.inception")
    module.InceptionFeatures = InceptionFeatures
    module.InceptionWeightsError = InceptionWeightsError
    monkeypatch.setitem(sys.modules, "genjax.evaluate.inception", module)
    return constructed


def test_inception_fd_with_a_stubbed_network(digits, trained, monkeypatch, tmp_path):
    constructed = _stub_inception(monkeypatch)
    weights = str(tmp_path / "inception.npz")
    protocol = _protocol(inception_weights=weights)
    test_images = digits.splits["test"]["image"]
    same = sq.evaluate_samples(test_images, digits, protocol, trained[0])
    assert set(same) == KEYS | {"inception_fd", "inception_fd_floor"}
    assert same["inception_fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["inception_fd_floor"] > 0.0
    noise = np.random.default_rng(1).uniform(size=(360, 8, 8, 1))
    far = sq.evaluate_samples(noise, digits, protocol, trained[0])
    assert far["inception_fd"] > 10.0 * far["inception_fd_floor"]
    assert far["inception_fd_floor"] == same["inception_fd_floor"]
    assert constructed == [weights]  # The network is loaded once.
    # Without weights, no Inception metrics (and no import).
    assert set(sq.evaluate_samples(test_images, digits, _protocol(), trained[0])) == KEYS


def test_inception_bad_weights_path_raises(digits, trained, tmp_path):
    inception = pytest.importorskip("genjax.evaluate.inception")
    missing = str(tmp_path / "missing.npz")
    with pytest.raises(inception.InceptionWeightsError, match="missing.npz"):
        sq.evaluate_samples(digits.splits["test"]["image"], digits,
                            _protocol(inception_weights=missing), trained[0])


# --------------------------------------------------------------------------
# Points: the energy distance and the points protocol.


def test_energy_distance_matches_scipy_in_one_dimension():
    """SciPy's 1-D energy distance is the square root of the V-statistic."""
    import scipy.stats  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(0.5, 2.0, size=200)
    pad = lambda v: np.stack([v, np.zeros_like(v)], axis=1)  # noqa: E731
    ours = metrics.energy_distance(pad(x), pad(y))
    assert ours == pytest.approx(scipy.stats.energy_distance(x, y) ** 2, rel=1e-9)
    assert metrics.energy_distance(pad(x), pad(x)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="dimensions"):
        metrics.energy_distance(pad(x), np.zeros((3, 3)))


def test_points_protocol_sees_a_collapse_onto_one_mode():
    data = load_dataset(ml_collections.ConfigDict({
        "name": "eight_gaussians", "data_dir": None, "manual_dir": None,
        "num_train": 4000, "num_test": 2000}))
    protocol = {"num_samples": 1000}
    real = data.arrays("train")["points"][:1000]
    good = sq.evaluate_samples(real, data, protocol, None, seed=0)
    assert good["classes_hit"] == 8 and good["class_kl"] < 0.02
    assert good["energy_distance"] < 3 * good["energy_distance_floor"] + 0.01
    # Every sample on the first mode's points: one class, KL = log 8.
    test = data.arrays("test")
    one_mode = test["points"][test["label"] == 0][:200]
    collapsed = sq.evaluate_samples(one_mode, data, protocol, None, seed=0)
    assert collapsed["classes_hit"] == 1
    assert collapsed["class_kl"] == pytest.approx(math.log(8), abs=0.05)
    assert collapsed["energy_distance"] > 10 * good["energy_distance"]
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        sq.evaluate_samples(np.zeros((10, 3)), data, protocol, None)
