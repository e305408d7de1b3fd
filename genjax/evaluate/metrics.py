"""Sample-quality formulas on features and class probabilities (numpy, float64).

Pure functions, no JAX and no model: every family (VAE, GAN, diffusion) feeds
them features or class probabilities of its samples from the same extractor
(``classifier.py``'s domain classifier, or the FID Inception network), so their
numbers are comparable across families.

- ``frechet_distance``: the Frechet distance between two Gaussians fitted to
  features (FID when the features are Inception pool3; Heusel et al. 2017,
  "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium", arXiv:1706.08500).
- ``kernel_distance``: the Kernel Inception Distance (Binkowski et al. 2018,
  "Demystifying MMD GANs", arXiv:1801.01401), an unbiased MMD^2 with a cubic
  polynomial kernel.
- ``classifier_score``: the Inception-score formula (Salimans et al. 2016,
  "Improved Techniques for Training GANs", arXiv:1606.03498) with a domain
  classifier in place of Inception.
- ``mode_coverage``: how many classes the samples hit, and the KL divergence of
  their predicted-class histogram from the reference labels' (in the spirit of
  the mode counts of Srivastava et al. 2017, "VEEGAN", arXiv:1705.07761, and
  Metz et al. 2017, "Unrolled GANs").
- ``precision_recall``: improved precision and recall (Kynkaanniemi et al.
  2019, "Improved Precision and Recall Metric for Assessing Generative
  Models", arXiv:1904.06991): how much of the samples lies on the real data's
  manifold, and how much of the real data on the samples', each manifold the
  union of k-nearest-neighbour balls.
- ``energy_distance``: the energy distance between two point clouds
  (Szekely & Rizzo 2013, "Energy statistics"), for low-dimensional data such
  as the 2-D toy distributions, where no feature extractor is needed.
"""

from __future__ import annotations

import numpy as np


def _as_2d(name: str, x) -> np.ndarray:
    """Returns ``x`` as a finite float64 ``[N, D]`` array or raises ValueError."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} holds {bad} non-finite values")
    return x


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Returns the mean ``[D]`` and unbiased covariance ``[D, D]`` of ``features``.

    Args:
      features: ``[N, D]`` with N >= 2, one row per example.

    Returns:
      ``(mu, sigma)`` in float64, ``sigma = X_c^T X_c / (N - 1)`` with ``X_c``
      the centred features (``np.cov(features, rowvar=False)``).
    """
    x = _as_2d("features", features)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"gaussian_statistics needs at least 2 rows, got {n}")
    mu = x.mean(axis=0)
    centred = x - mu[None, :]
    sigma = (centred.T @ centred) / float(n - 1)
    # Exactly symmetric (the matmul is, up to rounding), so eigh downstream is safe.
    sigma = 0.5 * (sigma + sigma.T)
    return mu, sigma


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a symmetric PSD matrix (eigenvalues < 0 clamped)."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    root = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * root[None, :]) @ eigenvectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2).

    ``d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (Dowson & Landau
    1982; the FID of Heusel et al. 2017 applies it to Inception features).

    ``Tr (S1 S2)^{1/2}`` is computed as the sum of the square roots of the
    eigenvalues of ``S1^{1/2} S2 S1^{1/2}``: that matrix is symmetric PSD and
    similar to ``S1 S2``, so ``eigvalsh`` is stable and needs no complex
    arithmetic, unlike ``scipy.linalg.sqrtm(S1 @ S2)``. Tiny negative
    eigenvalues (rounding) are clamped to 0, so singular covariances (fewer
    samples than dimensions) give a finite result, never NaN.

    Args:
      mu1, mu2: means ``[D]``.
      sigma1, sigma2: symmetric PSD covariances ``[D, D]``.

    Returns:
      The distance as a Python float, >= 0.
    """
    mu1 = np.asarray(mu1, np.float64)
    mu2 = np.asarray(mu2, np.float64)
    sigma1 = np.asarray(sigma1, np.float64)
    sigma2 = np.asarray(sigma2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be [D] of one shape, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be [{d}, {d}] for means of dimension {d}, "
                             f"got shape {s.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds non-finite values")
    # Symmetrise: the formula assumes symmetric inputs, rounding may break it.
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    return frechet_distance_given_root(mu1, sigma1, psd_sqrt(sigma1), mu2, sigma2)


def frechet_distance_given_root(mu1, sigma1, root1, mu2, sigma2) -> float:
    """``frechet_distance`` with ``root1 = psd_sqrt(sigma1)`` precomputed.

    For comparing many sample sets against one reference: the reference's
    square root (an eigendecomposition, about a second at D = 2048) is then
    computed once. Inputs are trusted (validated float64, symmetric).
    """
    middle = root1 @ sigma2 @ root1
    middle = 0.5 * (middle + middle.T)
    eigenvalues = np.linalg.eigvalsh(middle)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(sigma1)) + float(np.trace(sigma2)) \
        - 2.0 * trace_sqrt
    # The exact value is >= 0; rounding can leave about -1e-12 for identical inputs.
    return max(value, 0.0)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``k(x, y) = (x . y / d + 1)^3`` for all row pairs: ``[n, d], [m, d] -> [n, m]``."""
    k = x @ y.T
    k /= float(x.shape[1])
    k += 1.0
    cube = k * k
    cube *= k  # In place: about 10x faster than ``** 3`` (which calls pow).
    return cube


