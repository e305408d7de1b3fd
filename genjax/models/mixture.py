"""Finite mixtures: Gaussian (diagonal or full covariance) and Bernoulli.

The classical baseline of generative modelling: ``p(x) = sum_k pi_k p_k(x)``
with ``K`` simple components, fitted by expectation-maximisation
(``genjax.objectives.em``). Everything here is a pure function of a params
dict (a pytree the loop checkpoints like any network's):

- ``logits [K]``: log mixing weights (normalised by ``log_softmax``);
- Bernoulli: ``probs [K, D]``, each pixel's probability of being on;
- Gaussian, diagonal: ``means [K, D]``, ``variances [K, D]``;
- Gaussian, full: ``means [K, D]`` and each covariance by its
  eigendecomposition ``Sigma = V diag(w) V^T``: ``eigenvectors [K, D, D]``
  (columns) and ``eigenvalues [K, D]``. The Mahalanobis term is then a
  matrix product, ``||(x - mu) V / sqrt(w)||^2``, which the CPU runs much
  faster than a triangular solve; the M-step's eigenvalue floor (the
  constrained maximum likelihood estimate) keeps every covariance positive
  definite without a Cholesky factorisation of an ill-conditioned matrix.

Examples are flattened to ``[B, D]`` by the caller.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

DISTRIBUTIONS = ("bernoulli", "gaussian")
COVARIANCES = ("diag", "full")


def init_params(rng: jax.Array, distribution: str, covariance: str,
                num_components: int, dim: int) -> dict:
    """Placeholder parameters of the right shapes and dtypes; the first EM
    step replaces all of them with estimates from data (``em.em_step``)."""
    params = {"logits": jnp.zeros((num_components,), jnp.float32)}
    if distribution == "bernoulli":
        params["probs"] = jax.random.uniform(rng, (num_components, dim), jnp.float32,
                                             0.25, 0.75)
        return params
    params["means"] = jax.random.uniform(rng, (num_components, dim), jnp.float32)
    if covariance == "diag":
        params["variances"] = jnp.ones((num_components, dim), jnp.float32)
    else:
        params["eigenvectors"] = jnp.broadcast_to(
            jnp.eye(dim, dtype=jnp.float32), (num_components, dim, dim))
        params["eigenvalues"] = jnp.ones((num_components, dim), jnp.float32)
    return params


def distribution_of(params: dict) -> tuple[str, str]:
    """``(distribution, covariance)`` read off the params' keys."""
    if "probs" in params:
        return "bernoulli", ""
    return "gaussian", "full" if "eigenvectors" in params else "diag"


def component_log_probs(params: dict, x: jax.Array) -> jax.Array:
    """``log p_k(x_b)`` for every example and component, ``[B, K]`` (the
    mixing weights not included)."""
    distribution, covariance = distribution_of(params)
    if distribution == "bernoulli":
        # x log p + (1 - x) log(1 - p) = x (log p - log(1 - p)) + log(1 - p);
        # x may be fractional (grey levels as soft targets).
        probs = params["probs"]
        log_on, log_off = jnp.log(probs), jnp.log1p(-probs)
        return x @ (log_on - log_off).T + jnp.sum(log_off, axis=1)[None, :]
    means = params["means"]
    dim = means.shape[1]
    const = -0.5 * dim * math.log(2.0 * math.pi)
    if covariance == "diag":
        inv = 1.0 / params["variances"]
        mahalanobis = ((x * x) @ inv.T - 2.0 * x @ (means * inv).T
                       + jnp.sum(means * means * inv, axis=1)[None, :])
        half_log_det = 0.5 * jnp.sum(jnp.log(params["variances"]), axis=1)
        return const - 0.5 * mahalanobis - half_log_det[None, :]

    def one(args):
        mean, vectors, values = args
        z = ((x - mean[None, :]) @ vectors) * jax.lax.rsqrt(values)[None, :]  # [B, D]
        return const - 0.5 * jnp.sum(z * z, axis=1) - 0.5 * jnp.sum(jnp.log(values))

    # One component at a time: [B, D] intermediates instead of [B, K, D].
    return jax.lax.map(one, (means, params["eigenvectors"], params["eigenvalues"])).T


def joint_log_probs(params: dict, x: jax.Array) -> jax.Array:
    """``log pi_k + log p_k(x_b)``, ``[B, K]``."""
    log_weights = jax.nn.log_softmax(params["logits"])
    return log_weights[None, :] + component_log_probs(params, x)


def log_prob(params: dict, x: jax.Array) -> jax.Array:
    """``log p(x_b)`` in nats, ``[B]``: exact, a log-sum-exp over components."""
    return jax.nn.logsumexp(joint_log_probs(params, x), axis=1)


def covariances(params: dict) -> jax.Array:
    """Each component's covariance matrix ``[K, D, D]`` (full) or its
    diagonal ``[K, D]`` (diag)."""
    if "variances" in params:
        return params["variances"]
    vectors, values = params["eigenvectors"], params["eigenvalues"]
    return jnp.einsum("kde,ke,kfe->kdf", vectors, values, vectors)


def sample(params: dict, rng: jax.Array, num_samples: int, *,
           mean_only: bool = False) -> tuple[jax.Array, jax.Array]:
    """``num_samples`` draws ``[N, D]`` and their components ``[N]``.

    ``mean_only`` returns each drawn component's mean (a Bernoulli
    component's pixel probabilities) instead of a draw from it.
    """
    component_rng, draw_rng = jax.random.split(rng)
    components = jax.random.categorical(component_rng, params["logits"],
                                        shape=(num_samples,))
    distribution, covariance = distribution_of(params)
    if distribution == "bernoulli":
        probs = params["probs"][components]
        if mean_only:
            return probs, components
        return jax.random.bernoulli(draw_rng, probs).astype(jnp.float32), components
    means = params["means"][components]
    if mean_only:
        return means, components
    noise = jax.random.normal(draw_rng, means.shape, means.dtype)
    if covariance == "diag":
        return means + noise * jnp.sqrt(params["variances"][components]), components
    # V_k sqrt(w_k) noise for every component, one component at a time
    # ([K, N, D] rather than gathering an [N, D, D] stack of factors), then
    # each sample's own component.
    scaled = jax.lax.map(lambda vw: (noise * jnp.sqrt(vw[1])[None, :]) @ vw[0].T,
                         (params["eigenvectors"], params["eigenvalues"]))
    picked = jnp.take_along_axis(scaled, components[None, :, None], axis=0)[0]
    return means + picked, components


def num_parameters(num_components: int, dim: int, distribution: str,
                   covariance: str) -> int:
    """Free parameters of the mixture (weights, means, covariances)."""
    per = dim
    if distribution == "gaussian":
        per += dim if covariance == "diag" else dim * (dim + 1) // 2
    return num_components - 1 + num_components * per
