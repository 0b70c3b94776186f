"""A store's features read once per feature spec, shared by the heads of one command.

`heads fit mtl` fits several heads that often read the same spec (`paper`: expr and au both read
embeddings+logits) and then predicts every row of the store with each of them. Reading the spec for
every head and again for every prediction chunk costs more than fitting the small heads; this reads
each spec for all rows once (as `FeatureStore.read_features` does) and hands out row selections.
The MLP heads take the cached matrix itself with their training rows (`fit(X, y, rows=...)`,
heads.registry.fit_takes_rows), so their training rows are never copied out of it.
"""
from __future__ import annotations

import numpy as np

from store.feature_store import FeatureStore

__all__ = ["FeatureCache"]


class FeatureCache:
    """`cache.read(spec, rows)` -> (X float32 (n, D), valid bool (n,)), as st.read_features(spec, rows);
    rows are the store's row indices, None for all rows (then X is the cached array itself: do not
    modify it)."""

    def __init__(self, st: FeatureStore):
        self.st = st
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def read(self, spec: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if spec not in self._arrays:
            self._arrays[spec] = self.st.read_features(spec)
        X, valid = self._arrays[spec]
        if rows is None:
            return X, valid
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)):
            return X[rows[0]:rows[-1] + 1], valid[rows[0]:rows[-1] + 1]  # a run of rows: views, no copy
        return X[rows], valid[rows]
