"""The FID Inception-v3 of genjax.evaluate.inception, with random weights.

The real weights (pytorch-fid's .pth converted to .npz) are not available
offline, so these tests check the parameter table against independent facts
about Inception-v3, the torch -> flax conversion against numpy, pytorch-fid's
input transform, the batching, and every refusal of a bad weights file.
Inception at 299x299 costs ~6 GFLOP per image, so only a handful of images
are run, at two batch shapes (compiled once each, shared by the tests).
"""

from __future__ import annotations

import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate import inception
from genjax.evaluate.inception import (InceptionFeatures, InceptionWeightsError,
                                       expected_shapes, write_random_weights)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random_inception.npz"
    write_random_weights(str(path), seed=0)
    return str(path)


@pytest.fixture(scope="module")
def state(weights):
    return inception.load_state_dict(weights)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(size=(3, 32, 32, 3)).astype(np.float32)


# --------------------------------------------------------------------------
# The parameter table.


def test_expected_shapes_structure():
    shapes = expected_shapes()
    convs = [k for k in shapes if k.endswith(".conv.weight")]
    # torchvision's Inception-v3 main path (without AuxLogits): 5 stem convs,
    # 3 A blocks x 7, B 4, 4 C blocks x 10, D 6, 2 E blocks x 9 = 94.
    assert len(convs) == 94
    assert len(shapes) == 94 * 5  # conv.weight + 4 batch-norm vectors each
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_4a_3x3.conv.weight"] == (192, 80, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch3x3_2.conv.weight"] == (320, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["Mixed_7c.branch_pool.bn.running_var"] == (192,)
    assert not any(k.startswith(("fc.", "AuxLogits.")) for k in shapes)

    conv_weights = sum(int(np.prod(shapes[k])) for k in convs)
    channels = sum(shapes[k][0] for k in convs)
    trainable = conv_weights + 2 * channels  # conv kernels + bn weight and bias
    # Independent check: torchvision documents 27,161,264 parameters for its
    # inception_v3 (Inception_V3_Weights.IMAGENET1K_V1 meta "num_params"),
    # which also counts AuxLogits (conv0 768->128 1x1 + bn, conv1 128->768 5x5
    # + bn, fc 768->1000) and the 1000-class fc 2048->1000; batch-norm running
    # statistics are buffers, not parameters.
    aux = (128 * 768 + 2 * 128) + (768 * 128 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)
    fc = 2048 * 1000 + 1000
    assert trainable + aux + fc == 27_161_264
    assert trainable == 21_785_568
    # The npz also holds the running mean and variance: 21,820,000 numbers.
    assert sum(int(np.prod(s)) for s in shapes.values()) == 21_820_000


def test_flax_model_parameters_match_the_table(state):
    """The Flax module, traced (no compute), creates exactly the table's
    parameters in flax layout, and maps 299x299x3 to 2048 features."""
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    variables = jax.eval_shape(inception.InceptionV3().init, jax.random.key(0), x)
    converted = inception.torch_to_flax_variables(state)
    def shapes(tree):
        return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)

    assert shapes(variables) == shapes(converted)
    out = jax.eval_shape(inception.InceptionV3().apply, variables, x)
    assert out.shape == (1, 2048)


# --------------------------------------------------------------------------
# The torch -> flax conversion, against numpy.