def _unbiased_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """The unbiased MMD^2 estimator (Gretton et al. 2012, eq. 3) from kernel matrices."""
    m = kxx.shape[0]
    n = kyy.shape[0]
    term_xx = (kxx.sum() - np.trace(kxx)) / float(m * (m - 1))
    term_yy = (kyy.sum() - np.trace(kyy)) / float(n * (n - 1))
    term_xy = kxy.sum() / float(m * n)
    return float(term_xx + term_yy - 2.0 * term_xy)


def kernel_distance(features1, features2, *, num_subsets: int = 100,
                    subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel (Inception) Distance, KID (Binkowski et al. 2018, arXiv:1801.01401).

    The unbiased estimator of the squared MMD between the two feature
    distributions with the cubic polynomial kernel
    ``k(x, y) = (x . y / d + 1)^3``, averaged over ``num_subsets`` random
    subsets: each draws ``m = min(subset_size, n1, n2)`` rows of each set
    without replacement (rows may repeat across subsets). Unlike the FID the
    estimator is unbiased, so values near 0 can be slightly negative.

    Args:
      features1, features2: ``[n1, D]`` and ``[n2, D]``, n1, n2 >= 2.
      num_subsets: subsets to average over (>= 1).
      subset_size: rows per subset before capping at n1 and n2 (>= 2).
      seed: the subsets are a deterministic function of it.

    Returns:
      ``(mean, std)`` of the per-subset estimates (std with ddof=0; 0 for a
      single subset).
    """
    x = _as_2d("features1", features1)
    y = _as_2d("features2", features2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets={num_subsets} must be >= 1")
    m = min(int(subset_size), x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"kernel_distance needs subsets of at least 2 rows; got "
                         f"subset_size={subset_size}, n1={x.shape[0]}, n2={y.shape[0]}")
    rng = np.random.default_rng(seed)
    estimates = np.empty((num_subsets,), np.float64)
    for i in range(num_subsets):
        xs = x[rng.choice(x.shape[0], size=m, replace=False)]
        ys = y[rng.choice(y.shape[0], size=m, replace=False)]
        estimates[i] = _unbiased_mmd2(_polynomial_kernel(xs, xs),
                                      _polynomial_kernel(ys, ys),
                                      _polynomial_kernel(xs, ys))
    return float(estimates.mean()), float(estimates.std())


def _as_probs(probs, num_classes: int | None = None) -> np.ndarray:
    """Returns ``probs`` as float64 ``[N, K]`` rows on the simplex or raises ValueError."""
    p = _as_2d("probs", probs)
    if num_classes is not None and p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns, expected num_classes={num_classes}")
    if p.shape[0] < 1:
        raise ValueError("probs is empty")
    if np.any(p < 0.0) or np.any(np.abs(p.sum(axis=1) - 1.0) > 1e-4):
        raise ValueError("probs rows must be non-negative and sum to 1 "
                         "(pass softmax outputs, not logits)")
    return p


def _xlogy_over(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Elementwise ``p * log(p / q)`` with ``0 log 0 = 0``."""
    out = np.zeros(np.broadcast_shapes(p.shape, q.shape), np.float64)
    p_b = np.broadcast_to(p, out.shape)
    q_b = np.broadcast_to(q, out.shape)
    positive = p_b > 0.0
    with np.errstate(divide="ignore"):
        out[positive] = p_b[positive] * (np.log(p_b[positive]) - np.log(q_b[positive]))
    return out


def classifier_score(probs, num_splits: int = 10) -> tuple[float, float]:
    """The Inception-score formula with a domain classifier.

    ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean of ``p(y|x)`` over
    the split, computed on ``num_splits`` contiguous, near-equal splits of the
    rows (``np.array_split``), as in Salimans et al. 2016 (arXiv:1606.03498).
    It ranges from 1 (every sample gets the same prediction) to K (confident
    predictions spread evenly over K classes).

    Args:
      probs: ``[N, K]`` class probabilities, rows summing to 1.
      num_splits: 1 <= num_splits <= N.

    Returns:
      ``(mean, std)`` over the splits (std with ddof=0, as in the reference code).
    """
    p = _as_probs(probs)
    n = p.shape[0]
    if not 1 <= num_splits <= n:
        raise ValueError(f"num_splits={num_splits} must be between 1 and the "
                         f"number of rows {n}")
    scores = []
    for part in np.array_split(p, num_splits, axis=0):
        marginal = part.mean(axis=0, keepdims=True)
        kl = _xlogy_over(part, marginal).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    scores = np.asarray(scores, np.float64)
    return float(scores.mean()), float(scores.std())


def mode_coverage(probs, reference_labels, num_classes: int,
                  min_class_fraction: float = 0.1) -> dict:
    """Which classes the samples cover, judged by the domain classifier.

    Each sample's class is ``argmax probs``. With ``s`` the samples' class
    histogram and ``r`` the reference labels' (both frequencies):

    - ``classes_hit``: the number of classes c with ``r[c] > 0``, at least one
      sample, and ``s[c] >= min_class_fraction * r[c]``;
    - ``class_kl``: ``KL(s || r) = sum_c s[c] log(s[c] / r[c])`` in nats
      (``inf`` if the samples hit a class the reference never has);
    - ``class_histogram``: ``s`` as a list of K floats.

    A model that collapses onto one class of a uniform K-class reference gets
    ``classes_hit = 1`` and ``class_kl = log K``.

    Args:
      probs: ``[N, num_classes]`` class probabilities of the samples.
      reference_labels: int ``[M]`` labels of the reference split.
      num_classes: K.
      min_class_fraction: see ``classes_hit``.
    """
    p = _as_probs(probs, num_classes)
    labels = np.asarray(reference_labels)
    if labels.ndim != 1 or labels.shape[0] < 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"reference_labels must be a non-empty int [M] array, "
                         f"got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"reference_labels must lie in [0, {num_classes}), got "
                         f"values in [{labels.min()}, {labels.max()}]")
    predicted = np.argmax(p, axis=1)
    sample_counts = np.bincount(predicted, minlength=num_classes).astype(np.float64)
    reference_counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    sample_hist = sample_counts / sample_counts.sum()
    reference_hist = reference_counts / reference_counts.sum()
    hit = (reference_hist > 0.0) & (sample_counts > 0.0) \
        & (sample_hist >= min_class_fraction * reference_hist)
    if np.any((sample_hist > 0.0) & (reference_hist == 0.0)):
        class_kl = float("inf")
    else:
        class_kl = float(_xlogy_over(sample_hist, reference_hist).sum())
    return {
        "classes_hit": int(np.count_nonzero(hit)),
        "class_kl": max(class_kl, 0.0),
        "class_histogram": [float(v) for v in sample_hist],
    }


