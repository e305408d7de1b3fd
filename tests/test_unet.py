"""The DDPM denoisers (genjax.models.unet): shapes, zero initialisation, the
time and class inputs, dropout, the null label, errors, and the sinusoidal
embedding against numbers computed by hand.

Tiny widths (8 channels, 4 groups, one residual block per level) and
batches of 2; every network is jitted whole, and parameters that need not be
the real initialisation are drawn in numpy, so no test waits long for XLA.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models import unet

# 28x28x1 at sides 28, 14, 7 (attention at 14 and in the middle, at 7),
# class-conditional; and 32x32x3 at sides 32, 16 with six output channels.
MNIST_LIKE = unet.UNet(channels=8, channel_mults=(1, 2, 2), num_res_blocks=1,
                       attention_resolutions=(14,), dropout=0.5, num_classes=3,
                       num_groups=4)
CIFAR_LIKE = unet.UNet(channels=8, channel_mults=(1, 2), num_res_blocks=1,
                       attention_resolutions=(16,), num_groups=4, out_channels=6)
T_B = jnp.array([3.0, 250.0])


def images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def real_init(model, x, label=None):
    """The model's own initialisation, jitted with an RBG key: XLA:CPU
    compiles threefry bits for each parameter shape, which takes seconds."""
    init_fn = jax.jit(model.init, static_argnames="train")
    return init_fn(jax.random.key(1, impl="rbg"), x, T_B, label,
                   train=False)["params"]


def random_like(shapes, seed=0, scale=0.3):
    """Arrays of ``shapes`` (a tree of ShapeDtypeStructs) from N(0, scale^2)
    in numpy, so that no zero-initialised layer hides the layers before it
    (and no JAX random initialiser is compiled)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def random_params(model, x, label=None, seed=0):
    """Random parameters (``random_like``) of a denoiser for inputs ``x``."""
    return random_like(jax.eval_shape(
        lambda: model.init(jax.random.key(0), x, T_B, label, train=False))["params"],
        seed)


_JITTED_APPLY = {}


def apply(model, params, x, t=T_B, label=None, *, train=False, rngs=None):
    """``model.apply``, jitted once per model: XLA compiles the whole network
    faster than it compiles its operations one by one."""
    if model not in _JITTED_APPLY:
        _JITTED_APPLY[model] = jax.jit(model.apply, static_argnames="train")
    return _JITTED_APPLY[model]({"params": params}, x, t, label, train=train,
                                rngs=rngs)


@pytest.fixture(scope="module")
def mnist_like():
    """``(x [2, 28, 28, 1], random params)`` of MNIST_LIKE."""
    x = images((2, 28, 28, 1))
    return x, random_params(MNIST_LIKE, x, jnp.array([0, 1]))


# --------------------------------------------------------------------------
# The sinusoidal embedding, by hand.


def test_timestep_embedding_by_hand():
    # dim 4: two frequencies, 10000**(-0/2) = 1 and 10000**(-1/2) = 0.01.
    emb = np.asarray(unet.timestep_embedding(jnp.array([0.0, 3.0]), 4))
    expected = np.array([[0.0, 0.0, 1.0, 1.0],
                         [math.sin(3.0), math.sin(0.03),
                          math.cos(3.0), math.cos(0.03)]])
    np.testing.assert_allclose(emb, expected, rtol=1e-6, atol=1e-6)
    # dim 6, max_period 64: frequencies 64**(-i/3) = 1, 1/4, 1/16.
    emb = np.asarray(unet.timestep_embedding(jnp.array([10.0]), 6, max_period=64.0))
    args = [10.0, 2.5, 0.625]
    expected = [math.sin(a) for a in args] + [math.cos(a) for a in args]
    np.testing.assert_allclose(emb[0], expected, rtol=1e-5, atol=1e-6)


def test_timestep_embedding_rejects_odd_dim():
    with pytest.raises(ValueError, match="dim=5"):
        unet.timestep_embedding(jnp.zeros((2,)), 5)


