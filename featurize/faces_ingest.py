"""The detections of `featurize faces` (its faces_index.jsonl) -> a tabular store source `faces`.

One array `values` (N x 15 float32): x0, y0, x1, y1, score, then the five landmarks (x, y), all in
pixels of the original frame or photo. A row whose key (relative to the image root `featurize run`
read, i.e. the --out of `featurize faces`) is a frame the detector found a face in is OK; a frame
without a face is invalid ("no face found"); a row the index does not name is invalid only where the
source has nothing yet (as for OpenFace). Everything is read and checked before the store is opened
for writing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store import STATUS_INVALID, STATUS_MISSING, STATUS_OK, FeatureStore
from featheads.core.errors import UserError

from .faces import INDEX, LANDMARK_NAMES, SETTINGS, iter_index

COLUMNS = ["x0", "y0", "x1", "y1", "score"] + [f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy"]


@dataclass
class FacesPlan:
    rows: np.ndarray
    values: np.ndarray
    status: np.ndarray
    reasons: dict[str, int] = field(default_factory=dict)
    kept: int = 0


def index_table(crops) -> dict[str, np.ndarray | None]:
    """key -> 15 values (found) or None (no face), from the index of `crops`."""
    table = {}
    for rec in iter_index(crops):
        if rec.get("done") or not rec.get("key"):
            continue
        if rec["found"]:
            table[rec["key"]] = np.array(list(rec["box"]) + [rec["score"]]
                                         + [v for xy in rec["landmarks"] for v in xy], dtype=np.float32)
        else:
            table[rec["key"]] = None
    return table


def plan_faces(store_path, crops, *, split=None, source="faces") -> FacesPlan:
    table = index_table(crops)
    with FeatureStore.open(store_path) as st:
        target = st.rows(split) if split is not None else np.arange(st.n_rows)
        keys = st.samples(target, columns=("key",))["key"] if len(target) else []
        current = (st.source_status(source, target) if source in st.sources()
                   else np.full(len(target), STATUS_MISSING, dtype=np.int8))
    if len(target) == 0:
        raise UserError(f"{store_path}: no rows{f' in split {split!r}' if split else ''}; "
                        "add them with `featurize run` first")
    n = len(target)
    values = np.full((n, len(COLUMNS)), np.nan, dtype=np.float32)
    status = np.full(n, STATUS_INVALID, dtype=np.int8)
    covered = np.zeros(n, dtype=bool)
    reasons: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in table:
            continue
        covered[i] = True
        v = table[key]
        if v is None:
            reasons["no face found"] = reasons.get("no face found", 0) + 1
        else:
            values[i], status[i] = v, STATUS_OK
    if not covered.any():
        raise UserError(
            f"{Path(crops) / INDEX}: names none of the {n} row key(s) of {store_path} (like {keys[0]!r}); "
            "the store's rows must come from `featurize run --images` on the --out folder of `featurize faces`"
        )
    write = covered | (current == STATUS_MISSING)
    if (~covered & write).any():
        reasons["not in the index"] = int((~covered & write).sum())
    return FacesPlan(rows=target[write], values=values[write], status=status[write], reasons=reasons,
                     kept=int((~covered & ~write).sum()))


def ingest_faces(store_path, crops, *, split=None, source="faces", provenance=None) -> FacesPlan:
    import json

    plan = plan_faces(store_path, crops, split=split, source=source)
    settings = json.loads((Path(crops) / SETTINGS).read_text()) if (Path(crops) / SETTINGS).is_file() else {}
    identity = {"tool": "featurize faces", "detector": settings.get("detector"), "columns": COLUMNS}
    prov = {"crops": os.path.abspath(crops), "settings": settings, **(provenance or {})}
    with FeatureStore.open(store_path, "a") as st:
        st.create_source(source, identity=identity, provenance=prov, arrays={"values": (len(COLUMNS), COLUMNS)})
        st.write_features(source, plan.rows, {"values": plan.values}, plan.status)
    return plan
