"""The sample-quality protocol every model family reports.

``evaluate_samples(samples, dataset, protocol, cache_dir)`` judges images from
any generative model against the dataset's reference split with the dataset's
domain classifier (``classifier.py``) and, optionally, the FID Inception
network (``inception.py``):

- ``fd`` / ``kid``: Frechet distance (Heusel et al. 2017) and kernel distance
  (Binkowski et al. 2018) between the classifier features of the samples and
  of the reference split (the test set by default);
- ``fd_floor`` / ``kid_floor``: the same for a random subset of real images
  of the samples' size that the classifier never trained on (by default the
  train images it holds out, ``classifier.holdout_indices``), disjoint from
  the reference split: the value a perfect model would get (FD is biased
  upwards at finite sample sizes, so the floor is not 0). Real images the
  classifier fitted would sit closer to each other in its features than new
  images can, and make a floor no model could reach;
- ``classifier_score`` (the Inception-score formula with the domain
  classifier, Salimans et al. 2016) and ``classifier_score_data``, the same for
  the reference split's real images (the ceiling);
- ``classes_hit`` / ``class_kl``: mode coverage of the predicted classes;
- ``precision`` / ``recall`` (Kynkaanniemi et al. 2019, k = 3) and
  ``density`` / ``coverage`` (Naeem et al. 2020, k = 5) in the classifier's
  features, against as many reference images as samples, with their
  ``_floor`` values (real against real); present when there are more
  samples and floor images than either k;
- ``inception_fd`` / ``inception_fd_floor``: FID with Inception features, only
  when ``protocol.inception_weights`` names a weights file.

A dataset without labels (e.g. ``image_folder`` on a flat folder) has no
domain classifier and no classes. Its samples are judged with label-free
metrics in the features of a self-supervised encoder instead: the same
LeNet, trained on the train split (less the held-out floor images) to tell
which of four flips and rotations was applied to an image
(``classifier.SSL_RECIPE``), cached like the classifier. Their keys start
with ``ssl_``, naming those features:

- ``ssl_fd`` / ``ssl_fd_floor``, ``ssl_kid`` / ``ssl_kid_std`` /
  ``ssl_kid_floor``: as ``fd`` and ``kid`` above, in the encoder's features;
- ``ssl_precision`` / ``ssl_recall``: improved precision and recall
  (Kynkaanniemi et al. 2019) with k-nearest-neighbour balls
  (``protocol.precision_recall_k``, 3), against as many reference images as
  samples; ``ssl_precision_floor`` / ``ssl_recall_floor`` are the floor
  images' values (real against real: not 1 at finite sizes);
- ``ssl_pretext_accuracy``: the encoder's accuracy at telling the four
  transformations of each test image apart.

The class-based metrics (``classifier_score``, ``classes_hit``,
``class_kl``) are absent there; ``inception_fd`` is computed as above.

``check_data(dataset, protocol)`` refuses, before any training, what
``evaluate_samples`` would refuse about the data (a missing split, a floor
split equal to the reference, too few images to train the extractor or to
count neighbours).

Features of the reference and floor sets, and the floor metrics, depend only
on the dataset, the protocol and the seed; they are computed once per process
and reused by later evaluations (e.g. every evaluation during training).
"""

from __future__ import annotations

import logging
import os
import time
import weakref

import ml_collections
import numpy as np
from ml_collections import config_dict

from genjax.evaluate import classifier as classifier_lib
from genjax.evaluate import metrics

logger = logging.getLogger("genjax")


def default_protocol() -> ml_collections.ConfigDict:
    """The sample-quality protocol (an experiment's ``config.eval.sample_quality``).

    Keys:
      num_samples: samples a model draws for the final evaluation.
      num_samples_during_training: samples for the cheap evaluations during
        training (0 disables them).
      reference_split: the real images samples are compared with.
      floor_split: the split the floor subset (real images, as many as the
        samples) is drawn from: ``train`` means the train images held out
        of the domain classifier's training; another split is used whole
        and must differ from ``reference_split``.
      batch_size: images per classifier call.
      kid_subsets, kid_subset_size: KID's subsets (Binkowski et al. 2018).
      classifier_score_splits: splits of the classifier score (Salimans et al. 2016).
      min_class_fraction: a class is hit if its sample frequency is at least
        this fraction of its reference frequency.
      precision_recall_k: the neighbour that sets the balls of precision and
        recall (Kynkaanniemi et al. 2019).
      density_coverage_k: the neighbour that sets the real balls of density
        and coverage (Naeem et al. 2020; labelled datasets).
      inception_weights: an FID Inception-v3 ``.npz`` file (see
        ``genjax/evaluate/inception.py``), or None to skip the Inception FID.
    """
    return ml_collections.ConfigDict({
        "num_samples": 10_000,
        "num_samples_during_training": 1_000,
        "reference_split": "test",
        "floor_split": "train",
        "batch_size": 500,
        "kid_subsets": 100,
        "kid_subset_size": 1000,
        "classifier_score_splits": 10,
        "min_class_fraction": 0.1,
        "precision_recall_k": 3,
        "density_coverage_k": 5,
        "inception_weights": config_dict.placeholder(str),
    })


