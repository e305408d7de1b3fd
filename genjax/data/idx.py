"""Reading the idx files MNIST and Fashion-MNIST are distributed as.

The idx format: a 4-byte big-endian magic number (two zero bytes, a type code,
the number of dimensions), one big-endian uint32 per dimension, then the data.
MNIST uses type code 0x08 (unsigned byte), so images have magic 2051
(``0x00000803``, 3 dimensions) and labels 2049 (``0x00000801``, 1 dimension).

Every check here raises ``DatasetError`` naming the file, because a wrong or
damaged file is the usual reason MNIST preparation fails offline.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from genjax.data.registry import DatasetError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10

# The four standard file names (without ".gz") of each split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
STANDARD_COUNTS = {"train": 60_000, "test": 10_000}


def _idx_file_list() -> str:
    names = [n for pair in IDX_FILES.values() for n in pair]
    return ", ".join(f"{n}[.gz]" for n in names)


def find_idx_file(manual_dir: str, stem: str) -> str:
    """Returns the path of ``stem`` or ``stem.gz`` in ``manual_dir``.

    Raises:
      DatasetError: if neither exists; names both paths and the four files
        expected.
    """
    # The uncompressed file wins when both exist: it is the cheaper to read.
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(manual_dir, candidate)
        if os.path.isfile(path):
            return path
    raise DatasetError(
        f"missing idx file {os.path.join(manual_dir, stem)} (or .gz) in "
        f"manual_dir {manual_dir}; expected the four files {_idx_file_list()}"
    )


def _read_bytes(path: str) -> bytes:
    """Returns the (decompressed, for ``.gz``) bytes of ``path``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DatasetError(
            f"cannot decompress {path} ({e}); the file is truncated or not "
            f"gzip, copy it again"
        ) from e
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from e


def read_idx(path: str, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    """Reads an unsigned-byte idx file and checks it against what is expected.

    Args:
      path: the file, gzipped if the name ends in ``.gz``.
      magic: the expected magic number (2051 images, 2049 labels).
      shape: the expected dimensions, e.g. ``(60000, 28, 28)``.

    Returns:
      A read-only uint8 array of ``shape``.

    Raises:
      DatasetError: naming ``path`` if the magic number, the dimensions or the
        data length differ from what is expected.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(
            f"{path} is truncated: {len(data)} bytes, too short for an idx header"
        )
    found_magic = int.from_bytes(data[:4], "big")
    if found_magic != magic:
        what = "an idx3 image file" if magic == IMAGES_MAGIC else "an idx1 label file"
        raise DatasetError(
            f"{path} has magic number {found_magic}, expected {magic} ({what}); "
            f"the file is swapped with another one or is not an idx file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path} is truncated: {len(data)} bytes, the idx header needs {header}"
        )
    dims = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    if dims != tuple(shape):
        raise DatasetError(
            f"{path} has dimensions {dims}, expected {tuple(shape)}; "
            f"is it from a different dataset or split?"
        )
    expected = int(np.prod(dims))
    found = len(data) - header
    if found < expected:
        raise DatasetError(
            f"{path} is truncated: {found} data bytes, expected {expected}; "
            f"copy the file again"
        )
    if found > expected:
        raise DatasetError(
            f"{path} has {found - expected} bytes after the {expected} the header "
            f"announces; the file is damaged, copy it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_splits(
    manual_dir: str, counts: dict[str, int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads and checks the four idx files of MNIST-format data.

    Args:
      manual_dir: the directory holding the four standard files, gzipped or not.
      counts: split -> number of examples; defaults to 60,000 / 10,000. Tests
        pass small counts to exercise the code on small files.

    Returns:
      split -> ``(images uint8 [N, 28, 28], labels uint8 [N])``.

    Raises:
      DatasetError: if ``manual_dir`` is not a directory, a file is missing or
        any file fails a check; the message names the file.
    """
    if not os.path.isdir(manual_dir):
        raise DatasetError(
            f"manual_dir {manual_dir} is not a directory; point "
            f"--config.data.manual_dir at a directory with {_idx_file_list()}"
        )
    counts = dict(STANDARD_COUNTS if counts is None else counts)
    # Locate all four files before reading any, so that a missing file is
    # reported at once instead of after decompressing 50 MB.
    paths = {
        split: tuple(find_idx_file(manual_dir, stem) for stem in IDX_FILES[split])
        for split in IDX_FILES
    }
    splits = {}
    for split, (image_path, label_path) in paths.items():
        n = counts[split]
        images = read_idx(image_path, IMAGES_MAGIC, (n, IMAGE_SIZE, IMAGE_SIZE))
        labels = read_idx(label_path, LABELS_MAGIC, (n,))
        if labels.max() >= NUM_CLASSES:
            raise DatasetError(
                f"{label_path} has label {int(labels.max())}, expected labels "
                f"0..{NUM_CLASSES - 1}"
            )
        splits[split] = (images, labels)
    return splits
