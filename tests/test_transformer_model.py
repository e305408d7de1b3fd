"""The GPT model (genjax.models.transformer): shapes, causality, tying,
initialisation, parameter count, dropout, and cached decoding against the
full forward pass. Tiny models, one CPU device."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models import transformer

VOCAB, BLOCK, LAYERS, HEADS, WIDTH = 11, 8, 2, 2, 16


def tiny(**overrides) -> transformer.GPT:
    kwargs = dict(vocab_size=VOCAB, block_size=BLOCK, num_layers=LAYERS,
                  num_heads=HEADS, width=WIDTH)
    return transformer.GPT(**{**kwargs, **overrides})


def random_tokens(seed: int, batch: int = 3, time: int = BLOCK):
    return jax.random.randint(jax.random.key(seed), (batch, time), 0, VOCAB)


# Jitted: one compilation per model is faster here than op-by-op dispatch.
@functools.partial(jax.jit, static_argnums=0)
def _init(model, key):
    return model.init(key, jnp.zeros((1, 1), jnp.int32), train=False)["params"]


def init(model, seed: int = 0):
    return _init(model, jax.random.key(seed))


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def forward(model, params, tokens, *, train=False, seed=0):
    return model.apply({"params": params}, tokens, train=train,
                       rngs={"dropout": jax.random.key(seed)})


prefill = jax.jit(transformer.prefill, static_argnums=0)
decode_step = jax.jit(transformer.decode_step, static_argnums=0)  # pos traced


@pytest.fixture(scope="module")
def model_and_params():
    model = tiny()
    return model, init(model)


def test_logits_shape_and_dtype(model_and_params):
    model, params = model_and_params
    for time in (3, BLOCK):
        logits = forward(model, params, random_tokens(1, 3, time))
        assert logits.shape == (3, time, VOCAB)
        assert logits.dtype == jnp.float32
        assert np.all(np.isfinite(logits))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = tiny(dtype=jnp.bfloat16)
    params = init(model)
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = forward(model, params, random_tokens(1))
    assert logits.dtype == jnp.float32
    full = forward(tiny(), params, random_tokens(1))
    np.testing.assert_allclose(logits, full, atol=0.05)


def test_causal_changing_token_t_leaves_earlier_logits_unchanged(model_and_params):
    model, params = model_and_params
    tokens = random_tokens(2)
    logits = forward(model, params, tokens)
    for t in (0, 3, BLOCK - 1):
        changed = tokens.at[:, t].set((tokens[:, t] + 1) % VOCAB)
        other = forward(model, params, changed)
        np.testing.assert_allclose(other[:, :t], logits[:, :t], rtol=0, atol=1e-6)
        # Not vacuous: the changed position itself (and later ones) do move.
        assert np.abs(other[:, t:] - logits[:, t:]).max() > 1e-4


def test_output_head_is_tied_to_token_embedding(model_and_params):
    model, params = model_and_params
    assert set(params) == {"wte", "wpe", "ln_f"} | {f"block_{i}" for i in range(LAYERS)}
    vocab_sized = [jax.tree_util.keystr(path)
                   for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
                   if VOCAB in x.shape]
    assert vocab_sized == ["['wte']['embedding']"]

    tokens = random_tokens(3)
    logits, state = jax.jit(lambda p, t: model.apply(
        {"params": p}, t, train=False,
        capture_intermediates=lambda mdl, _: mdl.name == "ln_f"))(params, tokens)
    h = state["intermediates"]["ln_f"]["__call__"][0]  # [B*T, W]
    expected = (h @ params["wte"]["embedding"].T).reshape(logits.shape)
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


def test_gpt2_initialisation():
    layers, width = 3, 256
    model = transformer.GPT(vocab_size=VOCAB, block_size=BLOCK, num_layers=layers,
                            num_heads=4, width=width)
    params = init(model)
    residual_std = 0.02 / math.sqrt(2 * layers)
    block = params["block_2"]
    expected = {
        "attn.qkv": (block["attn"]["qkv"]["kernel"], 0.02),
        "attn.out": (block["attn"]["out"]["kernel"], residual_std),
        "mlp.fc": (block["mlp"]["fc"]["kernel"], 0.02),
        "mlp.out": (block["mlp"]["out"]["kernel"], residual_std),
    }
    for name, (kernel, std) in expected.items():
        assert abs(float(jnp.mean(kernel))) < 0.05 * std, name
        assert float(jnp.std(kernel)) == pytest.approx(std, rel=0.03), name
    for name in ("wte", "wpe"):  # few entries: a looser tolerance
        assert float(jnp.std(params[name]["embedding"])) == pytest.approx(0.02, rel=0.15)
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        key = jax.tree_util.keystr(path)
        if key.endswith("['bias']"):
            assert not np.any(x), key
        if key.endswith("['scale']"):
            np.testing.assert_array_equal(x, 1.0)


@pytest.mark.parametrize("use_bias", [True, False])
def test_parameter_count_matches_hand_computation(use_bias):
    model = tiny(use_bias=use_bias)
    params = init(model)
    w, b = WIDTH, int(use_bias)
    per_layer = (
        w + b * w                             # ln_1: scale (and bias)
        + w * 3 * w + b * 3 * w               # qkv
        + w * w + b * w                       # attention output
        + w + b * w                           # ln_2
        + w * 4 * w + b * 4 * w               # mlp fc
        + 4 * w * w + b * w)                  # mlp output
    expected = (VOCAB * w                     # wte, which is also the head
                + BLOCK * w                   # wpe
                + LAYERS * per_layer
                + w + b * w)                  # ln_f
    assert transformer.num_params(params) == expected
    assert transformer.num_params(params, exclude_positions=True) == expected - BLOCK * w


def test_parameter_count_of_nanogpt_shakespeare_char():
    # nanoGPT's config/train_shakespeare_char.py (bias=False in its train.py)
    # prints "number of parameters: 10.65M" (without position embeddings).
    model = transformer.GPT(vocab_size=65, block_size=256, num_layers=6,
                            num_heads=6, width=384, use_bias=False)
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, 4), jnp.int32), train=False))["params"]
    assert transformer.num_params(shapes, exclude_positions=True) == 10_646_784
    assert 12 * 6 * 384 ** 2 + 2 * 6 * 384 + 65 * 384 + 384 == 10_646_784


def test_dropout_only_in_training():
    model = tiny(dropout=0.2)
    params = init(model, seed=7)
    tokens = random_tokens(4)
    apply = lambda train, seed: forward(model, params, tokens, train=train, seed=seed)  # noqa: E731
    np.testing.assert_array_equal(apply(False, 0), apply(False, 1))
    np.testing.assert_array_equal(apply(True, 5), apply(True, 5))
    assert np.abs(apply(True, 5) - apply(True, 6)).max() > 1e-3
    assert np.abs(apply(True, 5) - apply(False, 5)).max() > 1e-3


def test_no_dropout_rng_needed_without_dropout(model_and_params):
    model, params = model_and_params
    jax.jit(lambda p, t: model.apply({"params": p}, t, train=True))(params, random_tokens(4))


def test_too_long_input_raises_one_line_error_naming_block_size(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match="block_size=8") as info:
        model.apply({"params": params}, random_tokens(5, 2, BLOCK + 1), train=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="block_size=8"):
        transformer.prefill(model, params, random_tokens(5, 2, BLOCK + 1),
                            transformer.init_cache(model, 2))


def test_width_not_divisible_by_heads_is_an_error():
    with pytest.raises(ValueError, match="num_heads=3"):
        init(tiny(num_heads=3))


def test_cache_shape():
    cache = transformer.init_cache(tiny(), 5)
    assert cache.k.shape == cache.v.shape == (LAYERS, 5, HEADS, BLOCK, WIDTH // HEADS)


@pytest.mark.parametrize("prompt_len", [1, 3])
def test_cached_decoding_equals_full_forward(prompt_len):
    # Dropout > 0 in the config: decoding is inference, like train=False.
    model = tiny(dropout=0.2)
    params = init(model, seed=7)
    tokens = random_tokens(8, batch=2)
    full = forward(model, params, tokens)

    cache = transformer.init_cache(model, 2)
    logits, cache = prefill(model, params, tokens[:, :prompt_len], cache)
    steps = [logits]
    for pos in range(prompt_len, BLOCK):
        logits, cache = decode_step(model, params, tokens[:, pos], cache, pos)
        assert logits.shape == (2, VOCAB)
        steps.append(logits[:, None])
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=0, atol=1e-5)

    # The cache now holds every position's keys: a prefill of the whole
    # sequence gives the same cache.
    _, whole = prefill(model, params, tokens, transformer.init_cache(model, 2))
    np.testing.assert_allclose(cache.k, whole.k, atol=1e-6)
    np.testing.assert_allclose(cache.v, whole.v, atol=1e-6)


def test_decoding_ignores_stale_cache_entries(model_and_params):
    # Later positions of a reused cache hold another sequence's keys; they
    # must be masked out, not attended to.
    model, params = model_and_params
    tokens = random_tokens(9, batch=2)
    _, stale = prefill(model, params, random_tokens(10, batch=2),
                                   transformer.init_cache(model, 2))
    logits, _ = prefill(model, params, tokens[:, :4], stale)
    full = forward(model, params, tokens[:, :4])
    np.testing.assert_allclose(logits, full, rtol=0, atol=1e-5)


def test_decode_past_block_size(model_and_params):
    model, params = model_and_params
    cache = transformer.init_cache(model, 2)
    token = jnp.zeros((2,), jnp.int32)
    with pytest.raises(ValueError, match="block_size=8") as info:
        transformer.decode_step(model, params, token, cache, BLOCK)
    assert "\n" not in str(info.value)
    # Under jit the position is traced: the overrun shows as NaN logits.
    logits, _ = decode_step(model, params, token, cache, BLOCK)
    assert np.all(np.isnan(logits))
    logits, _ = decode_step(model, params, token, cache, BLOCK - 1)
    assert np.all(np.isfinite(logits))


def test_gelu_is_the_exact_erf_form():
    x = jnp.linspace(-8.0, 8.0, 1001)
    np.testing.assert_allclose(transformer.gelu(x), jax.nn.gelu(x, approximate=False),
                               atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(transformer.gelu))(x),
        jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x), atol=1e-6)
    # Not the tanh approximation GPT-2 used: they differ by ~1e-3 near |x| = 2.
    assert float(jnp.max(jnp.abs(transformer.gelu(x) - jax.nn.gelu(x)))) > 1e-4


# --------------------------------------------------------------------------
# Options beyond GPT-2: rotary positions, QK-norm, ReLU^2, untied head, remat.

MODERN = dict(position="rope", qk_norm=True, activation="relu2", tie_head=False)


def test_rope_rotates_pairs_and_keeps_norms():
    x = jax.random.normal(jax.random.key(0), (1, 2, 5, 8))
    positions = jnp.arange(5)
    y = transformer.rope(x, positions)
    # Position 0 is the identity; every position keeps each pair's norm.
    np.testing.assert_allclose(y[:, :, 0], x[:, :, 0], atol=1e-6)
    pair = lambda a: a[..., :4] ** 2 + a[..., 4:] ** 2  # noqa: E731
    np.testing.assert_allclose(pair(y), pair(x), rtol=1e-5)
    # The first pair turns by one radian per position.
    angle = jnp.arctan2(y[..., 4], y[..., 0]) - jnp.arctan2(x[..., 4], x[..., 0])
    np.testing.assert_allclose(jnp.cos(angle),
                               jnp.broadcast_to(jnp.cos(positions.astype(float)), angle.shape),
                               atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(2), (1, 1, 1, 8))
    score = lambda i, j: float(jnp.sum(  # noqa: E731
        transformer.rope(q, jnp.array([i])) * transformer.rope(k, jnp.array([j]))))
    assert score(3, 1) == pytest.approx(score(7, 5), abs=1e-5)
    assert score(3, 1) == pytest.approx(score(2, 0), abs=1e-5)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3


def test_rope_model_has_no_position_table_but_sees_order():
    model = tiny(position="rope")
    params = init(model)
    assert "wpe" not in params
    # Order reaches the model through the rotations alone: swapping two
    # context tokens changes the last prediction.
    tokens = random_tokens(3, batch=1, time=4)
    swapped = tokens[:, jnp.array([1, 0, 2, 3])]
    last = lambda t: forward(model, params, t)[:, -1]  # noqa: E731
    assert float(jnp.max(jnp.abs(last(tokens) - last(swapped)))) > 1e-4


def test_relu2_mlp():
    x = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_allclose(transformer.relu2(x), jnp.where(x > 0, x * x, 0.0))


def test_untied_head_starts_uniform():
    model = tiny(tie_head=False)
    params = init(model)
    assert params["head"]["kernel"].shape == (WIDTH, VOCAB)
    logits = forward(model, params, random_tokens(4))
    np.testing.assert_allclose(logits, 0.0, atol=0)


def test_qk_norm_normalises_queries_and_keys():
    model = tiny(qk_norm=True)
    params = init(model)
    attn = params["block_0"]["attn"]
    assert attn["q_norm"]["scale"].shape == attn["k_norm"]["scale"].shape == (WIDTH // HEADS,)
    # Scaling the attention input's query/key projections changes nothing:
    # the norms undo it (the values are another third of the same matrix).
    scaled = jax.tree.map(lambda x: x, params)
    kernel = scaled["block_0"]["attn"]["qkv"]["kernel"]
    scaled["block_0"]["attn"]["qkv"]["kernel"] = kernel.at[:, :2 * WIDTH].multiply(5.0)
    tokens = random_tokens(5)
    np.testing.assert_allclose(forward(model, scaled, tokens),
                               forward(model, params, tokens), atol=2e-5)
    plain = tiny()
    assert float(jnp.max(jnp.abs(forward(plain, scaled, tokens)
                                 - forward(plain, params, tokens)))) > 1e-3


@pytest.mark.parametrize("options", [MODERN, dict(position="rope")],
                         ids=["modern", "rope"])
def test_cached_decoding_equals_full_forward_with_options(options):
    model = tiny(**options)
    params = init(model, seed=3)
    params = jax.tree.map(  # an untied head starts at zero: make it count
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(4), p.shape), params)
    tokens = random_tokens(11, batch=2)
    full = forward(model, params, tokens)
    logits, cache = prefill(model, params, tokens[:, :3], transformer.init_cache(model, 2))
    steps = [logits]
    for pos in range(3, BLOCK):
        logits, cache = decode_step(model, params, tokens[:, pos], cache, pos)
        steps.append(logits[:, None])
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("options", [{}, MODERN], ids=["gpt2", "modern"])
def test_remat_gives_the_same_params_and_gradients(options):
    model, remat = tiny(**options), tiny(remat=True, **options)
    params = init(model, seed=5)
    assert jax.tree.structure(init(remat, seed=5)) == jax.tree.structure(params)
    tokens = random_tokens(6)

    def loss(m, p):
        return jnp.mean(m.apply({"params": p}, tokens, train=True) ** 2)

    g, g_remat = (jax.jit(jax.grad(functools.partial(loss, m)))(params)
                  for m in (model, remat))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("options,bad", [
    (dict(position="alibi"), "position='alibi'"),
    (dict(activation="swish"), "activation='swish'"),
    (dict(position="rope", width=18, num_heads=2), "even head size"),
])
def test_bad_options_are_named(options, bad):
    with pytest.raises(ValueError, match=bad.replace("(", r"\(")):
        init(tiny(**options))