def _resolve_protocol(protocol) -> dict:
    """The protocol as a plain dict, defaults filled in, unknown keys refused."""
    values = default_protocol().to_dict()
    given = protocol.to_dict() if isinstance(protocol, ml_collections.ConfigDict) \
        else dict(protocol or {})
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ValueError(f"unknown sample-quality protocol keys {unknown}; "
                         f"valid keys: {sorted(values)}")
    values.update(given)
    for key in ("batch_size", "kid_subsets", "kid_subset_size", "classifier_score_splits",
                "precision_recall_k", "density_coverage_k"):
        if int(values[key]) < 1:
            raise ValueError(f"protocol {key}={values[key]} must be >= 1")
    if not 0.0 <= float(values["min_class_fraction"]):
        raise ValueError(f"protocol min_class_fraction={values['min_class_fraction']} "
                         f"must be >= 0")
    return values


def validate_protocol(protocol) -> None:
    """Checks an experiment's ``config.eval.sample_quality`` before training.

    Raises ValueError (one line naming the key and the fix) for unknown keys,
    out-of-range counts, or an ``inception_weights`` file that does not exist;
    the loop calls it before anything is written.
    """
    p = _resolve_protocol(protocol)
    for key in ("num_samples", "num_samples_during_training"):
        n = int(p[key])
        if n < 0 or n == 1:
            raise ValueError(
                f"eval.sample_quality.{key}={n}: use 0 (skip) or at least 2 samples")
    weights = p["inception_weights"]
    if weights and not os.path.isfile(os.path.expanduser(str(weights))):
        raise ValueError(
            f"eval.sample_quality.inception_weights={weights}: no such file; "
            "convert the FID Inception weights as genjax/evaluate/inception.py "
            "explains, or leave it unset to skip the Inception FID")


# Per dataset object (held weakly, so a dropped dataset frees its entries):
# {(absolute cache_dir or None, recipe kind): DomainClassifier}.
_CLASSIFIERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# Inception feature extractors by (class, weights path): loading the weights
# takes seconds.
_EXTRACTORS: dict = {}


def _recipe(dataset) -> dict:
    """The feature extractor's recipe: the domain classifier's for labelled
    data, the self-supervised encoder's otherwise."""
    return (classifier_lib.RECIPE if classifier_lib.has_labels(dataset)
            else classifier_lib.SSL_RECIPE)


def _classifier(dataset, cache_dir, recipe: dict | None = None):
    recipe = classifier_lib.RECIPE if recipe is None else recipe
    key = (None if cache_dir is None else os.path.abspath(os.path.expanduser(cache_dir)),
           classifier_lib.recipe_kind(recipe))
    per_dataset = _CLASSIFIERS.setdefault(dataset, {})
    if key not in per_dataset:
        per_dataset[key] = classifier_lib.get_classifier(dataset, cache_dir, recipe=recipe)
    return per_dataset[key]


# Entries that depend on the sample count and seed (floor features and
# metrics) are kept for this many (n, seed) pairs; a run normally uses two
# (the evaluations during training and the final one).
_MAX_FLOOR_ENTRIES = 8


def _cached(cache: dict, key, compute, *, per_seed: bool = False):
    """``cache[key]``, computed on first use. ``per_seed`` entries are evicted
    oldest first beyond ``_MAX_FLOOR_ENTRIES`` per kind."""
    if key not in cache:
        value = compute()
        if per_seed:
            order = cache.setdefault(("_order", key[0]), [])
            order.append(key)
            while len(order) > _MAX_FLOOR_ENTRIES:
                cache.pop(order.pop(0), None)
        cache[key] = value
    return cache[key]