# Rows of the distance matrix computed at once: about 64 MB of float64.
_DISTANCE_ENTRIES = 1 << 23


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``||x_i - y_j||^2`` for all row pairs, ``[n, m]`` (clamped at 0)."""
    d2 = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :]
    d2 -= 2.0 * (x @ y.T)
    return np.maximum(d2, 0.0, out=d2)


def knn_radii(x, k: int = 3) -> np.ndarray:
    """Squared distance from each row of ``x [N, D]`` to its k-th nearest
    other row, ``[N]`` (the row itself is its own 0-th neighbour)."""
    x = _as_2d("x", x)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"knn_radii needs 1 <= k < N; got k={k} for N={x.shape[0]}")
    chunk = max(1, _DISTANCE_ENTRIES // x.shape[0])
    radii = np.empty((x.shape[0],), np.float64)
    for start in range(0, x.shape[0], chunk):
        d2 = _squared_distances(x[start:start + chunk], x)
        radii[start:start + chunk] = np.partition(d2, k, axis=1)[:, k]
    return radii


def _fraction_inside(points: np.ndarray, centres: np.ndarray,
                     radii: np.ndarray) -> float:
    """The fraction of ``points`` within the squared radius of at least one
    centre (a closed ball: a point on the boundary is inside)."""
    chunk = max(1, _DISTANCE_ENTRIES // centres.shape[0])
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d2 = _squared_distances(points[start:start + chunk], centres)
        inside += int(np.count_nonzero((d2 <= radii[None, :]).any(axis=1)))
    return inside / points.shape[0]


def precision_recall(*, real_features, sample_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, arXiv:1904.06991).

    Each set's manifold is the union of balls around its points, a point's
    ball reaching its k-th nearest neighbour in its own set (section 3).
    ``precision`` is the fraction of samples inside the real manifold (are
    the samples realistic?), ``recall`` the fraction of real points inside
    the samples' manifold (is the real variety covered?). Both lie in
    [0, 1]; the paper compares equally sized sets, since a ball shrinks as
    its set grows.

    Args:
      real_features: ``[N, D]``, N > k.
      sample_features: ``[M, D]``, M > k.
      k: the neighbour that sets each ball's radius (the paper's default, 3).

    Returns:
      ``(precision, recall)`` as floats.

    Both sets are keyword-only: swapping them swaps the two numbers.
    """
    real, fake = _real_and_samples("precision_recall", real_features,
                                   sample_features, k, need_samples=True)
    precision = _fraction_inside(fake, real, knn_radii(real, k))
    recall = _fraction_inside(real, fake, knn_radii(fake, k))
    return precision, recall


