"""Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem
et al. 2020) against small cases worked out by hand."""

import numpy as np
import pytest

from genjax.evaluate import metrics

# 1-D points: real 0, 1, 3; samples 0.5, 4, 10, 6.
REAL = np.array([[0.0], [1.0], [3.0]])
FAKE = np.array([[0.5], [4.0], [10.0], [6.0]])


def test_precision_and_recall_by_hand():
    # k = 1. Real balls: 0 -> [-1, 1], 1 -> [0, 2], 3 -> [1, 5].
    # Sample balls: 0.5 -> radius 3.5, 4 -> 2, 10 -> 4, 6 -> 2.
    # Precision: 0.5 and 4 are inside a real ball, 10 and 6 are not: 2/4.
    # Recall: 0, 1 and 3 all lie in 0.5's ball [-3, 4]: 3/3.
    assert metrics.precision_recall(real_features=REAL, sample_features=FAKE,
                                    k=1) == (0.5, 1.0)
    # The sets swapped: the two numbers swap.
    assert metrics.precision_recall(real_features=FAKE, sample_features=REAL,
                                    k=1) == (1.0, 0.5)


def test_density_and_coverage_by_hand():
    # k = 1, real balls as above. 0.5 lies in two balls, 4 in one, 10 and 6
    # in none: density = 3 / (k M) = 3/4; every real ball holds a sample.
    assert metrics.density_coverage(real_features=REAL, sample_features=FAKE,
                                    k=1) == (0.75, 1.0)
    # k = 2. Radii: 0 -> 3, 1 -> 2, 3 -> 3; balls [-3, 3], [-1, 3], [0, 6].
    # 0.5 lies in all three, 4 in [0, 6], 6 on its closed boundary, 10 in
    # none: density = 5 / (2 * 4).
    assert metrics.density_coverage(real_features=REAL, sample_features=FAKE,
                                    k=2) == (0.625, 1.0)
    # Coverage below 1: the samples 10 and 0.2 reach balls 0 and 1 only.
    density, coverage = metrics.density_coverage(
        real_features=REAL, sample_features=np.array([[10.0], [0.2]]), k=1)
    assert density == 1.0 and coverage == pytest.approx(2 / 3)


def test_density_and_coverage_in_two_dimensions():
    # Real (0, 0) and (3, 4), 5 apart: each ball has radius 5. The sample
    # (0, 5) lies on the first ball's boundary and inside the second
    # (distance sqrt(10)); (6, 8) is 5 from (3, 4) and 10 from the origin.
    real = np.array([[0.0, 0.0], [3.0, 4.0]])
    fake = np.array([[0.0, 5.0], [6.0, 8.0]])
    assert metrics.density_coverage(real_features=real, sample_features=fake,
                                    k=1) == (1.5, 1.0)


def test_density_and_coverage_of_the_real_data_itself_and_of_a_collapse():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 3))
    density, coverage = metrics.density_coverage(real_features=real,
                                                 sample_features=real.copy())
    # Ball i holds exactly its centre and its k nearest neighbours (no ties
    # in continuous data): density = N (k + 1) / (k N).
    assert density == pytest.approx(6 / 5, abs=1e-12) and coverage == 1.0
    # Every sample on one real point: coverage is a few balls out of 400,
    # while precision stays 1 (what density/coverage were made to expose).
    collapsed = np.repeat(real[:1], 50, axis=0)
    _, coverage = metrics.density_coverage(real_features=real, sample_features=collapsed)
    assert coverage < 0.05
    precision, _ = metrics.precision_recall(real_features=real, sample_features=collapsed)
    assert precision == 1.0


def test_the_feature_sets_are_keyword_only_and_checked():
    with pytest.raises(TypeError):
        metrics.density_coverage(REAL, FAKE)  # pylint: disable=too-many-function-args
    with pytest.raises(TypeError):
        metrics.precision_recall(REAL, FAKE)  # pylint: disable=too-many-function-args
    with pytest.raises(ValueError, match="k=5 needs more than 5 rows in real_features"):
        metrics.density_coverage(real_features=REAL, sample_features=FAKE)
    with pytest.raises(ValueError, match="dimensions differ"):
        metrics.density_coverage(real_features=REAL, sample_features=np.zeros((3, 2)))
