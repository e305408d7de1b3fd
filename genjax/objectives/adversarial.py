"""Adversarial objectives: minimax, non-saturating and hinge GAN losses, R1.

All functions take discriminator logits (``D(x) = sigmoid(logit)`` for the
minimax and non-saturating losses; the raw score for the hinge loss) and
return ``(loss, metrics)`` with scalar means over the batch, in nats where
they are log-likelihoods.

* minimax (Goodfellow et al. 2014, eq. 1): the value
  ``V(D, G) = E log D(x) + E log(1 - D(G(z)))``; D maximises it, G minimises
  it. At the optimum of an indifferent discriminator, ``D = 1/2`` everywhere
  and ``V = -log 4``.
* non_saturating (Goodfellow et al. 2014, section 3): D as above; G maximises
  ``E log D(G(z))`` instead, which has strong gradients early in training
  when D rejects every sample.
* hinge (Lim & Ye 2017; Miyato et al. 2018): D minimises
  ``E relu(1 - D(x)) + E relu(1 + D(G(z)))``; G minimises ``-E D(G(z))``.

* info (Chen et al. 2016, InfoGAN, eq. 5, for a categorical code): the
  cross-entropy of an auxiliary head Q(c | x) on generated images against the
  code ``c`` they were generated from; minimising it over G and Q maximises
  the variational lower bound on the mutual information ``I(c; G(z, c))``
  (up to the constant ``H(c)``).

``log D = -softplus(-logit)`` and ``log(1 - D) = -softplus(logit)`` keep the
losses finite for any finite logit.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

LOSSES = ("minimax", "non_saturating", "hinge")


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"GAN loss {kind!r}; valid: {', '.join(LOSSES)}")


def log_d(logits):
    """``log sigmoid(logits)``, elementwise."""
    return -jax.nn.softplus(-logits)


def log_one_minus_d(logits):
    """``log(1 - sigmoid(logits))``, elementwise."""
    return -jax.nn.softplus(logits)


def minimax_value(real_logits, fake_logits):
    """``V(D, G) = E log D(x) + E log(1 - D(G(z)))`` (Goodfellow et al., eq. 1)."""
    return jnp.mean(log_d(real_logits)) + jnp.mean(log_one_minus_d(fake_logits))


def discriminator_loss(kind: str, real_logits, fake_logits):
    """The discriminator's loss on a batch of real and one of generated examples.

    Returns ``(loss, metrics)``; metrics hold ``d_real`` and ``d_fake``, the
    mean ``sigmoid`` of the logits (D's probability that the input is real),
    and ``d_accuracy``, the fraction of both batches it classifies right.
    """
    _check(kind)
    if kind == "hinge":
        loss = (jnp.mean(jax.nn.relu(1.0 - real_logits))
                + jnp.mean(jax.nn.relu(1.0 + fake_logits)))
    else:  # minimax and non_saturating train D the same way: -V(D, G).
        loss = -minimax_value(real_logits, fake_logits)
    accuracy = 0.5 * (jnp.mean((real_logits > 0).astype(jnp.float32))
                      + jnp.mean((fake_logits < 0).astype(jnp.float32)))
    metrics = {"d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
               "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
               "d_accuracy": accuracy}
    return loss, metrics


def generator_loss(kind: str, fake_logits):
    """The generator's loss on the discriminator's logits of its samples.

    minimax: ``E log(1 - D(G(z)))`` (the term of V that depends on G);
    non_saturating: ``-E log D(G(z))``; hinge: ``-E D(G(z))``.
    """
    _check(kind)
    if kind == "minimax":
        loss = jnp.mean(log_one_minus_d(fake_logits))
    elif kind == "non_saturating":
        loss = -jnp.mean(log_d(fake_logits))
    else:
        loss = -jnp.mean(fake_logits)
    return loss, {"d_fake_for_g": jnp.mean(jax.nn.sigmoid(fake_logits))}


def r1_penalty(logit_fn: Callable, real_images):
    """``E ||grad_x D(x)||^2`` on real data (Mescheder et al. 2018, eq. 9).

    ``logit_fn`` maps a batch ``[B, ...]`` to logits ``[B]``; each example's
    logit depends only on that example (no batch norm in training mode), so
    the gradient of the summed logits is the per-example gradient. Multiply
    by ``gamma / 2`` for the paper's regulariser.
    """
    grads = jax.grad(lambda x: jnp.sum(logit_fn(x)))(real_images)
    return jnp.mean(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)),
                            axis=1))


def info_loss(code_logits, codes):
    """InfoGAN's loss for a categorical code: ``-E log Q(c | G(z, c))``.

    Args:
      code_logits: ``[B, K]``, Q's logits on generated images.
      codes: ``[B]`` int, the codes those images were generated from.

    Returns ``(loss in nats, metrics)``; metrics hold ``code_accuracy``, the
    fraction of images whose argmax under Q is their code.
    """
    log_q = jax.nn.log_softmax(code_logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_q, codes[:, None], axis=-1))
    accuracy = jnp.mean((jnp.argmax(code_logits, axis=-1) == codes).astype(jnp.float32))
    return loss, {"info_loss": loss, "code_accuracy": accuracy}
