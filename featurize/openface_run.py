"""Run OpenFace 2 FeatureExtraction over the frame folders of the store's rows (docs/OPENFACE.md).

One call per folder: `FeatureExtraction -fdir <images>/<folder> -out_dir <tmp> -of out -aus [...]`;
its CSV is moved to `<csv-dir>/<folder>.csv` only when the call succeeds, so a folder with a CSV is
finished and an interrupted run resumes with the next folder.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from store import FeatureStore
from featheads.core.errors import UserError

from .openface import GROUPS, folder_of, list_frames, sequence_csv_path

BINARY = "FeatureExtraction"


def find_binary(openface_bin=None) -> Path:
    """The FeatureExtraction executable: `openface_bin` if given, else the one on PATH."""
    if openface_bin is not None:
        p = Path(openface_bin)
        if not p.is_file() or not os.access(p, os.X_OK):
            raise UserError(f"--openface-bin {p}: no such executable file")
        return p
    found = shutil.which(BINARY)
    if found is None:
        raise UserError(
            f"{BINARY} (OpenFace 2) is not on PATH: install OpenFace (see docs/OPENFACE.md) and add its "
            "bin folder to PATH, or pass --openface-bin PATH/TO/FeatureExtraction"
        )
    return Path(found)


def flags_for(groups) -> list[str]:
    """Output flags for the column groups (with any flag given, OpenFace writes only those outputs)."""
    return [GROUPS[g][1] for g in groups]


def run_feature_extraction(binary: Path, frames_dir: Path, dest_csv: Path, groups) -> None:
    """Run FeatureExtraction on one folder of frames and move its CSV to `dest_csv`."""
    dest_csv.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openface-", dir=dest_csv.parent) as tmp:
        cmd = [str(binary), "-fdir", str(frames_dir), "-out_dir", tmp, "-of", "out", *flags_for(groups)]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace")
        except OSError as e:
            raise UserError(f"{binary}: cannot run ({e.strerror or e})") from None
        produced = Path(tmp) / "out.csv"
        if proc.returncode != 0 or not produced.is_file():
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise UserError(
                f"{binary} failed on {frames_dir} (exit code {proc.returncode}"
                f"{'' if produced.is_file() else ', no CSV written'}): {' '.join(cmd)}\n{tail}"
            )
        os.replace(produced, dest_csv)


def folders_to_run(store_path, images: Path, csv_dir: Path, split=None) -> tuple[list[str], int]:
    """Folders of the store's rows (of `split`) that have frames and no CSV yet; and how many are done."""
    with FeatureStore.open(store_path) as st:
        rows = st.rows(split) if split is not None else None
        keys = st.samples(rows, columns=("key",))["key"]
    folders = sorted({folder_of(k) for k in keys})
    todo, done = [], 0
    for folder in folders:
        if sequence_csv_path(csv_dir, folder, images).is_file():
            done += 1
        elif (images / folder).is_dir() and list_frames(images / folder):
            todo.append(folder)
    return todo, done


def run_openface(store_path, images, csv_dir, *, groups, split=None, openface_bin=None,
                 progress=True) -> tuple[int, int]:
    """FeatureExtraction on every folder of the store's rows lacking a CSV; returns (run, already done)."""
    images, csv_dir = Path(images), Path(csv_dir)
    if not images.is_dir():
        raise UserError(f"--images {images}: no such folder")
    binary = find_binary(openface_bin)
    todo, done = folders_to_run(store_path, images, csv_dir, split)
    from tqdm import tqdm

    for folder in tqdm(todo, desc="FeatureExtraction", unit="folder", disable=not progress,
                       dynamic_ncols=True):
        run_feature_extraction(binary, images / folder, sequence_csv_path(csv_dir, folder, images), groups)
    return len(todo), done
