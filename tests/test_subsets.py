"""Which examples a run trains on: ``config.data.classes``,
``examples_per_class`` and ``perturb_rate`` (genjax.data.subsets)."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from genjax import data as data_lib
from genjax.data import subsets


def _dataset(n_train=60, n_test=30, num_classes=3):
    rng = np.random.default_rng(0)

    def split(n):
        return {"image": rng.random((n, 4, 4, 1), dtype=np.float32),
                "label": (np.arange(n) % num_classes).astype(np.int32)}

    return data_lib.Dataset(name="toy", kind="image",
                            splits={"train": split(n_train), "test": split(n_test)},
                            element_spec={"image": (4, 4, 1), "label": ()},
                            num_classes=num_classes, description="toy")


def _data_config(**kw):
    c = ml_collections.ConfigDict({"name": "toy", "classes": "", "examples_per_class": 0,
                                   "subset_seed": 0, "perturb_rate": 0.0})
    c.update(kw)
    return c


def test_everything_off_returns_the_dataset_itself():
    ds = _dataset()
    assert subsets.select(ds, _data_config()) is ds


def test_classes_keep_only_those_labels_in_every_split():
    ds = _dataset()
    out = subsets.select(ds, _data_config(classes="2,0"))
    for split in ("train", "test"):
        labels = out.arrays(split)["label"]
        assert set(labels) == {0, 2}
        kept = np.isin(ds.arrays(split)["label"], [0, 2])
        np.testing.assert_array_equal(out.arrays(split)["image"],
                                      ds.arrays(split)["image"][kept])
    assert out.num_classes == 3 and "classes 0,2" in out.description


def test_examples_per_class_draws_a_seeded_balanced_training_subset():
    ds = _dataset()
    a = subsets.select(ds, _data_config(examples_per_class=4, subset_seed=1))
    b = subsets.select(ds, _data_config(examples_per_class=4, subset_seed=1))
    c = subsets.select(ds, _data_config(examples_per_class=4, subset_seed=2))
    labels = a.arrays("train")["label"]
    assert np.bincount(labels).tolist() == [4, 4, 4]
    np.testing.assert_array_equal(a.arrays("train")["image"], b.arrays("train")["image"])
    assert not np.array_equal(a.arrays("train")["image"], c.arrays("train")["image"])
    # The test split stays whole; the subset's images come from the training split.
    assert a.num_examples("test") == 30
    train = ds.arrays("train")["image"].reshape(60, -1)
    for image in a.arrays("train")["image"].reshape(12, -1):
        assert (train == image).all(axis=1).any()
    # Selecting again keeps the same subset.
    again = subsets.select(a, _data_config(examples_per_class=4, subset_seed=1))
    np.testing.assert_array_equal(again.arrays("train")["image"], a.arrays("train")["image"])
    # A larger subset holds the smaller one's examples only where the same
    # permutation puts them first: the first 4 of each class are among the first 8.
    big = subsets.select(ds, _data_config(examples_per_class=8, subset_seed=1))
    big_rows = big.arrays("train")["image"].reshape(24, -1)
    for image in a.arrays("train")["image"].reshape(12, -1):
        assert (big_rows == image).all(axis=1).any()


@pytest.mark.parametrize("kw, message", [
    ({"classes": "7"}, "label 7 is outside [0, 2]"),
    ({"classes": "a"}, "'a' is not a class label"),
    ({"examples_per_class": 50}, "class 0 has only 20 training examples"),
    ({"examples_per_class": -1}, "at least 1"),
    ({"perturb_rate": 1.5}, "a probability in [0, 1]"),
])
def test_bad_values_are_one_line_errors_naming_them(kw, message):
    with pytest.raises(data_lib.DatasetError, match=None) as e:
        subsets.select(_dataset(), _data_config(**kw))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_perturbation_replaces_about_rate_of_the_pixels_with_8bit_levels():
    images = np.full((200, 8, 8, 1), 0.5, np.float32)
    out = subsets.perturb(images, 0.25, np.random.default_rng(0))
    changed = out != 0.5
    assert abs(changed.mean() - 0.25 * 255 / 256) < 0.01
    levels = out[changed] * 255.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


def test_perturbed_iterator_is_a_function_of_the_step_and_resumes():
    ds = _dataset()
    make = lambda: subsets.PerturbedIterator(  # noqa: E731
        data_lib.TrainIterator(ds.arrays("train"), 8, seed=0), 0.3, seed=5)
    it = make()
    batches = [it.next() for _ in range(3)]
    state = it.get_state()
    fourth = it.next()
    clean = data_lib.TrainIterator(ds.arrays("train"), 8, seed=0)
    clean_batches = [clean.next() for _ in range(3)]
    for b, c in zip(batches, clean_batches):
        np.testing.assert_array_equal(b["label"], c["label"])
        assert 0.1 < (b["image"] != c["image"]).mean() < 0.5
    resumed = make()
    resumed.set_state(state)
    np.testing.assert_array_equal(resumed.next()["image"], fourth["image"])
    assert not np.array_equal(batches[0]["image"], batches[1]["image"])
