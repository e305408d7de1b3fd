"""Muon with the Newton-Schulz iterations batched over matrices of one shape.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers"): SGD with
Nesterov momentum whose update for each weight matrix is replaced by the
nearest semi-orthogonal matrix, ``U V^T`` of its SVD, computed by five
Newton-Schulz iterations of the quintic ``a X + b (X X^T) X + c (X X^T)^2 X``
(coefficients 3.4445, -4.775, 2.0315, which push every singular value into
about [0.7, 1.2] in five steps), then scaled by ``sqrt(max(1, out / in))``
so that wide and tall matrices move alike. The update rule is
``optax.contrib.muon``'s (momentum as an average, Nesterov, Frobenius
normalisation before the iterations, decoupled weight decay times the
learning rate); this version differs in how it runs:

* matrices of one shape (after turning each so its rows are the shorter
  side, for the smaller Gram matrix ``X X^T``) are stacked and iterated as
  one batch: in a GPT every block has the same four shapes, so there are
  three batched chains of matmuls (the MLP's two matrices share one)
  instead of one per matrix;
* ``muon_dims`` says which leaves are Muon's (a function of the params
  giving True or False per leaf); the rest go to Adam (optax's Muon uses
  Nesterov Adam there), at their own rate.

* on a data-parallel mesh, each stack is split over the ``data`` axis
  (``step.shard_batch_axis``) where the devices divide it: each device
  orthogonalises its share of the matrices instead of all of them (optax's
  Muon, on replicated parameters, repeats the whole work on every device).

Measured with ``python -m genjax.tools.benchmark gpt_shakespeare_char
--preset=cpu_fast`` on two CPU devices, on one host busy with another
study throughout (so slow in absolute terms), within 40 minutes: optax's
Muon 200 ms a step and 6.4 s to compile; batched by shape 136 ms and 4.6 s;
batched and split over the devices 110 ms and 5.1 s. docs/transformer.md,
"Time to loss", has the whole recipe.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

NS_COEFFS = (3.4445, -4.775, 2.0315)
NS_STEPS = 5


def orthogonalize(x, steps: int = NS_STEPS, eps: float = 1e-7):
    """Newton-Schulz orthogonalisation of a stack of matrices ``[..., m, n]``
    with ``m <= n``: each is normalised to unit Frobenius norm, then iterated
    ``steps`` times; returns about ``U V^T`` of each."""
    a, b, c = NS_COEFFS
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    for _ in range(steps):
        gram = x @ jnp.swapaxes(x, -1, -2)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


class MuonState(NamedTuple):
    count: jax.Array
    momentum: Any


def scale_by_muon(beta: float = 0.95, steps: int = NS_STEPS,
                  nesterov: bool = True) -> optax.GradientTransformation:
    """Momentum, then each 2-D update orthogonalised (batched by shape) and
    scaled by ``sqrt(max(1, out / in))`` (a kernel is ``[in, out]``)."""

    def init_fn(params):
        return MuonState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        # genjax.train.step imports the optimisers' module, which imports this.
        from genjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

        del params
        count = state.count + 1
        momentum = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                                state.momentum, updates)
        # Bias-corrected averages, as Adam's (and optax's Muon).
        correct = lambda tree, n: jax.tree.map(  # noqa: E731
            lambda x: x / (1 - beta ** n.astype(jnp.float32)), tree)
        if nesterov:
            direction = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                                     correct(momentum, count + 1), correct(updates, count))
        else:
            direction = correct(momentum, count)
        leaves, treedef = jax.tree.flatten(direction)
        for leaf in leaves:
            if leaf.ndim != 2:
                raise ValueError(
                    f"Muon takes matrices only; got a parameter of shape {leaf.shape}")
        groups: dict[tuple, list[int]] = {}
        for i, leaf in enumerate(leaves):
            rows, cols = leaf.shape
            groups.setdefault((min(rows, cols), max(rows, cols)), []).append(i)
        out = [None] * len(leaves)
        for idx in groups.values():
            turned = [leaves[i] if leaves[i].shape[0] <= leaves[i].shape[1]
                      else leaves[i].T for i in idx]
            # On a mesh with a data axis that divides the stack, each device
            # orthogonalises its share of the matrices (then XLA gathers
            # them back into the replicated parameters).
            stack = step_lib.shard_batch_axis(jnp.stack(turned).astype(jnp.float32))
            ortho = orthogonalize(stack, steps)
            for j, i in enumerate(idx):
                fan_in, fan_out = leaves[i].shape
                y = ortho[j] if fan_in <= fan_out else ortho[j].T
                scale = max(1.0, fan_out / fan_in) ** 0.5
                out[i] = (scale * y).astype(leaves[i].dtype)
        return jax.tree.unflatten(treedef, out), MuonState(count, momentum)

    return optax.GradientTransformation(init_fn, update_fn)


def muon(learning_rate, adam_learning_rate, muon_dims: Callable, *,
         beta: float = 0.95, steps: int = NS_STEPS, weight_decay: float = 0.0,
         adam_b1: float = 0.9, adam_b2: float = 0.999) -> optax.GradientTransformation:
    """Muon on the leaves ``muon_dims(params)`` marks True (decoupled decay
    ``weight_decay``), Adam without decay on the others. Both rates may be
    schedules."""
    def labels(params):
        return jax.tree.map(lambda is_muon: "muon" if is_muon else "adam",
                            muon_dims(params))

    return optax.multi_transform({
        "muon": optax.chain(scale_by_muon(beta, steps),
                            optax.add_decayed_weights(weight_decay),
                            optax.scale_by_learning_rate(learning_rate)),
        "adam": optax.adam(adam_learning_rate, b1=adam_b1, b2=adam_b2),
    }, labels)


def matrices(params):
    """The default ``muon_dims``: every 2-D parameter."""
    return jax.tree.map(lambda p: p.ndim == 2, params)
