"""Tests of the colour image datasets: ``cifar10`` (prepared offline from the
CIFAR-10 binary version) and the synthetic ``shapes32``.

Offline and fast: CIFAR-10 is exercised on small fake batch files written
here (2 records per train file, 4 test records), never the real 170 MB.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys
import tarfile

import numpy as np
import pytest

from conftest import data_config, pairs
import genjax.data as gd
from genjax.data import cifar, images, synthetic

COUNTS = {"train": 10, "test": 4}  # 2 records in each of the 5 train files.
PER_FILE = {"train": 2, "test": 4}


def as_uint8(float_images):
    return np.round(float_images * 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Fake CIFAR-10 binary files.


def encode_records(images_hwc, labels) -> bytes:
    """The binary-version bytes of ``images_hwc`` uint8 [N, 32, 32, 3]: per
    record the label byte, then the R, G and B planes, written out pixel by
    pixel (not with a transpose, to check the reader's transpose)."""
    out = bytearray()
    for image, label in zip(images_hwc, labels):
        out.append(int(label))
        for channel in range(3):
            for row in range(32):
                for col in range(32):
                    out.append(int(image[row, col, channel]))
    return bytes(out)


def fake_splits(seed=0):
    """split -> (images uint8 [N, 32, 32, 3], labels), N from COUNTS."""
    rng = np.random.default_rng(seed)
    return {
        split: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                rng.integers(0, 10, n).astype(np.uint8))
        for split, n in COUNTS.items()
    }


def write_bin_dir(directory, splits=None):
    """Writes the six ``.bin`` files of ``splits`` into ``directory``."""
    splits = fake_splits() if splits is None else splits
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, names in cifar.BIN_FILES.items():
        imgs, labels = splits[split]
        k = PER_FILE[split]
        for i, name in enumerate(names):
            (directory / name).write_bytes(
                encode_records(imgs[i * k:(i + 1) * k], labels[i * k:(i + 1) * k]))
    return directory


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    """A directory holding the six small fake ``.bin`` files (do not modify)."""
    return write_bin_dir(tmp_path_factory.mktemp("cifar") / "bins")


@pytest.fixture
def own_bin_dir(tmp_path, bin_dir):
    """A private copy of ``bin_dir`` that a test may break."""
    directory = tmp_path / "bins"
    directory.mkdir()
    for path in bin_dir.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    return directory


def make_tarball(path, bin_dir, skip=()):
    """Writes ``cifar-10-binary.tar.gz``-style ``path`` holding
    ``cifar-10-batches-bin/<file>`` for each file of ``bin_dir``."""
    with tarfile.open(path, "w:gz") as archive:
        archive.add(bin_dir, arcname="cifar-10-batches-bin", recursive=False)
        for name in sorted(os.listdir(bin_dir)):
            if name not in skip:
                archive.add(bin_dir / name, arcname=f"cifar-10-batches-bin/{name}")
    return path


# --------------------------------------------------------------------------
# The binary reader.


def test_pixel_layout_is_rows_columns_channels(tmp_path):
    """A known colour at a known pixel comes out at [row, col, :]."""
    image = np.zeros((32, 32, 3), np.uint8)
    image[3, 7] = (10, 20, 30)  # Row 3, column 7.
    image[30, 1] = (200, 100, 50)
    record = bytearray([7]) + bytearray(3072)
    # Channel-major planes, each row-major: byte 1 + c * 1024 + row * 32 + col.
    for (row, col), rgb in (((3, 7), (10, 20, 30)), ((30, 1), (200, 100, 50))):
        for c, value in enumerate(rgb):
            record[1 + c * 1024 + row * 32 + col] = value
    assert bytes(record) == encode_records(image[None], [7])
    images_out, labels = cifar.parse_batch("x.bin", bytes(record) * 3, 3)
    assert images_out.shape == (3, 32, 32, 3) and images_out.dtype == np.uint8
    assert labels.tolist() == [7, 7, 7]
    np.testing.assert_array_equal(images_out[1], image)
    assert images_out[0, 3, 7].tolist() == [10, 20, 30]
    assert images_out[0, 7, 3].tolist() == [0, 0, 0]


