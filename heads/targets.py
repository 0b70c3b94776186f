"""Training targets shared by all heads: validation and class/AU weights (numpy only)."""
from __future__ import annotations

import numpy as np


def encode_classes(y, n_classes):
    """(classes_, y encoded 0..K-1 int64)."""
    if n_classes is None:
        classes, y_enc = np.unique(y, return_inverse=True)
        return classes, y_enc.astype(np.int64)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"y must hold class indices 0..{n_classes - 1} (n_classes={n_classes}); got values "
            f"{np.unique(y)[:10].tolist()}. Remove rows without a label (-1) before fit."
        )
    return np.arange(n_classes), y.astype(np.int64)


def check_binary_matrix(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must be a (n, k) 0/1 matrix; got shape {y.shape}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(
            f"y must hold only 0 and 1; got {np.unique(y[bad])[:10].tolist()}. "
            "Remove rows without labels (-1) before fit."
        )
    return y.astype(np.int8)


def class_weights(y: np.ndarray, n_classes: int, scheme, classes=None) -> np.ndarray | None:
    """Per-class loss weights from the training labels y (n,) in 0..n_classes-1.

    scheme: None (no weights); "inverse_max": max(count) / count, so the most frequent class has 1.0
    (docs/REFERENCE.md, EXPR head); "balanced": mean(count) / count over the classes present (LSD head,
    scikit-learn's "balanced"); a sequence of n_classes numbers; or a dict {class: weight} (keys are
    the labels in `classes`, or their str() as in JSON; classes not named get 1). Absent classes get
    weight 0 under "inverse_max" and "balanced".
    """
    if scheme is None:
        return None
    if isinstance(scheme, dict):
        classes = range(n_classes) if classes is None else classes
        return np.array([float(scheme.get(c, scheme.get(str(c), 1.0))) for c in classes])
    if not isinstance(scheme, str):
        w = np.asarray(scheme, dtype=np.float64)
        if w.shape != (n_classes,):
            raise ValueError(f"class_weight has {w.size} values; expected {n_classes}")
        return w
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    if scheme == "inverse_max":
        w[present] = counts.max() / counts[present]
    elif scheme == "balanced":
        w[present] = counts[present].mean() / counts[present]
    else:
        raise ValueError(f"class_weight={scheme!r}; allowed: None, 'inverse_max', 'balanced' or a list of numbers")
    return w


def au_bce_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-AU weights of weighted BCE: w1 = total / (2 pos), w0 = total / (2 neg) (docs/REFERENCE.md).

    An AU with no positive (or no negative) training row gets weight 1 on the missing side.
    """
    total = float(len(y))
    pos = (y == 1).sum(axis=0).astype(np.float64)
    neg = total - pos
    w1 = np.where(pos > 0, total / (2 * np.maximum(pos, 1)), 1.0)
    w0 = np.where(neg > 0, total / (2 * np.maximum(neg, 1)), 1.0)
    return w1, w0
