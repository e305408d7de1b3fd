"""Reading the CIFAR-10 binary version (``cifar-10-binary.tar.gz``).

The binary version holds six files: ``data_batch_1.bin`` ... ``data_batch_5.bin``
(train, 10,000 records each) and ``test_batch.bin`` (10,000 records). A
record is 3,073 bytes: one label byte (0..9), then the 32x32 image as three
channel planes, red then green then blue, each 1,024 bytes in row-major
order. ``read_cifar10_splits`` returns them as ``[N, 32, 32, 3]`` uint8
arrays, ready for ``tfds_prepare``.

``manual_dir`` may be any of:

* a directory holding the six ``.bin`` files;
* a directory holding ``cifar-10-batches-bin/`` (the extracted tarball);
* a directory holding ``cifar-10-binary.tar.gz`` (read without extracting);
* the ``cifar-10-binary.tar.gz`` file itself.

Every check raises ``DatasetError`` naming the file, because a wrong or
damaged file is the usual reason preparing CIFAR-10 offline fails. This module
needs only numpy (no TFDS), so error paths stay cheap.
"""

from __future__ import annotations

import os
import tarfile
import zlib

import numpy as np

from genjax.data.registry import DatasetError

IMAGE_SIZE = 32
CHANNELS = 3
NUM_CLASSES = 10
RECORD_BYTES = 1 + CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # 3,073
RECORDS_PER_FILE = 10_000

# The label names of batches.meta.txt, which the stock TFDS builder copies
# into the dataset's features.
LABEL_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

BIN_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
STANDARD_COUNTS = {"train": 50_000, "test": 10_000}
BATCHES_DIR = "cifar-10-batches-bin"
TARBALL = "cifar-10-binary.tar.gz"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"

# What config.data.manual_dir must hold, for error messages.
MANUAL_DIR_CONTENTS = (
    "the CIFAR-10 binary version: data_batch_1.bin ... data_batch_5.bin and "
    f"test_batch.bin, or the {BATCHES_DIR}/ folder holding them, or {TARBALL} "
    f"(from {URL}; manual_dir may also be that file itself)"
)


def _all_names() -> list[str]:
    return [name for names in BIN_FILES.values() for name in names]


