"""The train state pytree and the optimiser built from ``config.train``."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from genjax.train import muon as muon_lib

from genjax.config import ConfigError


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; checkpointed as one pytree.

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: model parameters.
      opt_state: optax state.
      rng: raw key data (``jax.random.key_data``) of the training key; the key
        of step ``s`` is ``fold_in(rng, s)``, so no key is ever carried
        forward and a resumed run draws exactly what an uninterrupted one does.
      ema_params: exponential moving average of ``params`` (or of the part
        a task averages, e.g. a GAN's generator), or None.
      model_state: state that is not trained by gradients but changes with
        training: batch-norm statistics, monitors such as a GAN's count of
        steps the discriminator has won outright. None for most tasks.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    model_state: Any = None

    @classmethod
    def create(cls, params, optimizer: optax.GradientTransformation,
               rng: jax.Array, use_ema: bool) -> "TrainState":
        """A fresh state at step 0; ``rng`` is a typed key."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.key_data(rng),
            ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        )

    def eval_params(self, use_ema: bool):
        """The parameters to evaluate and sample with."""
        if use_ema and self.ema_params is not None:
            return self.ema_params
        return self.params


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup, then constant or cosine decay to ``min_lr_ratio * lr``."""
    lr, warmup = cfg.learning_rate, cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(
            lr, max(cfg.num_steps - warmup, 1), alpha=cfg.min_lr_ratio)
    else:
        raise ConfigError(
            f"train.lr_schedule={cfg.lr_schedule!r}; valid: constant, cosine")
    if warmup <= 0:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


# Muon's defaults where a config does not name them (Jordan et al. 2024).
MUON_LEARNING_RATE = 0.02
MUON_MOMENTUM = 0.95


def build_optimizer(cfg: ml_collections.ConfigDict, decay_mask=None, muon_dims=None):
    """Returns ``(optimizer, schedule)`` from the ``config.train`` block.

    ``decay_mask`` (adamw): a function of the params giving a pytree of bools,
    True where weight decay applies; None decays every parameter.

    ``muon``: Muon (Jordan et al. 2024; ``genjax.train.muon``) on the
    matrices ``muon_dims`` picks (a function of the params giving True or
    False per leaf; None: every 2-D parameter),
    decayed by ``weight_decay``, at ``train.muon_learning_rate`` with
    ``train.muon_momentum``; Adam on the rest at ``learning_rate``, without
    decay. Both rates follow the one schedule's shape; the returned schedule
    is Adam's.
    """
    schedule = learning_rate_schedule(cfg)
    if cfg.optimizer == "muon":
        scale = cfg.get("muon_learning_rate", MUON_LEARNING_RATE) / cfg.learning_rate
        opt = muon_lib.muon(
            lambda step: schedule(step) * scale, schedule,
            muon_dims or muon_lib.matrices,
            beta=cfg.get("muon_momentum", MUON_MOMENTUM),
            weight_decay=cfg.weight_decay, adam_b1=cfg.b1, adam_b2=cfg.b2)
    elif cfg.optimizer == "adam":
        opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2)
    elif cfg.optimizer == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2,
                          weight_decay=cfg.weight_decay, mask=decay_mask)
    elif cfg.optimizer == "adagrad":
        opt = optax.adagrad(schedule)
    elif cfg.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.b1)
    else:
        raise ConfigError(
            f"train.optimizer={cfg.optimizer!r}; valid: adam, adamw, adagrad, sgd, muon")
    if cfg.grad_clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
    return opt, schedule
