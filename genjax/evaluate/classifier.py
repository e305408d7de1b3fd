"""The domain classifier: a small LeNet trained once per dataset, then cached.

Sample-quality metrics need a feature space and class probabilities. For
natural images that is Inception-v3 (``inception.py``); for 8x8 digits, MNIST
or 32x32 toy sets a classifier trained on the dataset itself is the standard
substitute (e.g. the MNIST-classifier FID and Inception-score variants in
Lucic et al. 2018, "Are GANs Created Equal?", arXiv:1711.10337). Every model
family judges its samples with the same classifier, so its numbers are
comparable across families and runs.

The classifier trains on the train split less every ``holdout_every``-th
image; those held-out images are the sample-quality floor's real images, so
that the floor, like the samples and the test split, is judged on features
the classifier did not fit.

A dataset without labels gets the same LeNet as a self-supervised encoder
(``SSL_RECIPE``, kind ``transformations``): it learns to tell which of four
transformations was applied to a training image (the identity, a horizontal
flip, a vertical flip, a 180-degree rotation; every image shape allows all
four), a pretext task in the spirit of RotNet (Gidaris et al. 2018,
"Unsupervised Representation Learning by Predicting Image Rotations",
arXiv:1803.07728). Its features judge samples where no class exists. The
recipe's ``kind`` is the only difference: the same training loop, held-out
images, fingerprint and cache serve both.

The training recipe (``RECIPE``) is pinned: it uses its own fixed seed, never
the experiment seed, so every experiment on a dataset gets the same classifier.
The trained parameters are cached on disk under
``<cache_dir>/genjax_classifiers/<dataset>-<fingerprint>/`` (``params.msgpack``
and ``meta.json``). The fingerprint hashes the train and test arrays and the
recipe, so other data or another recipe never reuses a cache; the directory is
written under a temporary name and renamed into place, so an interrupted write
never leaves a cache that loads.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any, Callable

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

logger = logging.getLogger("genjax")

CACHE_SUBDIR = "genjax_classifiers"
PARAMS_FILE = "params.msgpack"
META_FILE = "meta.json"

# The pinned training protocol. Changing any value changes the fingerprint, so
# old caches are simply not found (never silently reused).
RECIPE: dict[str, Any] = {
    "version": 2,
    "model": {"conv_features": [16, 32], "kernel_size": 5, "feature_dim": 128},
    "optimizer": "adam",
    "learning_rate": 2e-3,
    "warmup_fraction": 0.05,  # Linear warm-up, then cosine decay to 0.
    "batch_size": 128,
    "epochs": 3,
    # Small datasets (digits: 11 steps per epoch) get more epochs, up to this
    # many steps in total.
    "min_steps": 500,
    "seed": 20_240_517,
    # Every 6th training image (index % 6 == 5; 10,000 of MNIST's 60,000) is
    # held out of the classifier's training, so that the sample-quality
    # floor compares real images whose features are out of sample, as the
    # test split's are (sample_quality.py).
    "holdout_every": 6,
}

# The labels a recipe trains on (its ``kind``; a recipe without one, such as
# RECIPE, is ``classes``): the dataset's classes, or which of TRANSFORMATIONS
# was applied to the image.
KINDS = ("classes", "transformations")
TRANSFORMATIONS = ("identity", "horizontal_flip", "vertical_flip", "rotate_180")

# The self-supervised encoder of unlabelled datasets: RECIPE with the
# transformations as labels (the same holdout, so the same floor images).
SSL_RECIPE: dict[str, Any] = {**RECIPE, "kind": "transformations"}


def recipe_kind(recipe: dict) -> str:
    """``recipe``'s kind of labels (``KINDS``)."""
    kind = recipe.get("kind", "classes")
    if kind not in KINDS:
        raise ValueError(f"recipe kind {kind!r}; valid: {', '.join(KINDS)}")
    return kind


def describe(recipe: dict) -> str:
    """What a LeNet of ``recipe`` is called in messages."""
    return ("domain classifier" if recipe_kind(recipe) == "classes"
            else "self-supervised encoder")


def num_outputs(recipe: dict, dataset) -> int:
    """The LeNet's logits: the dataset's classes, or the transformations."""
    if recipe_kind(recipe) == "classes":
        return int(dataset.num_classes)
    return len(TRANSFORMATIONS)


