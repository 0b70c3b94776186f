"""Exact F1-optimal thresholds against brute force, a 0.01 grid, ties and degenerate labels."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from blend.thresholds import best_threshold, best_thresholds
from heads.metrics import binarize_au, binary_f1


def brute_force(scores, labels):
    """Best F1 over every cut point (each distinct score, plus 'nothing positive')."""
    best = binary_f1(labels, np.zeros_like(labels))
    for u in np.unique(scores):
        best = max(best, binary_f1(labels, scores >= u))
    return best


@pytest.mark.parametrize("seed", range(200))
def test_matches_brute_force_on_small_random_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    labels = (rng.random(n) < rng.random()).astype(np.int8)
    scores = rng.random(n)
    if seed % 3 == 0:  # many ties
        scores = np.round(scores, 1)
    if seed % 5 == 0:
        scores = scores.astype(np.float32)
    t, f1 = best_threshold(scores, labels)
    assert f1 == pytest.approx(brute_force(scores, labels), abs=1e-12)
    # the threshold reproduces the optimum with predict = score >= t
    assert binary_f1(labels, binarize_au(scores[:, None], t)[:, 0]) == pytest.approx(f1, abs=1e-12)


def test_never_worse_than_a_001_grid_with_sklearn():
    rng = np.random.default_rng(7)
    n, k = 3000, 12
    y = (rng.random((n, k)) < rng.uniform(0.05, 0.5, k)).astype(np.int8)
    s = np.clip(rng.normal(0.35 + 0.25 * y, 0.2), 0, 1).astype(np.float32)
    t, f1 = best_thresholds(s, y)
    for j in range(k):
        grid = max(f1_score(y[:, j], s[:, j] >= g, zero_division=0) for g in np.arange(0.0, 1.0001, 0.01))
        assert f1[j] >= grid - 1e-12
        assert f1_score(y[:, j], binarize_au(s, t)[:, j], zero_division=0) == pytest.approx(f1[j], abs=1e-12)


def test_ties_go_together_and_the_highest_of_equal_cuts_is_returned():
    scores = np.array([0.9, 0.7, 0.7, 0.7, 0.2, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0])
    t, f1 = best_threshold(scores, labels)
    # cut at 0.9: F1 = 2/4; cut at 0.7 (all three tied rows in): tp 3, pred 4 -> 6/7
    assert f1 == pytest.approx(6 / 7)
    assert 0.2 < t <= 0.7
    assert t == pytest.approx(0.45)  # midpoint between the lowest included and the highest excluded score
    # exact tie: 'first row only' (tp 1, pred 1, pos 2) and 'all rows' (tp 2, pred 4) both give 2/3
    t, f1 = best_threshold(np.array([0.9, 0.5, 0.4, 0.3]), np.array([1, 0, 0, 1]))
    assert f1 == pytest.approx(2 / 3)
    assert t == pytest.approx(0.7)  # the higher cut, predicting fewer positives
    t, f1 = best_threshold(np.array([0.9, 0.5]), np.array([1, 0]))
    assert f1 == 1.0 and 0.5 < t <= 0.9


def test_all_negative_and_all_positive_labels():
    s = np.array([0.1, 0.5, 0.5, 0.9], dtype=np.float32)
    t, f1 = best_threshold(s, np.zeros(4, dtype=np.int8))
    assert f1 == 0.0
    assert (s >= t).sum() == 0 and t > 0.9  # predicts nothing: no false positives
    t, f1 = best_threshold(s, np.ones(4, dtype=np.int8))
    assert f1 == 1.0
    assert (s.astype(np.float64) >= t).all() and t == pytest.approx(0.1)


def test_adjacent_floats_still_reproduce():
    a = np.float64(0.5)
    b = np.nextafter(a, 0)
    t, f1 = best_threshold(np.array([a, b]), np.array([1, 0]))
    assert f1 == 1.0 and b < t <= a


def test_columns_are_independent_and_match_single_column_calls():
    rng = np.random.default_rng(3)
    s = rng.random((50, 4))
    y = (rng.random((50, 4)) < 0.3).astype(int)
    t, f1 = best_thresholds(s, y)
    for j in range(4):
        assert (t[j], f1[j]) == best_threshold(s[:, j], y[:, j])


def test_bad_input_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="NaN"):
        best_threshold(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="0 or 1"):
        best_threshold(np.array([0.1, 0.2]), np.array([-1, 1]))
    with pytest.raises(ValueError, match="shape"):
        best_thresholds(np.zeros((3, 2)), np.zeros((3, 3)))
