"""The FID Inception-v3 network (pool3 features) in Flax, from user-supplied weights.

The standard Frechet Inception Distance uses the Inception-v3 graph of
TensorFlow's FID reference (``inception-2015-12-05``), which the
``pytorch-fid`` package ported to PyTorch as
``pt_inception-2015-12-05-6726825d.pth``. This module is a pure Flax Linen
implementation of that network up to the 2048-d ``pool3`` features (the global
average pool after ``Mixed_7c``), in NHWC layout. Every convolution is followed
by batch norm (inference mode, eps = 1e-3) and a ReLU. The FID network differs
from torchvision's Inception-v3 in two places, both reproduced here:

- the 3x3 average pools of the branch_pool branches of the A, C and E blocks
  (``Mixed_5b``-``5d``, ``Mixed_6b``-``6e``, ``Mixed_7b``) do not count the
  zero padding (``count_include_pad=False``);
- the branch_pool of the last E block (``Mixed_7c``) uses a 3x3 *max* pool.

The weights cannot be downloaded by genjax: make an ``.npz`` file once, on any
machine with PyTorch and the ``.pth`` file of pytorch-fid (its release
``fid_weights``)::

    python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); np.savez('inception_fid.npz', **{k: v.numpy() for k, v in sd.items()})"

then check it here with ``python -m genjax.evaluate.inception --check
inception_fid.npz``. Only ``.npz`` files are read (never ``.pth``: genjax does
not depend on torch). The keys are exactly the pytorch-fid state_dict names,
e.g. ``Conv2d_1a_3x3.conv.weight`` ([out, in, kh, kw]), ``Conv2d_1a_3x3.bn.weight``,
``.bn.bias``, ``.bn.running_mean``, ``.bn.running_var``, ...,
``Mixed_7c.branch_pool.conv.weight``; ``expected_shapes()`` lists all of them.
The classifier keys ``fc.weight`` / ``fc.bias`` and any ``num_batches_tracked``
are ignored. Files that hold torchvision's own ImageNet Inception-v3 instead
(``AuxLogits.*`` keys, or a 1000-class ``fc``) are refused: their features do
not give comparable FIDs.

Preprocessing follows pytorch-fid: images are floats in [0, 1], NHWC; grey
images (C = 1) are repeated to 3 channels; every image is resized bilinearly
to 299x299 (half-pixel centres, no antialiasing, as ``F.interpolate(...,
mode='bilinear', align_corners=False)``) and scaled to [-1, 1].

    features = InceptionFeatures("inception_fid.npz")
    f = features(images)          # float [N, H, W, C] in [0, 1] -> float64 [N, 2048]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 2048
IMAGE_SIZE = 299
BN_EPSILON = 1e-3
FID_NUM_CLASSES = 1008  # fc of the FID network (torchvision's has 1000).

CONVERT_COMMAND = (
    "python -c \"import torch, numpy as np; "
    "sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); "
    "np.savez('inception_fid.npz', **{k: v.numpy() for k, v in sd.items()})\"")
_HOW_TO = ("make it from pytorch-fid's pt_inception-2015-12-05-6726825d.pth on a "
           "machine with torch: " + CONVERT_COMMAND)


class InceptionWeightsError(ValueError):
    """The weights file is missing, unreadable or not the FID Inception-v3."""


# --------------------------------------------------------------------------
# The parameter table: (module name, in channels, out channels, kh, kw) of
# every conv + batch-norm block of the main path, in torch's module names.


def _conv_table() -> list[tuple[str, int, int, int, int]]:
    rows = [
        ("Conv2d_1a_3x3", 3, 32, 3, 3),
        ("Conv2d_2a_3x3", 32, 32, 3, 3),
        ("Conv2d_2b_3x3", 32, 64, 3, 3),
        ("Conv2d_3b_1x1", 64, 80, 1, 1),
        ("Conv2d_4a_3x3", 80, 192, 3, 3),
    ]

    def block_a(name, cin, pool_features):  # out: 64 + 64 + 96 + pool_features
        rows.extend([
            (f"{name}.branch1x1", cin, 64, 1, 1),
            (f"{name}.branch5x5_1", cin, 48, 1, 1),
            (f"{name}.branch5x5_2", 48, 64, 5, 5),
            (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3),
            (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", cin, pool_features, 1, 1),
        ])

    def block_b(name, cin):  # out: 384 + 96 + cin
        rows.extend([
            (f"{name}.branch3x3", cin, 384, 3, 3),
            (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3),
            (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
        ])

    def block_c(name, cin, c7):  # out: 4 * 192
        rows.extend([
            (f"{name}.branch1x1", cin, 192, 1, 1),
            (f"{name}.branch7x7_1", cin, c7, 1, 1),
            (f"{name}.branch7x7_2", c7, c7, 1, 7),
            (f"{name}.branch7x7_3", c7, 192, 7, 1),
            (f"{name}.branch7x7dbl_1", cin, c7, 1, 1),
            (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_3", c7, c7, 1, 7),
            (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
            (f"{name}.branch7x7dbl_5", c7, 192, 1, 7),
            (f"{name}.branch_pool", cin, 192, 1, 1),
        ])

    def block_d(name, cin):  # out: 320 + 192 + cin
        rows.extend([
            (f"{name}.branch3x3_1", cin, 192, 1, 1),
            (f"{name}.branch3x3_2", 192, 320, 3, 3),
            (f"{name}.branch7x7x3_1", cin, 192, 1, 1),
            (f"{name}.branch7x7x3_2", 192, 192, 1, 7),
            (f"{name}.branch7x7x3_3", 192, 192, 7, 1),
            (f"{name}.branch7x7x3_4", 192, 192, 3, 3),
        ])

    def block_e(name, cin):  # out: 320 + 2 * 384 + 2 * 384 + 192 = 2048
        rows.extend([
            (f"{name}.branch1x1", cin, 320, 1, 1),
            (f"{name}.branch3x3_1", cin, 384, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3),
            (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", cin, 448, 1, 1),
            (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3),
            (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", cin, 192, 1, 1),
        ])

    block_a("Mixed_5b", 192, 32)   # -> 256
    block_a("Mixed_5c", 256, 64)   # -> 288
    block_a("Mixed_5d", 288, 64)   # -> 288
    block_b("Mixed_6a", 288)       # -> 768
    block_c("Mixed_6b", 768, 128)
    block_c("Mixed_6c", 768, 160)
    block_c("Mixed_6d", 768, 160)
    block_c("Mixed_6e", 768, 192)  # -> 768
    block_d("Mixed_7a", 768)       # -> 1280
    block_e("Mixed_7b", 1280)      # -> 2048
    block_e("Mixed_7c", 2048)      # -> 2048
    return rows


_BN_SUFFIXES = ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def expected_shapes() -> dict[str, tuple]:
    """Every parameter key of the weights file -> its (torch) shape.

    94 conv layers, each with ``conv.weight`` [out, in, kh, kw] and four
    batch-norm vectors [out]; the fc classifier is not part of it.
    """
    shapes: dict[str, tuple] = {}
    for name, cin, cout, kh, kw in _conv_table():
        shapes[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for suffix in _BN_SUFFIXES:
            shapes[f"{name}.{suffix}"] = (cout,)
    return shapes


def write_random_weights(path: str, seed: int = 0) -> None:
    """Writes an npz with every key of ``expected_shapes()`` (random values).

    He-scaled conv weights and batch-norm statistics near the identity keep
    activations O(1) through the network. For tests, and for checking a setup
    before the real weights are at hand; the features mean nothing.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in expected_shapes().items():
        if key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif key.endswith("bn.weight"):
            value = rng.uniform(0.8, 1.2, shape)
        elif key.endswith("bn.running_var"):
            value = rng.uniform(0.8, 1.2, shape)
        else:  # bn.bias, bn.running_mean
            value = rng.normal(0.0, 0.1, shape)
        arrays[key] = value.astype(np.float32)
    _save_npz(path, arrays)


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to exactly ``path`` (no ``.npz`` appended), atomically."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def torch_conv_to_flax(weight: np.ndarray) -> np.ndarray:
    """A torch conv kernel [out, in, kh, kw] (OIHW) as a flax one (HWIO)."""
    return np.transpose(weight, (2, 3, 1, 0))


