"""A decoder-only GPT-2-style transformer, with key-value cached decoding.

The model of Radford et al. 2019 (GPT-2) as karpathy/nanoGPT's ``model.py``
builds it: learned token and position embeddings, pre-LayerNorm blocks of
causal multi-head self-attention and a GELU MLP (4x wide), dropout on the
embeddings, the attention probabilities and each residual branch, a final
LayerNorm, and an output head tied to the token embedding
(``logits = h @ wte.T``). Initialisation as GPT-2: weights from N(0, 0.02),
biases zero, and the two projections that write into the residual stream
(attention output, MLP output) from N(0, 0.02 / sqrt(2 * num_layers))
(GPT-2, section 2.3). The GELU is the exact (erf) form, as nanoGPT's
``nn.GELU()``; GPT-2 itself used the tanh approximation.

Layout, for speed on XLA:CPU: every dense layer is applied to the flattened
``[batch * time, width]`` activations (measured here, a dense layer on
``[batch, time, width]`` is 2.6 times slower in its gradient), query, key and
value come from one ``[width, 3 * width]`` matmul, and the attention matmuls
keep the batch dimensions ``(batch, head)`` leading.

Cached decoding (``init_cache``, ``prefill``, ``decode_step``) keeps the keys
and values of every layer in a fixed-size cache ``[layers, batch, heads,
block_size, head_dim]``, so each new token costs one position's work instead
of recomputing the prefix; the logits equal those of the full forward pass.
All positions of a batch advance together (one scalar ``pos``). A sequence
can hold at most ``block_size`` tokens, prompt included: the learned position
table has no row beyond it. A sampler that wants longer text must slide the
window itself (crop to the last ``block_size - 1`` tokens and prefill again,
as nanoGPT's ``generate`` crops the context).

Options beyond GPT-2 (all off by default, so the defaults are nanoGPT's
model), each from the speedrun literature (Keller Jordan's modded-nanogpt)
and each measured in docs/transformer.md before a preset turns it on:

* ``position="rope"``: rotary position embeddings (Su et al. 2021) on the
  queries and keys instead of the learned position table;
* ``qk_norm=True``: RMS-normalised queries and keys per head, with a learned
  scale (Dehghani et al. 2023; Wortsman et al. 2023);
* ``activation="relu2"``: the squared ReLU MLP (So et al. 2021, Primer);
* ``tie_head=False``: an output head of its own, initialised at zero (so
  training starts from uniform predictions), instead of ``wte.T``;
* ``remat=True``: each block's activations recomputed in the backward pass
  (``flax.linen.remat``) instead of stored: less memory for one more forward
  pass of each block, the same numbers.

No losses, optimisers or data here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# GPT-2 initialisation (Radford et al. 2019; nanoGPT ``_init_weights``).
_INIT_STD = 0.02
# Added to the scores of masked positions: exp() of it is exactly 0.
_MASKED = -1e30
# PyTorch's LayerNorm epsilon, which nanoGPT and GPT-2 use (Flax's is 1e-6).
_LN_EPSILON = 1e-5


class KVCache(NamedTuple):
    """Keys and values of every layer, each ``[layers, B, heads, block_size, head_dim]``.

    Positions at or after the decoding position are unfilled (zeros or stale
    values); attention masks them out.
    """

    k: jax.Array
    v: jax.Array


def _check_tokens(tokens, block_size: int) -> None:
    """Shapes are static, so this also holds under ``jax.jit``."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
    if tokens.shape[1] > block_size:
        raise ValueError(
            f"sequence of {tokens.shape[1]} tokens exceeds block_size={block_size}; "
            f"crop the context to its last {block_size} tokens")


def _dense(features: int, use_bias: bool, dtype: Dtype, std: float = _INIT_STD,
           name: str | None = None) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype,
                    kernel_init=nn.initializers.normal(std),
                    bias_init=nn.initializers.zeros, name=name)


def _layer_norm(use_bias: bool, dtype: Dtype, name: str | None = None):
    return nn.LayerNorm(epsilon=_LN_EPSILON, use_bias=use_bias, dtype=dtype,
                        name=name)


