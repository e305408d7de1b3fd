"""Which examples a run trains on: classes, labelled subsets, perturbed inputs.

Three ``config.data`` keys, all off by default, that any image experiment
takes without a change to its model or task (``genjax.train.run`` applies
them to whatever dataset it loads):

- ``classes="3"`` (or ``"0,1"``): only these labels, in every split. A
  one-class model (anomaly detection: the other digits are the anomalies)
  trains on one digit and evaluates its own likelihood on that digit's
  test images.
- ``examples_per_class=10``: a labelled subset of the training split, the
  first ``n`` of each class in a permutation drawn from ``subset_seed``
  (the low-data protocol of the augmentation study); the test split stays
  whole. The same seed always draws the same subset, so a generator and the
  classifier it augments see the same images and nothing else.
- ``perturb_rate=0.2``: every training pixel is replaced, with this
  probability, by a uniform random 8-bit level, freshly at every step
  (``PerturbedIterator``): the background model of Ren et al. 2019's
  likelihood ratio, which learns the population statistics (the background)
  but not the semantics. Evaluation sees clean images.
"""

from __future__ import annotations

import numpy as np

from genjax.data.registry import Dataset, DatasetError

KEYS = ("classes", "examples_per_class", "subset_seed", "perturb_rate")


def parse_classes(spec, num_classes: int | None, key: str = "config.data.classes"
                  ) -> tuple[int, ...]:
    """``"3"``, ``"0,1"`` or ``(0, 1)`` -> sorted labels; () for all.

    Raises:
      DatasetError: a label that is not an integer in ``[0, num_classes)``,
        or a dataset without labels.
    """
    if spec in (None, "", ()):
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(np.atleast_1d(spec))
    labels = []
    for item in items:
        try:
            labels.append(int(str(item).strip()))
        except ValueError:
            raise DatasetError(f"{key}={spec!r}: {item!r} is not a class label; pass "
                               f"integers separated by commas, e.g. 3 or 0,1") from None
    if num_classes is None:
        raise DatasetError(f"{key}={spec!r}: this dataset has no labels; leave it empty")
    bad = [c for c in labels if not 0 <= c < num_classes]
    if bad:
        raise DatasetError(f"{key}={spec!r}: label {bad[0]} is outside "
                           f"[0, {num_classes - 1}]")
    return tuple(sorted(set(labels)))


def _take(fields: dict, index: np.ndarray) -> dict:
    return {k: v[index] for k, v in fields.items()}


def labelled_subset(labels: np.ndarray, per_class: int, seed: int,
                    classes: tuple[int, ...] = ()) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of each class (of
    ``classes``, or of every class present), the first of each class in one
    permutation drawn from ``seed``.

    Raises:
      DatasetError: a class with fewer than ``per_class`` examples.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = []
    for c in classes or np.unique(labels):
        members = order[labels[order] == c]
        if len(members) < per_class:
            raise DatasetError(
                f"config.data.examples_per_class={per_class}: class {int(c)} has only "
                f"{len(members)} training examples; lower it")
        chosen.append(members[:per_class])
    return np.sort(np.concatenate(chosen))


def select(dataset, data_config):
    """``dataset`` restricted as ``data_config`` asks (see the module
    docstring); the dataset itself when every key is off.

    Raises:
      DatasetError: a bad value, named with its fix.
    """
    classes_spec = data_config.get("classes", "")
    per_class = int(data_config.get("examples_per_class", 0) or 0)
    rate = float(data_config.get("perturb_rate", 0.0) or 0.0)
    if not 0.0 <= rate <= 1.0:
        raise DatasetError(f"config.data.perturb_rate={rate}: a probability in [0, 1]")
    if rate and dataset.kind != "image":
        raise DatasetError(f"config.data.perturb_rate={rate}: {dataset.name!r} is a "
                           f"{dataset.kind} dataset; perturbation needs images")
    if per_class < 0:
        raise DatasetError(f"config.data.examples_per_class={per_class}: at least 1, "
                           f"or 0 for the whole training split")
    if not classes_spec and not per_class:
        return dataset
    if "label" not in dataset.element_spec:
        key = "classes" if classes_spec else "examples_per_class"
        raise DatasetError(f"config.data.{key}: {dataset.name!r} has no labels; "
                           f"leave it unset")
    classes = parse_classes(classes_spec, dataset.num_classes)
    splits = {}
    for split, fields in dataset.splits.items():
        if classes:
            fields = _take(fields, np.flatnonzero(np.isin(fields["label"], classes)))
        if per_class and split == "train":
            index = labelled_subset(fields["label"], per_class,
                                    int(data_config.get("subset_seed", 0) or 0), classes)
            fields = _take(fields, index)
        if not len(fields["label"]):
            raise DatasetError(f"config.data.classes={classes_spec!r}: the {split!r} "
                               f"split of {dataset.name!r} has none of these labels")
        splits[split] = fields
    parts = []
    if classes:
        parts.append(f"classes {','.join(map(str, classes))}")
    if per_class:
        parts.append(f"{per_class} per class (seed "
                     f"{int(data_config.get('subset_seed', 0) or 0)})")
    return Dataset(name=dataset.name, kind=dataset.kind, splits=splits,
                   element_spec=dataset.element_spec, num_classes=dataset.num_classes,
                   description=f"{dataset.description}; {', '.join(parts)}")


def perturb(images: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Each pixel (each channel value) replaced with probability ``rate`` by
    a uniform random 8-bit level in [0, 1]."""
    mask = rng.random(images.shape) < rate
    noise = rng.integers(0, 256, images.shape).astype(images.dtype) / np.float32(255.0)
    return np.where(mask, noise, images).astype(images.dtype)


class PerturbedIterator:
    """Wraps a training iterator: each batch's images perturbed
    (``perturb``) with noise drawn from ``(seed, process, step)`` alone, so a
    resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, iterator, rate: float, seed: int, process_index: int = 0):
        self._it = iterator
        self._rate = float(rate)
        self._seed = int(seed)
        self._process = int(process_index)

    def __iter__(self):
        return self

    def __next__(self):
        return self.next()

    def next(self) -> dict:
        step = self._it.step
        batch = dict(self._it.next())
        rng = np.random.default_rng([self._seed, 0x9E7, self._process, step])
        batch["image"] = perturb(np.asarray(batch["image"]), self._rate, rng)
        return batch

    @property
    def step(self) -> int:
        return self._it.step

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._it.set_state(state)