class _Stats:
    """Gaussian statistics of a feature set, with the square root of the
    covariance computed once (it is the reference of many comparisons)."""

    def __init__(self, features: np.ndarray):
        self.mu, self.sigma = metrics.gaussian_statistics(features)
        self._root = None

    @property
    def root(self) -> np.ndarray:
        if self._root is None:
            self._root = metrics.psd_sqrt(self.sigma)
        return self._root

    def distance_to(self, other_features=None, other: "_Stats" = None) -> float:
        other = other if other is not None else _Stats(other_features)
        return metrics.frechet_distance_given_root(
            self.mu, self.sigma, self.root, other.mu, other.sigma)


def _check_samples(samples, dataset) -> np.ndarray:
    """Returns the samples as float32 ``[N, H, W, C]`` in [0, 1] or raises ValueError."""
    shape = tuple(dataset.element_spec["image"])
    expected = f"[N, {', '.join(map(str, shape))}]"
    samples = np.asarray(samples)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != shape:
        raise ValueError(
            f"samples have shape {samples.shape}, but dataset {dataset.name!r} images are "
            f"{shape}: pass float samples {expected} in [0, 1]")
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(
            f"samples are {samples.dtype}; pass float samples {expected} in [0, 1] "
            f"(divide uint8 pixels by 255)")
    n = samples.shape[0]
    if n < 2:
        raise ValueError(
            f"got {n} sample(s); the sample-quality metrics need at least 2 "
            f"(the covariance is undefined below that): pass more samples "
            f"(the protocol uses num_samples={default_protocol().num_samples})")
    finite = np.isfinite(samples)
    if not finite.all():
        bad_values = int(finite.size - np.count_nonzero(finite))
        bad_images = int(n - np.count_nonzero(finite.reshape((n, -1)).all(axis=1)))
        raise ValueError(
            f"samples hold {bad_values} non-finite values (NaN or inf) in {bad_images} "
            f"of {n} images; fix the model, or drop those images before evaluating")
    samples = samples.astype(np.float32, copy=False)
    outside = np.count_nonzero((samples < -1e-3) | (samples > 1.0 + 1e-3))
    if outside > 0.01 * samples.size:
        logger.warning(
            "genjax: %.1f%% of sample pixels lie outside [0, 1] (range [%g, %g]); "
            "they are clipped to [0, 1] (map e.g. tanh outputs to [0, 1] first)",
            100.0 * outside / samples.size, float(samples.min()), float(samples.max()))
    return np.clip(samples, 0.0, 1.0)


def _check_splits(dataset, p: dict, *, disjoint: bool) -> None:
    """The protocol's splits exist in ``dataset`` and, where the floor is
    judged against the reference (``disjoint``: images), differ."""
    for key in ("reference_split", "floor_split"):
        if p[key] not in dataset.splits:
            raise ValueError(
                f"eval.sample_quality.{key}={p[key]!r} is not a split of dataset "
                f"{dataset.name!r}; valid splits: {sorted(dataset.splits)}")
    if disjoint and p["floor_split"] == p["reference_split"]:
        raise ValueError(
            f"eval.sample_quality.floor_split={p['floor_split']!r} equals "
            f"reference_split: the floor must compare two disjoint sets of real "
            f"images; use floor_split='train' (the images the feature extractor "
            f"holds out)")


def _check_dataset(dataset, p: dict) -> None:
    if getattr(dataset, "kind", None) != "image":
        raise ValueError(f"sample-quality evaluation needs an image dataset; "
                         f"{dataset.name!r} is of kind {dataset.kind!r}")
    _check_splits(dataset, p, disjoint=True)


def floor_pool(dataset, floor_split: str) -> np.ndarray:
    """The real images the floor subset is drawn from: for ``train``, the
    train images the feature extractor (the domain classifier, or the
    self-supervised encoder of unlabelled data) never trained on; else the
    split."""
    images = dataset.arrays(floor_split)["image"]
    if floor_split == "train":
        return images[classifier_lib.holdout_indices(len(images), _recipe(dataset))]
    return images


