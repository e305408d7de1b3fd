"""Next-token prediction: the autoregressive factorisation p(x) = prod_i p(x_i | x_<i).

A causal model reads tokens ``x_0 .. x_{T-1}`` and predicts, at every
position ``t``, a distribution over ``x_{t+1}``; the objective is the mean
negative log-likelihood of the true next tokens (cross-entropy), in nats per
token. Bits per character (char-level models: one token is one character) and
perplexity are the same number in other units:

    bits_per_char = nats / ln 2,    perplexity = exp(nats).

Both are functions of the *mean* loss over the evaluated tokens, so they are
computed from it (``summary``), never averaged per batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def token_nats(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``-log softmax(logits)[target]`` per position.

    Args:
      logits: float ``[..., vocab]`` (unnormalised log-probabilities).
      targets: int ``[...]`` in ``[0, vocab)``.

    Returns:
      float32 ``[...]``, nats.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit


def sequence_nats(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean nats per token of each sequence: logits ``[B, T, V]``,
    targets ``[B, T]`` -> ``[B]``."""
    return jnp.mean(token_nats(logits, targets), axis=-1)


def loss(logits: jax.Array, targets: jax.Array):
    """``(mean nats per token, metrics)`` over a batch ``[B, T]``: the
    training objective, with ``bits_per_char`` for the log."""
    nats = jnp.mean(token_nats(logits, targets))
    return nats, {"bits_per_char": nats / math.log(2.0)}


def summary(mean_nats: float) -> dict[str, float]:
    """``{"bits_per_char", "perplexity"}`` of a mean loss in nats per token."""
    mean_nats = float(mean_nats)
    return {"bits_per_char": mean_nats / math.log(2.0),
            "perplexity": math.exp(min(mean_nats, 700.0))}
