"""Challenge metrics on plain numpy arrays: CCC, P_VA, macro F1, per-AU F1, P_MTL, LSD F1, ABAW2 score.

Conventions shared by every function here (ABAW, docs/REFERENCE.md "Metrics"):

- Missing labels are excluded task by task: expression/LSD label ``-1``, a VA row with a NaN in
  either column, an AU row with a ``-1`` in any column (the whole AU vector is then missing).
  Predictions on excluded rows are ignored (they may be NaN).
- A prediction that is NaN on a labelled row is a caller bug and raises ``ValueError``.
- F1 is computed per class over ALL ``n_classes`` classes, including classes absent from both
  the ground truth and the predictions; a class with no true and no predicted positives has F1 0
  (scikit-learn's ``f1_score(..., average="macro", labels=range(n), zero_division=0)``).
- No labelled row at all gives NaN for that task's scores (and so NaN for P_MTL): "not measured"
  is never reported as 0.
- CCC uses population moments (divide by n). Degenerate cases: if truth and prediction are both
  constant and equal, the denominator is 0 and CCC is defined as 1 (perfect agreement); if both
  are constant but differ, CCC is 0 (the formula gives 0/positive); a constant prediction against
  a varying truth gives 0.
- Class predictions may be labels (n,) or scores (n, K) (argmax is taken); AU predictions may be
  binary or probabilities, binarised as ``p >= threshold`` (scalar or one threshold per AU).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from store.schema import AU_NAMES, LSD_CLASSES, MTL_EXPR_CLASSES

__all__ = [
    "ccc",
    "va_metrics",
    "binary_f1",
    "per_class_f1",
    "expr_metrics",
    "au_metrics",
    "mtl_metrics",
    "lsd_metrics",
    "abaw2_expr_score",
    "class_predictions",
    "binarize_au",
]


# ---------------------------------------------------------------------------- regression


def ccc(y_true, y_pred) -> float:
    """Concordance correlation coefficient with population moments, over rows where y_true is finite.

    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``; NaN when no row is labelled;
    1.0 when truth and prediction are the same constant; 0.0 when both are constant but differ.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    _check_same_length(t, p, "y_true", "y_pred")
    keep = np.isfinite(t)
    t, p = t[keep], p[keep]
    _check_finite_predictions(p, "y_pred")
    if len(t) == 0:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    dt, dp = t - mt, p - mp
    cov = np.mean(dt * dp)
    denom = np.mean(dt * dt) + np.mean(dp * dp) + (mt - mp) ** 2
    if denom == 0.0:  # both constant and equal
        return 1.0
    return float(2.0 * cov / denom)


def va_metrics(y, p) -> dict:
    """CCC of valence and arousal and their mean P_VA; rows with a NaN label in either column excluded.

    Returns {"ccc_valence", "ccc_arousal", "P_VA", "n_va"}.
    """
    y = _as_2d(y, 2, "y")
    p = _as_2d(p, 2, "p")
    _check_same_length(y, p, "y", "p")
    keep = np.isfinite(y).all(axis=1)
    cv = ccc(y[keep, 0], p[keep, 0])
    ca = ccc(y[keep, 1], p[keep, 1])
    return {"ccc_valence": cv, "ccc_arousal": ca, "P_VA": 0.5 * (cv + ca), "n_va": int(keep.sum())}


# ---------------------------------------------------------------------------- classification


def binary_f1(y_true, y_pred) -> float:
    """F1 of the positive class (1) of two 0/1 vectors; 0.0 when there is no true and no predicted
    positive (scikit-learn's zero_division=0); NaN for empty input."""
    t = np.asarray(y_true).ravel().astype(bool)
    q = np.asarray(y_pred).ravel().astype(bool)
    _check_same_length(t, q, "y_true", "y_pred")
    if len(t) == 0:
        return float("nan")
    tp = np.count_nonzero(t & q)
    denom = np.count_nonzero(t) + np.count_nonzero(q)  # = 2 tp + fp + fn
    return 0.0 if denom == 0 else float(2.0 * tp / denom)


