"""Built-in image datasets: ``digits``, ``mnist``, ``fashion_mnist`` and ``cifar10``.

``digits`` comes straight from scikit-learn. ``mnist``, ``fashion_mnist`` and
``cifar10`` are the stock TFDS datasets, read through ``tfds.data_source``
(array_record, no TensorFlow). If they are not prepared in ``data_dir`` and
``config.data.manual_dir`` holds their files (the four idx files of the
MNISTs, the binary version of CIFAR-10), genjax prepares them offline first
(``tfds_prepare.py``).

Decoding 70,000 PNGs through the data source takes several seconds, so the
decoded uint8 arrays are cached as ``genjax-arrays-<split>.npz`` inside the
prepared TFDS version directory (``<data_dir>/mnist/3.0.1/``). Living there,
the cache disappears with the dataset when TFDS overwrites or deletes it, so
it cannot outlive the data it was decoded from.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np

from genjax.data import cifar
from genjax.data.registry import Dataset, DatasetError, register_dataset

log = logging.getLogger(__name__)

# The digits split must not depend on the experiment seed: every run of every
# experiment evaluates on the same 360 test digits.
_DIGITS_SPLIT_SEED = 20_240_101
_DIGITS_TRAIN_FRACTION = 0.8

_CACHE_PREFIX = "genjax-arrays-"


def _images_to_float(images_uint8: np.ndarray, max_value: float) -> np.ndarray:
    """Returns ``images / max_value`` as float32, the pixel format every model sees."""
    return images_uint8.astype(np.float32) / np.float32(max_value)


@register_dataset(
    "digits", "image", "1,797 8x8 handwritten digits from scikit-learn, 10 classes"
)
def load_digits(data_config) -> Dataset:
    """Loads scikit-learn's 8x8 digits, split 1437 / 360 by a fixed permutation.

    Args:
      data_config: ``config.data``; no keys besides ``name`` are used.
    """
    del data_config
    # Imported here: sklearn.datasets takes over a second to import, and most
    # runs never touch digits.
    from sklearn.datasets import load_digits as sklearn_load_digits

    raw = sklearn_load_digits()
    images = _images_to_float(raw.images, 16.0)[..., None]  # pixels are 0..16
    labels = raw.target.astype(np.int32)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    # Floor for train: 1797 examples -> 1437 train / 360 test.
    num_train = int(len(labels) * _DIGITS_TRAIN_FRACTION)
    train, test = order[:num_train], order[num_train:]
    return Dataset(
        name="digits",
        kind="image",
        splits={
            "train": {"image": images[train], "label": labels[train]},
            "test": {"image": images[test], "label": labels[test]},
        },
        element_spec={"image": (8, 8, 1), "label": ()},
        num_classes=10,
        description="scikit-learn digits, 8x8x1 in [0, 1]",
    )


def default_data_dir() -> str:
    """Returns TFDS's default data directory ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    # Read at call time (not tfds.core.constants.DATA_DIR, fixed at import) so
    # that setting $TFDS_DATA_DIR after import still takes effect.
    return os.environ.get(
        "TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    )


_IDX_FILES = (
    "the four idx files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
    "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]{example})"
)

# What config.data.manual_dir must hold to prepare each stock TFDS dataset
# offline (tfds_prepare.READERS reads it), for messages.
_MANUAL_DIR_CONTENTS = {
    "mnist": _IDX_FILES.format(example="; e.g. ../shared/data/mnist"),
    "fashion_mnist": _IDX_FILES.format(example=""),
    "cifar10": cifar.MANUAL_DIR_CONTENTS,
}


def _not_prepared_message(name: str, data_dir: str) -> str:
    return (
        f"dataset {name!r} is not prepared in {data_dir}; either pass "
        f"--config.data.manual_dir=DIR with {_MANUAL_DIR_CONTENTS[name]} "
        f"and genjax prepares it offline, or prepare it "
        f"with TFDS on a machine with internet: pip install "
        f"'genjax-research[tfds]' && tfds build {name} --file_format=array_record "
        f"--data_dir={data_dir}"
    )


def load_tfds_images(
    name: str, data_config, description: str, counts: dict[str, int] | None = None
) -> Dataset:
    """Loads TFDS image dataset ``name`` (train and test), preparing it if needed.

    Args:
      name: the stock TFDS name, ``"mnist"``, ``"fashion_mnist"`` or
        ``"cifar10"``.
      data_config: ``config.data`` with ``data_dir`` (None: TFDS default) and
        ``manual_dir`` (None, or the local files to prepare from: the
        directory of idx files, or CIFAR-10's binary version as ``cifar.py``
        describes).
      description: the Dataset's description.
      counts: split -> expected number of examples when preparing; tests pass
        small counts. Defaults to the full dataset's (60,000 / 10,000 for
        the MNISTs, 50,000 / 10,000 for CIFAR-10).

    Raises:
      DatasetError: if the dataset is not prepared and cannot be prepared from
        ``manual_dir``, or cannot be read; the message says how to fix it.
    """
    # Imported here: TFDS takes half a second to import.
    import tensorflow_datasets as tfds

    data_dir = os.path.abspath(
        os.path.expanduser(data_config.get("data_dir") or default_data_dir())
    )
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        manual_dir = data_config.get("manual_dir")
        if manual_dir is None:
            raise DatasetError(_not_prepared_message(name, data_dir))
        manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
        # cifar10's manual_dir may also be the tarball; cifar.locate checks it.
        if name != "cifar10" and not os.path.isdir(manual_dir):
            raise DatasetError(
                f"config.data.manual_dir {manual_dir} does not exist or is not a "
                f"directory; point it at the directory holding the {name} idx files"
            )
        from genjax.data import tfds_prepare  # Needs TFDS; see above.

        tfds_prepare.prepare_from_manual_dir(name, manual_dir, data_dir, counts=counts)
        # A fresh builder reads the just-written dataset_info.json.
        builder = tfds.builder(name, data_dir=data_dir)

    features = builder.info.features
    image_shape = tuple(features["image"].shape)
    splits = {}
    for split in ("train", "test"):
        images, labels = _load_split(builder, split, image_shape)
        splits[split] = {
            "image": _images_to_float(images, 255.0),
            "label": labels.astype(np.int32),
        }
    return Dataset(
        name=name,
        kind="image",
        splits=splits,
        element_spec={"image": image_shape, "label": ()},
        num_classes=int(features["label"].num_classes),
        description=description,
    )


def _cache_path(builder, split: str) -> str:
    return os.path.join(os.fspath(builder.data_path), f"{_CACHE_PREFIX}{split}.npz")


def _load_split(builder, split: str, image_shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images uint8 [N, *image_shape], labels [N])`` of ``split``,
    from the cache when it is valid, else decoded and then cached."""
    if split not in builder.info.splits:
        raise DatasetError(
            f"{builder.name} in {builder.data_path} has no split {split!r}; "
            f"it has {sorted(builder.info.splits)}"
        )
    num_examples = builder.info.splits[split].num_examples
    path = _cache_path(builder, split)
    cached = _read_cache(path, num_examples, image_shape)
    if cached is not None:
        return cached
    images, labels = _decode_split(builder, split, num_examples, image_shape)
    _write_cache(path, images, labels)
    return images, labels


def _read_cache(path: str, num_examples: int, image_shape: tuple):
    """Returns the cached ``(images, labels)``, or None if absent or not matching."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            images, labels = cache["image"], cache["label"]
    except (OSError, ValueError, KeyError) as e:
        log.warning("genjax: ignoring unreadable cache %s (%s)", path, e)
        return None
    # The shapes tie the cache to the dataset_info.json next to it; a cache
    # from other data (or cut short) is rebuilt instead of trusted.
    if (
        images.shape != (num_examples, *image_shape)
        or images.dtype != np.uint8
        or labels.shape != (num_examples,)
    ):
        log.warning("genjax: ignoring cache %s, its shapes do not match", path)
        return None
    return images, labels


def _write_cache(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes the cache atomically; a read-only data_dir only costs the speed-up."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, image=images, label=labels)
        # os.replace is atomic: readers see the old state or the full file.
        os.replace(tmp, path)
    except OSError as e:
        log.warning("genjax: could not write cache %s (%s); loading stays slow", path, e)
        if os.path.exists(tmp):
            os.remove(tmp)


def _decode_split(builder, split: str, num_examples: int, image_shape: tuple):
    """Reads ``split`` through the TFDS array_record data source and decodes it."""
    import tensorflow_datasets as tfds

    try:
        # SkipDecoding + PIL is ~1.6x faster than TFDS's own image decoding.
        source = builder.as_data_source(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}
        )
    except (ValueError, NotImplementedError) as e:
        # E.g. a dataset prepared by stock TFDS in its default tfrecord format,
        # which cannot be read without TensorFlow.
        raise DatasetError(
            f"cannot read {builder.name} in {builder.data_path} as an array_record "
            f"data source ({str(e).splitlines()[0]}); delete that directory and "
            f"prepare it again with --config.data.manual_dir or "
            f"tfds build {builder.name} --file_format=array_record"
        ) from e
    if len(source) != num_examples:
        raise DatasetError(
            f"{builder.name} split {split!r} in {builder.data_path} has "
            f"{len(source)} records, dataset_info.json says {num_examples}; "
            f"delete that directory and prepare it again"
        )
    try:
        return _decode_records(source, builder, split, num_examples, image_shape)
    except DatasetError:
        raise
    except (OSError, RuntimeError, ValueError) as e:
        # array_record reports missing or damaged shards as RuntimeError.
        raise DatasetError(
            f"cannot read {builder.name} split {split!r} in {builder.data_path} "
            f"({str(e).splitlines()[0]}); the prepared files are damaged or "
            f"incomplete, delete that directory and prepare it again"
        ) from e


def _decode_records(source, builder, split, num_examples, image_shape):
    """Decodes every record of ``source`` into uint8 images and labels."""
    from PIL import Image

    images = np.empty((num_examples, *image_shape), dtype=np.uint8)
    labels = np.empty((num_examples,), dtype=np.int64)
    chunk = 2048  # Batched reads amortise the array_record lookups.
    for start in range(0, num_examples, chunk):
        stop = min(start + chunk, num_examples)
        records = source.__getitems__(range(start, stop))
        for i, record in enumerate(records, start):
            pixels = np.asarray(Image.open(io.BytesIO(record["image"])))
            if pixels.size != images[i].size:
                raise DatasetError(
                    f"{builder.name} split {split!r} record {i} in "
                    f"{builder.data_path} decodes to shape {pixels.shape}, "
                    f"expected {image_shape}; delete that directory and prepare it again"
                )
            images[i] = pixels.reshape(image_shape)
            labels[i] = record["label"]
    return images, labels


@register_dataset(
    "mnist", "image", "MNIST handwritten digits, 28x28x1, 60k/10k, 10 classes (TFDS)"
)
def load_mnist(data_config) -> Dataset:
    """Loads TFDS ``mnist``; see ``load_tfds_images`` for preparation."""
    return load_tfds_images("mnist", data_config, "MNIST, 28x28x1 in [0, 1]")


@register_dataset(
    "fashion_mnist",
    "image",
    "Fashion-MNIST clothing images, 28x28x1, 60k/10k, 10 classes (TFDS)",
)
def load_fashion_mnist(data_config) -> Dataset:
    """Loads TFDS ``fashion_mnist``; see ``load_tfds_images`` for preparation."""
    return load_tfds_images("fashion_mnist", data_config, "Fashion-MNIST, 28x28x1 in [0, 1]")


@register_dataset(
    "cifar10",
    "image",
    "CIFAR-10 colour photos, 32x32x3, 50k/10k, 10 classes (TFDS)",
)
def load_cifar10(data_config) -> Dataset:
    """Loads TFDS ``cifar10``; see ``load_tfds_images`` for preparation."""
    return load_tfds_images("cifar10", data_config, "CIFAR-10, 32x32x3 in [0, 1]")
