"""Helpers for the OpenFace tests: OpenFace-style CSVs, frame folders and stores written in tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from store import FeatureStore

AU_R = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15", "AU17",
        "AU20", "AU23", "AU25", "AU26", "AU45"]
AU_C = AU_R[:-1] + ["AU28", "AU45"]
AU_COLUMNS = [f"{a}_r" for a in AU_R] + [f"{a}_c" for a in AU_C]  # 17 + 18 = 35
POSE_COLUMNS = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]


def sequence_header(version: str = "2.2", pose: bool = False) -> list[str]:
    """FeatureExtraction header: 2.2 has face_id, 2.0 does not."""
    lead = ["frame", "face_id", "timestamp", "confidence", "success"] if version == "2.2" else \
        ["frame", "timestamp", "confidence", "success"]
    return lead + (POSE_COLUMNS if pose else []) + AU_COLUMNS


def au_values(n: int, seed: int) -> np.ndarray:
    """(n, 35) AU values as OpenFace writes them: intensities 0..5 with 2 decimals, occurrences 0/1."""
    rng = np.random.default_rng(seed)
    r = np.round(rng.uniform(0, 5, (n, 17)), 2)
    c = rng.integers(0, 2, (n, 18)).astype(float)
    return np.concatenate([r, c], axis=1)


def write_sequence_csv(path: Path, n: int, *, seed: int = 0, success=None, version: str = "2.2",
                       pose: bool = False, sep: str = ",") -> np.ndarray:
    """A FeatureExtraction CSV of n frames; returns its (n, 35) AU values (pose, when written, is 0..)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    success = np.ones(n, dtype=int) if success is None else np.asarray(success)
    au = au_values(n, seed)
    lines = [sep.join(sequence_header(version, pose))]
    for i in range(n):
        lead = [str(i + 1)] + (["0"] if version == "2.2" else []) + [f"{i / 30:.3f}", "0.98", str(success[i])]
        posev = [f"{k + 0.5:.1f}" for k in range(6)] if pose else []
        lines.append(",".join(lead + posev + [f"{v:g}" for v in au[i]]))
    path.write_text("\n".join(lines) + "\n")
    return au


def write_image_csv(path: Path, faces: list[tuple[float, np.ndarray]]) -> None:
    """A FaceLandmarkImg CSV (`face, confidence, ...`): one row per (confidence, 35 AU values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [", ".join(["face", "confidence"] + AU_COLUMNS)]
    for i, (conf, au) in enumerate(faces):
        lines.append(",".join([str(i), f"{conf:.3f}"] + [f"{v:g}" for v in au]))
    path.write_text("\n".join(lines) + "\n")


def make_frames(folder: Path, names) -> list[str]:
    """Empty files standing for frames (OpenFace ingest only lists names)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return sorted(names)


def make_store(path: Path, keys, split: str = "train") -> Path:
    with FeatureStore.open(path, "a") as st:
        st.add_samples(list(keys), split=split)
    return path


def read_values(store: Path, source: str = "openface"):
    """{key: (status, values)} of a source."""
    with FeatureStore.open(store) as st:
        keys = st.samples()["key"]
        X, _ = st.read_features(f"{source}.values")
        status = st.source_status(source)
    return {k: (int(s), x) for k, s, x in zip(keys, status, X)}
