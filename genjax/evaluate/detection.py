"""Detection metrics: how well a score tells anomalies from normal examples.

Every score here is "higher = more anomalous" and the anomalies (the
out-of-distribution examples) are the positive class, as in Hendrycks &
Gimpel 2017 and Ren et al. 2019:

- ``auroc``: the area under the ROC curve, i.e. the probability that a random
  anomaly scores above a random normal example (ties count one half), the
  Mann-Whitney statistic; 0.5 is chance, below 0.5 the score ranks the wrong
  way round (Nalisnick et al. 2019's finding for likelihoods).
- ``auprc``: the area under the precision-recall curve as average precision
  (the mean of the precision at each anomaly's rank, tied scores taken as one
  threshold).
- ``fpr_at_tpr``: the fraction of normal examples flagged at the lowest
  threshold that flags ``tpr`` of the anomalies (0.8: "FPR80").

``input_complexity_bits`` is the length in bits of each image compressed
losslessly (PNG, the strongest level), Serra et al. 2020's complexity
estimate ``L(x)``.
"""

from __future__ import annotations

import io

import numpy as np


def _check(normal, anomalous) -> tuple[np.ndarray, np.ndarray]:
    normal = np.asarray(normal, np.float64).ravel()
    anomalous = np.asarray(anomalous, np.float64).ravel()
    if not len(normal) or not len(anomalous):
        raise ValueError(f"need scores of both kinds; got {len(normal)} normal and "
                         f"{len(anomalous)} anomalous")
    if not (np.isfinite(normal).all() and np.isfinite(anomalous).all()):
        raise ValueError("scores must be finite (a NaN or inf score cannot be ranked)")
    return normal, anomalous


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def auroc(normal, anomalous) -> float:
    """P(anomaly's score > normal's) + P(equal) / 2."""
    normal, anomalous = _check(normal, anomalous)
    ranks = _midranks(np.concatenate([normal, anomalous]))
    n, m = len(normal), len(anomalous)
    return float((ranks[n:].sum() - m * (m + 1) / 2.0) / (n * m))


def roc_curve(normal, anomalous) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1)."""
    normal, anomalous = _check(normal, anomalous)
    scores = np.concatenate([normal, anomalous])
    positive = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    # One point per distinct score: the last index of each tied run.
    last = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
    tp = np.cumsum(positive)[last]
    fp = np.cumsum(1.0 - positive)[last]
    return (np.r_[0.0, fp / len(normal)], np.r_[0.0, tp / len(anomalous)])


def auprc(normal, anomalous) -> float:
    """Average precision with the anomalies as positives."""
    normal, anomalous = _check(normal, anomalous)
    fpr, tpr = roc_curve(normal, anomalous)
    tp = tpr * len(anomalous)
    fp = fpr * len(normal)
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    return float(np.sum(np.diff(tpr) * precision[1:]))


def fpr_at_tpr(normal, anomalous, tpr: float = 0.8) -> float:
    """The false-positive rate at the first threshold reaching ``tpr``."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr={tpr}: a rate in (0, 1]")
    fprs, tprs = roc_curve(normal, anomalous)
    return float(fprs[np.argmax(tprs >= tpr - 1e-12)])


def summary(normal, anomalous) -> dict[str, float]:
    """``auroc``, ``auprc`` and ``fpr_at_80_tpr`` of one score."""
    return {"auroc": auroc(normal, anomalous), "auprc": auprc(normal, anomalous),
            "fpr_at_80_tpr": fpr_at_tpr(normal, anomalous, 0.8)}


def to_uint8(images) -> np.ndarray:
    """Images in [0, 1] -> uint8 levels (the 8-bit pixels they came from)."""
    return np.clip(np.rint(np.asarray(images, np.float64) * 255.0), 0, 255).astype(np.uint8)


def input_complexity_bits(images) -> np.ndarray:
    """``[N]`` bits: each image in [0, 1] (``[N, H, W, C]``, C 1 or 3) as a
    PNG at the strongest compression level."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    pixels = to_uint8(images)
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise ValueError(f"images of shape {pixels.shape}: need [N, H, W, 1 or 3]")
    bits = np.empty(len(pixels))
    for i, image in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buf, format="PNG", compress_level=9)
        bits[i] = 8.0 * buf.tell()
    return bits