def test_group_count_divides_the_width():
    assert unet.group_count(64, 32) == 32
    assert unet.group_count(48, 32) == 24
    assert unet.group_count(8, 32) == 8
    assert unet.group_count(6, 4) == 3
    assert unet.group_count(7, 4) == 1


# --------------------------------------------------------------------------
# UNet.


@pytest.mark.parametrize("model, shape, out_shape", [
    (MNIST_LIKE, (2, 28, 28, 1), (2, 28, 28, 1)),
    (CIFAR_LIKE, (2, 32, 32, 3), (2, 32, 32, 6)),
])
def test_unet_output_shape_and_zero_init(model, shape, out_shape):
    x = images(shape)
    params = real_init(model, x)
    out = apply(model, params, x)
    assert out.shape == out_shape
    assert out.dtype == jnp.float32
    # The output convolution starts at zero (Ho et al.'s init_scale=0).
    assert np.all(np.asarray(out) == 0.0)
    # So does the last layer of every residual branch.
    for name, module in params.items():
        if "res" in name:
            assert not np.any(module["conv2"]["kernel"]), name
        if "attn" in name:
            assert not np.any(module["proj_out"]["kernel"]), name


def test_unet_layout():
    """Blocks per level as Ho et al.: num_res_blocks down, num_res_blocks + 1
    up, attention after each block at the chosen sides and in the middle."""
    x = images((2, 28, 28, 1))
    params = random_params(MNIST_LIKE, x)
    down = sorted(k for k in params if k.startswith("down"))
    up = sorted(k for k in params if k.startswith("up"))
    assert down == ["down0_downsample", "down0_res0", "down1_attn0",
                    "down1_downsample", "down1_res0", "down2_res0"]
    assert up == ["up0_res0", "up0_res1", "up1_attn0", "up1_attn1", "up1_res0",
                  "up1_res1", "up1_upsample", "up2_res0", "up2_res1",
                  "up2_upsample"]
    assert {"mid_res0", "mid_attn", "mid_res1"} <= set(params)
    # Widths 8, 16, 16; the decoder's first block at the top takes 16 + 8.
    assert params["conv_in"]["kernel"].shape == (3, 3, 1, 8)
    assert params["down2_res0"]["conv1"]["kernel"].shape == (3, 3, 16, 16)
    assert params["up0_res0"]["conv1"]["kernel"].shape == (3, 3, 24, 8)
    assert params["up0_res1"]["skip"]["kernel"].shape == (1, 1, 16, 8)
    assert params["temb_dense1"]["kernel"].shape == (32, 32)
    assert params["class_embed"]["embedding"].shape == (4, 32)


def test_unet_depends_on_t_and_label(mnist_like):
    x, params = mnist_like
    base = apply(MNIST_LIKE, params, x, T_B, jnp.array([0, 1]))
    assert np.all(np.isfinite(base)) and float(jnp.max(jnp.abs(base))) > 0
    other_t = apply(MNIST_LIKE, params, x, T_B + 100.0, jnp.array([0, 1]))
    other_label = apply(MNIST_LIKE, params, x, T_B, jnp.array([2, 1]))
    assert float(jnp.max(jnp.abs(other_t - base))) > 1e-4
    # Example 0 changes with its own label; example 1 (same label) does not.
    assert float(jnp.max(jnp.abs(other_label[0] - base[0]))) > 1e-4
    np.testing.assert_allclose(other_label[1], base[1], rtol=1e-6, atol=1e-6)


def test_unet_null_label_is_num_classes(mnist_like):
    x, params = mnist_like
    null = apply(MNIST_LIKE, params, x, T_B, None)
    explicit = apply(MNIST_LIKE, params, x, T_B, jnp.array([3, 3], jnp.int32))
    np.testing.assert_array_equal(null, explicit)
    assert float(jnp.max(jnp.abs(
        null - apply(MNIST_LIKE, params, x, T_B, jnp.array([0, 0]))))) > 1e-4


