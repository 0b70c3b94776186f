"""Store rows for temporal heads (heads.temporal): what heads.fitting and heads.predicting pass them.

Training: ALL rows of the training split (labelled or not: unlabelled frames are context), labels
with their missing values (-1 / NaN), the rows' videos (groups) and frame numbers from the store,
features NaN where invalid. Prediction: the rows are cut into chunks of whole videos, so every
window sees all rows of its video that are being predicted.
"""
from __future__ import annotations

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from .feature_cache import FeatureCache
from .plan import Plan, head_scores
from .registry import head_class


def is_temporal(plan: Plan) -> bool:
    """Whether the plan's head (or the head a bag is made of) works on windows of frames."""
    try:
        return bool(getattr(head_class(plan.head, plan.kind), "temporal", False))
    except ValueError:
        return False


def _features(st: FeatureStore, spec: str, rows: np.ndarray, features: FeatureCache | None = None) -> np.ndarray:
    X, valid = st.read_features(spec, rows) if features is None else features.read(spec, rows)
    if not valid.all():
        # a copy unless the array is this call's own (a cache's arrays are shared, a view of them too)
        X = np.array(X, dtype=np.float32, copy=True) if features is not None or not X.flags.writeable else X
        X[~valid] = np.nan  # invalid rows: padding for the windows, NaN predictions
    return X


def temporal_training_data(st: FeatureStore, plan: Plan, train_rows: np.ndarray,
                           features: FeatureCache | None = None):
    """(X, y, groups, frames) of every training row; y keeps missing labels (-1 / NaN).
    features: a FeatureCache shared with the other heads and the predictions (else read from the store)."""
    if plan.key == "joint":
        raise UserError(f"{st.path}: temporal heads are per task; a joint temporal head does not exist")
    y = st.labels(plan.key, train_rows)
    if not FeatureStore.label_mask(plan.key, y).any():
        raise UserError(f"{st.path}: no row of the training split has a {plan.key!r} label")
    s = st.samples(train_rows, columns=("video", "frame"))
    X = _features(st, plan.features, train_rows, features)
    if not np.isfinite(X).all(axis=1).any():
        raise UserError(f"{st.path}: no training row has valid features {plan.features!r}")
    if plan.kind == "regression":
        y = y.astype(np.float32)
    else:
        y = y.astype(np.int64)
    return X, y, s["video"], s["frame"]


def video_chunks(videos: np.ndarray, chunk_rows: int) -> list[np.ndarray]:
    """Positions 0..n-1 grouped into chunks of whole videos of about chunk_rows rows (sorted within)."""
    _, code = np.unique(videos, return_inverse=True)
    order = np.argsort(code, kind="stable")
    sizes = np.bincount(code)
    chunks, cur, cur_n = [], [], 0
    start = 0
    for size in sizes:
        cur.append(order[start:start + size])
        start += size
        cur_n += size
        if cur_n >= chunk_rows:
            chunks.append(np.sort(np.concatenate(cur)))
            cur, cur_n = [], 0
    if cur:
        chunks.append(np.sort(np.concatenate(cur)))
    return chunks


def predict_temporal(st: FeatureStore, plan: Plan, head, rows: np.ndarray, out: dict, *, chunk_rows: int,
                     bar=None, features: FeatureCache | None = None) -> None:
    """Fill out[task][i] for rows[i] with the temporal head's scores (NaN where features are invalid)."""
    s = st.samples(rows, columns=("video", "frame"))
    for pos in video_chunks(s["video"], chunk_rows):
        X = _features(st, plan.features, rows[pos], features)
        valid = np.isfinite(X).all(axis=1)
        if valid.any():
            for task, sc in head_scores(plan, head, X, groups=s["video"][pos], frames=s["frame"][pos]).items():
                sc = sc.copy()
                sc[~valid] = np.nan
                out[task][pos] = sc
        if bar is not None:
            bar.update(len(pos))


__all__ = ["is_temporal", "temporal_training_data", "predict_temporal", "video_chunks"]