def _numpy_conv_bn_relu(x_hwc, layer, stride, padding):
    """torch's Conv2d (cross-correlation, OIHW weights) + BatchNorm2d (eval,
    eps 1e-3) + ReLU, by hand, on one [H, W, C] image."""
    w, gamma, beta, mean, var = layer
    cout, cin, kh, kw = w.shape
    ph, pw = padding
    x = np.pad(x_hwc.astype(np.float64), ((ph, ph), (pw, pw), (0, 0)))
    ho = (x.shape[0] - kh) // stride + 1
    wo = (x.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo, cout))
    for i in range(ho):
        for j in range(wo):
            patch = x[i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            # out[o] = sum_{c, u, v} w[o, c, u, v] * patch[u, v, c]
            out[i, j] = np.einsum("ocuv,uvc->o", w, patch)
    out = (out - mean) / np.sqrt(var + 1e-3) * gamma + beta
    return np.maximum(out, 0.0)


@pytest.mark.parametrize("name, stride, padding, hw", [
    ("Conv2d_1a_3x3", 2, (0, 0), (9, 7)),           # 3x3, stride 2, 3 -> 32
    ("Mixed_6b.branch7x7_2", 1, (0, 3), (3, 9)),    # 1x7 catches an H/W swap
    ("Mixed_7b.branch3x3_2b", 1, (1, 0), (4, 2)),   # 3x1
])
def test_conversion_matches_numpy_convolution(state, name, stride, padding, hw):
    layer = tuple(state[f"{name}.{s}"] for s in
                  ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                   "bn.running_var"))
    cout, cin, kh, kw = layer[0].shape
    x = np.random.default_rng(2).normal(size=hw + (cin,)).astype(np.float32)
    want = _numpy_conv_bn_relu(x, layer, stride, padding)

    variables = inception.torch_to_flax_variables(state)
    sub = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    for part in name.split("."):
        sub = {k: v[part] for k, v in sub.items()}
    module = inception.BasicConv(cout, (kh, kw), strides=(stride, stride),
                                 padding=padding)
    got = np.asarray(module.apply(sub, x[None]))[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1  # not a trivially zero comparison


def test_torch_conv_to_flax_layout():
    w = np.arange(5 * 3 * 1 * 7).reshape(5, 3, 1, 7)
    hwio = inception.torch_conv_to_flax(w)
    assert hwio.shape == (1, 7, 3, 5)
    assert hwio[0, 4, 2, 1] == w[1, 2, 0, 4]


# --------------------------------------------------------------------------
# pytorch-fid's input transform and the FID pooling.


def _torch_bilinear_resize(x, out_h, out_w):
    """F.interpolate(mode='bilinear', align_corners=False) on [H, W, C], by hand:
    source = (dst + 0.5) * in / out - 0.5, clamped at 0; neighbours clamped at
    the last row/column."""
    def axis_weights(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), i0), 1 - lam)
        np.add.at(m, (np.arange(n_out), i1), lam)
        return m

    mh, mw = axis_weights(x.shape[0], out_h), axis_weights(x.shape[1], out_w)
    rows = np.tensordot(mh, x.astype(np.float64), axes=(1, 0))  # [out_h, W, C]
    return np.einsum("bw,awc->abc", mw, rows, optimize=True)


@pytest.mark.parametrize("hw", [(5, 8), (28, 28), (320, 401)])
def test_preprocess_is_pytorch_fid_resize_and_scaling(hw):
    x = np.random.default_rng(3).uniform(size=(1,) + hw + (3,)).astype(np.float32)
    got = np.asarray(inception.preprocess(jnp.asarray(x)))[0]
    want = 2.0 * _torch_bilinear_resize(x[0], 299, 299) - 1.0
    assert got.shape == (299, 299, 3)
    # Same sampling as torch: in float64 the two agree to 1e-7; jax computes the
    # sample positions in float32 (as torch does, with its own rounding), which
    # moves values by up to ~1e-4 on [-1, 1] when downsampling.
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_average_pool_does_not_count_padding():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    pooled = np.asarray(inception._avg_pool_3x3(x))[0, :, :, 0]
    assert pooled[0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))
    assert pooled[1, 1] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))


# --------------------------------------------------------------------------
# Features from random weights.


@pytest.fixture(scope="module")
def features_b2(weights):
    return InceptionFeatures(weights, batch_size=2)


@pytest.fixture(scope="module")
def features_b4(weights):
    return InceptionFeatures(weights, batch_size=4)


def test_random_weights_round_trip(features_b4, images):
    assert features_b4.feature_dim == 2048
    f = features_b4(images)
    assert f.shape == (3, 2048) and f.dtype == np.float64
    assert np.all(np.isfinite(f))
    assert np.all(f >= 0.0)  # means of ReLU outputs
    assert not np.allclose(f[0], f[1])  # different images, different features
    np.testing.assert_array_equal(features_b4(images), f)  # deterministic


def test_batch_padding_does_not_change_features(features_b2, features_b4, images):
    # batch_size 2: batches of 2 and of 1 padded to 2; batch_size 4: one
    # batch of 3 (min(batch_size, N)).
    np.testing.assert_allclose(features_b2(images), features_b4(images),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features_b2(images[:1]), features_b4(images)[:1],
                               rtol=1e-5, atol=1e-6)