def test_read_splits_in_file_order(bin_dir):
    splits = cifar.read_cifar10_splits(str(bin_dir), COUNTS)
    expected = fake_splits()
    for split in COUNTS:
        np.testing.assert_array_equal(splits[split][0], expected[split][0])
        np.testing.assert_array_equal(splits[split][1], expected[split][1])


def test_every_manual_dir_layout_reads_the_same(bin_dir, tmp_path):
    nested = tmp_path / "extracted"
    write_bin_dir(nested / "cifar-10-batches-bin")
    with_tarball = tmp_path / "downloads"
    with_tarball.mkdir()
    tarball = make_tarball(with_tarball / "cifar-10-binary.tar.gz", bin_dir)
    expected = cifar.read_cifar10_splits(str(bin_dir), COUNTS)
    for manual_dir in (nested, with_tarball, tarball):
        splits = cifar.read_cifar10_splits(str(manual_dir), COUNTS)
        for split in COUNTS:
            for a, b in zip(splits[split], expected[split]):
                np.testing.assert_array_equal(a, b)


def one_line_error(fn, *args) -> str:
    with pytest.raises(gd.DatasetError) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_missing_file_is_named(own_bin_dir):
    (own_bin_dir / "data_batch_3.bin").unlink()
    message = one_line_error(cifar.read_cifar10_splits, str(own_bin_dir), COUNTS)
    assert f"missing CIFAR-10 file {own_bin_dir / 'data_batch_3.bin'}" in message
    assert "cifar-10-binary.tar.gz" in message


@pytest.mark.parametrize(
    "name, cut, pattern",
    [
        ("data_batch_2.bin", 1, "is truncated: 6145 bytes, expected 6146 "
                                r"\(2 records of 3073 bytes\); copy it again"),
        ("test_batch.bin", 12292, "is truncated: 0 bytes"),
        ("data_batch_5.bin", -3, "has 3 bytes too many"),
    ],
)
def test_wrong_length_file_is_named(own_bin_dir, name, cut, pattern):
    path = own_bin_dir / name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut] if cut > 0 else data + b"xyz")
    message = one_line_error(cifar.read_cifar10_splits, str(own_bin_dir), COUNTS)
    assert message.startswith(str(path)), message
    assert re.search(pattern, message), message


def test_full_size_counts_are_checked(bin_dir):
    # Without counts, 10,000 records per file are expected.
    message = one_line_error(cifar.read_cifar10_splits, str(bin_dir))
    assert "data_batch_1.bin is truncated: 6146 bytes, expected 30730000" in message


def test_bad_label_is_named(own_bin_dir):
    path = own_bin_dir / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[2 * 3073] = 10  # The label byte of record 2.
    path.write_bytes(bytes(data))
    message = one_line_error(cifar.read_cifar10_splits, str(own_bin_dir), COUNTS)
    assert f"{path} record 2 has label 10, expected 0..9" in message


def test_wrong_directories_say_what_is_expected(tmp_path):
    # An empty directory, or one with other files (here MNIST's).
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    message = one_line_error(cifar.read_cifar10_splits, str(tmp_path), COUNTS)
    assert f"missing CIFAR-10 file {tmp_path / 'data_batch_1.bin'}" in message
    assert "data_batch_5.bin and test_batch.bin" in message
    # The python version is recognised and the binary one asked for.
    python_dir = tmp_path / "cifar-10-batches-py"
    python_dir.mkdir()
    (python_dir / "data_batch_1").write_bytes(b"pickle")
    message = one_line_error(cifar.read_cifar10_splits, str(tmp_path), COUNTS)
    assert "python version" in message and "cifar-10-binary.tar.gz" in message
    missing = tmp_path / "nowhere"
    message = one_line_error(cifar.read_cifar10_splits, str(missing), COUNTS)
    assert f"manual_dir {missing} does not exist" in message
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("x")
    message = one_line_error(cifar.read_cifar10_splits, str(not_tar), COUNTS)
    assert f"manual_dir {not_tar} is a file" in message


