"""Tests of genjax.data: datasets, MNIST preparation from idx files, the pipeline.

Offline and fast: the only large work is preparing the real MNIST idx files
once (module fixture, ~20 s); every failure case uses small synthetic files.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np
import pytest
from conftest import data_config, needs_data, pairs
from PIL import Image

import genjax.data as gd
from genjax.data import idx, images, tfds_prepare
from genjax.data import registry as registry_lib

MNIST_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SMALL_COUNTS = {"train": 6, "test": 4}

needs_mnist = needs_data(
    all(
        (MNIST_DIR / f"{stem}.gz").is_file()
        for pair in idx.IDX_FILES.values()
        for stem in pair
    ),
    f"the MNIST idx files are not in {MNIST_DIR}",
)


# --------------------------------------------------------------------------
# Registry and Dataset.


def test_list_datasets_has_all_builtins():
    rows = {name: kind for name, kind, _ in gd.list_datasets()}
    assert rows == {
        "digits": "image",
        "mnist": "image",
        "fashion_mnist": "image",
        "cifar10": "image",
        "shapes32": "image",
        "image_folder": "image",
        "two_moons": "points",
        "eight_gaussians": "points",
        "checkerboard": "points",
        "swiss_roll": "points",
        "tiny_shakespeare": "text",
        "text_file:PATH": "text",
    }
    assert all(description for _, _, description in gd.list_datasets())


def test_unknown_dataset_lists_names():
    with pytest.raises(gd.DatasetError) as e:
        gd.load_dataset(data_config("mnistt"))
    message = str(e.value)
    assert "'mnistt'" in message
    for name in ("digits", "mnist", "two_moons", "image_folder"):
        assert f"'{name}'" in message


def test_register_custom_dataset_and_duplicate_name():
    name = "test_only_points"

    @gd.register_dataset(name, "points", "test points")
    def loader(config):
        points = np.zeros((4, 2), np.float32)
        return gd.Dataset(
            name=name,
            kind="points",
            splits={"train": {"points": points}, "test": {"points": points[:2]}},
            element_spec={"points": (2,)},
            num_classes=None,
            description="test points",
        )

    try:
        dataset = gd.load_dataset(data_config(name))
        assert dataset.num_examples("train") == 4
        assert dataset.num_examples("test") == 2
        with pytest.raises(gd.DatasetError, match="already registered"):
            gd.register_dataset(name, "points", "other")(lambda config: None)
    finally:
        registry_lib._REGISTRY.pop(name)


def test_loader_returning_wrong_dataset_is_caught():
    name = "test_only_wrong"
    gd.register_dataset(name, "points", "wrong")(lambda config: "not a dataset")
    try:
        with pytest.raises(gd.DatasetError, match="expected a Dataset"):
            gd.load_dataset(data_config(name))
    finally:
        registry_lib._REGISTRY.pop(name)


def test_dataset_validates_fields():
    good = np.zeros((3, 2), np.float32)
    with pytest.raises(gd.DatasetError, match="different lengths"):
        gd.Dataset(
            "x", "points",
            {"train": {"points": good, "label": np.zeros(2, np.int32)},
             "test": {"points": good, "label": np.zeros(3, np.int32)}},
            {"points": (2,), "label": ()}, 2, "",
        )
    with pytest.raises(gd.DatasetError, match="missing splits \\['test'\\]"):
        gd.Dataset("x", "points", {"train": {"points": good}}, {"points": (2,)}, None, "")
    with pytest.raises(gd.DatasetError, match="kind 'video'"):
        gd.Dataset("x", "video", {"train": {"points": good}, "test": {"points": good}},
                   {"points": (2,)}, None, "")
    with pytest.raises(gd.DatasetError, match="float32 of rank 2"):
        gd.Dataset("x", "points",
                   {"train": {"points": good.astype(np.float64)}, "test": {"points": good}},
                   {"points": (2,)}, None, "")
    dataset = gd.Dataset("x", "points", {"train": {"points": good}, "test": {"points": good}},
                         {"points": (2,)}, None, "")
    with pytest.raises(gd.DatasetError, match="no split 'valid'.*\\['test', 'train'\\]"):
        dataset.arrays("valid")


# --------------------------------------------------------------------------
# digits.


def test_digits():
    dataset = gd.load_dataset(data_config("digits"))
    train, test = dataset.arrays("train"), dataset.arrays("test")
    assert dataset.kind == "image" and dataset.num_classes == 10
    assert dataset.element_spec == {"image": (8, 8, 1), "label": ()}
    assert train["image"].shape == (1437, 8, 8, 1)
    assert test["image"].shape == (360, 8, 8, 1)
    assert train["image"].dtype == np.float32 and train["label"].dtype == np.int32
    both = np.concatenate([train["image"], test["image"]])
    assert both.min() == 0.0 and both.max() == 1.0
    assert set(np.unique(train["label"])) == set(range(10))
    assert set(np.unique(test["label"])) == set(range(10))
    # The split partitions the 1797 digits: the pairs match sklearn's exactly.
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert pairs(both, np.concatenate([train["label"], test["label"]])) == pairs(
        (raw.images / 16.0).astype(np.float32)[..., None], raw.target
    )


def test_digits_is_deterministic():
    a = gd.load_dataset(data_config("digits"))
    b = gd.load_dataset(data_config("digits", seed=123))
    for split in ("train", "test"):
        for key in ("image", "label"):
            np.testing.assert_array_equal(a.arrays(split)[key], b.arrays(split)[key])


# --------------------------------------------------------------------------
# MNIST from the real idx files.


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """Prepares the real MNIST idx files into a fresh data_dir and loads them."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"the MNIST idx files are not in {MNIST_DIR}")
    data_dir = tmp_path_factory.mktemp("tfds")
    config = data_config("mnist", data_dir=str(data_dir), manual_dir=str(MNIST_DIR))
    start = time.perf_counter()
    dataset = gd.load_dataset(config)
    print(f"MNIST first load (prepare + decode): {time.perf_counter() - start:.1f} s")
    return data_dir, config, dataset