def check_data(dataset, protocol) -> None:
    """Checks, before training, that ``protocol`` can judge samples of
    ``dataset``: what ``evaluate_samples`` would otherwise refuse after the
    whole run. Nothing is trained or read beyond the loaded arrays.

    Raises:
      ValueError: one line naming the ``eval.sample_quality`` key (or the
        data) and the fix.
    """
    p = _resolve_protocol(protocol)
    counts = {key: int(p[key]) for key in ("num_samples", "num_samples_during_training")
              if int(p[key]) > 0}
    if not counts:
        return
    skip = ("set eval.sample_quality.num_samples=0 and "
            "eval.sample_quality.num_samples_during_training=0 to skip the "
            "sample-quality metrics")
    kind = getattr(dataset, "kind", None)
    if kind not in ("image", "points"):
        raise ValueError(
            f"eval.sample_quality judges image or points samples; dataset "
            f"{dataset.name!r} is of kind {kind!r}: {skip}")
    _check_splits(dataset, p, disjoint=kind == "image")
    if kind == "points":
        return
    ref_split, floor_split = p["reference_split"], p["floor_split"]
    recipe = _recipe(dataset)
    num_train = dataset.num_examples("train") if "train" in dataset.splits else 0
    needed = classifier_lib.min_train_images(recipe)
    if "test" not in dataset.splits or num_train < needed:
        raise ValueError(
            f"the {classifier_lib.describe(recipe)} that judges samples trains on "
            f"the train split of dataset {dataset.name!r} and reports on its test "
            f"split; it needs at least {needed} train images, the dataset has "
            f"{num_train} (splits {sorted(dataset.splits)}): add images, or {skip}")
    num_ref = dataset.num_examples(ref_split)
    num_floor = len(floor_pool(dataset, floor_split))
    for what, size in ((f"reference split {ref_split!r}", num_ref),
                       (f"floor pool ({floor_split!r})", num_floor)):
        if size < 2:
            raise ValueError(
                f"eval.sample_quality: the {what} of dataset {dataset.name!r} has "
                f"{size} image(s), the distances need at least 2: add images, or {skip}")
    if classifier_lib.has_labels(dataset):
        return
    k = int(p["precision_recall_k"])
    for key, n in counts.items():
        smallest = min(n, num_ref, num_floor)
        if smallest <= k:
            raise ValueError(
                f"eval.sample_quality.{key}={n}: precision and recall with "
                f"precision_recall_k={k} need more than {k} samples, reference "
                f"images ({num_ref}) and floor images ({num_floor}); raise it, "
                f"lower eval.sample_quality.precision_recall_k, or add images")


def _floor_indices(num_floor: int, n: int, seed: int, salt: int = 0x5a17) -> np.ndarray:
    """The floor subset: ``min(n, num_floor)`` distinct indices drawn from
    ``seed`` (another ``salt``: another subset, e.g. of the reference)."""
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(num_floor, size=min(n, num_floor), replace=False))