def transform_images(images_BxHxWxC, transformation_B):
    """Applies ``TRANSFORMATIONS[t]`` to each image: 1 and 3 reverse the
    width axis, 2 and 3 the height axis (3: both, a 180-degree rotation).
    Works on numpy and JAX arrays alike."""
    xp = jnp if isinstance(images_BxHxWxC, jax.Array) else np
    t = transformation_B[:, None, None, None]
    x = xp.where((t == 1) | (t == 3), images_BxHxWxC[:, :, ::-1], images_BxHxWxC)
    return xp.where((t == 2) | (t == 3), x[:, ::-1], x)


def min_train_images(recipe: dict | None = None) -> int:
    """The smallest train split whose images, less the held-out ones, fill
    one training batch of ``recipe``."""
    recipe = RECIPE if recipe is None else recipe
    n = int(recipe["batch_size"])
    while len(training_indices(n, recipe)) < int(recipe["batch_size"]):
        n += 1
    return n


def holdout_indices(num_train: int, recipe: dict | None = None) -> np.ndarray:
    """The train-split indices the classifier never trains on (sorted)."""
    every = int((RECIPE if recipe is None else recipe)["holdout_every"])
    return np.arange(every - 1, num_train, every)


def training_indices(num_train: int, recipe: dict | None = None) -> np.ndarray:
    """The train-split indices the classifier trains on (sorted): all but
    ``holdout_indices``."""
    every = int((RECIPE if recipe is None else recipe)["holdout_every"])
    index = np.arange(num_train)
    return index[index % every != every - 1]


class ClassifierError(ValueError):
    """A user-facing problem with the classifier's input; one line saying what to do."""


# --------------------------------------------------------------------------
# The model.