def gelu(x):
    """The exact GELU, ``x * Phi(x)``, written with ``lax.erf``: equal to
    ``nn.gelu(x, approximate=False)`` to float32 rounding, and faster on
    XLA:CPU (that one goes through ``erfc``, a piecewise approximation)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(1.0 / math.sqrt(2.0), x.dtype)))


POSITIONS = ("learned", "rope")
ACTIVATIONS = ("gelu", "relu2")
# RoPE's base wavelength (Su et al. 2021).
_ROPE_BASE = 10000.0


def rope(x, positions):
    """Rotary position embedding: ``x`` ``[B, H, S, D]`` (D even) rotated
    by ``positions`` ``[S]``. Pairs ``(x_i, x_{i + D/2})`` turn by the angle
    ``position * base**(-2i/D)``, so a query-key product depends on the two
    positions only through their difference. Angles in float32."""
    half = x.shape[-1] // 2
    freqs = _ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[:, None] * freqs[None]  # [S, D/2]
    cos = jnp.cos(angles).astype(x.dtype)[None, None]
    sin = jnp.sin(angles).astype(x.dtype)[None, None]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def relu2(x):
    """The squared ReLU, ``max(x, 0)**2`` (So et al. 2021)."""
    return jnp.square(jax.nn.relu(x))


def _attend(q, k, v, mask, dropout: nn.Module, train: bool, sow=None):
    """Masked softmax attention; q ``[B,H,S,D]``, k and v ``[B,H,T,D]``,
    mask ``[1,1,S,T]`` (True: may attend) -> ``[B,H,S,D]``. ``sow``, if
    given, receives the attention probabilities ``[B,H,S,T]``."""
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    # Scores and softmax in float32 even for a bfloat16 model. Every row keeps
    # at least its own position, so no row is all masked.
    scores = jnp.einsum("bhsd,bhtd->bhst", q, k,
                        preferred_element_type=jnp.float32)
    # An additive mask: its gradient is free, where a select's is another
    # pass over the [B, H, S, T] scores.
    scores = scores + jnp.where(mask, 0.0, _MASKED).astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1)
    if sow is not None:
        sow(probs)
    probs = dropout(probs, deterministic=not train)
    return jnp.einsum("bhst,bhtd->bhsd", probs.astype(v.dtype), v)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention on flattened activations ``[B*T, W]``."""

    num_heads: int
    width: int
    num_layers: int
    layer: int  # this block's index into the KV cache
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    position: str = "learned"
    qk_norm: bool = False

    def setup(self):
        if self.width % self.num_heads:
            raise ValueError(
                f"width={self.width} is not divisible by num_heads="
                f"{self.num_heads}; choose a width that is a multiple of it")
        self.qkv = _dense(3 * self.width, self.use_bias, self.dtype)
        self.out = _dense(self.width, self.use_bias, self.dtype,
                          std=_INIT_STD / math.sqrt(2 * self.num_layers))
        self.attn_dropout = nn.Dropout(self.dropout)
        self.resid_dropout = nn.Dropout(self.dropout)
        if self.qk_norm:
            self.q_norm = nn.RMSNorm(epsilon=1e-6, dtype=self.dtype)
            self.k_norm = nn.RMSNorm(epsilon=1e-6, dtype=self.dtype)

    def _split_heads(self, x, batch: int, positions):
        """``[B*S, W] -> q, k, v``, each ``[B, H, S, D]``, with the queries
        and keys normalised and rotated where the options ask."""
        qkv = self.qkv(x).reshape(batch, -1, 3, self.num_heads,
                                  self.width // self.num_heads)
        q, k, v = jnp.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, H, S, D]
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.position == "rope":
            q, k = rope(q, positions), rope(k, positions)
        return q, k, v

    def _merge_heads(self, y, train: bool):
        """``[B, H, S, D] -> [B*S, W]``, then the output projection."""
        y = jnp.transpose(y, (0, 2, 1, 3)).reshape(-1, self.width)
        return self.resid_dropout(self.out(y), deterministic=not train)

    def __call__(self, x, batch: int, *, train: bool):
        """Full causal attention over ``x`` ``[B*T, W]`` -> ``[B*T, W]``."""
        time = x.shape[0] // batch
        q, k, v = self._split_heads(x, batch, jnp.arange(time))
        mask = jnp.tril(jnp.ones((time, time), bool))[None, None]
        # Inspect with model.apply(..., mutable=["intermediates"]): the
        # probabilities of every layer, ``[B, H, T, T]``; not stored otherwise.
        sow = lambda p: self.sow("intermediates", "attention", p)  # noqa: E731
        return self._merge_heads(
            _attend(q, k, v, mask, self.attn_dropout, train, sow), train)

    def extend(self, x, batch: int, cache: KVCache, pos):
        """Attention for ``S`` new tokens at positions ``pos .. pos+S-1``.

        Writes their keys and values into ``cache`` at this layer and attends
        over every cached position up to each query's own. Returns
        ``(y [B*S, W], cache)``.
        """
        q, k, v = self._split_heads(x, batch, pos + jnp.arange(x.shape[0] // batch))
        start = (self.layer, 0, 0, pos, 0)
        cache = KVCache(
            jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), start),
            jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), start))
        keys, values = cache.k[self.layer], cache.v[self.layer]
        steps, capacity = q.shape[2], keys.shape[2]
        query_pos = pos + jnp.arange(steps)
        # Masks the future and every unfilled cache position alike.
        mask = (jnp.arange(capacity)[None, :] <= query_pos[:, None])[None, None]
        y = _attend(q, keys.astype(q.dtype), values.astype(q.dtype), mask,
                    self.attn_dropout, train=False)
        return self._merge_heads(y, train=False), cache


