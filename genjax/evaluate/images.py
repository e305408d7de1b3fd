"""Image grids and strips as PNG files, shared by every image family."""

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


def save_png(path: str, image_hwc: np.ndarray) -> None:
    """Writes a uint8 ``[H, W, C]`` array (C = 1 or 3) as PNG, atomically."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arr = image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
    tmp = path + ".tmp"
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)