def _python_version_hint(directory: str) -> str:
    """A hint when ``directory`` holds the python (pickle) version instead."""
    for candidate in (directory, os.path.join(directory, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(candidate, "data_batch_1")):
            return (
                f" ({candidate} holds the CIFAR-10 python version; genjax reads "
                f"the binary version, {TARBALL})"
            )
    if os.path.isfile(os.path.join(directory, "cifar-10-python.tar.gz")):
        return (
            f" ({directory} holds cifar-10-python.tar.gz; genjax reads the "
            f"binary version, {TARBALL})"
        )
    return ""


def locate(manual_dir: str) -> tuple[str, str]:
    """Finds the CIFAR-10 binary files that ``manual_dir`` points at.

    Returns:
      ``("dir", directory)`` when the ``.bin`` files are in ``directory``
      (``manual_dir`` or its ``cifar-10-batches-bin/``), or
      ``("tar", path)`` for the tarball.

    Raises:
      DatasetError: if ``manual_dir`` does not exist, is a file that is not a
        tarball, or holds none of the accepted layouts; a missing ``.bin``
        file is named.
    """
    if os.path.isfile(manual_dir):
        if manual_dir.endswith((".tar.gz", ".tgz", ".tar")):
            return "tar", manual_dir
        raise DatasetError(
            f"config.data.manual_dir {manual_dir} is a file, not a directory "
            f"or {TARBALL}; point it at {MANUAL_DIR_CONTENTS}"
        )
    if not os.path.isdir(manual_dir):
        raise DatasetError(
            f"config.data.manual_dir {manual_dir} does not exist; point it at "
            f"{MANUAL_DIR_CONTENTS}"
        )
    names = _all_names()
    directory = manual_dir
    if not any(os.path.isfile(os.path.join(manual_dir, n)) for n in names):
        nested = os.path.join(manual_dir, BATCHES_DIR)
        tarball = os.path.join(manual_dir, TARBALL)
        if os.path.isdir(nested):
            directory = nested
        elif os.path.isfile(tarball):
            return "tar", tarball
    # Every file is located before any is read, so that a missing file is
    # reported at once.
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise DatasetError(
                f"missing CIFAR-10 file {path} in manual_dir {manual_dir}"
                f"{_python_version_hint(directory)}; expected {MANUAL_DIR_CONTENTS}"
            )
    return "dir", directory


def _read_files(kind: str, where: str) -> dict[str, tuple[str, bytes]]:
    """Returns file name -> ``(path for messages, bytes)`` of the six files."""
    names = _all_names()
    if kind == "dir":
        contents = {}
        for name in names:
            path = os.path.join(where, name)
            try:
                with open(path, "rb") as f:
                    contents[name] = (path, f.read())
            except OSError as e:
                raise DatasetError(f"cannot read {path}: {e}") from e
        return contents
    return _read_tarball(where, names)


def _read_tarball(path: str, names: list[str]) -> dict[str, tuple[str, bytes]]:
    """Reads the members named ``names`` (by base name) from tarball ``path``."""
    contents = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = os.path.basename(member.name)
                if member.isfile() and name in names and name not in contents:
                    data = archive.extractfile(member).read()
                    contents[name] = (f"{path}:{member.name}", data)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetError(
            f"cannot read {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            f"the archive is truncated or damaged, download {URL} again"
        ) from e
    missing = [n for n in names if n not in contents]
    if missing:
        raise DatasetError(
            f"{path} lacks {BATCHES_DIR}/{missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; is it the CIFAR-10 binary version? expected {TARBALL} from {URL}"
        )
    return contents


def parse_batch(path: str, data: bytes, num_records: int) -> tuple[np.ndarray, np.ndarray]:
    """Parses one binary batch file into images and labels.

    Args:
      path: the file, for messages.
      data: its bytes.
      num_records: the number of records it must hold.

    Returns:
      ``(images uint8 [num_records, 32, 32, 3], labels uint8 [num_records])``.

    Raises:
      DatasetError: naming ``path`` if its length is not ``num_records``
        records or a label is not 0..9.
    """
    expected = num_records * RECORD_BYTES
    if len(data) != expected:
        if len(data) < expected:
            problem = "is truncated"
            fix = "copy it again"
        else:
            problem = f"has {len(data) - expected} bytes too many"
            fix = "the file is damaged or not a CIFAR-10 batch, copy it again"
        raise DatasetError(
            f"{path} {problem}: {len(data)} bytes, expected {expected} "
            f"({num_records} records of {RECORD_BYTES} bytes); {fix}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(num_records, RECORD_BYTES)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DatasetError(
            f"{path} record {int(bad[0])} has label {int(labels[bad[0]])}, "
            f"expected 0..{NUM_CLASSES - 1}; the file is damaged or not a "
            f"CIFAR-10 binary batch (CIFAR-100's has two label bytes)"
        )
    # [N, C, H, W] planes -> [N, H, W, C].
    planes = records[:, 1:].reshape(num_records, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    images = np.ascontiguousarray(planes.transpose(0, 2, 3, 1))
    return images, labels


def read_cifar10_splits(
    manual_dir: str, counts: dict[str, int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads and checks the six CIFAR-10 binary files.

    Args:
      manual_dir: see the module docstring for the accepted layouts.
      counts: split -> number of examples; defaults to 50,000 / 10,000. The
        train examples are spread evenly over the five train files, so
        ``counts["train"]`` must be a multiple of 5. Tests pass small counts.

    Returns:
      split -> ``(images uint8 [N, 32, 32, 3], labels uint8 [N])``, the files
      concatenated in order (``data_batch_1.bin`` first), as the stock TFDS
      builder reads them.

    Raises:
      DatasetError: if a file is missing or fails a check; the message names
        the file.
    """
    counts = dict(STANDARD_COUNTS if counts is None else counts)
    per_file = {}
    for split, names in BIN_FILES.items():
        n = counts[split]
        if n <= 0 or n % len(names):
            raise DatasetError(
                f"CIFAR-10 count {split}={n} must be a positive multiple of "
                f"{len(names)} (one share per file)"
            )
        per_file[split] = n // len(names)
    kind, where = locate(os.path.abspath(os.path.expanduser(manual_dir)))
    contents = _read_files(kind, where)
    splits = {}
    for split, names in BIN_FILES.items():
        parts = [parse_batch(*contents[name], per_file[split]) for name in names]
        splits[split] = (
            np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]),
        )
    return splits