def test_grey_equals_repeated_rgb(features_b4, images):
    grey = images[..., :1]
    np.testing.assert_array_equal(features_b4(grey),
                                  features_b4(np.repeat(grey, 3, axis=-1)))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 32, 32, 4), np.float32), "C in"),
    (np.zeros((32, 32, 3), np.float32), "C in"),
    (np.zeros((0, 32, 32, 3), np.float32), "N >= 1"),
    (np.zeros((2, 32, 32, 3), np.uint8), "uint8"),
    (np.full((2, 32, 32, 3), 255.0, np.float32), "clip"),
    (np.full((2, 32, 32, 3), np.nan, np.float32), "clip"),
])
def test_bad_images_are_refused(features_b2, bad, match):
    with pytest.raises(ValueError, match=match):
        features_b2(bad)


# --------------------------------------------------------------------------
# Refused weights files: one line naming the path and the problem.


def _save(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


def _assert_refused(path, *must_contain):
    with pytest.raises(InceptionWeightsError) as info:
        InceptionFeatures(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert str(path) in message
    for text in must_contain:
        assert text in message, message
    return message


def test_missing_file_and_directory(tmp_path):
    message = _assert_refused(str(tmp_path / "nope.npz"), "no such file")
    assert "pt_inception-2015-12-05-6726825d.pth" in message  # what to do
    _assert_refused(str(tmp_path), "directory")


def test_not_an_npz(tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("hello\n")
    _assert_refused(str(text), "not an .npz", "not a zip archive")
    pickled = tmp_path / "legacy.pth"
    pickled.write_bytes(pickle.dumps({"Conv2d_1a_3x3.conv.weight": [1.0]}))
    _assert_refused(str(pickled), "not an .npz", "pickled", ".pth")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    _assert_refused(str(broken), "not an .npz")
    torch_zip = tmp_path / "pt_inception.pth"  # torch's zip checkpoint layout
    with zipfile.ZipFile(torch_zip, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/version", "3\n")
    _assert_refused(str(torch_zip), "torch checkpoint", "np.savez")
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    _assert_refused(str(npy), ".npy")


def test_missing_keys_are_listed(tmp_path, state):
    partial = {k: v for k, v in state.items() if not k.startswith("Mixed_7c.")}
    _assert_refused(_save(tmp_path / "partial.npz", partial),
                    "missing 45 of 470 keys", "Mixed_7c.branch1x1")


def test_wrong_shape_names_key_and_shapes(tmp_path, state):
    bad = dict(state)
    bad["Mixed_5b.branch_pool.conv.weight"] = np.zeros((64, 192, 1, 1), np.float32)
    _assert_refused(_save(tmp_path / "shape.npz", bad),
                    "Mixed_5b.branch_pool.conv.weight", "(64, 192, 1, 1)",
                    "(32, 192, 1, 1)")


def test_other_bad_contents(tmp_path, state):
    _assert_refused(_save(tmp_path / "extra.npz", {**state, "junk": np.zeros(1)}),
                    "unexpected keys", "junk")
    aux = {**state, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)}
    _assert_refused(_save(tmp_path / "aux.npz", aux), "torchvision")
    tv_fc = {**state, "fc.weight": np.zeros((1000, 2048), np.float32)}
    _assert_refused(_save(tmp_path / "tv_fc.npz", tv_fc), "fc.weight", "1000")
    ints = {**state, "Conv2d_1a_3x3.bn.bias": np.zeros(32, np.int64)}
    _assert_refused(_save(tmp_path / "ints.npz", ints), "Conv2d_1a_3x3.bn.bias", "dtype")
    nan = {**state, "Conv2d_1a_3x3.bn.bias": np.full(32, np.nan, np.float32)}
    _assert_refused(_save(tmp_path / "nan.npz", nan), "non-finite")


def test_fc_and_num_batches_tracked_are_ignored(tmp_path, state):
    extras = {"fc.weight": np.zeros((1008, 2048), np.float32),
              "fc.bias": np.zeros(1008, np.float32),
              "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0, np.int64)}
    path = _save(tmp_path / "full.npz", {**state, **extras})
    loaded = inception.load_state_dict(path)
    assert loaded.keys() == expected_shapes().keys()


# --------------------------------------------------------------------------
# python -m genjax.evaluate.inception --check PATH (in process).


def test_cli_check(capsys, weights, tmp_path):
    assert inception.main(["--check", weights]) == 0
    out = capsys.readouterr().out
    assert "(2, 2048)" in out and "finite: True" in out
    assert "21,820,000" in out and "21,785,568" in out
    missing = str(tmp_path / "missing.npz")
    assert inception.main(["--check", missing]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0]
