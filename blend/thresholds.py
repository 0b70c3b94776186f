"""Exactly F1-optimal decision thresholds, one per column (per AU), from sorted scores.

A row is predicted positive when ``score >= t`` (compared in float64, as
`heads.metrics.binarize_au` does). F1 only changes where ``t`` crosses a distinct score, so the
candidates are the distinct scores ("cut points", all rows scoring at least the cut are positive)
plus "no row positive". One sort per column finds them all: O(n log n), no grid.

Which threshold among equal-F1 ones: the cut that predicts the FEWEST positives (the highest one),
and inside that cut the midpoint between the lowest score it includes and the highest score it
leaves out, so that test scores a hair away from a validation score land on the same side.
When every row is included the threshold is the lowest score; when no row should be positive
(a column without positive labels, where F1 is 0 whatever the threshold, scikit-learn's
zero_division=0) it is the next float above the highest score. Thresholds are computed in the
scores' dtype (then returned as float64, exactly), so ``scores >= t`` gives the same answer whether
numpy compares in float32 or float64.

    t, f1 = best_thresholds(scores, labels)       # (n, k) scores and 0/1 labels -> (k,), (k,)
    heads.metrics.binarize_au(scores, t)          # reproduces f1 exactly
"""
from __future__ import annotations

import numpy as np

__all__ = ["best_threshold", "best_thresholds"]


def best_thresholds(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """F1-optimal threshold of each column: scores (n, k) finite floats, labels (n, k) 0/1.

    Returns (thresholds (k,) float64, f1 (k,) float64), f1 being the F1 of ``scores >= thresholds``.
    """
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"scores and labels must both have shape (n, k); got {s.shape} and {y.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf; drop those rows before searching thresholds")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (drop rows with missing labels first)")
    n, k = s.shape
    if n == 0:
        raise ValueError("no rows to choose thresholds from")

    order = np.argsort(-s, axis=0)  # descending scores, (n, k)
    s_sorted = np.take_along_axis(s, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y.astype(np.int64), order, axis=0), axis=0)  # (n, k)
    n_pos = tp[-1]  # (k,)
    n_pred = np.arange(1, n + 1, dtype=np.int64)[:, None]  # rows predicted positive at each cut
    # A cut is valid after the last row of a run of equal scores (ties go together).
    is_cut = np.ones((n, k), dtype=bool)
    is_cut[:-1] = s_sorted[:-1] != s_sorted[1:]
    # F1 = 2 tp / (positives + predicted positives): exact integer ratio, so equal F1s compare equal.
    f1 = np.where(is_cut, 2.0 * tp / (n_pos + n_pred), -1.0)
    best = np.argmax(f1, axis=0)  # first maximum = highest threshold among equal F1
    cols = np.arange(k)
    best_f1 = f1[best, cols]

    lowest_in = s_sorted[best, cols]
    highest_out = s_sorted[np.minimum(best + 1, n - 1), cols]
    # Midpoints in the scores' own dtype: a float32 threshold compares the same way against float32
    # scores whether numpy does it in float32 (a Python float) or float64 (an array).
    half = s.dtype.type(0.5)
    thresholds = np.where(best == n - 1, lowest_in, half * lowest_in + half * highest_out)
    # Rounding may put the midpoint onto the excluded score when the two are adjacent floats.
    thresholds = np.where(thresholds > highest_out, thresholds, lowest_in)
    none = best_f1 <= 0.0  # no positive label: predicting no positive is as good as anything
    thresholds[none] = np.nextafter(s_sorted[0, none], s.dtype.type(np.inf))
    best_f1[none] = 0.0
    return thresholds.astype(np.float64), best_f1


def best_threshold(scores, labels) -> tuple[float, float]:
    """F1-optimal threshold of one score vector: (threshold, f1). See `best_thresholds`."""
    s = np.asarray(scores).reshape(-1, 1)
    t, f1 = best_thresholds(s, np.asarray(labels).reshape(-1, 1))
    return float(t[0]), float(f1[0])