def test_unet_dropout_only_in_training(mnist_like):
    x, params = mnist_like
    eval1 = apply(MNIST_LIKE, params, x)
    np.testing.assert_array_equal(eval1, apply(MNIST_LIKE, params, x))
    train = [apply(MNIST_LIKE, params, x, train=True,
                   rngs={"dropout": jax.random.key(s)}) for s in (0, 0, 1)]
    np.testing.assert_array_equal(train[0], train[1])
    assert float(jnp.max(jnp.abs(train[0] - train[2]))) > 1e-4
    assert float(jnp.max(jnp.abs(train[0] - eval1))) > 1e-4


def test_unet_jitted_gradient():
    x = images((2, 32, 32, 3))
    params = random_params(CIFAR_LIKE, x)

    # Without dropout, which has its own test (and would double the compile).
    @jax.jit
    def loss(params):
        out = CIFAR_LIKE.apply({"params": params}, x, T_B, train=False)
        return jnp.mean(jnp.square(out))

    value, grads = jax.value_and_grad(loss)(params)
    assert np.isfinite(float(value)) and float(value) > 0
    for name in ("conv_in", "down0_res0", "mid_attn", "up0_res1", "temb_dense0"):
        assert all(np.any(leaf) and np.all(np.isfinite(leaf))
                   for leaf in jax.tree_util.tree_leaves(grads[name])), name


def test_unet_rejects_a_side_it_cannot_halve():
    x = jnp.zeros((2, 30, 30, 1))  # 30 -> 15 -> 7.5
    with pytest.raises(ValueError, match=r"image side 30 cannot be halved 2 times"):
        jax.eval_shape(lambda: MNIST_LIKE.init(jax.random.key(0), x, T_B, train=False))


def test_unet_rejects_labels_when_unconditional():
    x = jnp.zeros((2, 32, 32, 3))
    with pytest.raises(ValueError, match="num_classes=0"):
        jax.eval_shape(lambda: CIFAR_LIKE.init(jax.random.key(0), x, T_B,
                                               jnp.array([0, 1]), train=False))


def test_attention_is_equivariant_to_position_order():
    block = unet.AttentionBlock(num_groups=4)
    x = images((2, 4, 4, 8))
    params = random_like(
        jax.eval_shape(lambda: block.init(jax.random.key(0), x))["params"])
    perm = np.random.default_rng(0).permutation(16)
    block_apply = jax.jit(block.apply)
    out = block_apply({"params": params}, x)
    out_of_permuted = block_apply(
        {"params": params}, x.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8))
    np.testing.assert_allclose(out_of_permuted.reshape(2, 16, 8),
                               out.reshape(2, 16, 8)[:, perm], rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(out - x))) > 1e-4  # not the identity


def test_upsample_nearest():
    x = jnp.arange(2 * 2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 2, 3)
    expected = np.repeat(np.repeat(np.asarray(x), 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(unet.upsample_nearest(x), expected)


# --------------------------------------------------------------------------
# MLPDenoiser.


def test_mlp_denoiser():
    model = unet.MLPDenoiser(hidden=16, num_layers=2, num_classes=2)
    x = images((2, 2))
    out = apply(model, real_init(model, x), x)
    assert out.shape == (2, 2)
    assert np.all(np.asarray(out) == 0.0)
    params = random_params(model, x, jnp.array([0, 1]))
    assert params["class_embed"]["embedding"].shape == (3, 16)
    base = apply(model, params, x, T_B, jnp.array([0, 1]))
    assert float(jnp.max(jnp.abs(apply(model, params, x, T_B + 50.0,
                                       jnp.array([0, 1])) - base))) > 1e-4
    assert float(jnp.max(jnp.abs(apply(model, params, x, T_B,
                                       jnp.array([1, 1]))[0] - base[0]))) > 1e-4
    np.testing.assert_array_equal(apply(model, params, x, T_B, None),
                                  apply(model, params, x, T_B, jnp.array([2, 2])))


def test_mlp_denoiser_unconditional_shape():
    model = unet.MLPDenoiser(hidden=16, num_layers=3)
    x = images((2, 5))
    params = random_params(model, x)
    assert "class_embed" not in params
    assert sorted(params) == sorted(
        ["temb_dense", "out"] + [f"{kind}{i}" for kind in ("dense", "emb_proj")
                                 for i in range(3)])
    assert apply(model, params, x, train=True).shape == (2, 5)