def test_broken_tarballs_are_named(bin_dir, tmp_path):
    tarball = make_tarball(tmp_path / "cifar-10-binary.tar.gz", bin_dir)
    tarball.write_bytes(tarball.read_bytes()[:-500])
    message = one_line_error(cifar.read_cifar10_splits, str(tarball), COUNTS)
    assert f"cannot read {tarball}" in message and "truncated or damaged" in message
    partial = make_tarball(tmp_path / "partial.tar.gz", bin_dir, skip=("test_batch.bin",))
    message = one_line_error(cifar.read_cifar10_splits, str(partial), COUNTS)
    assert f"{partial} lacks cifar-10-batches-bin/test_batch.bin" in message


# --------------------------------------------------------------------------
# Offline TFDS preparation and loading.


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, bin_dir):
    """The fake files prepared into a fresh data_dir, then loaded by name."""
    data_dir = tmp_path_factory.mktemp("tfds")
    config = data_config("cifar10", data_dir=str(data_dir), manual_dir=str(bin_dir))
    images.load_tfds_images("cifar10", config, "small", counts=COUNTS)
    # Loaded again through the registry: the prepared dataset is found
    # without manual_dir.
    dataset = gd.load_dataset(data_config("cifar10", data_dir=str(data_dir)))
    return data_dir, dataset


def test_cifar10_loads_the_binary_examples(prepared):
    _, dataset = prepared
    assert dataset.name == "cifar10" and dataset.kind == "image"
    assert dataset.num_classes == 10
    assert dataset.element_spec == {"image": (32, 32, 3), "label": ()}
    expected = fake_splits()
    for split, n in COUNTS.items():
        arrays = dataset.arrays(split)
        assert arrays["image"].shape == (n, 32, 32, 3)
        assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.int32
        assert 0.0 <= arrays["image"].min() and arrays["image"].max() <= 1.0
        assert pairs(as_uint8(arrays["image"]), arrays["label"]) == pairs(*expected[split])
    # Preparing and reading never needed TensorFlow.
    assert "tensorflow" not in sys.modules


def test_stock_tfds_reads_it_with_stock_ids_and_features(prepared, tmp_path):
    import tensorflow_datasets as tfds

    data_dir, _ = prepared
    source = tfds.data_source("cifar10", data_dir=str(data_dir), download=False)
    expected = fake_splits()
    for split, n in COUNTS.items():
        assert len(source[split]) == n
        by_id = {source[split][i]["id"]: source[split][i] for i in range(n)}
        # The stock builder's ids: the split and the index over its files.
        assert sorted(by_id) == [f"{split}_{k:05d}".encode() for k in range(n)]
        for k in range(n):
            record = by_id[f"{split}_{k:05d}".encode()]
            np.testing.assert_array_equal(record["image"], expected[split][0][k])
            assert record["label"] == expected[split][1][k]
    prepared_builder = tfds.builder("cifar10", data_dir=str(data_dir))
    stock = tfds.builder("cifar10", data_dir=str(tmp_path / "empty"))
    assert prepared_builder.version == stock.version == "3.0.2"
    assert repr(prepared_builder.info.features) == repr(stock.info.features)
    assert prepared_builder.info.features["label"].names == list(cifar.LABEL_NAMES)
    assert prepared_builder.info.features["label"].names[:2] == ["airplane", "automobile"]
    # Nothing besides the dataset lands in data_dir (no downloads/ folder).
    assert sorted(os.listdir(data_dir)) == ["cifar10"]