def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pool, stride 2, dropping an odd last row/column (like 'VALID').

    Written as a reshape + max: its gradient is an elementwise select, while
    the gradient of ``nn.max_pool`` (``lax.reduce_window``) is a
    select-and-scatter that XLA on CPU runs about 7x slower.
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return jnp.max(x.reshape((b, h // 2, 2, w // 2, 2, c)), axis=(2, 4))


class LeNet(nn.Module):
    """A LeNet-5-style convnet (LeCun et al. 1998) that also returns its features.

    conv(k x k, 'SAME') -> ReLU -> 2x2 max pool -> conv(k x k) -> ReLU -> 2x2
    max pool -> dense(feature_dim) -> ReLU (the features) -> dense(num_classes)
    (the logits). As in LeNet-5, the second convolution is k x k 'VALID'
    (28x28 MNIST: 14 -> 10 -> pool 5; 32x32: 16 -> 12 -> pool 6); on feature
    maps smaller than 2k it is 3x3 'SAME' so that 8x8 digits work too
    (8 -> pool 4 -> 4 -> pool 2).

    Input: float ``[N, H, W, C]`` in [0, 1], H, W >= 4, any C.
    Output: ``(logits [N, num_classes], features [N, feature_dim])``.
    """

    num_classes: int
    conv_features: tuple[int, int] = (16, 32)
    kernel_size: int = 5
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim != 4 or min(x.shape[1], x.shape[2]) < 4:
            raise ValueError(f"LeNet expects images [N, H, W, C] with H, W >= 4, "
                             f"got shape {x.shape}")
        k = (self.kernel_size, self.kernel_size)
        x = x * 2.0 - 1.0
        x = nn.Conv(self.conv_features[0], k, padding="SAME", name="conv1")(x)
        x = _max_pool_2x2(nn.relu(x))
        if min(x.shape[1], x.shape[2]) >= 2 * self.kernel_size:
            x = nn.Conv(self.conv_features[1], k, padding="VALID", name="conv2")(x)
        else:
            # A kernel as large as the feature map is mostly padding, and XLA on
            # CPU lowers it to a slow generic convolution: use 3x3 there.
            x = nn.Conv(self.conv_features[1], (3, 3), padding="SAME", name="conv2")(x)
        x = _max_pool_2x2(nn.relu(x))
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.feature_dim, name="features")(x))
        logits = nn.Dense(self.num_classes, name="logits")(features)
        return logits, features


def _make_model(recipe: dict, num_classes: int) -> LeNet:
    m = recipe["model"]
    return LeNet(num_classes=num_classes, conv_features=tuple(m["conv_features"]),
                 kernel_size=int(m["kernel_size"]), feature_dim=int(m["feature_dim"]))


# --------------------------------------------------------------------------
# The trained classifier.


class DomainClassifier:
    """A trained LeNet: features and class probabilities of images.

    Attributes:
      kind: the labels it learned (``KINDS``): the dataset's classes, or
        (the self-supervised encoder) the transformations.
      test_accuracy: accuracy on the dataset's test split (for the encoder:
        at telling the four transformations of each test image apart).
      feature_dim: F, the width of the feature layer.
      num_classes: K (4 for the encoder).
      image_shape: ``(H, W, C)`` it was trained on.
      fingerprint: the hash identifying data + recipe (see ``fingerprint``).
      meta: the ``meta.json`` dict (test_accuracy, recipe, fingerprint,
        shapes, date, training seconds).
      path: the cache directory it was loaded from or saved to, or None.
    """

    def __init__(self, params, meta: dict, path: str | None = None):
        self.meta = meta
        self.path = path
        self.num_classes = int(meta["num_classes"])
        self.image_shape = tuple(meta["image_shape"])
        self.fingerprint = str(meta["fingerprint"])
        self.test_accuracy = float(meta["test_accuracy"])
        self.kind = recipe_kind(meta["recipe"])
        self.model = _make_model(meta["recipe"], self.num_classes)
        self.feature_dim = int(self.model.feature_dim)
        self.params = jax.device_put(params)
        model = self.model
        # One jitted function; it compiles once per batch size.
        self._apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
        # Features of whole splits, reused across evaluations (sample_quality.py).
        self.feature_cache: dict = {}

    def features_and_probs(self, images: np.ndarray,
                           batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(features float64 [N, F], probs float64 [N, K])`` of ``images``.

        ``images``: float ``[N, H, W, C]`` in [0, 1] with ``(H, W, C)`` the
        training image shape. Runs in batches of ``min(batch_size, N)``, the last
        one zero-padded, so one compiled function serves every call of a size.
        The softmax is taken in float64 on the host, so small probabilities do
        not underflow to 0 as they would in float32.
        """
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ClassifierError(
                f"the classifier expects images [N, {', '.join(map(str, self.image_shape))}], "
                f"got shape {images.shape}")
        n = images.shape[0]
        if n == 0:
            return (np.zeros((0, self.feature_dim), np.float64),
                    np.zeros((0, self.num_classes), np.float64))
        batch_size = max(1, min(int(batch_size), n))
        logits_out, features_out = [], []
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size].astype(np.float32, copy=False)
            if batch.shape[0] < batch_size:
                pad = np.zeros((batch_size - batch.shape[0],) + batch.shape[1:], np.float32)
                batch = np.concatenate([batch, pad], axis=0)
            logits, features = self._apply(self.params, batch)
            logits_out.append(logits)
            features_out.append(features)
        logits = np.concatenate([np.asarray(a) for a in jax.device_get(logits_out)])[:n]
        features = np.concatenate([np.asarray(a) for a in jax.device_get(features_out)])[:n]
        logits = logits.astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return features.astype(np.float64), probs

    def accuracy(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
        """Fraction of ``images`` whose argmax prediction equals ``labels``."""
        _, probs = self.features_and_probs(images, batch_size)
        return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))

    def transformation_accuracy(self, images: np.ndarray, batch_size: int = 500) -> float:
        """The encoder's accuracy over all four transformations of each image."""
        correct = 0.0
        for t in range(len(TRANSFORMATIONS)):
            ids = np.full((len(images),), t, np.int32)
            correct += self.accuracy(transform_images(np.asarray(images), ids), ids,
                                     batch_size)
        return correct / len(TRANSFORMATIONS)

    def test_accuracy_on(self, images: np.ndarray, labels: np.ndarray | None) -> float:
        """``accuracy`` for a classifier, ``transformation_accuracy`` for the encoder."""
        if self.kind == "classes":
            return self.accuracy(images, labels)
        return self.transformation_accuracy(images)


# --------------------------------------------------------------------------
# Fingerprint and cache.


def has_labels(dataset) -> bool:
    """Whether ``dataset`` has class labels (a ``label`` field and classes)."""
    return "label" in dataset.element_spec and bool(dataset.num_classes)


def _training_splits(dataset, recipe: dict) -> dict[str, tuple[np.ndarray, Any]]:
    """``{'train': (images, labels), 'test': (...)}`` (labels None for the
    encoder, which makes its own) or ClassifierError."""
    if getattr(dataset, "kind", None) != "image":
        raise ClassifierError(
            f"the {describe(recipe)} needs an image dataset; {dataset.name!r} is of "
            f"kind {getattr(dataset, 'kind', None)!r}")
    classes = recipe_kind(recipe) == "classes"
    if classes and not has_labels(dataset):
        raise ClassifierError(
            f"dataset {dataset.name!r} has no labels; the domain classifier (and so "
            f"the class-based sample-quality metrics and mode coverage) needs a "
            f"labelled dataset: use one with a 'label' field, or the "
            f"self-supervised encoder (SSL_RECIPE)")
    out = {}
    for split in ("train", "test"):
        fields = dataset.arrays(split)
        out[split] = (fields["image"], fields["label"] if classes else None)
    return out


def fingerprint(dataset, recipe: dict | None = None) -> str:
    """A 16-hex-digit hash of the train and test arrays (bytes, dtypes, shapes;
    the labels only where the recipe learns them), the number of outputs and
    the training recipe."""
    recipe = RECIPE if recipe is None else recipe
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": recipe, "num_classes": num_outputs(recipe, dataset)},
                        sort_keys=True).encode())
    for split, (images, labels) in sorted(_training_splits(dataset, recipe).items()):
        for field, array in (("image", images), ("label", labels)):
            if array is None:
                continue
            array = np.ascontiguousarray(array)
            h.update(f"|{split}/{field}/{array.dtype.str}/{array.shape}|".encode())
            h.update(memoryview(array).cast("B"))
    return h.hexdigest()[:16]