# --------------------------------------------------------------------------
# Loading and validating the weights file.


def _error(path: str, problem: str, what_to_do: str = _HOW_TO) -> InceptionWeightsError:
    message = f"Inception weights file {path}: {problem}; {what_to_do}"
    return InceptionWeightsError(" ".join(message.split("\n")))


def _first(names, k: int = 5) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads and validates the npz; returns ``{key: float32 array}`` (torch
    layouts) for exactly the keys of ``expected_shapes()``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _error(path, "no such file")
    if os.path.isdir(path):
        raise _error(path, "is a directory, not an .npz file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise _error(path, "is a single .npy array, not an .npz archive of "
                     "named arrays")
    if not zipfile.is_zipfile(path):
        hint = (" (it holds pickled data, as a legacy torch .pth does)"
                if magic[:1] == b"\x80" else "")
        raise _error(path, f"is not an .npz file (not a zip archive){hint}; only "
                     ".npz is read, not .pth")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        raise _error(path, f"is not a readable .npz file ({e})") from None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise _error(path, "is a torch checkpoint (.pth), not an .npz file; only "
                     ".npz is read", "convert it on a machine with torch: "
                     + CONVERT_COMMAND)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _error(path, f"is not a readable .npz file ({e})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _error(path, "is a single .npy array, not an .npz archive of "
                     "named arrays")
    expected = expected_shapes()
    with loaded:
        keys = set(loaded.files)
        aux = [k for k in keys if k.startswith("AuxLogits.")]
        if aux:
            raise _error(path, f"has AuxLogits keys ({_first(aux, 2)}): these are "
                         "torchvision's ImageNet Inception-v3 weights, not the FID "
                         "Inception (their FIDs are not comparable)")
        extra = [k for k in keys - set(expected)
                 if not (k.startswith("fc.") or k.endswith(".num_batches_tracked"))]
        if extra:
            raise _error(path, f"has {len(extra)} unexpected keys ({_first(extra)}); "
                         "it is not the pytorch-fid Inception state_dict")
        missing = set(expected) - keys
        if missing:
            raise _error(path, f"is missing {len(missing)} of {len(expected)} keys "
                         f"({_first(missing)})")
        state = {}
        try:
            if "fc.weight" in keys:
                fc_shape = loaded["fc.weight"].shape
                if fc_shape != (FID_NUM_CLASSES, FEATURE_DIM):
                    raise _error(path, f"fc.weight has shape {fc_shape}, expected "
                                 f"{(FID_NUM_CLASSES, FEATURE_DIM)}: not the FID "
                                 "Inception (torchvision's ImageNet one has 1000 "
                                 "classes; their FIDs are not comparable)")
            for key, shape in expected.items():
                value = loaded[key]
                if tuple(value.shape) != shape:
                    raise _error(path, f"key {key} has shape {tuple(value.shape)}, "
                                 f"expected {shape}")
                if not np.issubdtype(value.dtype, np.floating):
                    raise _error(path, f"key {key} has dtype {value.dtype}, "
                                 "expected floats")
                value = value.astype(np.float32)
                if not np.all(np.isfinite(value)):
                    raise _error(path, f"key {key} holds non-finite values")
                state[key] = value
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, InceptionWeightsError):
                raise
            raise _error(path, f"cannot be read as an .npz file ({e})") from None
    return state