@needs_mnist
def test_mnist_counts_shapes_range(mnist):
    _, _, dataset = mnist
    assert dataset.name == "mnist" and dataset.num_classes == 10
    assert dataset.element_spec == {"image": (28, 28, 1), "label": ()}
    train, test = dataset.arrays("train"), dataset.arrays("test")
    assert train["image"].shape == (60000, 28, 28, 1)
    assert test["image"].shape == (10000, 28, 28, 1)
    assert train["image"].dtype == np.float32 and train["label"].dtype == np.int32
    assert train["image"].min() == 0.0 and train["image"].max() == 1.0
    # MNIST digits are mostly background: the mean pixel is ~0.13.
    assert 0.12 < train["image"].mean() < 0.14
    assert np.bincount(train["label"], minlength=10).tolist() == MNIST_TRAIN_HISTOGRAM
    assert np.bincount(test["label"], minlength=10).tolist() == MNIST_TEST_HISTOGRAM
    # Preparing and reading never needed TensorFlow.
    assert "tensorflow" not in sys.modules


@needs_mnist
def test_mnist_holds_exactly_the_idx_examples(mnist):
    _, _, dataset = mnist
    raw = idx.read_idx_splits(str(MNIST_DIR))
    for split in ("train", "test"):
        arrays = dataset.arrays(split)
        as_uint8 = np.round(arrays["image"][..., 0] * 255).astype(np.uint8)
        assert pairs(as_uint8, arrays["label"]) == pairs(*raw[split])


