"""Detection metrics (genjax.evaluate.detection): small cases by hand, and
scikit-learn's on random scores with ties."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from genjax.evaluate import detection


def test_small_case_by_hand():
    normal = [0.1, 0.4, 0.35, 0.8]
    anomalous = [0.9, 0.4, 0.7]
    # Pairs (anomaly > normal): 0.9 beats all 4; 0.4 beats 0.1 and 0.35 and
    # ties 0.4 (a half); 0.7 beats 0.1, 0.4, 0.35. (4 + 2.5 + 3) / 12.
    assert detection.auroc(normal, anomalous) == pytest.approx(9.5 / 12)
    # Thresholds from the top: 0.9 (tp 1, fp 0), 0.8 (1, 1), 0.7 (2, 1),
    # 0.4 (3, 2): precision at each new anomaly 1, 2/3, 3/5 over 3 anomalies.
    assert detection.auprc(normal, anomalous) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # 80% of 3 anomalies needs all 3 (threshold 0.4): 2 of 4 normals flagged.
    assert detection.fpr_at_tpr(normal, anomalous, 0.8) == pytest.approx(0.5)
    # 2 of 3 (0.67 >= 0.6) at threshold 0.7: 1 of 4 normals flagged.
    assert detection.fpr_at_tpr(normal, anomalous, 0.6) == pytest.approx(0.25)


def test_perfect_reversed_and_constant_scores():
    assert detection.auroc([0, 1], [2, 3]) == 1.0
    assert detection.auroc([2, 3], [0, 1]) == 0.0
    assert detection.auroc([1, 1], [1, 1, 1]) == 0.5
    assert detection.summary([0, 1], [2, 3]) == {"auroc": 1.0, "auprc": 1.0,
                                                 "fpr_at_80_tpr": 0.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    normal = rng.integers(0, 20, 300).astype(float)
    anomalous = rng.integers(5, 25, 200).astype(float)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[normal, anomalous]
    assert detection.auroc(normal, anomalous) == pytest.approx(sk.roc_auc_score(y, s))
    assert detection.auprc(normal, anomalous) == pytest.approx(
        sk.average_precision_score(y, s))
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    ours_fpr, ours_tpr = detection.roc_curve(normal, anomalous)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)
    assert detection.fpr_at_tpr(normal, anomalous, 0.8) == pytest.approx(
        fpr[np.argmax(tpr >= 0.8)])


def test_bad_scores_are_errors():
    with pytest.raises(ValueError, match="finite"):
        detection.auroc([0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="both kinds"):
        detection.auroc([], [1.0])
    with pytest.raises(ValueError, match="tpr=0"):
        detection.fpr_at_tpr([0.0], [1.0], 0.0)


def test_input_complexity_ranks_noise_above_flat_images():
    rng = np.random.default_rng(0)
    flat = np.zeros((3, 28, 28, 1), np.float32)
    stripes = np.tile((np.arange(28) % 2).astype(np.float32)[None, None, :, None],
                      (3, 28, 1, 1))
    noise = rng.random((3, 28, 28, 1)).astype(np.float32)
    bits = [detection.input_complexity_bits(x) for x in (flat, stripes, noise)]
    assert bits[0].max() < bits[1].min() < bits[2].min()
    # Noise is incompressible: about 8 bits a pixel, plus the PNG container.
    assert 28 * 28 * 7.5 < bits[2].mean() < 28 * 28 * 9.0
    colour = detection.input_complexity_bits(rng.random((2, 8, 8, 3)))
    assert colour.shape == (2,) and (colour > 8 * 8 * 3 * 7).all()