def _real_and_samples(what: str, real_features, sample_features, k: int, *,
                      need_samples: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as 2-D float64 arrays, checked for ``what``."""
    real = _as_2d("real_features", real_features)
    fake = _as_2d("sample_features", sample_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    sets = (("real_features", real),) + ((("sample_features", fake),) if need_samples else ())
    for name, x in sets:
        if x.shape[0] <= k:
            raise ValueError(f"{what} with k={k} needs more than {k} "
                             f"rows in {name}, got {x.shape[0]}")
    if fake.shape[0] == 0:
        raise ValueError(f"{what} needs at least one row in sample_features")
    return real, fake


def density_coverage(*, real_features, sample_features, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, arXiv:2002.09797, section 4).

    Only the real points get balls (each reaching its k-th nearest real
    neighbour), which makes both robust to outlying samples, unlike
    precision and recall:

    - ``density = 1/(kM) sum_j #{i : sample j in ball i}``: how many real
      balls hold each sample, over k. It is about 1 for samples distributed
      like the real data, above 1 for samples crowded where real points are
      dense, and unbounded above;
    - ``coverage = 1/N #{i : ball i holds at least one sample}``: the
      fraction of real points whose neighbourhood some sample reaches, in
      [0, 1].

    Args:
      real_features: ``[N, D]``, N > k.
      sample_features: ``[M, D]``, M >= 1.
      k: the neighbour that sets each real ball's radius (the paper's 5).

    Returns:
      ``(density, coverage)`` as floats.
    """
    real, fake = _real_and_samples("density_coverage", real_features,
                                   sample_features, k, need_samples=False)
    radii = knn_radii(real, k)
    chunk = max(1, _DISTANCE_ENTRIES // real.shape[0])
    holds = 0
    covered = np.zeros((real.shape[0],), bool)
    for start in range(0, fake.shape[0], chunk):
        inside = _squared_distances(fake[start:start + chunk], real) <= radii[None, :]
        holds += int(np.count_nonzero(inside))
        covered |= inside.any(axis=0)
    return holds / (k * fake.shape[0]), float(covered.mean())


def _mean_pairwise_distance(x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> float:
    """``mean_{i,j} ||x_i - y_j||`` in chunks of rows (no N x M matrix kept)."""
    total = 0.0
    for start in range(0, len(x), chunk):
        diff = x[start:start + chunk, None, :] - y[None, :, :]
        total += float(np.sqrt(np.sum(diff * diff, axis=-1)).sum())
    return total / (len(x) * len(y))


def energy_distance(x, y) -> float:
    """The energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between
    the empirical distributions of points ``x [N, D]`` and ``y [M, D]``
    (Szekely & Rizzo 2013), with the V-statistic means (all pairs, the
    zero self-distances included). It is 0 for identical clouds and
    positive otherwise."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} dimensions but y has {y.shape[1]}")
    return (2.0 * _mean_pairwise_distance(x, y) - _mean_pairwise_distance(x, x)
            - _mean_pairwise_distance(y, y))