@needs_mnist
def test_stock_tfds_data_source_reads_prepared_mnist(mnist, tmp_path):
    import tensorflow_datasets as tfds

    data_dir, _, dataset = mnist
    source = tfds.data_source("mnist", data_dir=str(data_dir), download=False)
    assert len(source["train"]) == 60000 and len(source["test"]) == 10000
    for i in (0, 1, 59999):
        record = source["train"][i]
        assert record["image"].shape == (28, 28, 1) and record["image"].dtype == np.uint8
        np.testing.assert_array_equal(
            record["image"].astype(np.float32) / 255, dataset.arrays("train")["image"][i]
        )
        assert record["label"] == dataset.arrays("train")["label"][i]
    # The prepared features are those of the stock builder.
    stock = tfds.builder("mnist", data_dir=str(tmp_path))
    prepared = tfds.builder("mnist", data_dir=str(data_dir))
    assert prepared.version == stock.version == "3.0.1"
    assert repr(prepared.info.features) == repr(stock.info.features)
    assert (pathlib.Path(data_dir) / "mnist" / "3.0.1" / "dataset_info.json").is_file()
    # Nothing besides the dataset lands in data_dir (no downloads/ folder).
    assert sorted(os.listdir(data_dir)) == ["mnist"]


@needs_mnist
def test_mnist_second_load_reads_the_cache(mnist, monkeypatch):
    data_dir, config, dataset = mnist
    version_dir = pathlib.Path(data_dir) / "mnist" / "3.0.1"
    assert (version_dir / "genjax-arrays-train.npz").is_file()
    assert (version_dir / "genjax-arrays-test.npz").is_file()

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(images, "_decode_split", no_decoding)
    # manual_dir=None: the prepared dataset must be found without it.
    again = gd.load_dataset(data_config("mnist", data_dir=str(data_dir)))
    for split in ("train", "test"):
        for key in ("image", "label"):
            np.testing.assert_array_equal(again.arrays(split)[key], dataset.arrays(split)[key])


@needs_mnist
def test_mnist_bad_cache_is_rebuilt(mnist):
    data_dir, config, dataset = mnist
    cache = pathlib.Path(data_dir) / "mnist" / "3.0.1" / "genjax-arrays-test.npz"
    with open(cache, "wb") as f:
        np.savez(f, image=np.zeros((3, 28, 28, 1), np.uint8), label=np.zeros(3, np.int64))
    again = gd.load_dataset(config)
    np.testing.assert_array_equal(again.arrays("test")["image"], dataset.arrays("test")["image"])
    with np.load(cache, allow_pickle=False) as rebuilt:
        assert rebuilt["image"].shape == (10000, 28, 28, 1)


