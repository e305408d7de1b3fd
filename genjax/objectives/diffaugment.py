"""Differentiable augmentation for data-efficient GANs (Zhao et al. 2020).

A discriminator trained on a few hundred images memorises them: it calls
held-out real images fake, and the generator gets no useful signal.
DiffAugment applies the same random, differentiable transformations to every
image the discriminator sees, real and generated, in both players' losses, so
the discriminator cannot tell the two apart by memorised pixels and the
generator's gradient passes through the transformation. The generator never
learns to produce augmented images, because the fakes are augmented exactly
as the reals are.

The policy is a tuple of transformation names, applied in this order:

* ``color``: a random brightness shift in [-0.5, 0.5), saturation scale in
  [0, 2) and contrast scale in [0.5, 1.5), per image (the paper's ranges);
  saturation leaves a single channel unchanged.
* ``translation``: a shift by up to 1/8 of the height and width in each
  direction, per image, filling with zeros;
* ``cutout``: a square of half the height and width, at a random centre
  per image, set to zero.

Images are ``[B, H, W, C]`` in [-1, 1] (the GAN's range), so zero is mid-grey.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; "" -> ().
    Raises ValueError naming an unknown transformation."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip()) if policy else ()
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment transformation(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(POLICIES)}, comma-separated")
    return names


def color(x: jax.Array, rng: jax.Array) -> jax.Array:
    b_rng, s_rng, c_rng = jax.random.split(rng, 3)
    n = x.shape[0]
    uniform = lambda key: jax.random.uniform(key, (n, 1, 1, 1), x.dtype)  # noqa: E731
    x = x + (uniform(b_rng) - 0.5)
    mean = jnp.mean(x, axis=3, keepdims=True)
    x = (x - mean) * (uniform(s_rng) * 2.0) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - mean) * (uniform(c_rng) + 0.5) + mean


def translation(x: jax.Array, rng: jax.Array,
                ratio: float = TRANSLATION_RATIO) -> jax.Array:
    """Each image shifted by a whole number of pixels, at most ``ratio`` of
    its size in each direction, zeros where it moved away from."""
    n, h, w, _ = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y_rng, x_rng = jax.random.split(rng)
    dy = jax.random.randint(y_rng, (n, 1, 1), -max_dy, max_dy + 1)
    dx = jax.random.randint(x_rng, (n, 1, 1), -max_dx, max_dx + 1)
    rows = jnp.arange(h)[None, :, None] - dy  # [n, h, 1]: the source row
    cols = jnp.arange(w)[None, None, :] - dx  # [n, 1, w]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols = jnp.clip(rows, 0, h - 1), jnp.clip(cols, 0, w - 1)
    moved = x[jnp.arange(n)[:, None, None], rows, cols]  # [n, h, w, c]
    return jnp.where(inside[..., None], moved, jnp.zeros((), x.dtype))


def cutout(x: jax.Array, rng: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
    """Each image with a square of ``ratio`` of its size set to zero, centred
    anywhere in the image (clipped at its edges)."""
    n, h, w, _ = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y_rng, x_rng = jax.random.split(rng)
    cy = jax.random.randint(y_rng, (n, 1, 1), 0, h + (1 - size_y % 2))
    cx = jax.random.randint(x_rng, (n, 1, 1), 0, w + (1 - size_x % 2))
    top, left = cy - size_y // 2, cx - size_x // 2
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}
POLICIES = tuple(_TRANSFORMS)  # the names, in the order the docstring gives


def diff_augment(x: jax.Array, policy: tuple[str, ...], rng: jax.Array) -> jax.Array:
    """``x`` ``[B, H, W, C]`` through each transformation of ``policy`` in
    order, each with its own key; the identity for an empty policy."""
    for i, name in enumerate(policy):
        x = _TRANSFORMS[name](x, jax.random.fold_in(rng, i))
    return x
