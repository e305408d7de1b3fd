"""Autoregressive sampling from a ``GPT`` with its key-value cache.

``generate`` draws ``max_new_tokens`` tokens after a prompt in one traceable
function (jit it, or call it inside a jitted function): a prefill of the
context, then one cached ``decode_step`` per token inside ``lax.fori_loop``,
so no token re-reads the prefix. Each token is drawn from the filtered
distribution of ``filter_logits``: temperature, then top-k, then nucleus
(top-p, Holtzman et al. 2020). Temperature 0 is greedy decoding.

Longer than the context. The model has ``block_size`` learned positions, so a
cached sequence holds at most ``block_size`` tokens. nanoGPT's ``generate``
crops the context to the last ``block_size`` tokens and recomputes it for
every new token. Here, when the cache is full, the last ``block_size // 2``
tokens are prefilled again and decoding continues from there: every token
still sees at least ``block_size // 2`` tokens of context (all of them while
the text is shorter than ``block_size``), for one prefill per
``block_size // 2 + 1`` tokens instead of one per token.

Randomness: token ``i`` of the continuation (counting from 0) is drawn with
``fold_in(rng, i)``, so the same key gives the same text whatever the batch
layout of the computation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.models import transformer


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raises ValueError naming a bad sampling setting."""
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0: greedy)")
    if top_k < 0:
        raise ValueError(f"top_k={top_k} must be >= 0 (0: no top-k filter)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (1: no nucleus filter)")


def filter_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Logits ``[..., V]`` of the distribution tokens are drawn from.

    Divides by ``temperature`` (> 0), keeps the ``top_k`` largest (0: all),
    then keeps the smallest set of most likely tokens whose probability
    reaches ``top_p`` (1: all). Removed tokens get ``-inf``. Tokens tied with
    the last one kept are kept too.
    """
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("temperature=0 is greedy decoding; use argmax, not filter_logits")
    logits = logits.astype(jnp.float32) / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        ordered = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
        probs = jax.nn.softmax(ordered, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # The most likely token always stays (its mass_before is 0 < top_p).
        keep = mass_before < top_p
        threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample_next(rng: jax.Array, logits: jax.Array, *, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """One token per row of ``logits`` ``[B, V]`` -> int32 ``[B]``."""
    if temperature == 0:
        check_sampling(temperature, top_k, top_p)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k,
                             top_p=top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def generate(model: transformer.GPT, params, prompt: jax.Array, rng: jax.Array, *,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0) -> jax.Array:
    """Continues each prompt row by ``max_new_tokens`` sampled tokens.

    Args:
      model: the ``GPT`` (static: its sizes shape the computation).
      params: its parameters.
      prompt: int32 ``[B, P]``, ``P >= 1``; only the last ``block_size``
        tokens are read.
      rng: a typed key.
      max_new_tokens: the number of tokens to draw (static).
      temperature, top_k, top_p: see ``filter_logits`` (static).

    Returns:
      int32 ``[B, max_new_tokens]``, the continuation alone.
    """
    check_sampling(temperature, top_k, top_p)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be [batch, length >= 1], got {prompt.shape}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    block = model.block_size
    batch, plen = prompt.shape
    keep = max(block // 2, 1)
    first_ctx = min(plen, block)
    # Tokens the first segment yields (prefill + decodes while the cache has
    # room), then each later one; the last later segment may be shorter.
    first_len = min(1 + block - first_ctx, max_new_tokens)
    later_len = 1 + block - keep
    num_full, last_len = divmod(max_new_tokens - first_len, later_len)
    buf = jnp.zeros((batch, plen + max_new_tokens), jnp.int32)
    buf = buf.at[:, :plen].set(prompt.astype(jnp.int32))

    def draw(logits, index):
        return sample_next(jax.random.fold_in(rng, index), logits,
                           temperature=temperature, top_k=top_k, top_p=top_p)

    def segment(buf, cache, context, start, num_decode):
        """Prefills ``context`` ``[B, C]`` and writes ``1 + num_decode`` new
        tokens into ``buf`` from column ``start``."""
        ctx_len = context.shape[1]
        logits, cache = transformer.prefill(model, params, context, cache)
        token = draw(logits[:, -1], start - plen)
        buf = jax.lax.dynamic_update_slice(buf, token[:, None], (0, start))

        def body(i, carry):
            buf, cache, token = carry
            logits, cache = transformer.decode_step(model, params, token, cache,
                                                    ctx_len + i)
            token = draw(logits, start + 1 + i - plen)
            buf = jax.lax.dynamic_update_slice(buf, token[:, None], (0, start + 1 + i))
            return buf, cache, token

        if num_decode:
            buf, cache, _ = jax.lax.fori_loop(0, num_decode, body, (buf, cache, token))
        return buf, cache

    def later(start, carry, length):
        buf, cache = carry
        context = jax.lax.dynamic_slice(buf, (0, start - keep), (batch, keep))
        return segment(buf, cache, context, start, length - 1)

    cache = transformer.init_cache(model, batch)
    buf, cache = segment(buf, cache, prompt[:, plen - first_ctx:].astype(jnp.int32),
                         plen, first_len - 1)
    if num_full:
        buf, cache = jax.lax.fori_loop(
            0, num_full, lambda j, carry: later(plen + first_len + j * later_len,
                                                carry, later_len), (buf, cache))
    if last_len:
        buf, cache = later(plen + first_len + num_full * later_len, (buf, cache),
                           last_len)
    return buf[:, plen:]
