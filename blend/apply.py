"""Replay a blend spec on a split of a store and write the final predictions back into it.

    scores = apply_spec(read_spec("spec.json"), "store.h5", "test", name="final")

writes /predictions/<name>/<task> for every task of the spec on every row of the split, in the
format heads write (expr (n, 8) and lsd (n, 6) blended probabilities, va (n, 2) in [-1, 1], au
(n, 12) blended scores with the spec's per-AU thresholds in the dataset's `thresholds`
attribute), NaN on rows that no input covers. The run's `spec` attribute holds the spec. Where the
split has labels the challenge scores are computed (with the spec's thresholds) and returned.
"""
from __future__ import annotations

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore
from store.schema import get_task

from .combine import SCORE_KEYS, decide, task_metrics
from .data import BlendData
from .spec import BlendSpec, spec_to_json

__all__ = ["blend_split", "apply_spec", "headline"]


def blend_split(spec: BlendSpec, store: FeatureStore, split: str) -> tuple[BlendData, dict[str, np.ndarray]]:
    """Blend, smooth and clip every task of the spec on a split: (data, {task: (n, C) scores})."""
    data = BlendData.load(store, spec.inputs, spec.task, split, max_delta=spec.smoothing_window(),
                          per_task_inputs=spec.task_inputs())
    out = {}
    for t, p in spec.tasks.items():
        out[t] = data.blends[t].scores(p.weights, p.smoothing).T
    return data, out


def apply_spec(spec: BlendSpec, store_path, split: str, *, name: str = "final", spec_source: str = "") -> dict:
    """Write the blend's predictions for `split` to run `name`; return {task: metrics} where labelled."""
    inputs = {n for p in spec.tasks.values() for n in p.weights}
    if name in inputs:
        raise UserError(f"--run {name!r} is one of the blend's inputs; writing there would overwrite it")
    with FeatureStore.open(store_path, "r") as st:
        data, scores = blend_split(spec, st, split)
    metrics = {}
    for t, s in scores.items():
        idx = np.flatnonzero(FeatureStore.label_mask(t, data.labels[t]) & np.isfinite(s).all(axis=1))
        if len(idx):
            dec = decide(t, s[idx].T, spec.tasks[t].thresholds)
            metrics[t] = task_metrics(t, data.labels[t][idx], dec)
    with FeatureStore.open(store_path, "a") as st:
        for t, s in scores.items():
            attrs = {"blend_spec": spec_source or "", "split": split}
            if spec.tasks[t].thresholds is not None:
                attrs["thresholds"] = [float(v) for v in spec.tasks[t].thresholds]
            st.write_predictions(name, t, s, data.rows, names=get_task(t).names, attrs=attrs)
        st.set_run_attrs(name, kind="blend", spec=spec_to_json(spec, indent=None), spec_path=spec_source or "")
    return metrics


def headline(task: str, metrics: dict) -> dict:
    """{P_EXPR: ..., P_MTL: ...} of apply_spec's result."""
    out = {SCORE_KEYS[t]: m[SCORE_KEYS[t]] for t, m in metrics.items()}
    if task == "mtl" and all(k in out for k in ("P_VA", "P_EXPR", "P_AU")):
        out["P_MTL"] = out["P_VA"] + out["P_EXPR"] + out["P_AU"]
    return out