class MLP(nn.Module):
    """``W -> 4W -> W`` with the exact GELU (nanoGPT's ``nn.GELU()``) or the
    squared ReLU (``activation="relu2"``)."""

    width: int
    num_layers: int
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x, *, train: bool):
        h = _dense(4 * self.width, self.use_bias, self.dtype, name="fc")(x)
        h = relu2(h) if self.activation == "relu2" else gelu(h)
        h = _dense(self.width, self.use_bias, self.dtype,
                   std=_INIT_STD / math.sqrt(2 * self.num_layers), name="out")(h)
        return nn.Dropout(self.dropout)(h, deterministic=not train)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    num_heads: int
    width: int
    num_layers: int
    layer: int
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    position: str = "learned"
    qk_norm: bool = False
    activation: str = "gelu"

    def setup(self):
        self.ln_1 = _layer_norm(self.use_bias, self.dtype)
        self.attn = CausalSelfAttention(self.num_heads, self.width,
                                        self.num_layers, self.layer,
                                        self.dropout, self.use_bias, self.dtype,
                                        self.position, self.qk_norm)
        self.ln_2 = _layer_norm(self.use_bias, self.dtype)
        self.mlp = MLP(self.width, self.num_layers, self.dropout, self.use_bias,
                       self.dtype, self.activation)

    def __call__(self, x, batch: int, train: bool):
        x = x + self.attn(self.ln_1(x), batch, train=train)
        return x + self.mlp(self.ln_2(x), train=train)

    def extend(self, x, batch: int, cache: KVCache, pos):
        y, cache = self.attn.extend(self.ln_1(x), batch, cache, pos)
        x = x + y
        return x + self.mlp(self.ln_2(x), train=False), cache