@needs_mnist
def test_uncompressed_idx_files_read_like_gzipped(tmp_path):
    for pair in idx.IDX_FILES.values():
        for stem in pair:
            with gzip.open(MNIST_DIR / f"{stem}.gz", "rb") as src, open(tmp_path / stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    plain = idx.read_idx_splits(str(tmp_path))
    gzipped = idx.read_idx_splits(str(MNIST_DIR))
    for split in ("train", "test"):
        for a, b in zip(plain[split], gzipped[split]):
            np.testing.assert_array_equal(a, b)


@needs_mnist
def test_prepare_from_small_uncompressed_real_files(tmp_path):
    """End to end from non-gzipped files: the first 6/4 real MNIST examples."""
    raw = idx.read_idx_splits(str(MNIST_DIR))
    manual = tmp_path / "manual"
    write_idx_dir(manual, {s: (raw[s][0][:n], raw[s][1][:n]) for s, n in SMALL_COUNTS.items()},
                  gz=False)
    config = data_config("mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    dataset = images.load_tfds_images("mnist", config, "small", counts=SMALL_COUNTS)
    for split, n in SMALL_COUNTS.items():
        arrays = dataset.arrays(split)
        as_uint8 = np.round(arrays["image"][..., 0] * 255).astype(np.uint8)
        assert pairs(as_uint8, arrays["label"]) == pairs(raw[split][0][:n], raw[split][1][:n])


def test_not_prepared_without_manual_dir_says_how_to_fix(tmp_path):
    with pytest.raises(gd.DatasetError) as e:
        gd.load_dataset(data_config("mnist", data_dir=str(tmp_path)))
    message = str(e.value)
    assert f"not prepared in {tmp_path}" in message
    assert "--config.data.manual_dir=" in message
    assert "genjax-research[tfds]" in message
    assert "\n" not in message


def test_missing_manual_dir_is_named(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(gd.DatasetError, match=f"manual_dir {missing} does not exist"):
        gd.load_dataset(data_config("mnist", data_dir=str(tmp_path), manual_dir=str(missing)))
    with pytest.raises(gd.DatasetError, match=f"manual_dir {missing} is not a directory"):
        idx.read_idx_splits(str(missing))


# --------------------------------------------------------------------------
# Broken idx files (small synthetic ones).


def write_idx(path, array, magic=None, dims=None, gz=True, cut=0, extra=b""):
    """Writes ``array`` (uint8) as an idx file; the keyword arguments break it."""
    array = np.asarray(array, np.uint8)
    magic = (0x0800 | array.ndim) if magic is None else magic
    dims = array.shape if dims is None else dims
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    data += array.tobytes() + extra
    data = data[: len(data) - cut]
    path = pathlib.Path(str(path) + (".gz" if gz else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_idx_dir(directory, splits, gz=True):
    """Writes the four standard idx files of ``splits`` (split -> (images, labels))."""
    for split, (image_stem, label_stem) in idx.IDX_FILES.items():
        write_idx(pathlib.Path(directory) / image_stem, splits[split][0], gz=gz)
        write_idx(pathlib.Path(directory) / label_stem, splits[split][1], gz=gz)


def small_splits(seed=0):
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.uint8))
        for split, n in SMALL_COUNTS.items()
    }


@pytest.fixture
def small_idx_dir(tmp_path):
    directory = tmp_path / "idx"
    write_idx_dir(directory, small_splits())
    return directory


def test_small_idx_files_read(small_idx_dir):
    splits = idx.read_idx_splits(str(small_idx_dir), SMALL_COUNTS)
    expected = small_splits()
    for split in SMALL_COUNTS:
        np.testing.assert_array_equal(splits[split][0], expected[split][0])
        np.testing.assert_array_equal(splits[split][1], expected[split][1])


@pytest.mark.parametrize(
    "stem, breakage, pattern",
    [
        ("train-images-idx3-ubyte", dict(cut=10), "is truncated: 4694 data bytes, expected 4704"),
        ("train-images-idx3-ubyte", dict(cut=4700), "is truncated: 4 data bytes"),
        ("train-images-idx3-ubyte", dict(cut=4710), "the idx header needs 16"),
        ("train-labels-idx1-ubyte", dict(cut=12), "too short for an idx header"),
        ("t10k-labels-idx1-ubyte", dict(extra=b"xx"), "2 bytes after the 4"),
        ("train-labels-idx1-ubyte", dict(magic=2051), "magic number 2051, expected 2049"),
        ("train-images-idx3-ubyte", dict(magic=2049), "magic number 2049, expected 2051"),
        ("t10k-images-idx3-ubyte", dict(dims=(5, 28, 28)), r"dimensions \(5, 28, 28\), expected \(4, 28, 28\)"),
        ("t10k-labels-idx1-ubyte", dict(dims=(40,)), r"dimensions \(40,\), expected \(4,\)"),
    ],
)
def test_broken_idx_file_is_named(small_idx_dir, stem, breakage, pattern):
    split = "train" if stem.startswith("train") else "test"
    array = small_splits()[split][0 if "images" in stem else 1]
    path = write_idx(small_idx_dir / stem, array, **breakage)
    with pytest.raises(gd.DatasetError, match=pattern) as e:
        idx.read_idx_splits(str(small_idx_dir), SMALL_COUNTS)
    assert str(path) in str(e.value)


def test_full_size_count_mismatch_names_file(small_idx_dir):
    # Without injected counts, the standard 60000/10000 are expected.
    with pytest.raises(gd.DatasetError, match=r"dimensions \(6, 28, 28\), expected \(60000, 28, 28\)") as e:
        idx.read_idx_splits(str(small_idx_dir))
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_truncated_gzip_stream_is_named(small_idx_dir):
    path = small_idx_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(gd.DatasetError, match="cannot decompress") as e:
        idx.read_idx_splits(str(small_idx_dir), SMALL_COUNTS)
    assert str(path) in str(e.value)


def test_label_out_of_range_is_named(small_idx_dir):
    path = write_idx(small_idx_dir / "t10k-labels-idx1-ubyte", [1, 2, 10, 3])
    with pytest.raises(gd.DatasetError, match="has label 10, expected labels 0..9") as e:
        idx.read_idx_splits(str(small_idx_dir), SMALL_COUNTS)
    assert str(path) in str(e.value)


def test_missing_idx_file_is_named(small_idx_dir):
    (small_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(gd.DatasetError, match="missing idx file") as e:
        idx.read_idx_splits(str(small_idx_dir), SMALL_COUNTS)
    assert str(small_idx_dir / "t10k-labels-idx1-ubyte") in str(e.value)


def test_broken_file_fails_load_before_anything_is_written(small_idx_dir, tmp_path):
    (small_idx_dir / "train-labels-idx1-ubyte.gz").unlink()
    data_dir = tmp_path / "tfds"
    config = data_config("mnist", data_dir=str(data_dir), manual_dir=str(small_idx_dir))
    with pytest.raises(gd.DatasetError, match="train-labels-idx1-ubyte"):
        gd.load_dataset(config)
    assert not (data_dir / "mnist").exists()


def test_crash_mid_prepare_leaves_no_valid_dataset(small_idx_dir, tmp_path, monkeypatch):
    original = tfds_prepare._IdxMixin._generate_examples

    def crashing(self, images_array, labels):
        for count, example in enumerate(original(self, images_array, labels)):
            if count == 3:
                raise KeyboardInterrupt("simulated crash")
            yield example

    monkeypatch.setattr(tfds_prepare._IdxMixin, "_generate_examples", crashing)
    data_dir = tmp_path / "tfds"
    with pytest.raises(KeyboardInterrupt):
        tfds_prepare.prepare_from_idx("mnist", str(small_idx_dir), str(data_dir), SMALL_COUNTS)
    assert not (data_dir / "mnist" / "3.0.1").exists()
    with pytest.raises(gd.DatasetError, match="not prepared"):
        gd.load_dataset(data_config("mnist", data_dir=str(data_dir)))
    # A later prepare (without the crash) succeeds.
    monkeypatch.setattr(tfds_prepare._IdxMixin, "_generate_examples", original)
    config = data_config("mnist", data_dir=str(data_dir), manual_dir=str(small_idx_dir))
    dataset = images.load_tfds_images("mnist", config, "small", counts=SMALL_COUNTS)
    assert dataset.num_examples("train") == 6


def test_damaged_prepared_files_say_how_to_fix(small_idx_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    config = data_config("mnist", data_dir=str(data_dir), manual_dir=str(small_idx_dir))
    images.load_tfds_images("mnist", config, "small", counts=SMALL_COUNTS)
    version_dir = data_dir / "mnist" / "3.0.1"
    (version_dir / "genjax-arrays-test.npz").unlink()
    shard = next(version_dir.glob("mnist-test.array_record-*"))
    shard.unlink()
    with pytest.raises(gd.DatasetError, match="damaged or incomplete, delete that directory") as e:
        gd.load_dataset(config)
    assert str(shard) in str(e.value)
    # A dataset prepared in TFDS's default tfrecord format needs TF to read.
    info = version_dir / "dataset_info.json"
    info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
    with pytest.raises(gd.DatasetError, match="--file_format=array_record"):
        gd.load_dataset(config)


def test_fashion_mnist_prepared_from_idx_files(small_idx_dir, tmp_path):
    import tensorflow_datasets as tfds

    data_dir = tmp_path / "tfds"
    config = data_config("fashion_mnist", data_dir=str(data_dir), manual_dir=str(small_idx_dir))
    dataset = images.load_tfds_images("fashion_mnist", config, "small", counts=SMALL_COUNTS)
    assert dataset.name == "fashion_mnist" and dataset.num_classes == 10
    expected = small_splits()
    for split in SMALL_COUNTS:
        arrays = dataset.arrays(split)
        as_uint8 = np.round(arrays["image"][..., 0] * 255).astype(np.uint8)
        assert pairs(as_uint8, arrays["label"]) == pairs(*expected[split])
    source = tfds.data_source("fashion_mnist", data_dir=str(data_dir), download=False)
    assert len(source["train"]) == 6 and len(source["test"]) == 4
    prepared = tfds.builder("fashion_mnist", data_dir=str(data_dir))
    assert prepared.info.features["label"].names[:2] == ["T-shirt/top", "Trouser"]
    stock = tfds.builder("fashion_mnist", data_dir=str(tmp_path / "empty"))
    assert repr(prepared.info.features) == repr(stock.info.features)
    # The registered loader finds the prepared dataset (no manual_dir needed).
    again = gd.load_dataset(data_config("fashion_mnist", data_dir=str(data_dir)))
    np.testing.assert_array_equal(again.arrays("test")["image"], dataset.arrays("test")["image"])


# --------------------------------------------------------------------------
# image_folder.


def save_image(path, array):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_image_folder_class_subfolders(tmp_path):
    # Each image's pixel value encodes its class, to check the labels.
    for value, cls in ((40, "cat"), (200, "dog")):
        for i in range(10):
            save_image(tmp_path / cls / f"{i}.png", np.full((8, 6), value + i))
    (tmp_path / "README.txt").write_text("not an image")
    dataset = gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    assert dataset.num_classes == 2
    assert dataset.element_spec == {"image": (8, 6, 1), "label": ()}
    assert dataset.num_examples("train") == 18 and dataset.num_examples("test") == 2
    for split in ("train", "test"):
        arrays = dataset.arrays(split)
        assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.int32
        values = np.round(arrays["image"][:, 0, 0, 0] * 255)
        np.testing.assert_array_equal(arrays["label"], (values >= 200).astype(np.int32))
    all_values = np.concatenate([np.round(dataset.arrays(s)["image"][:, 0, 0, 0] * 255)
                                 for s in ("train", "test")])
    assert sorted(all_values) == sorted([40 + i for i in range(10)] + [200 + i for i in range(10)])


def test_image_folder_flat_is_unlabelled_and_deterministic(tmp_path):
    for i in range(20):
        save_image(tmp_path / f"img{i:02d}.jpg", np.full((5, 5, 3), 10 * i))
    a = gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    b = gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    assert a.num_classes is None and "label" not in a.arrays("train")
    assert a.element_spec == {"image": (5, 5, 3)}
    assert a.num_examples("train") == 18 and a.num_examples("test") == 2
    for split in ("train", "test"):
        np.testing.assert_array_equal(a.arrays(split)["image"], b.arrays(split)["image"])
    assert 0.0 <= a.arrays("train")["image"].min() and a.arrays("train")["image"].max() <= 1.0
    # channels=1 turns RGB into grey.
    grey = gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path), channels=1))
    assert grey.element_spec == {"image": (5, 5, 1)}


def test_image_folder_train_test_subfolders(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                save_image(tmp_path / split / cls / f"{i}.png", np.full((4, 4), 0 if cls == "a" else 255))
    save_image(tmp_path / "test" / "b" / "extra.png", np.full((4, 4), 255))
    dataset = gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    assert dataset.num_examples("train") == 8 and dataset.num_examples("test") == 5
    np.testing.assert_array_equal(dataset.arrays("test")["label"], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        dataset.arrays("test")["image"][:, 0, 0, 0], [0.0, 0.0, 1.0, 1.0, 1.0]
    )


def test_image_folder_wrong_shape_names_the_file(tmp_path):
    for i in range(4):
        save_image(tmp_path / f"{i}.png", np.zeros((8, 8)))
    save_image(tmp_path / "odd.png", np.zeros((9, 8)))
    with pytest.raises(gd.DatasetError) as e:
        gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    message = str(e.value)
    assert str(tmp_path / "odd.png") in message
    assert "shape 9x8, expected 8x8 (the shape of 4 of the 5 images)" in message
    # With image_size given, every image must have that size.
    with pytest.raises(gd.DatasetError, match="0.png has shape 8x8, expected 9x8"):
        gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path), image_size=(9, 8)))


