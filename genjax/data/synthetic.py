"""``shapes32``: a synthetic, labelled 32x32 RGB image dataset that needs no files.

A stand-in for CIFAR-10 in smoke tests and CPU experiments of colour-image
models. Each image shows one of 10 shapes (``CLASS_NAMES``) at a random
position and size, in a random foreground colour on a random background whose
every channel differs from the foreground's by 0.3 to 0.7, with anti-aliased
edges and a little pixel noise (std 0.026, clipped to [0, 1]). Shapes are
axis-aligned (a rotation would turn the square into the diamond), so the
classes stay distinct: a small convnet tells them apart at well over 95%
accuracy.

The data are drawn with vectorised numpy from a fixed dataset seed
(``config.data.dataset_seed``, default 0; independent of the experiment
seed), one random stream per split, so the test set does not change with
``num_train``. Sizes come from ``config.data.num_train`` (default 10,000) and
``config.data.num_test`` (default 2,000); classes are balanced (counts differ
by at most one). Generating both default splits takes about 0.3 s of CPU.
"""

from __future__ import annotations

import numpy as np

from genjax.data.registry import Dataset, DatasetError, register_dataset

IMAGE_SIZE = 32
CLASS_NAMES = (
    "circle", "square", "triangle", "plus", "ring",
    "horizontal_bar", "vertical_bar", "diamond", "x", "hollow_square",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)

_SPLIT_STREAMS = {"train": 0, "test": 1}
_MIN_HALF_SIZE, _MAX_HALF_SIZE = 6.0, 12.0  # Pixels from centre to edge.
# Pixel noise: the sum of two uniform 4-bit integers, centred, in 1/255
# steps: a triangular distribution on [-15/255, 15/255], std 0.026. Drawn as
# raw random bits, it costs a tenth of Gaussian noise of the same size.
_NOISE_STEP = 1.0 / 255.0
_SQRT2 = float(np.sqrt(2.0))
_CHUNK = 500  # Images composited at a time.