def per_class_f1(y_true, y_pred, n_classes: int) -> np.ndarray:
    """One-vs-rest F1 of each class 0..n_classes-1 (labels, all rows used); 0 where undefined."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    q = np.asarray(y_pred, dtype=np.int64).ravel()
    _check_same_length(t, q, "y_true", "y_pred")
    for name, v in (("y_true", t), ("y_pred", q)):
        if len(v) and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(
                f"{name} has class labels outside 0..{n_classes - 1} "
                f"(min {v.min()}, max {v.max()}); pass n_classes= matching the labels"
            )
    tp = np.bincount(t[t == q], minlength=n_classes).astype(np.float64)
    n_true = np.bincount(t, minlength=n_classes)
    n_pred = np.bincount(q, minlength=n_classes)
    denom = (n_true + n_pred).astype(np.float64)
    out = np.zeros(n_classes, dtype=np.float64)
    np.divide(2.0 * tp, denom, out=out, where=denom > 0)
    return out


def class_predictions(pred) -> np.ndarray:
    """Labels from labels (n,) or from scores/probabilities (n, K) by argmax (rows of NaN -> -1)."""
    pred = np.asarray(pred)
    if pred.ndim == 1:
        return pred.astype(np.int64)
    if pred.ndim != 2:
        raise ValueError(f"class predictions must be labels (n,) or scores (n, K); got shape {pred.shape}")
    labels = np.argmax(pred, axis=1)
    if np.issubdtype(pred.dtype, np.floating):
        labels[~np.isfinite(pred).all(axis=1)] = -1
    return labels.astype(np.int64)


def _class_metrics(y, pred, n_classes: int, names: Sequence[str], score_key: str) -> dict:
    y = np.asarray(y).ravel().astype(np.int64)
    q = class_predictions(pred)
    _check_same_length(y, q, "y", "pred")
    keep = y >= 0
    y, q = y[keep], q[keep]
    if np.any(q < 0):
        raise ValueError(f"{int(np.sum(q < 0))} labelled rows have NaN or negative class predictions")
    if len(y) == 0:
        nan = float("nan")
        return {score_key: nan, "accuracy": nan, "per_class_f1": {n: nan for n in names}, "n": 0}
    f1 = per_class_f1(y, q, n_classes)
    return {
        score_key: float(f1.mean()),
        "accuracy": float(np.mean(y == q)),
        "per_class_f1": {n: float(v) for n, v in zip(names, f1)},
        "n": int(len(y)),
    }


def _names(n_classes: int, default: Sequence[str], given) -> list[str]:
    if given is not None:
        if len(given) != n_classes:
            raise ValueError(f"class_names has {len(given)} names for n_classes={n_classes}")
        return list(given)
    return list(default) if len(default) == n_classes else [str(i) for i in range(n_classes)]


def expr_metrics(y, pred, n_classes: int = 8, class_names: Sequence[str] | None = None) -> dict:
    """Expression metrics over rows with a label (y >= 0).

    Returns {"P_EXPR": macro F1 over all n_classes, "accuracy", "per_class_f1": {name: F1}, "n"}.
    Default names are the MTL order when n_classes == 8.
    """
    names = _names(n_classes, MTL_EXPR_CLASSES, class_names)
    out = _class_metrics(y, pred, n_classes, names, "P_EXPR")
    out["n_expr"] = out.pop("n")
    return out


def lsd_metrics(y, pred, class_names: Sequence[str] | None = None) -> dict:
    """LSD (6 classes, LSD order) metrics: {"P_LSD": macro F1, "accuracy", "per_class_f1", "n_lsd"}."""
    names = _names(len(LSD_CLASSES), LSD_CLASSES, class_names)
    out = _class_metrics(y, pred, len(LSD_CLASSES), names, "P_LSD")
    out["n_lsd"] = out.pop("n")
    return out


def abaw2_expr_score(y, pred, n_classes: int = 7) -> float:
    """ABAW2 expression score 0.67 * macro F1 + 0.33 * accuracy (ABAW2 had 7 classes; pass n_classes=8
    for MTL labels). NaN when no row is labelled."""
    m = _class_metrics(y, pred, n_classes, [str(i) for i in range(n_classes)], "f1")
    return 0.67 * m["f1"] + 0.33 * m["accuracy"]


def binarize_au(p, threshold=0.5) -> np.ndarray:
    """(n, 12) probabilities or 0/1 -> int8 0/1 with ``p >= threshold`` (scalar or one per AU)."""
    p = np.asarray(p, dtype=np.float64)
    thr = np.asarray(threshold, dtype=np.float64)
    if thr.ndim not in (0, 1) or (thr.ndim == 1 and thr.shape[0] != p.shape[-1]):
        raise ValueError(f"threshold must be a scalar or have {p.shape[-1]} values; got shape {thr.shape}")
    return (p >= thr).astype(np.int8)


def au_metrics(y, pred, threshold=0.5, au_names: Sequence[str] | None = None) -> dict:
    """AU metrics over rows whose 12 AU labels are all present (no -1).

    pred: (n, 12) binary or probabilities (binarised with ``pred >= threshold``).
    Returns {"P_AU": mean binary F1 over the AUs, "per_au_f1": {name: F1}, "n_au"}.
    """
    y = _as_2d(y, None, "y")
    p = _as_2d(pred, y.shape[1], "pred")
    _check_same_length(y, p, "y", "pred")
    names = list(au_names) if au_names is not None else (
        list(AU_NAMES) if y.shape[1] == len(AU_NAMES) else [f"AU{i}" for i in range(y.shape[1])]
    )
    keep = (y >= 0).all(axis=1)
    y, p = y[keep], p[keep].astype(np.float64)
    _check_finite_predictions(p, "pred")
    if len(y) == 0:
        nan = float("nan")
        return {"P_AU": nan, "per_au_f1": {n: nan for n in names}, "n_au": 0}
    q = binarize_au(p, threshold)
    f1 = [binary_f1(y[:, j], q[:, j]) for j in range(y.shape[1])]
    return {"P_AU": float(np.mean(f1)), "per_au_f1": dict(zip(names, map(float, f1))), "n_au": int(len(y))}


def mtl_metrics(y_va, p_va, y_expr, p_expr, y_au, p_au, *, au_threshold=0.5) -> dict:
    """The ABAW MTL score: P_MTL = P_VA + P_EXPR + P_AU, with every per-task detail.

    Each pair may be None (that task is then NaN, and so is P_MTL). Keys: P_VA, P_EXPR, P_AU, P_MTL,
    ccc_valence, ccc_arousal, accuracy, per_class_f1, per_au_f1, n_va, n_expr, n_au.
    """
    nan = float("nan")
    out: dict = {}
    out.update(va_metrics(y_va, p_va) if y_va is not None else
               {"ccc_valence": nan, "ccc_arousal": nan, "P_VA": nan, "n_va": 0})
    out.update(expr_metrics(y_expr, p_expr) if y_expr is not None else
               {"P_EXPR": nan, "accuracy": nan, "per_class_f1": {}, "n_expr": 0})
    out.update(au_metrics(y_au, p_au, threshold=au_threshold) if y_au is not None else
               {"P_AU": nan, "per_au_f1": {}, "n_au": 0})
    out["P_MTL"] = out["P_VA"] + out["P_EXPR"] + out["P_AU"]
    return out


# ---------------------------------------------------------------------------- checks


def _as_2d(a, width: int | None, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        want = f"(n, {width})" if width is not None else "(n, k)"
        raise ValueError(f"{name} must have shape {want}; got {a.shape}")
    return a


def _check_same_length(a, b, na: str, nb: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{na} has {len(a)} rows but {nb} has {len(b)}")


def _check_finite_predictions(p: np.ndarray, name: str) -> None:
    if p.size and not np.isfinite(p).all():
        bad = int(np.count_nonzero(~np.isfinite(p).reshape(len(p), -1).all(axis=1)))
        raise ValueError(f"{name} is NaN/inf on {bad} labelled rows")