def torch_to_flax_variables(state: dict[str, np.ndarray]) -> dict:
    """``{"params": ..., "batch_stats": ...}`` of ``InceptionV3`` from a
    pytorch-fid state_dict (numpy arrays, keys as in ``expected_shapes()``)."""
    params: dict = {}
    stats: dict = {}

    def put(tree, path, value):
        for part in path[:-1]:
            tree = tree.setdefault(part, {})
        tree[path[-1]] = value

    for key in expected_shapes():
        *module, layer, field = key.split(".")
        value = np.asarray(state[key], np.float32)
        if (layer, field) == ("conv", "weight"):
            put(params, (*module, "conv", "kernel"), torch_conv_to_flax(value))
        elif field == "weight":
            put(params, (*module, "bn", "scale"), value)
        elif field == "bias":
            put(params, (*module, "bn", "bias"), value)
        elif field == "running_mean":
            put(stats, (*module, "bn", "mean"), value)
        else:
            put(stats, (*module, "bn", "var"), value)
    return {"params": params, "batch_stats": stats}


# --------------------------------------------------------------------------
# The network.


class BasicConv(nn.Module):
    """Conv (no bias) + batch norm (running statistics, eps 1e-3) + ReLU.

    ``padding`` is torch's symmetric (ph, pw).
    """
    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, self.strides,
                    padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON,
                         name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """3x3, stride 1, padding 1, the padding not counted (TensorFlow's SAME)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """``pool="avg"`` for Mixed_7b; ``"max"`` for Mixed_7c (the FID graph's quirk)."""
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
        ], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([
            BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
            BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
        ], axis=-1)
        if self.pool == "max":
            bp = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            bp = _avg_pool_3x3(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(bp)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """FID Inception-v3: [N, 299, 299, 3] in [-1, 1] -> pool3 features [N, 2048]."""

    @nn.compact
    def __call__(self, x):
        x = BasicConv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)  # 149
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)                  # 147
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)  # 147
        x = _max_pool_3x3_s2(x)                                             # 73
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)                  # 73
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)                 # 71
        x = _max_pool_3x3_s2(x)                                             # 35
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)                              # 35x35x288
        x = InceptionB(name="Mixed_6a")(x)                                  # 17x17x768
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)                                  # 8x8x1280
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)                           # 8x8x2048
        return jnp.mean(x, axis=(1, 2))