def _signed_distance(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance from each point ``(u, v)`` to shape ``label``'s edge.

    ``(u, v)`` are shape-relative coordinates (the shape spans about
    [-1, 1]^2, ``v`` points down); the distance is in the same units,
    negative inside. It is exact or close near the edge, which is all the
    anti-aliasing needs. Unions take the minimum, intersections the maximum.
    """
    au, av = np.abs(u), np.abs(v)
    box = np.maximum(au, av)  # The L-infinity norm: squares.
    if label == 0:  # circle
        return np.sqrt(u * u + v * v) - 1.0
    if label == 1:  # square
        return box - 0.85
    if label == 2:  # triangle, apex up: base at v=0.8, sides of slope 0.55
        sides = (au - 0.55 * (v + 1.0)) / np.float32(np.hypot(1.0, 0.55))
        return np.maximum(v - 0.8, sides)
    if label == 3:  # plus
        return np.minimum(np.maximum(au - 1.0, av - 0.28), np.maximum(au - 0.28, av - 1.0))
    if label == 4:  # ring, radii 0.55 to 1
        return np.abs(np.sqrt(u * u + v * v) - 0.775) - 0.225
    if label == 5:  # horizontal bar
        return np.maximum(au - 1.0, av - 0.3)
    if label == 6:  # vertical bar
        return np.maximum(au - 0.3, av - 1.0)
    if label == 7:  # diamond
        return (au + av - 1.0) / np.float32(_SQRT2)
    if label == 8:  # x: bands around both diagonals, cut to a square
        return np.maximum(box - 0.9, (np.abs(au - av) - 0.38) / np.float32(_SQRT2))
    if label == 9:  # hollow square, L-infinity radii 0.55 to 0.9
        return np.abs(box - 0.725) - 0.175
    raise ValueError(f"no shape {label}")


def generate_shapes32(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``n`` labelled shape images.

    Args:
      n: the number of images.
      rng: the random stream; the same stream state gives the same images.

    Returns:
      ``(images float32 [n, 32, 32, 3] in [0, 1], labels int32 [n])``, the
      labels balanced (``n // 10`` or one more of each) in random order.
    """
    f32 = np.float32
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    half = rng.uniform(_MIN_HALF_SIZE, _MAX_HALF_SIZE, size=n).astype(f32)
    # The whole shape (up to `half` from its centre) stays inside the image.
    cy = rng.uniform(half, IMAGE_SIZE - half).astype(f32)
    cx = rng.uniform(half, IMAGE_SIZE - half).astype(f32)
    foreground = rng.uniform(0.0, 1.0, size=(n, 3)).astype(f32)
    # Each background channel is 0.3 to 0.7 away from the foreground's
    # (wrapping around [0, 1)), so every shape stands out in every channel.
    background = (foreground + rng.uniform(0.3, 0.7, size=(n, 3)).astype(f32)) % f32(1.0)
    # Raw generator output as bytes (3072 per image, a multiple of 8), three
    # times faster than rng.bytes; "<u8" keeps the bytes platform-independent.
    raw = rng.bit_generator.random_raw(n * IMAGE_SIZE * IMAGE_SIZE * 3 // 8)
    noise_bytes = raw.astype("<u8", copy=False).view(np.uint8)

    centres = np.arange(IMAGE_SIZE, dtype=f32) + f32(0.5)  # Pixel centres.
    alpha = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=f32)
    for label in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == label)
        if rows.size == 0:
            continue
        scale = half[rows, None, None]
        v = (centres[None, :, None] - cy[rows, None, None]) / scale  # [k, 32, 1]
        u = (centres[None, None, :] - cx[rows, None, None]) / scale  # [k, 1, 32]
        # Coverage of each pixel from its centre's distance to the edge in
        # pixels: 1 inside, 0 outside, linear across the one-pixel border.
        distance = _signed_distance(label, u, v) * scale
        alpha[rows] = np.clip(f32(0.5) - distance, 0.0, 1.0)

    # background + (foreground - background) * alpha + noise, in chunks of
    # images (small temporaries stay in cache) and channel-major (long inner
    # loops), with the noise's offset folded into the background.
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=f32)
    pixels = IMAGE_SIZE * IMAGE_SIZE
    offset = background - f32(15 * _NOISE_STEP)
    contrast = foreground - background
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = alpha[start:stop].reshape(stop - start, 1, pixels) * contrast[start:stop, :, None]
        chunk += offset[start:stop, :, None]
        noise = noise_bytes[start * pixels * 3 : stop * pixels * 3].reshape(chunk.shape)
        chunk += ((noise & 15) + (noise >> 4)) * f32(_NOISE_STEP)  # 0..30 steps.
        np.clip(chunk, 0.0, 1.0, out=chunk)
        images[start:stop] = chunk.transpose(0, 2, 1).reshape(stop - start, IMAGE_SIZE, IMAGE_SIZE, 3)
    return images, labels


def _int_at_least(data_config, key: str, default: int, minimum: int) -> int:
    value = data_config.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DatasetError(
            f"config.data.{key}={value!r}: expected an int >= {minimum}"
        )
    return value


@register_dataset(
    "shapes32",
    "image",
    "synthetic 32x32x3 coloured shapes, 10 classes, 10k/2k (generated, no files)",
)
def load_shapes32(data_config) -> Dataset:
    """Generates ``shapes32``; see the module docstring.

    Args:
      data_config: ``config.data``; optional keys ``num_train`` (default
        10,000), ``num_test`` (default 2,000) and ``dataset_seed`` (default 0).
    """
    seed = _int_at_least(data_config, "dataset_seed", 0, 0)
    sizes = {
        "train": _int_at_least(data_config, "num_train", 10_000, 1),
        "test": _int_at_least(data_config, "num_test", 2_000, 1),
    }
    splits = {}
    for split, n in sizes.items():
        # The same seed layout as the 2-D toys: one stream per split.
        rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
        images, labels = generate_shapes32(n, rng)
        splits[split] = {"image": images, "label": labels}
    return Dataset(
        name="shapes32",
        kind="image",
        splits=splits,
        element_spec={"image": (IMAGE_SIZE, IMAGE_SIZE, 3), "label": ()},
        num_classes=NUM_CLASSES,
        description="synthetic coloured shapes, 32x32x3 in [0, 1]",
    )