def evaluate_samples(samples: np.ndarray, dataset, protocol, cache_dir: str | None, *,
                     seed: int = 0) -> dict[str, float]:
    """Judges ``samples`` against ``dataset`` with the sample-quality protocol.

    Args:
      samples: float ``[N, H, W, C]`` in [0, 1] (values outside are clipped),
        ``(H, W, C)`` the dataset's image shape, N >= 2. All N are used.
      dataset: an image ``Dataset``, labelled or not (see the module docstring).
      protocol: ``default_protocol()`` or a ConfigDict/dict overriding some of
        its keys.
      cache_dir: where the domain classifier (or the self-supervised
        encoder) is cached (``classifier.py``), or None not to cache it.
      seed: draws the floor subset and KID's subsets.

    Returns:
      Flat float metrics: ``classifier_test_accuracy``, ``fd``, ``fd_floor``,
      ``kid``, ``kid_std``, ``kid_floor``, ``classifier_score``,
      ``classifier_score_std``, ``classifier_score_data``, ``classes_hit``,
      ``class_kl``, ``num_samples``; ``precision``, ``recall``,
      ``density``, ``coverage`` and their ``_floor`` values when N and the
      floor set exceed both neighbour counts; and ``inception_fd`` and
      ``inception_fd_floor`` when ``protocol.inception_weights`` is set.
      The floor set has N images, or the whole floor split if that is smaller.
      For a dataset without labels: ``ssl_pretext_accuracy``, ``ssl_fd``,
      ``ssl_fd_floor``, ``ssl_kid``, ``ssl_kid_std``, ``ssl_kid_floor``,
      ``ssl_precision``, ``ssl_recall``, ``ssl_precision_floor``,
      ``ssl_recall_floor``, ``num_samples`` (and the Inception FID as above).

    Raises:
      ValueError: one line naming the bad value and the fix: samples of the
        wrong shape or dtype, non-finite samples, fewer than 2 samples, an
        unknown split or protocol key, too few images for precision and
        recall.
      genjax.evaluate.inception.InceptionWeightsError: for an unusable
        ``inception_weights`` file.
    """
    start = time.perf_counter()
    p = _resolve_protocol(protocol)
    if getattr(dataset, "kind", None) == "points":
        return evaluate_points(samples, dataset, p, seed=seed)
    _check_dataset(dataset, p)
    samples = _check_samples(samples, dataset)
    n = samples.shape[0]
    batch_size = int(p["batch_size"])
    ref_split, floor_split = p["reference_split"], p["floor_split"]
    kid_args = {"num_subsets": int(p["kid_subsets"]),
                "subset_size": int(p["kid_subset_size"]), "seed": seed}

    labelled = classifier_lib.has_labels(dataset)
    # The feature extractor: the domain classifier, or for unlabelled data
    # the self-supervised encoder (its "probabilities" are over the four
    # transformations and go unused).
    clf = _classifier(dataset, cache_dir, _recipe(dataset))
    cache = clf.feature_cache
    ref_images = dataset.arrays(ref_split)["image"]
    floor_images_all = floor_pool(dataset, floor_split)

    def floor_images():
        return floor_images_all[_floor_indices(len(floor_images_all), n, seed)]

    ref_features, ref_probs = _cached(
        cache, ("classifier", ref_split),
        lambda: clf.features_and_probs(ref_images, batch_size))
    ref_stats = _cached(cache, ("classifier_stats", ref_split), lambda: _Stats(ref_features))
    floor_features, _ = _cached(
        cache, ("floor_features", floor_split, n, seed),
        lambda: clf.features_and_probs(floor_images(), batch_size), per_seed=True)
    k = int(p["precision_recall_k"])
    # Precision and recall compare sets of one size (Kynkaanniemi et al.
    # 2019): as many reference images as samples.
    k_dc = int(p["density_coverage_k"])
    pr_reference = _cached(
        cache, ("pr_reference", ref_split, n, seed),
        lambda: ref_features[_floor_indices(len(ref_features), n, seed, salt=0x9e)],
        per_seed=True)
    # Labelled data reports the manifold metrics beside the class-based
    # ones when the sets are large enough for their neighbours (unlabelled
    # data refuses smaller sets in check_data: they are its main metrics).
    manifold = not labelled or min(n, len(pr_reference), len(floor_features)) > max(k, k_dc)

    def manifold_metrics(sample_features):
        precision, recall = metrics.precision_recall(
            real_features=pr_reference, sample_features=sample_features, k=k)
        if not labelled:
            return {"precision": precision, "recall": recall}
        density, coverage = metrics.density_coverage(
            real_features=pr_reference, sample_features=sample_features, k=k_dc)
        return {"precision": precision, "recall": recall,
                "density": density, "coverage": coverage}

    def floor_metrics():
        kid_floor, _ = metrics.kernel_distance(floor_features, ref_features, **kid_args)
        out = {"fd_floor": ref_stats.distance_to(floor_features), "kid_floor": kid_floor}
        if manifold:
            out.update({f"{key}_floor": value
                        for key, value in manifold_metrics(floor_features).items()})
        return out

    floor = _cached(cache, ("floor_metrics", ref_split, floor_split, n, seed,
                            kid_args["num_subsets"], kid_args["subset_size"], k, k_dc),
                    floor_metrics, per_seed=True)

    features, probs = clf.features_and_probs(samples, batch_size)
    kid, kid_std = metrics.kernel_distance(features, ref_features, **kid_args)
    distances = {
        "fd": ref_stats.distance_to(features),
        "fd_floor": floor["fd_floor"],
        "kid": kid,
        "kid_std": kid_std,
        "kid_floor": floor["kid_floor"],
    }
    if labelled:
        splits = min(int(p["classifier_score_splits"]), n)
        score_data = _cached(
            cache, ("classifier_score", ref_split, splits),
            lambda: metrics.classifier_score(ref_probs, min(splits, len(ref_probs)))[0])
        score, score_std = metrics.classifier_score(probs, splits)
        coverage = metrics.mode_coverage(probs, dataset.arrays(ref_split)["label"],
                                         clf.num_classes, float(p["min_class_fraction"]))
        results = {
            "classifier_test_accuracy": clf.test_accuracy,
            **distances,
            "classifier_score": score,
            "classifier_score_std": score_std,
            "classifier_score_data": score_data,
            "classes_hit": coverage["classes_hit"],
            "class_kl": coverage["class_kl"],
            "num_samples": n,
        }
        if manifold:
            results.update(manifold_metrics(features))
            results.update({key: value for key, value in floor.items()
                            if key.endswith("_floor") and key[:-6] in results})
    else:
        distances.update(manifold_metrics(features))
        distances.update(precision_floor=floor["precision_floor"],
                         recall_floor=floor["recall_floor"])
        results = {"ssl_pretext_accuracy": clf.test_accuracy,
                   **{f"ssl_{key}": value for key, value in distances.items()},
                   "num_samples": n}
    if p["inception_weights"]:
        results.update(_inception_fd(samples, floor_images, cache, p, ref_images, n, seed))
    logger.debug("genjax: evaluated %d samples in %.1f s", n, time.perf_counter() - start)
    return {key: float(value) for key, value in results.items()}


