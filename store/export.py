"""A store's rows as a pandas DataFrame, and `store export` to Parquet or CSV, for analysis in pandas.

One row per store row (a split, or all): key, video, frame, split; the labels of every task the store has,
with missing labels as missing values (pandas' nullable Int8 for classes and AUs, NaN for VA); the chosen
features (`--features`, a feature spec as heads take it) with a `features_valid` column; the chosen
prediction runs, one column per output named `<run>/<task>/<name>`. pandas (and pyarrow for Parquet) are
optional: `pip install -e ".[export]"`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import StoreError, UserError
from .schema import get_task

FORMATS = ("parquet", "csv")

__all__ = ["FORMATS", "to_pandas", "export"]


def _pandas():
    try:
        import pandas
    except ImportError:
        raise UserError('this needs pandas, which is not installed: pip install -e ".[export]" '
                        "(or pip install pandas)") from None
    return pandas


def _label_columns(pd, store, rows) -> dict:
    cols = {}
    for task in store.tasks():
        t = get_task(task)
        y = store.labels(task, rows)
        if t.kind == "class":
            cols[task] = pd.array(np.where(y >= 0, y, 0), dtype="Int8")
            cols[task][y < 0] = pd.NA
        elif t.kind == "regression":
            for j, name in enumerate(t.names):
                cols[name] = y[:, j].astype(np.float32)
        else:
            for j, name in enumerate(t.names):
                col = pd.array(np.where(y[:, j] >= 0, y[:, j], 0), dtype="Int8")
                col[y[:, j] < 0] = pd.NA
                cols[name] = col
    return cols


def _prediction_columns(store, runs: Sequence[str], rows) -> dict:
    cols = {}
    known = store.runs()
    for run in runs:
        if run not in known:
            raise StoreError(f"{store.path}: no predictions run {run!r}; runs: {', '.join(known) or 'none'}")
        for task in known[run]:
            p = store.read_predictions(run, task, rows)
            p = p.reshape(len(p), -1)
            names = list(get_task(task).names) if task in ("expr", "va", "au", "lsd") else []
            if len(names) != p.shape[1]:
                names = [str(j) for j in range(p.shape[1])]
            for j, name in enumerate(names):
                cols[f"{run}/{task}/{name}"] = p[:, j]
    return cols


def to_pandas(store, split: str | Sequence[str] | None = None, *, features: str | None = None,
              predictions: Sequence[str] = ()):
    """The rows of `split` (all rows if None) of an open FeatureStore as a pandas DataFrame."""
    pd = _pandas()
    rows = store.rows(split) if split is not None else np.arange(store.n_rows)
    if split is not None and len(rows) == 0:
        raise StoreError(f"{store.path}: split {split!r} has no rows; splits: {', '.join(store.splits())}")
    cols = dict(store.samples(rows))
    cols.update(_label_columns(pd, store, rows))
    if features:
        X, valid = store.read_features(features, rows)
        cols["features_valid"] = valid
        cols.update(zip(store.feature_names(features), X.T))
    cols.update(_prediction_columns(store, list(predictions), rows))
    frame = pd.DataFrame(cols)
    frame.index = pd.Index(rows, name="row")
    return frame


def export(store, out, *, split=None, features=None, predictions=(), fmt: str | None = None) -> int:
    """Write `to_pandas(...)` to `out` as Parquet or CSV (from `fmt`, else from the suffix); returns rows."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(out.suffix.lower())
    if fmt not in FORMATS:
        raise UserError(f"{out}: say --format parquet or csv (or end the file name in .parquet or .csv)")
    if not out.parent.is_dir():
        raise UserError(f"{out}: folder {out.parent} does not exist")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError('--format parquet needs pyarrow, which is not installed: pip install -e ".[export]" '
                            "(or use --format csv)") from None
    frame = to_pandas(store, split, features=features, predictions=predictions)
    tmp = out.with_name(f".{out.name}.partial")
    if fmt == "parquet":
        frame.to_parquet(tmp)
    else:
        frame.to_csv(tmp)
    tmp.replace(out)
    return len(frame)