def test_image_folder_bad_directories(tmp_path):
    with pytest.raises(gd.DatasetError, match="does not exist"):
        gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path / "missing")))
    with pytest.raises(gd.DatasetError, match="has 0 images"):
        gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))
    with pytest.raises(gd.DatasetError, match="needs --config.data.manual_dir"):
        gd.load_dataset(data_config("image_folder"))
    save_image(tmp_path / "top.png", np.zeros((4, 4)))
    save_image(tmp_path / "cls" / "inner.png", np.zeros((4, 4)))
    with pytest.raises(gd.DatasetError, match="both images"):
        gd.load_dataset(data_config("image_folder", manual_dir=str(tmp_path)))


# --------------------------------------------------------------------------
# 2-D toy distributions.

TOYS = ["two_moons", "eight_gaussians", "checkerboard", "swiss_roll"]


@pytest.mark.parametrize("name", TOYS)
def test_toy2d_shape_scale_determinism(name):
    config = data_config(name, num_train=4000, num_test=1000)
    dataset = gd.load_dataset(config)
    train, test = dataset.arrays("train")["points"], dataset.arrays("test")["points"]
    assert dataset.kind == "points"
    assert train.shape == (4000, 2) and test.shape == (1000, 2)
    assert train.dtype == np.float32
    assert np.abs(train.mean(axis=0)).max() < 1e-4
    assert 0.5 < train.std(axis=0).min() and train.std(axis=0).max() < 1.5
    assert np.abs(test).max() < 5.0 and np.abs(test.mean(axis=0)).max() < 0.15
    again = gd.load_dataset(config)
    np.testing.assert_array_equal(again.arrays("train")["points"], train)
    other = gd.load_dataset(data_config(name, num_train=4000, num_test=1000, dataset_seed=1))
    assert not np.array_equal(other.arrays("train")["points"], train)
    # Train and test are different draws.
    assert not np.array_equal(train[:1000], test)


