"""Apply fitted heads to the rows of a store: `predict_rows` (in memory) and `predict_run`
(`heads predict`: a saved run on another store, predictions written to /predictions/<name>)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from .feature_cache import FeatureCache
from .plan import OUTPUT_NAMES, head_scores
from .run_folder import read_run
from .temporal_rows import predict_temporal

_CHUNK_ROWS = 32768


def predict_rows(st: FeatureStore, fitted: list, rows: np.ndarray, *, progress: bool = False,
                 features: FeatureCache | None = None) -> dict:
    """task -> (len(rows), C) float32 scores of every fitted head; NaN where its features are invalid.
    features: where the heads' features come from (a FeatureCache shared with fitting), else read from
    the store chunk by chunk."""
    out = {}
    for plan, _ in fitted:
        for task in plan.tasks:
            out[task] = np.full((len(rows), len(OUTPUT_NAMES[task])), np.nan, dtype=np.float32)
    total = len(rows) * len(fitted)
    with tqdm(total=total, desc="predict", unit="row", unit_scale=True, disable=not progress, leave=False) as bar:
        for plan, head in fitted:
            if getattr(head, "temporal", False):  # windows of frames: chunks of whole videos
                predict_temporal(st, plan, head, rows, out, chunk_rows=_CHUNK_ROWS, bar=bar,
                                 features=features)
                continue
            for start in range(0, len(rows), _CHUNK_ROWS):
                chunk = rows[start:start + _CHUNK_ROWS]
                X, valid = (st.read_features(plan.features, chunk) if features is None
                            else features.read(plan.features, chunk))
                if valid.any():
                    for task, s in head_scores(plan, head, X if valid.all() else X[valid]).items():
                        out[task][start:start + len(chunk)][valid] = s
                bar.update(len(chunk))
    return out


def check_sources(st: FeatureStore, run_doc: dict, run_path) -> None:
    """The store must hold every feature source of the run, made the same way (same identity)."""
    for src, identity in run_doc["sources"].items():
        if src not in st.sources():
            raise UserError(
                f"{st.path}: no feature source {src!r}, which run {run_path} was fitted on; sources here: "
                f"{', '.join(st.sources()) or 'none'} (featurize this store with the same backbone and name)"
            )
        here = st.source_info(src).get("identity", {})
        if here != identity:
            raise UserError(
                f"{st.path}: source {src!r} was made differently from the one run {run_path} was fitted on: "
                f"{json.dumps(here, sort_keys=True)} here vs {json.dumps(identity, sort_keys=True)} in the run"
            )


def predict_run(run, store, *, name: str | None = None, overwrite: bool = False, progress: bool = False) -> dict:
    """Apply the fitted run folder `run` to every row of `store`; write /predictions/<name>
    (default: the run's name). Returns {task: number of rows predicted}."""
    run = Path(run)
    doc, fitted = read_run(run)
    name = name or doc["name"]
    with FeatureStore.open(store) as st:
        check_sources(st, doc, run)
        if name in st.runs() and not overwrite:
            raise UserError(f"{st.path}: predictions {name!r} exist; pass --run ANOTHER or --overwrite")
        for plan, head in fitted:
            width = len(st.feature_names(plan.features))
            if width != head.n_features_in_:
                raise UserError(f"{st.path}: features {plan.features!r} have {width} columns here; "
                                f"the {plan.key} head of {run} was fitted on {head.n_features_in_}")
        rows = st.rows()
        preds = predict_rows(st, fitted, rows, progress=progress)
    recipe = run / "recipe.json"
    write_predictions(store, name, preds, rows, run_attrs={
        "run_folder": str(run.resolve()), "fitted_on": doc.get("store", ""),
        "recipe": json.dumps(json.loads(recipe.read_text())) if recipe.is_file() else "",
        "train": doc.get("train", ""), "eval": doc.get("eval", ""),
    }, head_attrs={t: {"head": p.head, "features": p.features} for p, _ in fitted for t in p.tasks})
    return {t: int(np.isfinite(p).all(axis=1).sum()) for t, p in preds.items()}


def write_predictions(store, name: str, preds: dict, rows: np.ndarray, *, run_attrs: dict, head_attrs: dict) -> None:
    with FeatureStore.open(store, "a") as st:
        for task, values in preds.items():
            st.write_predictions(name, task, values, rows, names=OUTPUT_NAMES[task], attrs=head_attrs.get(task))
        st.set_run_attrs(name, **run_attrs)
