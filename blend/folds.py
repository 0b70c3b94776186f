"""Cross-validation folds grouped by video, so that frames of one video never sit on both sides.

    fold = grouped_folds(videos, n_folds=5, seed=0)     # (n,) fold index of every row

Groups are shuffled with the seed, then each goes to the fold with the fewest rows so far, so
folds are balanced in rows and the same seed gives the same folds.
"""
from __future__ import annotations

import numpy as np

from featheads.core.errors import UserError

__all__ = ["grouped_folds"]


def grouped_folds(groups, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0 .. n_folds-1) of every row; rows of one group share a fold."""
    groups = np.asarray(groups)
    if n_folds < 2:
        raise UserError(f"--cv {n_folds}: cross-validation needs at least 2 folds")
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if len(names) < n_folds:
        raise UserError(f"--cv {n_folds}: only {len(names)} videos (groups) to split into {n_folds} folds")
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    size = np.zeros(n_folds, dtype=np.int64)
    for g in rng.permutation(len(names)):  # a loop over videos, not rows
        f = int(np.argmin(size))
        fold_of_group[g] = f
        size[f] += counts[g]
    return fold_of_group[inverse]