def test_toy2d_default_sizes_and_labels():
    dataset = gd.load_dataset(data_config("eight_gaussians"))
    assert dataset.num_examples("train") == 50_000 and dataset.num_examples("test") == 10_000
    points, labels = dataset.arrays("train")["points"], dataset.arrays("train")["label"]
    assert dataset.num_classes == 8 and set(np.unique(labels)) == set(range(8))
    # Component k sits at angle k * 45 degrees, all on one circle.
    means = np.stack([points[labels == k].mean(axis=0) for k in range(8)])
    angles = np.degrees(np.arctan2(means[:, 1], means[:, 0]))
    off_by = (angles - np.arange(8) * 45.0 + 180.0) % 360.0 - 180.0
    assert np.abs(off_by).max() < 1.0, angles
    radii = np.linalg.norm(means, axis=1)
    assert radii.std() / radii.mean() < 0.01
    with pytest.raises(gd.DatasetError, match="num_train=0"):
        gd.load_dataset(data_config("two_moons", num_train=0))


# --------------------------------------------------------------------------
# Pipeline.

N = 1000


def toy_arrays(n=N):
    ids = np.arange(n)
    return {"id": ids, "double": 2 * ids.astype(np.float32)}


def take(iterator, k):
    return [iterator.next() for _ in range(k)]


