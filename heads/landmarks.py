"""Facial landmarks as an auxiliary target of the joint head (`heads fit mtl --joint --aux landmarks`).

The targets are OpenFace's 68 2D landmarks (`featurize openface --groups ...,landmarks`: columns
x_0..x_67, y_0..y_67 of a source's `values` array). Each face is normalised on its own: the 68
points minus their mean, divided by their RMS distance to it, so the targets say nothing about
where the face was in the image or how large. Rows whose source status is not OK (OpenFace failed,
or no CSV) have no landmarks: NaN, masked out of the auxiliary loss.
"""
from __future__ import annotations

import numpy as np

from featheads.core.errors import UserError

N_POINTS = 68
COLUMNS = [f"x_{i}" for i in range(N_POINTS)] + [f"y_{i}" for i in range(N_POINTS)]


def find_landmark_source(st) -> str:
    """The store's only source whose `values` array has the OpenFace 2D landmark columns."""
    found = []
    for src in st.sources():
        names = st.source_info(src)["arrays"].get("values", {}).get("names") or []
        if set(COLUMNS) <= set(names):
            found.append(src)
    if not found:
        raise UserError(f"{st.path}: --aux landmarks needs an OpenFace source with the 68 2D landmarks "
                        "(run `featurize openface --groups au,landmarks ...`); no source has columns x_0..y_67")
    if len(found) > 1:
        raise UserError(f"{st.path}: several sources have landmarks ({', '.join(found)}); keep one")
    return found[0]


def normalise_landmarks(xy: np.ndarray) -> np.ndarray:
    """(n, 136) x_0..x_67, y_0..y_67 -> the same layout, each face centred and scaled to RMS radius 1.
    Rows with a NaN (or all points equal) stay / become NaN."""
    xy = np.asarray(xy, dtype=np.float64)
    x, y = xy[:, :N_POINTS], xy[:, N_POINTS:]
    cx, cy = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    scale = np.sqrt(((x - cx) ** 2 + (y - cy) ** 2).mean(1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.concatenate([(x - cx) / scale, (y - cy) / scale], axis=1)
    out[~np.isfinite(out).all(1)] = np.nan
    return out.astype(np.float32)


def landmark_targets(st, rows: np.ndarray) -> np.ndarray:
    """(len(rows), 136) normalised landmarks of `rows`, NaN where the source has none."""
    src = find_landmark_source(st)
    names = list(st.source_info(src)["arrays"]["values"]["names"])
    cols = [names.index(c) for c in COLUMNS]
    X, valid = st.read_features(f"{src}.values", rows)
    xy = np.array(X[:, cols], dtype=np.float64)
    xy[~valid] = np.nan
    return normalise_landmarks(xy)
