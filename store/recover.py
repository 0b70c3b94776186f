"""`store verify --repair`: save every readable part of a damaged store into a new store.

A store written by this version cannot be damaged by a kill or a full disk (docs/STORE.md), but one
written by an older version, or hurt by a failing disk, can. Recovery reads what HDF5 can still read,
dataset by dataset, and writes it through `FeatureStore` into a new file, so the result verifies:

    lines = recover("broken.h5", "broken.recovered.h5")   # what was saved and what was lost
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np

from .errors import StoreError
from .feature_store import FeatureStore
from .schema import TASKS


def _read(f, name):
    """The dataset's values and attributes, or (None, reason) when HDF5 cannot read it."""
    try:
        ds = f[name]
        values = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
        return values, {k: ds.attrs[k] for k in ds.attrs}
    except Exception as e:  # noqa: BLE001 - any HDF5 failure means: lost
        return None, f"{type(e).__name__}: {e}"


def _attrs(obj) -> dict:
    try:
        return {k: obj.attrs[k] for k in obj.attrs}
    except Exception:  # noqa: BLE001
        return {}


def _names(obj) -> list[str]:
    try:
        return list(obj.keys())
    except Exception:  # noqa: BLE001
        return []


def recover(src, dst) -> list[str]:
    """Copy every readable sample, label, source and prediction of `src` into a new store `dst`."""
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.exists(dst):
        raise StoreError(f"{dst}: already exists; choose another --out")
    try:
        f = h5py.File(src, "r", locking=False)
    except OSError as e:
        raise StoreError(f"{src}: HDF5 cannot open this file at all ({e}); nothing can be recovered") from None
    lines = []
    with f:
        samples, labels = _samples(f, src, lines)
        with FeatureStore.open(dst, "a", wait=0) as out:
            n = _add_samples(out, samples, labels)
            lines.append(f"samples: {n} rows; labels: {', '.join(labels) or 'none'}")
            for source in _names(f["features"]) if "features" in f else []:
                _copy_source(f, out, src, source, n, lines)
            for run in _names(f["predictions"]) if "predictions" in f else []:
                _copy_run(f, out, run, n, lines)
    return lines


def _samples(f, src, lines) -> tuple[dict, dict]:
    """The readable sample columns (lost ones filled in, said in `lines`) and labels of file `f`."""
    keys, why = _read(f, "samples/key")
    if keys is None:
        raise StoreError(f"{src}: samples/key cannot be read ({why}); without keys no row can be recovered")
    keys = np.asarray(keys, dtype=object)
    n = len(keys)
    cols = {}
    for name, default in (("split", "recovered"), ("video", None), ("frame", -1)):
        v, why = _read(f, f"samples/{name}")
        if v is None or len(v) != n:
            lines.append(f"samples/{name}: lost ({why if v is None else f'{len(v)} rows, not {n}'}); "
                         f"{'filled with ' + repr(default) if default is not None else 'taken from the keys'}")
            v = None
        cols[name] = v
    samples = {
        "key": keys,
        "split": cols["split"] if cols["split"] is not None else np.full(n, "recovered", dtype=object),
        "video": cols["video"] if cols["video"] is not None else [os.path.dirname(k) for k in keys],
        "frame": cols["frame"] if cols["frame"] is not None else np.full(n, -1),
    }
    labels = {}
    for task in _names(f["labels"]) if "labels" in f else []:
        v, why = _read(f, f"labels/{task}")
        if task not in TASKS or v is None or len(v) != n:
            lines.append(f"labels/{task}: lost ({why if v is None else 'unknown task or wrong length'})")
            continue
        labels[task] = v
    return samples, labels


def _add_samples(out, samples: dict, labels: dict) -> int:
    """Add the rows in their order, one call per contiguous run of one split; returns the row count."""
    keys, split = samples["key"], samples["split"]
    n, start = len(keys), 0
    while start < n:
        stop = start + 1
        while stop < n and split[stop] == split[start]:
            stop += 1
        out.add_samples(list(keys[start:stop]), split=str(split[start]), videos=list(samples["video"][start:stop]),
                        frames=np.asarray(samples["frame"][start:stop]),
                        labels={t: v[start:stop] for t, v in labels.items()})
        start = stop
    return n


def _copy_source(f, out, src, source: str, n: int, lines) -> None:
    """The readable arrays of one feature source; rows whose features are not finite become not computed."""
    g = f["features"][source]
    status, why = _read(f, f"features/{source}/status")
    if status is None or len(status) != n:
        lines.append(f"features/{source}: lost (status: {why if status is None else 'wrong length'})")
        return
    attrs = _attrs(g)
    arrays, values = {}, {}
    for arr in _names(g):
        if arr == "status":
            continue
        v, a = _read(f, f"features/{source}/{arr}")
        if v is None or len(v) != n or v.ndim != 2:
            lines.append(f"features/{source}/{arr}: lost ({a if v is None else 'wrong shape'})")
            continue
        names = a.get("names")
        arrays[arr] = (v.shape[1], [str(x) for x in names] if names is not None else None)
        values[arr] = v
    if not arrays:
        return
    try:
        identity = json.loads(attrs.get("identity", "{}"))
        provenance = json.loads(attrs.get("provenance", "{}"))
    except (TypeError, ValueError):
        identity, provenance = {"recovered_from": src}, {}
    out.create_source(source, identity=identity, provenance={**provenance, "recovered_from": src}, arrays=arrays)
    status = np.where(np.isin(status, (0, 1, 2)), status, 0).astype(np.int8)
    for v in values.values():  # rows whose features are not finite are recomputed later
        status = np.where((status == 1) & ~np.isfinite(v).all(axis=1), 0, status).astype(np.int8)
    out.write_features(source, np.arange(n), values, status)
    lines.append(f"features/{source}: {', '.join(values)} ({int((status == 1).sum())} rows ok)")


def _plain(attrs) -> dict:
    return {k: (x.tolist() if hasattr(x, "tolist") else x) for k, x in attrs.items()}


def _copy_run(f, out, run: str, n: int, lines) -> None:
    """The readable tasks of one prediction run, with their attributes."""
    saved = []
    for task in _names(f["predictions"][run]):
        v, a = _read(f, f"predictions/{run}/{task}")
        if v is None or len(v) != n:
            lines.append(f"predictions/{run}/{task}: lost ({a if v is None else 'wrong length'})")
            continue
        names = a.pop("names", None)
        out.write_predictions(run, task, v, np.arange(n), names=list(names) if names is not None else None,
                              attrs=_plain(a))
        saved.append(task)
    if saved:
        out.set_run_attrs(run, **_plain(_attrs(f["predictions"][run])))
        lines.append(f"predictions/{run}: {', '.join(saved)}")
