"""Image grids and strips as PNG files, shared by every image family, and
scatter images of 2-D points."""

from __future__ import annotations

import math
import os

import numpy as np


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 1,
              min_size: int = 28) -> np.ndarray:
    """Tiles ``images`` (float ``[N, H, W, C]`` in [0, 1]) into uint8 ``[h, w, C]``.

    Images smaller than ``min_size`` pixels are enlarged by an integer factor
    (nearest neighbour) so that 8x8 digits are visible.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"expected [N, H, W, C] images, got shape {images.shape}")
    n, h, w, c = images.shape
    scale = max(1, math.ceil(min_size / max(h, w)))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c),
                   np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return (np.clip(grid, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def scatter_image(points: np.ndarray, reference: np.ndarray | None = None, *,
                  size: int = 256, extent: float | None = None) -> np.ndarray:
    """2-D points as a uint8 ``[size, size, 3]`` picture (no plotting library).

    Each point darkens the pixel it falls in (a 2-D histogram on a log
    scale), in blue; ``reference`` points (e.g. the test set), if given, are
    drawn underneath in light red, so that missing modes show. The square
    view is ``[-extent, extent]^2``, by default the 99.5th percentile of the
    absolute coordinates of all points, plus a margin.
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected [N, 2] points, got shape {points.shape}")
    everything = points if reference is None else np.concatenate([points, reference])
    finite = everything[np.isfinite(everything).all(axis=1)]
    if extent is None:
        extent = 1.1 * float(np.percentile(np.abs(finite), 99.5)) if len(finite) else 1.0
        extent = max(extent, 1e-6)

    def density(xy):
        xy = xy[np.isfinite(xy).all(axis=1)]
        # Image rows run downwards: y is flipped.
        hist, _, _ = np.histogram2d(-xy[:, 1], xy[:, 0], bins=size,
                                    range=[[-extent, extent], [-extent, extent]])
        return np.log1p(hist) / max(np.log1p(hist).max(), 1e-12)

    image = np.ones((size, size, 3), np.float32)
    if reference is not None:
        ref = density(np.asarray(reference, np.float64))[..., None]
        image -= 0.35 * ref * np.array([0.0, 1.0, 1.0], np.float32)
    dots = density(points)[..., None]
    image = image * (1.0 - dots) + dots * np.array([0.1, 0.2, 0.8], np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, image_hwc: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, C]`` array (C = 1 or 3) as PNG, atomically."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    tmp = path + ".tmp"
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)
