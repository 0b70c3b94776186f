"""Metrics of a run's predictions on one split: the task metrics of heads.metrics on the rows that
have both a label and a prediction (rows without valid input features have NaN predictions; they
are counted in `n_without_features`, not scored)."""
from __future__ import annotations

import numpy as np

from store.feature_store import FeatureStore

from . import metrics as M

_TASK_METRICS = {
    "expr": lambda y, p: M.expr_metrics(y, p),
    "lsd": lambda y, p: M.lsd_metrics(y, p),
    "va": lambda y, p: M.va_metrics(y, p),
    "au": lambda y, p: M.au_metrics(y, p),
}


def evaluate(labels: dict, preds: dict) -> dict:
    """labels/preds: task -> arrays of the same rows. Returns one flat dict of every task's metrics,
    P_MTL when expr, va and au are all there, and n_without_features per task."""
    out: dict = {"n_without_features": {}}
    for task, p in preds.items():
        y = labels[task]
        labelled = FeatureStore.label_mask(task, y)
        predicted = np.isfinite(p).all(axis=1)
        out["n_without_features"][task] = int(np.sum(labelled & ~predicted))
        keep = labelled & predicted
        out.update(_TASK_METRICS[task](y[keep], p[keep]))
        if task == "expr":  # the ABAW2 expression score, 0.67 macro F1 + 0.33 accuracy (8 MTL classes here)
            out["abaw2_expr"] = M.abaw2_expr_score(y[keep], p[keep], n_classes=8)
    if {"expr", "va", "au"} <= set(preds):
        out["P_MTL"] = out["P_VA"] + out["P_EXPR"] + out["P_AU"]
    return out
