"""Save and load fitted heads without pickle.

A head folder holds head.json (class name, parameters, fitted scalars and lists), arrays.npz
(numpy arrays, loaded with allow_pickle=False) and one .txt per text blob (LightGBM models).
Loading only instantiates the head classes of heads.registry, so a run folder from someone else
cannot execute code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from featheads.core.jsonfile import read_json

from .registry import class_by_name

FORMAT_VERSION = 1


def save_head(head, folder) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta, arrays, texts = head._fitted_state()
    doc = {
        "format_version": FORMAT_VERSION,
        "class": type(head).__name__,
        "params": head.get_params(deep=False),
        "state": meta,
        "texts": sorted(texts),
    }
    (folder / "head.json").write_text(json.dumps(doc, indent=1, default=_jsonable))
    np.savez(folder / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text)


def load_head(folder):
    folder = Path(folder)
    path = folder / "head.json"
    doc = read_json(path, what="saved head (head.json)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: head format {doc.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    try:
        cls = class_by_name(doc["class"])
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    head = cls(**doc["params"])
    with np.load(folder / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    texts = {name: (folder / f"{name}.txt").read_text() for name in doc["texts"]}
    head._restore_state(doc["state"], arrays, texts)
    return head


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cannot save {type(v).__name__} in head.json")
