"""The ``image_folder`` dataset: a directory of the user's own PNG/JPEG images.

``config.data.manual_dir`` is the directory. Accepted layouts:

* ``DIR/*.png``: unlabelled images.
* ``DIR/<class>/*.png``: labelled; the label of a class is its index in the
  sorted list of class folders that hold images.
* ``DIR/train/...`` and ``DIR/test/...``, each in one of the layouts above:
  those are the splits. Otherwise a fixed 90/10 split is drawn.

Optional keys: ``config.data.channels`` (1 or 3; default 1 if every image is
greyscale, else 3; alpha is dropped) and ``config.data.image_size`` (an int or
``(height, width)``: the shape every image must have; by default the most
common shape). Images are not resized: a wrongly sized
image is an error, not a silently distorted example.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from genjax.data.registry import Dataset, DatasetError, register_dataset

_EXTENSIONS = (".png", ".jpg", ".jpeg")
# The split depends only on the file list, never on the experiment seed, so
# every run of every experiment evaluates on the same held-out images.
_SPLIT_SEED = 1_234_567
_TEST_FRACTION = 0.1
# PIL modes that hold one channel; anything else is loaded as RGB by default.
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _is_image(path: str) -> bool:
    name = os.path.basename(path)
    return (
        not name.startswith(".")
        and name.lower().endswith(_EXTENSIONS)
        and os.path.isfile(path)
    )


def _scan(directory: str) -> tuple[list[str], list[str] | None]:
    """Lists the images of one split directory.

    Returns:
      ``(paths, class_names)``: ``class_names[i]`` is the class folder of
      ``paths[i]``, or ``class_names`` is None for a flat directory.
    """
    entries = sorted(os.listdir(directory))
    flat = [os.path.join(directory, e) for e in entries if _is_image(os.path.join(directory, e))]
    paths, classes = [], []
    for entry in entries:
        sub = os.path.join(directory, entry)
        if entry.startswith(".") or not os.path.isdir(sub):
            continue
        for name in sorted(os.listdir(sub)):
            if _is_image(os.path.join(sub, name)):
                paths.append(os.path.join(sub, name))
                classes.append(entry)
    if flat and paths:
        raise DatasetError(
            f"{directory} has both images ({os.path.basename(flat[0])}, ...) and "
            f"class folders ({classes[0]}/, ...); put every image in a class "
            f"folder, or none"
        )
    if flat:
        return flat, None
    return paths, (classes if paths else None)


def _parse_image_size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise DatasetError(
            f"config.data.image_size={value!r}: expected a positive int or "
            f"(height, width)"
        )
    return size


def _load_images(paths, channels, shape, shape_source) -> np.ndarray:
    """Reads all images, checks their shapes and returns float32 [N, H, W, C].

    Args:
      paths: the image files.
      channels: 1, 3, or None to infer from the images' modes.
      shape: the expected ``(height, width)``, or None for the most common
        shape among the images.
      shape_source: where ``shape`` comes from, for the error message.

    Returns:
      float32 ``[N, H, W, C]`` in [0, 1].
    """
    from PIL import Image  # Imported here to keep `import genjax.data` light.

    # First pass: headers only (Image.open does not decode pixels), so a bad
    # shape is reported before any decoding; each file is closed at once so
    # that large folders do not run out of file handles.
    headers = []
    for path in paths:
        try:
            with Image.open(path) as image:
                headers.append((image.height, image.width, image.mode))
        except (OSError, SyntaxError) as e:
            raise DatasetError(f"cannot open image {path}: {e}") from e
    if shape is None:
        # The majority shape, so that one odd image is the one reported.
        shape, count = collections.Counter(h[:2] for h in headers).most_common(1)[0]
        shape_source = f"the shape of {count} of the {len(headers)} images"
    for path, (height, width, _) in zip(paths, headers):
        if (height, width) != tuple(shape):
            raise DatasetError(
                f"image {path} has shape {height}x{width}, expected "
                f"{shape[0]}x{shape[1]} ({shape_source}); resize the images to "
                f"one shape or set --config.data.image_size"
            )
    if channels is None:
        channels = 1 if all(mode in _GREY_MODES for _, _, mode in headers) else 3
    elif channels not in (1, 3):
        raise DatasetError(f"config.data.channels={channels!r}: expected 1 or 3")
    mode = "L" if channels == 1 else "RGB"
    pixels = np.empty((len(paths), *shape, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                pixels[i] = np.asarray(image.convert(mode)).reshape(*shape, channels)
        except OSError as e:
            raise DatasetError(f"cannot decode image {path}: {e}") from e
    return pixels.astype(np.float32) / np.float32(255.0)


@register_dataset(
    "image_folder",
    "image",
    "your own PNG/JPEG images in config.data.manual_dir (flat or class folders)",
)
def load_image_folder(data_config) -> Dataset:
    """Loads the images in ``data_config.manual_dir``; see the module docstring.

    Raises:
      DatasetError: if the directory is missing or has no images, the layout
        is ambiguous, or an image cannot be read or has the wrong shape.
    """
    directory = data_config.get("manual_dir")
    if directory is None:
        raise DatasetError(
            "image_folder needs --config.data.manual_dir=DIR, the directory of images"
        )
    directory = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
        raise DatasetError(
            f"config.data.manual_dir {directory} does not exist or is not a directory"
        )
    image_size = _parse_image_size(data_config.get("image_size"))

    if all(os.path.isdir(os.path.join(directory, s)) for s in ("train", "test")):
        split_files = {s: _scan(os.path.join(directory, s)) for s in ("train", "test")}
    else:
        paths, classes = _scan(directory)
        if len(paths) < 2:
            raise DatasetError(
                f"{directory} has {len(paths)} images (.png/.jpg/.jpeg), need at "
                f"least 2 to split into train and test"
            )
        order = np.random.default_rng(_SPLIT_SEED).permutation(len(paths))
        num_test = max(1, int(round(len(paths) * _TEST_FRACTION)))
        # Sorted, so examples keep the file order within a split.
        index = {"test": np.sort(order[:num_test]), "train": np.sort(order[num_test:])}
        split_files = {
            s: ([paths[i] for i in idx], None if classes is None else [classes[i] for i in idx])
            for s, idx in index.items()
        }

    for split, (paths, _) in split_files.items():
        if not paths:
            raise DatasetError(
                f"{os.path.join(directory, split)} has no images (.png/.jpg/.jpeg), "
                f"directly or in class folders"
            )
    labelled = {s: classes is not None for s, (_, classes) in split_files.items()}
    if len(set(labelled.values())) != 1:
        raise DatasetError(
            f"{directory}: train/ and test/ must both use class folders or both "
            f"be flat; found labelled={labelled}"
        )
    class_names = None
    if labelled["train"]:
        class_names = sorted(set(split_files["train"][1]))
        unknown = sorted(set(split_files["test"][1]) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{directory}: test classes {unknown} have no folder in the train "
                f"split; train classes are {class_names}"
            )

    # Both splits are read together: one expected shape and one channel
    # count for the whole dataset.
    num_train = len(split_files["train"][0])
    pixels = _load_images(
        split_files["train"][0] + split_files["test"][0],
        data_config.get("channels"),
        image_size,
        "config.data.image_size",
    )
    train_images, test_images = pixels[:num_train], pixels[num_train:]
    splits = {"train": {"image": train_images}, "test": {"image": test_images}}
    element_spec = {"image": tuple(train_images.shape[1:])}
    if class_names is not None:
        label_of = {name: i for i, name in enumerate(class_names)}
        for split, (_, classes) in split_files.items():
            splits[split]["label"] = np.array([label_of[c] for c in classes], dtype=np.int32)
        element_spec["label"] = ()
    return Dataset(
        name="image_folder",
        kind="image",
        splits=splits,
        element_spec=element_spec,
        num_classes=None if class_names is None else len(class_names),
        description=f"images from {directory}"
        + ("" if class_names is None else f", classes {class_names}"),
    )