def test_second_load_reads_the_cache(prepared, monkeypatch):
    data_dir, dataset = prepared
    version_dir = pathlib.Path(data_dir) / "cifar10" / "3.0.2"
    for split in COUNTS:
        with np.load(version_dir / f"genjax-arrays-{split}.npz") as cache:
            assert cache["image"].shape == (COUNTS[split], 32, 32, 3)

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(images, "_decode_split", no_decoding)
    again = gd.load_dataset(data_config("cifar10", data_dir=str(data_dir)))
    for split in COUNTS:
        for key in ("image", "label"):
            np.testing.assert_array_equal(again.arrays(split)[key], dataset.arrays(split)[key])


def test_prepare_from_tarball_path(bin_dir, tmp_path):
    tarball = make_tarball(tmp_path / "cifar-10-binary.tar.gz", bin_dir)
    config = data_config("cifar10", data_dir=str(tmp_path / "tfds"), manual_dir=str(tarball))
    dataset = images.load_tfds_images("cifar10", config, "small", counts=COUNTS)
    expected = fake_splits()
    arrays = dataset.arrays("test")
    assert pairs(as_uint8(arrays["image"]), arrays["label"]) == pairs(*expected["test"])


def test_not_prepared_says_how_to_fix(tmp_path):
    message = one_line_error(gd.load_dataset, data_config("cifar10", data_dir=str(tmp_path)))
    assert f"dataset 'cifar10' is not prepared in {tmp_path}" in message
    assert "--config.data.manual_dir=DIR" in message
    assert "data_batch_1.bin" in message and "test_batch.bin" in message
    assert "cifar-10-binary.tar.gz" in message
    assert f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path}" in message


def test_bad_manual_dir_fails_before_anything_is_written(own_bin_dir, tmp_path):
    data_dir = tmp_path / "tfds"
    path = own_bin_dir / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[:-10])
    config = data_config("cifar10", data_dir=str(data_dir), manual_dir=str(own_bin_dir))
    with pytest.raises(gd.DatasetError, match="data_batch_4.bin is truncated"):
        images.load_tfds_images("cifar10", config, "small", counts=COUNTS)
    config.manual_dir = str(tmp_path / "missing")
    with pytest.raises(gd.DatasetError, match=f"manual_dir {tmp_path / 'missing'} does not exist"):
        gd.load_dataset(config)
    assert not (data_dir / "cifar10").exists()
    with pytest.raises(gd.DatasetError, match="not prepared"):
        gd.load_dataset(data_config("cifar10", data_dir=str(data_dir)))


# --------------------------------------------------------------------------
# shapes32.


@pytest.fixture(scope="module")
def shapes():
    return gd.load_dataset(data_config("shapes32"))


def test_shapes32_is_registered():
    rows = {name: (kind, description) for name, kind, description in gd.list_datasets()}
    assert rows["shapes32"][0] == "image" and rows["cifar10"][0] == "image"