class GPT(nn.Module):
    """Decoder-only transformer: tokens ``[B, T]`` -> logits ``[B, T, vocab]``.

    Attributes:
      vocab_size: number of token ids.
      block_size: the longest sequence (the number of learned positions).
      num_layers: transformer blocks.
      num_heads: attention heads; must divide ``width``.
      width: the residual stream's width (d_model); the MLP is ``4 * width``.
      dropout: rate on the embeddings, attention probabilities and residual
        branches when ``train=True`` (needs ``rngs={"dropout": key}`` if > 0).
      use_bias: biases in the dense layers and LayerNorms (GPT-2: True;
        nanoGPT's ``train.py`` default: False).
      dtype: the computation dtype; parameters are float32 and the logits are
        returned as float32.
      position: ``learned`` (a position table, GPT-2) or ``rope``.
      qk_norm: RMS-normalise queries and keys (learned scales).
      activation: the MLP's ``gelu`` (GPT-2) or ``relu2``.
      tie_head: the output head is ``wte.T`` (GPT-2) or, if False, a matrix
        of its own, initialised at zero.
      remat: recompute each block's activations in the backward pass.
    """

    vocab_size: int
    block_size: int
    num_layers: int
    num_heads: int
    width: int
    dropout: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    position: str = "learned"
    qk_norm: bool = False
    activation: str = "gelu"
    tie_head: bool = True
    remat: bool = False

    def setup(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position={self.position!r}; valid: {', '.join(POSITIONS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if self.position == "rope" and (self.width // self.num_heads) % 2:
            raise ValueError(
                f"rope needs an even head size; width {self.width} / "
                f"{self.num_heads} heads = {self.width // self.num_heads}")
        embed_init = nn.initializers.normal(_INIT_STD)
        self.wte = nn.Embed(self.vocab_size, self.width, dtype=self.dtype,
                            embedding_init=embed_init)
        if self.position == "learned":
            self.wpe = nn.Embed(self.block_size, self.width, dtype=self.dtype,
                                embedding_init=embed_init)
        if not self.tie_head:
            self.head = nn.Dense(self.vocab_size, use_bias=False, dtype=self.dtype,
                                 kernel_init=nn.initializers.zeros)
        self.embed_dropout = nn.Dropout(self.dropout)
        # The training forward pass (__call__) recomputes each block in the
        # backward pass under remat; cached decoding (extend) is unaffected.
        block = nn.remat(Block, static_argnums=(2, 3)) if self.remat else Block
        self.blocks = [
            block(self.num_heads, self.width, self.num_layers, i, self.dropout,
                  self.use_bias, self.dtype, self.position, self.qk_norm,
                  self.activation, name=f"block_{i}")
            for i in range(self.num_layers)]
        self.ln_f = _layer_norm(self.use_bias, self.dtype)

    def _embed(self, tokens, positions, *, train: bool):
        """tokens ``[B, S]``, positions ``[S]`` -> ``[B*S, W]``."""
        x = self.wte(tokens)
        if self.position == "learned":
            x = x + self.wpe(positions)[None]
        x = self.embed_dropout(x, deterministic=not train)
        return x.reshape(-1, self.width)

    def _logits(self, x, batch: int):
        """``[B*S, W]`` -> float32 logits ``[B, S, vocab]`` through the head."""
        x = self.ln_f(x)
        logits = self.wte.attend(x) if self.tie_head else self.head(x)
        return logits.astype(jnp.float32).reshape(batch, -1, self.vocab_size)

    def __call__(self, tokens, *, train: bool):
        """Logits ``[B, T, vocab]`` (float32) of int tokens ``[B, T]``, T <= block_size."""
        _check_tokens(tokens, self.block_size)
        batch, time = tokens.shape
        x = self._embed(tokens, jnp.arange(time), train=train)
        for block in self.blocks:
            x = block(x, batch, train)
        return self._logits(x, batch)

    def extend(self, tokens, cache: KVCache, pos):
        """Processes ``S`` new tokens ``[B, S]`` at positions ``pos .. pos+S-1``
        given the cache of the earlier ones: ``(logits [B, S, vocab], cache)``.

        Inference only (no dropout). ``pos`` may be traced; the caller keeps
        ``pos + S <= block_size``.
        """
        _check_tokens(tokens, self.block_size)
        batch, steps = tokens.shape
        x = self._embed(tokens, pos + jnp.arange(steps), train=False)
        for block in self.blocks:
            x, cache = block.extend(x, batch, cache, pos)
        return self._logits(x, batch), cache


# --------------------------------------------------------------------------
# Pure functions over (model, params): parameter count and cached decoding.


def num_params(params, *, exclude_positions: bool = False) -> int:
    """Number of parameters; with ``exclude_positions``, less the position
    table (nanoGPT's ``get_num_params()`` default). The tied token embedding
    counts once."""
    total = sum(x.size for x in jax.tree_util.tree_leaves(params))
    if exclude_positions and "wpe" in params:
        total -= params["wpe"]["embedding"].size
    return int(total)


def init_cache(model: GPT, batch_size: int, dtype: Dtype | None = None) -> KVCache:
    """An empty cache: keys and values ``[layers, B, heads, block_size, head_dim]``."""
    shape = (model.num_layers, batch_size, model.num_heads, model.block_size,
             model.width // model.num_heads)
    dtype = dtype or model.dtype
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def prefill(model: GPT, params, tokens, cache: KVCache):
    """Runs a prompt ``[B, T]`` (T <= block_size) from position 0.

    Returns ``(logits [B, T, vocab], cache)``; the next token goes to
    position T: ``decode_step(model, params, token, cache, T)``.
    """
    return model.apply({"params": params}, tokens, cache, 0, method=GPT.extend)


def decode_step(model: GPT, params, token, cache: KVCache, pos):
    """One cached step: token ``[B]`` at position ``pos`` (a scalar, may be
    traced) -> ``(logits [B, vocab], cache)``.

    Positions run from 0 to ``block_size - 1``. A concrete ``pos`` outside
    that range raises ``ValueError``; under ``jax.jit`` it cannot, and the
    logits are NaN instead, so an overrun never passes silently.
    """
    if not isinstance(pos, jax.core.Tracer) and not 0 <= int(pos) < model.block_size:
        raise ValueError(
            f"decode position {int(pos)} is outside [0, block_size={model.block_size}); "
            "a cached sequence holds at most block_size tokens: crop the "
            "context and prefill again")
    logits, cache = model.apply({"params": params}, token[:, None], cache, pos,
                                method=GPT.extend)
    logits = logits[:, 0]
    in_range = (pos >= 0) & (pos < model.block_size)
    return jnp.where(in_range, logits, jnp.nan), cache