def evaluate_points(samples: np.ndarray, dataset, protocol, *,
                    seed: int = 0) -> dict[str, float]:
    """Judges samples of a points dataset (e.g. the 2-D toy distributions).

    ``energy_distance`` between the samples and the reference split (at most
    ``len(samples)`` reference points, drawn from ``seed``), beside
    ``energy_distance_floor``, the same for as many real points of the floor
    split. For a labelled dataset, each sample takes the label of its
    nearest reference point, and ``classes_hit`` / ``class_kl`` measure
    mode coverage as for images. Returns flat floats, with ``num_samples``.
    """
    p = _resolve_protocol(protocol)
    shape = tuple(dataset.element_spec["points"])
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or tuple(samples.shape[1:]) != shape or len(samples) < 2:
        raise ValueError(
            f"samples have shape {samples.shape}; dataset {dataset.name!r} needs "
            f"at least 2 points of shape {shape}: pass [N, {shape[0]}]")
    if not np.isfinite(samples).all():
        raise ValueError(
            f"samples hold {int(np.count_nonzero(~np.isfinite(samples)))} "
            "non-finite values; fix the model before evaluating")
    n = len(samples)
    reference = dataset.arrays(p["reference_split"])
    floor = dataset.arrays(p["floor_split"])["points"]
    rng = np.random.default_rng([seed, 0xE9])
    ref_idx = np.sort(rng.choice(len(reference["points"]),
                                 size=min(n, len(reference["points"])), replace=False))
    ref_points = reference["points"][ref_idx].astype(np.float64)
    floor_points = floor[_floor_indices(len(floor), n, seed)].astype(np.float64)
    results = {
        "energy_distance": metrics.energy_distance(samples, ref_points),
        "energy_distance_floor": metrics.energy_distance(floor_points, ref_points),
        "num_samples": n,
    }
    if "label" in reference and dataset.num_classes:
        labels = reference["label"][ref_idx]
        nearest = np.concatenate([
            np.argmin(((chunk[:, None, :] - ref_points[None]) ** 2).sum(-1), axis=1)
            for chunk in np.array_split(samples, max(1, n // 1024))])
        probs = np.eye(dataset.num_classes)[labels[nearest]]
        coverage = metrics.mode_coverage(probs, reference["label"],
                                         dataset.num_classes,
                                         float(p["min_class_fraction"]))
        results["classes_hit"] = coverage["classes_hit"]
        results["class_kl"] = coverage["class_kl"]
    return {key: float(value) for key, value in results.items()}


def _inception_fd(samples, floor_images, cache, p, ref_images, n, seed) -> dict:
    """``inception_fd`` and ``inception_fd_floor`` (Heusel et al. 2017's FID)."""
    # Imported here: the Inception network is only needed with weights.
    from genjax.evaluate.inception import InceptionFeatures

    path = os.path.abspath(os.path.expanduser(str(p["inception_weights"])))
    key = (InceptionFeatures, path)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = InceptionFeatures(path)
    extractor = _EXTRACTORS[key]
    ref_split, floor_split = p["reference_split"], p["floor_split"]
    ref = _cached(cache, ("inception_stats", key, ref_split),
                  lambda: _Stats(extractor(ref_images)))
    floor_fd = _cached(
        cache, ("inception_fd_floor", key, ref_split, floor_split, n, seed),
        lambda: ref.distance_to(extractor(floor_images())), per_seed=True)
    return {"inception_fd": ref.distance_to(extractor(samples)),
            "inception_fd_floor": floor_fd}
