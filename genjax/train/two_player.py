"""The two-player (GAN) update rule for ``step.make_update_step``.

One call of the update is one generator step preceded by ``n_disc``
discriminator steps, each player with its own optax optimiser (Goodfellow et
al. 2014, Algorithm 1, with k = ``n_disc``). The state layout is

* ``params`` / ``opt_state``: ``{'generator': ..., 'discriminator': ...}``;
* ``ema_params``: the exponential moving average of the generator,
  ``{'params': ..., 'collections': ...}`` (or None): its parameters and its
  batch-norm statistics averaged alike, so that the averaged generator is
  evaluated with statistics of the averaged weights (the live generator's
  statistics belong to other weights); what evaluation and sampling use
  when ``eval.use_ema``;
* ``model_state``: ``{'generator': collections, 'discriminator':
  collections, 'd_wins_streak': int32}`` where collections hold batch-norm
  statistics (empty dicts without batch norm), and ``d_wins_streak`` counts
  the consecutive updates in which the discriminator won outright.

Each discriminator step sees the same real batch with fresh noise.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from genjax.train import step as step_lib
from genjax.train.state import TrainState

PLAYERS = ("generator", "discriminator")


def init_state(g_params, d_params, model_state, optimizers: dict, rng: jax.Array,
               *, use_ema: bool) -> TrainState:
    """A step-0 two-player state; ``optimizers`` maps player -> optax optimiser."""
    params = {"generator": g_params, "discriminator": d_params}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state={p: optimizers[p].init(params[p]) for p in PLAYERS},
        rng=jax.random.key_data(rng),
        ema_params=(jax.tree.map(jnp.copy, {"params": g_params,
                                             "collections": model_state["generator"]})
                    if use_ema else None),
        model_state=dict(model_state, d_wins_streak=jnp.zeros((), jnp.int32)),
    )


def two_player_update(d_loss_fn: Callable, g_loss_fn: Callable,
                      optimizers: dict, *, n_disc: int = 1,
                      ema_decay: float = 0.0,
                      d_wins_threshold: float = 0.99) -> Callable:
    """Returns ``update(state, batch, rng) -> (state, metrics)``.

    Args:
      d_loss_fn: ``(d_params, g_params, model_state, batch, rng) ->
        (loss, (metrics, model_state))``, the discriminator's loss, with
        metrics ``d_real`` and ``d_fake`` (mean probabilities of "real").
      g_loss_fn: ``(g_params, d_params, model_state, batch, rng) ->
        (loss, (metrics, model_state))``, the generator's loss.
      optimizers: ``{'generator': optax, 'discriminator': optax}``.
      n_disc: discriminator steps per generator step.
      ema_decay: if > 0 and the state has ``ema_params``, the generator's EMA.
      d_wins_threshold: the discriminator "wins outright" in an update when
        the last of its steps has ``d_real > threshold`` and
        ``d_fake < 1 - threshold``.

    Metrics: ``d_loss``, ``g_loss``, ``d_real``, ``d_fake`` (of the last
    discriminator step, before its update), ``d_grad_norm``,
    ``g_grad_norm``, ``d_param_norm``, ``g_param_norm``, ``d_wins_streak``.
    """
    if n_disc < 1:
        raise ValueError(f"n_disc={n_disc} must be at least 1")
    d_grad = jax.value_and_grad(d_loss_fn, has_aux=True)
    g_grad = jax.value_and_grad(g_loss_fn, has_aux=True)

    def update(state: TrainState, batch, rng):
        g_params = state.params["generator"]
        d_params = state.params["discriminator"]
        g_opt = state.opt_state["generator"]
        d_opt = state.opt_state["discriminator"]
        model_state = state.model_state
        for i in range(n_disc):  # Unrolled: n_disc is small (1 to 5).
            (d_loss, (d_metrics, model_state)), grads = d_grad(
                d_params, g_params, model_state, batch, jax.random.fold_in(rng, i))
            d_grad_norm = optax.tree.norm(grads)
            updates, d_opt = optimizers["discriminator"].update(grads, d_opt, d_params)
            d_params = optax.apply_updates(d_params, updates)

        (g_loss, (g_metrics, model_state)), grads = g_grad(
            g_params, d_params, model_state, batch, jax.random.fold_in(rng, n_disc))
        g_grad_norm = optax.tree.norm(grads)
        updates, g_opt = optimizers["generator"].update(grads, g_opt, g_params)
        g_params = optax.apply_updates(g_params, updates)

        ema = state.ema_params
        if ema is not None and ema_decay > 0:
            ema = step_lib.ema_update(
                ema, {"params": g_params, "collections": model_state["generator"]},
                ema_decay)

        wins = ((d_metrics["d_real"] > d_wins_threshold)
                & (d_metrics["d_fake"] < 1.0 - d_wins_threshold))
        streak = jnp.where(wins, state.model_state["d_wins_streak"] + 1, 0)
        model_state = dict(model_state, d_wins_streak=streak.astype(jnp.int32))

        metrics = dict(d_metrics, **g_metrics, d_loss=d_loss, g_loss=g_loss,
                       d_grad_norm=d_grad_norm, g_grad_norm=g_grad_norm,
                       d_param_norm=optax.tree.norm(d_params),
                       g_param_norm=optax.tree.norm(g_params),
                       d_wins_streak=streak)
        new_state = state.replace(
            params={"generator": g_params, "discriminator": d_params},
            opt_state={"generator": g_opt, "discriminator": d_opt},
            ema_params=ema, model_state=model_state)
        return new_state, metrics

    return update