def test_shapes32_shapes_ranges_balance(shapes):
    assert shapes.name == "shapes32" and shapes.num_classes == 10
    assert shapes.element_spec == {"image": (32, 32, 3), "label": ()}
    for split, n in (("train", 10_000), ("test", 2_000)):
        arrays = shapes.arrays(split)
        assert arrays["image"].shape == (n, 32, 32, 3)
        assert arrays["image"].dtype == np.float32 and arrays["label"].dtype == np.int32
        assert arrays["image"].min() == 0.0 and arrays["image"].max() == 1.0
        assert np.bincount(arrays["label"], minlength=10).tolist() == [n // 10] * 10
    # Colourful: channels differ, and every image has a visible shape.
    train = shapes.arrays("train")["image"]
    assert np.abs(train[..., 0] - train[..., 1]).mean() > 0.1
    assert train[:500].std(axis=(1, 2, 3)).min() > 0.05
    # Train and test are different draws.
    assert not np.array_equal(train[:2000], shapes.arrays("test")["image"])


def test_shapes32_is_deterministic_and_ignores_the_experiment_seed(shapes):
    # Small train splits keep this fast; the test split has the default size.
    a = gd.load_dataset(data_config("shapes32", num_train=300, seed=123))
    b = gd.load_dataset(data_config("shapes32", num_train=300))
    assert a.arrays("train")["image"].shape == (300, 32, 32, 3)
    for key in ("image", "label"):
        np.testing.assert_array_equal(a.arrays("train")[key], b.arrays("train")[key])
        # The test split does not depend on num_train (nor the seed).
        np.testing.assert_array_equal(a.arrays("test")[key], shapes.arrays("test")[key])
    other = gd.load_dataset(data_config("shapes32", num_train=300, num_test=20, dataset_seed=1))
    assert not np.array_equal(other.arrays("train")["image"], a.arrays("train")["image"])
    with pytest.raises(gd.DatasetError, match="num_test=0"):
        gd.load_dataset(data_config("shapes32", num_test=0))


def test_shapes32_labels_are_balanced_and_images_in_range():
    """Its docstring's promise: ``n // 10`` or one more of each class, in
    random order, float32 pixels in [0, 1]. (Generation speed is the
    benchmark's business, not a test's.)"""
    images, labels = synthetic.generate_shapes32(1003, np.random.default_rng(0))
    assert images.shape == (1003, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    counts = np.bincount(labels, minlength=10)
    assert set(counts) <= {100, 101} and counts.sum() == 1003
    assert not np.array_equal(labels, np.sort(labels))


def test_shapes32_classes_are_separable(shapes):
    """Nearest class centroid, on simple colour- and position-free features
    of 600 images, is far above chance (10%); a small convnet on the full
    set reaches >95%."""

    def features(images_array):
        # Foreground mask: pixels far from the image's median colour (the
        # background, which covers most of every image), made position-free
        # by the magnitude of its 2-D Fourier transform.
        median = np.median(images_array, axis=(1, 2), keepdims=True)
        mask = (np.abs(images_array - median).sum(-1) > 0.3).astype(np.float32)
        return np.log1p(np.abs(np.fft.rfft2(mask)).reshape(len(mask), -1))

    train, test = shapes.arrays("train"), shapes.arrays("test")
    x_train, y_train = features(train["image"][:600]), train["label"][:600]
    x_test, y_test = features(test["image"][:400]), test["label"][:400]
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(10)])
    distances = ((x_test[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    accuracy = (distances.argmin(axis=1) == y_test).mean()
    assert accuracy > 0.75, accuracy


def test_shapes32_is_the_same_data_as_when_published(shapes):
    """Golden values: a change to the generator changes every result measured
    on shapes32, so it must be deliberate (update these and the README)."""
    test = shapes.arrays("test")
    assert test["label"][:20].tolist() == [5, 2, 9, 3, 4, 4, 8, 5, 7, 8,
                                           0, 1, 6, 0, 0, 7, 8, 0, 3, 6]
    assert abs(float(test["image"].mean()) - 0.49923) < 1e-4
    assert abs(float(shapes.arrays("train")["image"].mean()) - 0.50308) < 1e-4


def test_crash_mid_prepare_leaves_no_valid_dataset(bin_dir, tmp_path, monkeypatch):
    from genjax.data import tfds_prepare

    original = tfds_prepare._CifarMixin._generate_examples

    def crashing(self, split_prefix, images_array, labels):
        for count, example in enumerate(original(self, split_prefix, images_array, labels)):
            if count == 3:
                raise KeyboardInterrupt("simulated crash")
            yield example

    monkeypatch.setattr(tfds_prepare._CifarMixin, "_generate_examples", crashing)
    data_dir = tmp_path / "tfds"
    config = data_config("cifar10", data_dir=str(data_dir), manual_dir=str(bin_dir))
    with pytest.raises(KeyboardInterrupt):
        images.load_tfds_images("cifar10", config, "small", counts=COUNTS)
    assert not (data_dir / "cifar10" / "3.0.2").exists()
    with pytest.raises(gd.DatasetError, match="not prepared"):
        gd.load_dataset(data_config("cifar10", data_dir=str(data_dir)))
