"""Expectation-maximisation for the mixtures of ``genjax.models.mixture``.

One EM iteration on a batch ``x [B, D]`` (Dempster, Laird & Rubin 1977):

- **E-step**: responsibilities ``r_bk = p(k | x_b)`` under the current
  parameters, and from them the sufficient statistics: ``N_k = sum_b r_bk``,
  ``S1_k = sum_b r_bk x_b`` and the second moments about the current means
  ``c_k`` (``sum_b r_bk (x_b - c_k)^2``, or the outer products for a full
  covariance). Centring on ``c_k`` keeps float32 sums accurate for pixels
  of tiny variance. The statistics are sums over the batch axis: with the
  batch sharded over the mesh's ``data`` axis each device reduces its own
  examples and XLA adds the partial sums (one all-reduce of ``K (D + D^2)``
  numbers), so the E-step is data-parallel with no code for it here.
- **M-step**: the parameters that maximise the expected complete-data
  log-likelihood, within the bounds that keep the likelihood finite: a
  Bernoulli probability in ``[min_prob, 1 - min_prob]`` and a variance (a
  covariance eigenvalue) at least ``min_variance``. The bounded maximiser
  of each of these concave problems is the clipped unconstrained one (for a
  full covariance: the sample covariance with its eigenvalues floored), so
  the iteration is still an exact M-step over the bounded set, and the
  log-likelihood of a fixed batch never decreases (tests/test_mixture.py).

The first iteration has no parameters to take responsibilities from: it
assigns each example to the nearest of ``K`` distinct examples drawn from
the batch (a k-means step; Bishop 2006, sec. 9.2.2) and runs the M-step on
those hard responsibilities.

Grey-level pixels in [0, 1] may be given to a Bernoulli mixture as soft
targets: ``x log p + (1 - x) log(1 - p)`` is the expected log-likelihood of
binarisations of ``x`` under one component, and EM's monotonicity holds for
this objective as for binary data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.models import mixture

# Below this, a component's share of the batch counts as empty.
_TINY = 1e-12


def kmeans_responsibilities(rng: jax.Array, x: jax.Array, num_components: int) -> jax.Array:
    """One-hot ``[B, K]``: each example's nearest among ``K`` distinct
    examples of the batch drawn with ``rng``."""
    index = jax.random.choice(rng, x.shape[0], (num_components,), replace=False)
    centres = x[index]
    d2 = (jnp.sum(x * x, axis=1)[:, None] - 2.0 * x @ centres.T
          + jnp.sum(centres * centres, axis=1)[None, :])
    return jax.nn.one_hot(jnp.argmin(d2, axis=1), num_components, dtype=x.dtype)


def e_step(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(responsibilities [B, K], log p(x) [B])`` under ``params``."""
    joint = mixture.joint_log_probs(params, x)
    log_px = jax.nn.logsumexp(joint, axis=1)
    return jnp.exp(joint - log_px[:, None]), log_px


def sufficient_statistics(resp: jax.Array, x: jax.Array, centres: jax.Array | None,
                          covariance: str) -> dict:
    """The E-step's sums over the batch (see the module docstring).

    ``centres [K, D]`` are the points the second moments are taken about
    (None: no second moments, a Bernoulli mixture).
    """
    stats = {"count": jnp.sum(resp, axis=0), "sum": resp.T @ x}
    if centres is None:
        return stats

    def second_moment(args):
        r, centre = args
        d = x - centre[None, :]
        weighted = d * r[:, None]
        if covariance == "diag":
            return jnp.sum(weighted * d, axis=0)
        return weighted.T @ d

    # One component at a time: [B, D] intermediates instead of [B, K, D].
    stats["second"] = jax.lax.map(second_moment, (resp.T, centres))
    stats["centres"] = centres
    return stats


def m_step(stats: dict, distribution: str, covariance: str, *,
           min_variance: float, min_prob: float) -> dict:
    """The bounded maximum-likelihood parameters from the statistics."""
    count = stats["count"]
    safe = jnp.maximum(count, _TINY)
    logits = jnp.log(safe / jnp.sum(safe))
    mean = stats["sum"] / safe[:, None]
    if distribution == "bernoulli":
        return {"logits": logits, "probs": jnp.clip(mean, min_prob, 1.0 - min_prob)}
    # Second moment about the new mean from the one about the old centre.
    shift = mean - stats["centres"]
    if covariance == "diag":
        variance = stats["second"] / safe[:, None] - shift * shift
        return {"logits": logits, "means": mean,
                "variances": jnp.maximum(variance, min_variance)}
    cov = (stats["second"] / safe[:, None, None]
           - shift[:, :, None] * shift[:, None, :])
    cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
    # One matrix per LAPACK call (lax.map, not a batched eigh): jaxlib spreads
    # a batch over XLA's intra-op thread pool and waits for it, and on a mesh
    # of CPU devices every pool thread may be a device blocked in that same
    # wait, a deadlock (seen with 8 CPU devices, jax 0.10.2).
    values, vectors = jax.lax.map(jnp.linalg.eigh, cov)
    return {"logits": logits, "means": mean, "eigenvectors": vectors,
            "eigenvalues": jnp.maximum(values, min_variance)}


def em_step(params: dict, x: jax.Array, rng: jax.Array, *, initialise: jax.Array,
            min_variance: float, min_prob: float) -> tuple[dict, dict]:
    """One EM iteration on ``x [B, D]``: ``(new params, metrics)``.

    ``initialise`` (a traced bool) replaces the E-step's responsibilities by
    the k-means assignment of the module docstring. The metrics are batch
    means under the parameters *before* the update: ``log_likelihood``
    (nats per example; on a fixed batch it never decreases from one
    iteration to the next, the first excepted) and the smallest component
    weight; ``empty_components`` counts those with no responsibility.
    """
    distribution, covariance = mixture.distribution_of(params)
    num_components = params["logits"].shape[0]
    resp, log_px = e_step(params, x)
    start = kmeans_responsibilities(rng, x, num_components)
    resp = jnp.where(initialise, start, resp)
    centres = None
    if distribution == "gaussian":
        # Centre the second moments on the current means, or at the start
        # on the responsibilities' own means (the current ones are
        # placeholders there).
        start_means = (resp.T @ x) / jnp.maximum(jnp.sum(resp, axis=0), _TINY)[:, None]
        centres = jnp.where(initialise, start_means, params["means"])
        centres = jax.lax.stop_gradient(centres)
    stats = sufficient_statistics(resp, x, centres, covariance)
    new = m_step(stats, distribution, covariance, min_variance=min_variance,
                 min_prob=min_prob)
    weights = stats["count"] / x.shape[0]
    metrics = {"log_likelihood": jnp.mean(log_px),
               "min_component_weight": jnp.min(weights),
               "empty_components": jnp.sum(stats["count"] < 0.5).astype(jnp.float32)}
    return new, metrics