def test_train_iterator_is_deterministic_and_seeded():
    a = take(gd.TrainIterator(toy_arrays(), 64, seed=3), 20)
    b = take(gd.TrainIterator(toy_arrays(), 64, seed=3), 20)
    c = take(gd.TrainIterator(toy_arrays(), 64, seed=4), 20)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["id"], y["id"])
    assert not np.array_equal(np.concatenate([x["id"] for x in a]), np.concatenate([x["id"] for x in c]))
    for batch in a:
        assert batch["id"].shape == (64,)
        np.testing.assert_array_equal(batch["double"], 2 * batch["id"])


def test_each_epoch_is_a_permutation():
    # 64 does not divide 1000: batches cross the epoch boundaries.
    iterator = gd.TrainIterator(toy_arrays(), 64, seed=0)
    stream = np.concatenate([b["id"] for b in take(iterator, -(-3 * N // 64))])
    epochs = [stream[e * N:(e + 1) * N] for e in range(3)]
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(N))


def test_get_state_set_state_resumes_exactly():
    iterator = gd.TrainIterator(toy_arrays(), 64, seed=7)
    take(iterator, 7)
    state = json.loads(json.dumps(iterator.get_state()))
    assert len(json.dumps(state)) < 200
    expected = take(iterator, 5)
    resumed = gd.TrainIterator(toy_arrays(), 64, seed=7)
    resumed.set_state(state)
    for x, y in zip(take(resumed, 5), expected):
        np.testing.assert_array_equal(x["id"], y["id"])
    # Resuming from a state 16 steps in (across an epoch boundary) as well.
    resumed.set_state({**state, "step": 16})
    fresh = gd.TrainIterator(toy_arrays(), 64, seed=7)
    np.testing.assert_array_equal(resumed.next()["id"], take(fresh, 17)[-1]["id"])


def test_set_state_rejects_a_different_iterator():
    state = gd.TrainIterator(toy_arrays(), 64, seed=7).get_state()
    with pytest.raises(gd.DatasetError, match="seed=7.*seed=8"):
        gd.TrainIterator(toy_arrays(), 64, seed=8).set_state(state)
    with pytest.raises(gd.DatasetError, match="global_batch_size=64.*global_batch_size=32"):
        gd.TrainIterator(toy_arrays(), 32, seed=7).set_state(state)
    with pytest.raises(gd.DatasetError, match="not a TrainIterator state"):
        gd.TrainIterator(toy_arrays(), 64, seed=7).set_state({"step": 3})


def test_process_slices_make_up_the_global_batch():
    whole = gd.TrainIterator(toy_arrays(), 64, seed=1)
    parts = [gd.TrainIterator(toy_arrays(), 64, seed=1, process_index=p, process_count=2)
             for p in range(2)]
    for _ in range(20):
        slices = [p.next() for p in parts]
        assert slices[0]["id"].shape == (32,)
        np.testing.assert_array_equal(
            np.concatenate([s["id"] for s in slices]), whole.next()["id"]
        )


def test_train_iterator_validates_arguments():
    with pytest.raises(gd.DatasetError, match="global_batch_size=1001 exceeds the 1000"):
        gd.TrainIterator(toy_arrays(), 1001, seed=0)
    with pytest.raises(gd.DatasetError, match="global_batch_size=63 is not divisible by process_count=2"):
        gd.TrainIterator(toy_arrays(), 63, seed=0, process_count=2)
    with pytest.raises(gd.DatasetError, match="process_index=2"):
        gd.TrainIterator(toy_arrays(), 64, seed=0, process_index=2, process_count=2)
    with pytest.raises(gd.DatasetError, match="seed=-1"):
        gd.TrainIterator(toy_arrays(), 64, seed=-1)
    with pytest.raises(gd.DatasetError, match="different lengths"):
        gd.TrainIterator({"a": np.zeros(3), "b": np.zeros(4)}, 2, seed=0)


def test_eval_batches_cover_every_example_once_with_padding():
    arrays = toy_arrays(10)
    batches = list(gd.eval_batches(arrays, 4))
    assert len(batches) == 3
    for batch, mask in batches:
        assert batch["id"].shape == (4,) and mask.shape == (4,) and mask.dtype == np.float32
    np.testing.assert_array_equal(batches[-1][1], [1, 1, 0, 0])
    np.testing.assert_array_equal(batches[-1][0]["id"], [8, 9, 0, 0])
    real = np.concatenate([b["id"][m == 1] for b, m in batches])
    np.testing.assert_array_equal(real, np.arange(10))
    exact = list(gd.eval_batches(toy_arrays(8), 4))
    assert len(exact) == 2 and all(m.sum() == 4 for _, m in exact)
    with pytest.raises(gd.DatasetError, match="batch_size=0"):
        gd.eval_batches(arrays, 0)