def preprocess(images):
    """pytorch-fid's input transform of RGB float [N, H, W, 3] in [0, 1]:
    bilinear resize to 299x299 (align_corners=False, no antialiasing), then
    scaling to [-1, 1]."""
    n, h, w, c = images.shape
    if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        images = jax.image.resize(images, (n, IMAGE_SIZE, IMAGE_SIZE, c),
                                  method="bilinear", antialias=False)
    return 2.0 * images - 1.0


@functools.partial(jax.jit, static_argnames="per_image")
def _features(variables, images, per_image: bool):
    """One batch: RGB float32 [B, H, W, 3] in [0, 1] -> [B, 2048]. Module-level
    so that every InceptionFeatures shares its compilations.

    ``per_image`` runs the network on one image at a time (``lax.map``) inside
    the jitted batch: on CPU that is ~2x faster than the batched network (a
    batch of 50 at 299x299 has activations far larger than the caches), and
    each image's arithmetic no longer depends on the batch size.
    """
    x = preprocess(images)
    if not per_image:
        return InceptionV3().apply(variables, x)
    return jax.lax.map(lambda xi: InceptionV3().apply(variables, xi[None])[0], x)


class InceptionFeatures:
    """pool3 features of the FID Inception-v3 from an ``.npz`` weights file.

    ``InceptionFeatures(path)(images)``: float [N, H, W, C] in [0, 1], C in
    {1, 3}, N >= 1 -> float64 [N, 2048]. Images are processed in batches of
    ``min(batch_size, N)`` by one jitted function (compiled once per batch
    size and image size), the last batch padded. On CPU the jitted function
    loops over the batch's images one at a time (faster there); on GPU/TPU it
    runs the batch at once.
    """

    feature_dim: int = FEATURE_DIM

    def __init__(self, weights_path: str, batch_size: int = 50):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.weights_path = os.fspath(weights_path)
        self.batch_size = int(batch_size)
        state = load_state_dict(self.weights_path)
        # Every number in the file's 470 arrays (21,820,000), and the trainable
        # part (without the batch-norm running statistics: 21,785,568).
        self.num_parameters = int(sum(v.size for v in state.values()))
        self.num_trainable = int(sum(v.size for k, v in state.items()
                                     if ".running_" not in k))
        self._variables = jax.device_put(torch_to_flax_variables(state))
        self._per_image = jax.default_backend() == "cpu"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] < 1:
            raise ValueError("expected float images [N, H, W, C] with N >= 1 and "
                             f"C in {{1, 3}}, got shape {images.shape}")
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"expected float images in [0, 1], got dtype "
                             f"{images.dtype} (divide uint8 images by 255)")
        images = images.astype(np.float32)
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-4 or hi > 1 + 1e-4:
            raise ValueError(f"expected float images in [0, 1], got values in "
                             f"[{lo:g}, {hi:g}] (clip them to [0, 1] first)")
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        n = images.shape[0]
        b = min(self.batch_size, n)
        outputs = []
        for start in range(0, n, b):
            batch = images[start:start + b]
            if batch.shape[0] < b:
                pad = np.zeros((b - batch.shape[0],) + batch.shape[1:], np.float32)
                batch = np.concatenate([batch, pad])
            outputs.append(_features(self._variables, batch, self._per_image))
        features = np.concatenate([np.asarray(o) for o in jax.device_get(outputs)])
        return features[:n].astype(np.float64)


# --------------------------------------------------------------------------
# Command line: python -m genjax.evaluate.inception --check PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m genjax.evaluate.inception",
        description="Check an FID Inception-v3 weights file (.npz). Make it from "
                    "pytorch-fid's pt_inception-2015-12-05-6726825d.pth on a "
                    "machine with torch: " + CONVERT_COMMAND)
    parser.add_argument("--check", metavar="PATH", required=True,
                        help="the .npz weights file to load and run on 2 random images")
    args = parser.parse_args(argv)
    try:
        features = InceptionFeatures(args.check, batch_size=2)
    except InceptionWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    start = time.perf_counter()
    out = features(images)
    seconds = time.perf_counter() - start
    print(f"weights: {args.check}")
    print(f"parameters: {features.num_parameters:,} numbers in "
          f"{len(expected_shapes())} arrays (94 conv + batch-norm layers: "
          f"{features.num_trainable:,} trainable + "
          f"{features.num_parameters - features.num_trainable:,} running statistics)")
    print(f"features of 2 random 32x32 images: shape {out.shape}, "
          f"finite: {bool(np.all(np.isfinite(out)))}, "
          f"mean {out.mean():.4f} ({seconds:.1f} s including compilation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