def cache_path(cache_dir: str, dataset, fp: str | None = None,
               recipe: dict | None = None) -> str:
    """``<cache_dir>/genjax_classifiers/<dataset name>-<fingerprint>``, or
    ``<dataset name>-ssl-<fingerprint>`` for the self-supervised encoder."""
    recipe = RECIPE if recipe is None else recipe
    fp = fingerprint(dataset, recipe) if fp is None else fp
    tag = "" if recipe_kind(recipe) == "classes" else "ssl-"
    return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)),
                        CACHE_SUBDIR, f"{dataset.name}-{tag}{fp}")


def _param_shapes(model: LeNet, image_shape: tuple) -> dict:
    """The parameter tree of ``model`` as nested dicts of shape lists (no compute)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    return jax.tree_util.tree_map(lambda a: list(a.shape), abstract["params"])


def _load(path: str, fp: str, recipe: dict, dataset) -> DomainClassifier:
    """Loads the cache at ``path``; raises ValueError/OSError if it is not valid."""
    with open(os.path.join(path, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict):
        raise ValueError("meta.json is not a JSON object")
    image_shape = list(dataset.element_spec["image"])
    expected = {"fingerprint": fp, "recipe": recipe, "image_shape": image_shape,
                "num_classes": num_outputs(recipe, dataset)}
    for key, value in expected.items():
        if meta.get(key) != value:
            raise ValueError(f"meta.json has {key}={meta.get(key)!r}, expected {value!r}")
    with open(os.path.join(path, PARAMS_FILE), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != meta.get("params_sha256"):
        raise ValueError(f"{PARAMS_FILE} does not match the checksum in meta.json")
    params = flax.serialization.msgpack_restore(data)
    model = _make_model(recipe, num_outputs(recipe, dataset))
    shapes = jax.tree_util.tree_map(lambda a: list(np.shape(a)), params)
    if shapes != _param_shapes(model, tuple(image_shape)):
        raise ValueError(f"{PARAMS_FILE} holds parameters of other shapes")
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
    return DomainClassifier(params, meta, path)


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save(path: str, params, meta: dict) -> dict:
    """Writes the cache directory atomically and returns the meta written
    (with the parameters' checksum); raises OSError on failure."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    old = None
    try:
        data = flax.serialization.to_bytes(params)
        meta = {**meta, "params_sha256": hashlib.sha256(data).hexdigest()}
        _fsync_write(os.path.join(tmp, PARAMS_FILE), data)
        _fsync_write(os.path.join(tmp, META_FILE),
                     json.dumps(meta, indent=2, sort_keys=True).encode())
        if os.path.lexists(path):
            # A directory cannot be renamed over a non-empty one: move the bad
            # cache aside first; readers see no cache in between, never half a one.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
            os.rename(path, os.path.join(old, "cache"))
        os.rename(tmp, path)
        tmp = None
        return meta
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------
# Training.


def _num_steps(num_train: int, recipe: dict) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)``: at least ``epochs`` and ``min_steps`` steps."""
    batch = int(recipe["batch_size"])
    if num_train < batch:
        raise ClassifierError(
            f"the {describe(recipe)} needs at least {batch} training images, the "
            f"train split has {num_train} besides the held-out ones; it needs at "
            f"least {min_train_images(recipe)} images")
    steps_per_epoch = num_train // batch
    epochs = max(int(recipe["epochs"]),
                 math.ceil(int(recipe["min_steps"]) / steps_per_epoch))
    return epochs, steps_per_epoch


def train_classifier(dataset, recipe: dict | None = None,
                     log: Callable[[str], None] | None = None):
    """Trains the LeNet of ``recipe`` on ``dataset``'s train split, less the
    images held out for the sample-quality floor (``holdout_indices``).

    A recipe of kind ``classes`` learns the dataset's labels; one of kind
    ``transformations`` (the self-supervised encoder) learns which of
    ``TRANSFORMATIONS`` was applied to each image of a batch, drawn
    uniformly per image and step from the recipe's seed.

    Returns:
      ``(params as numpy, meta)``, ``meta`` holding test_accuracy (on the test
      split), the recipe, fingerprint, shapes, date and training seconds.
    """
    recipe = RECIPE if recipe is None else recipe
    info = log or logger.info
    name = describe(recipe)
    transformations = recipe_kind(recipe) == "transformations"
    splits = _training_splits(dataset, recipe)
    keep = training_indices(len(splits["train"][0]), recipe)
    train_images = splits["train"][0][keep]
    train_labels = None if transformations else splits["train"][1][keep]
    num_train = len(train_images)
    num_classes = num_outputs(recipe, dataset)
    model = _make_model(recipe, num_classes)
    image_shape = tuple(train_images.shape[1:])
    epochs, steps_per_epoch = _num_steps(num_train, recipe)
    total_steps = epochs * steps_per_epoch
    batch = int(recipe["batch_size"])

    start = time.perf_counter()
    key = jax.random.key(int(recipe["seed"]))
    params = jax.jit(model.init)(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=float(recipe["learning_rate"]),
        warmup_steps=max(1, int(recipe["warmup_fraction"] * total_steps)),
        decay_steps=total_steps, end_value=0.0)
    if recipe["optimizer"] != "adam":
        raise ValueError(f"recipe optimizer {recipe['optimizer']!r} is not 'adam'")
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    images = jax.device_put(np.asarray(train_images, np.float32))
    labels = None if transformations else jax.device_put(np.asarray(train_labels, np.int32))

    def loss_fn(p, x, y):
        logits, _ = model.apply({"params": p}, x)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)
        return loss, correct

    # One jitted call per step. (A lax.scan over an epoch would save the Python
    # dispatch, but XLA on CPU runs the convolutions inside a loop about 8x
    # slower.) The train set lives on the device; a step gathers its batch
    # (and the encoder transforms it: the labels are the transformations).
    @jax.jit
    def train_step(p, s, all_images, all_labels, idx, transformation):
        x = jnp.take(all_images, idx, axis=0)
        if transformation is None:
            y = jnp.take(all_labels, idx, axis=0)
        else:
            x, y = transform_images(x, transformation), transformation
        (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, correct

    rng = np.random.default_rng(int(recipe["seed"]))
    # Its own stream, so that the classifier's batches do not depend on it.
    transformation_rng = np.random.default_rng([int(recipe["seed"]), 0x55]) \
        if transformations else None
    log_every = max(1, math.ceil(epochs / 10))
    info(f"genjax: training the {dataset.name} {name} "
         f"({epochs} epochs x {steps_per_epoch} steps of {batch}, {num_train} images)")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(num_train)[: steps_per_epoch * batch]
        order = order.reshape((steps_per_epoch, batch)).astype(np.int32)
        drawn = (transformation_rng.integers(0, len(TRANSFORMATIONS), order.shape,
                                             dtype=np.int32)
                 if transformations else [None] * len(order))
        losses, correct = [], []
        for idx, transformation in zip(order, drawn):
            params, opt_state, loss, num_correct = train_step(
                params, opt_state, images, labels, idx, transformation)
            losses.append(loss)
            correct.append(num_correct)
        if epoch % log_every == 0 or epoch == epochs:
            loss = float(np.mean(jax.device_get(losses)))
            accuracy = float(np.sum(jax.device_get(correct))) / float(order.size)
            info(f"genjax: {name.split()[-1]} epoch {epoch}/{epochs}: loss {loss:.4f}, "
                 f"train accuracy {accuracy:.4f}, {time.perf_counter() - start:.1f} s")
    params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    del images, labels
    train_seconds = time.perf_counter() - start

    meta = {
        "dataset": dataset.name,
        "kind": recipe_kind(recipe),
        "fingerprint": fingerprint(dataset, recipe),
        "recipe": recipe,
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "feature_dim": int(model.feature_dim),
        "num_train": int(num_train),
        "num_test": int(dataset.num_examples("test")),
        "epochs": epochs,
        "steps": total_steps,
        "train_seconds": round(train_seconds, 2),
        "test_accuracy": 0.0,  # Filled in below.
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax_version": jax.__version__,
    }
    classifier = DomainClassifier(params, meta)
    meta["test_accuracy"] = classifier.test_accuracy_on(*splits["test"])
    info(f"genjax: {dataset.name} {name}: test accuracy "
         f"{meta['test_accuracy']:.4f}, trained in {train_seconds:.1f} s")
    return params, meta


def get_classifier(dataset, cache_dir: str | None, *,
                   log: logging.Logger | Callable[[str], None] | None = None,
                   recipe: dict | None = None) -> DomainClassifier:
    """Returns ``dataset``'s domain classifier (or, with ``recipe=SSL_RECIPE``,
    its self-supervised encoder), loaded from ``cache_dir`` or trained.

    Args:
      dataset: an image ``Dataset``, labelled unless ``recipe`` is of kind
        ``transformations``; trains on ``splits['train']`` and reports
        accuracy on ``splits['test']``.
      cache_dir: where ``genjax_classifiers/`` lives (e.g. the TFDS data_dir),
        or None for no caching. A corrupt or unreadable cache is retrained and
        overwritten with a warning; a cache_dir that cannot be written costs
        only the caching (warning).
      log: where progress lines go: a ``logging.Logger``, a ``print``-like
        callable, or None for ``logging.getLogger("genjax")``. Warnings always
        go to the ``genjax`` logger too.
      recipe: the training recipe, ``RECIPE`` by default.

    Raises:
      ClassifierError (a ValueError): for a dataset without images, or
        without labels where the recipe learns classes.
    """
    recipe = RECIPE if recipe is None else recipe
    name = describe(recipe)
    if isinstance(log, logging.Logger):
        info, extra_warn = log.info, (log.warning if log is not logger else None)
    elif log is None:
        info, extra_warn = logger.info, None
    else:
        info, extra_warn = log, (lambda message: log(f"warning: {message}"))

    def warn(message: str) -> None:
        logger.warning(message)
        if extra_warn is not None:
            extra_warn(message)

    _training_splits(dataset, recipe)  # Fails fast, before hashing, for unlabelled data.
    fp = fingerprint(dataset, recipe)
    path = cache_path(cache_dir, dataset, fp, recipe) if cache_dir is not None else None
    if path is not None and os.path.lexists(path):
        try:
            classifier = _load(path, fp, recipe, dataset)
        except Exception as e:  # pylint: disable=broad-except
            # Whatever is wrong with the files (truncated, edited, another
            # format), a bad cache must cost a retraining, never the run.
            warn(f"genjax: ignoring the unreadable {name} cache {path} "
                 f"({type(e).__name__}: {e}); retraining it")
        else:
            info(f"genjax: loaded the {dataset.name} {name} from {path} "
                 f"(test accuracy {classifier.test_accuracy:.4f})")
            return classifier
    params, meta = train_classifier(dataset, recipe, log=info)
    if path is not None:
        try:
            meta = _save(path, params, meta)
        except OSError as e:
            warn(f"genjax: could not cache the {name} in {path} ({e}); "
                 f"continuing with the freshly trained one")
            path = None
        else:
            info(f"genjax: cached the {dataset.name} {name} in {path}")
    return DomainClassifier(params, meta, path)
