"""OpenFace 2 CSV outputs -> a tabular feature source of the store (docs/OPENFACE.md).

Two kinds of CSV, told apart by their first column:

- FeatureExtraction (`frame, [face_id,] timestamp, confidence, success, ...`): one file per folder of
  frames, `<csv-dir>/<folder>.csv`. Its row for frame i (1-based) is the i-th file of the folder's sorted
  listing of .jpg/.jpeg/.png/.bmp files, the files OpenFace itself reads, so `--images` is needed to
  list them: the CSV holds frame numbers, never file names. A flat folder of images (keys with no
  folder part) is one sequence named after the images folder: `<csv-dir>/<images folder name>.csv`.
- FaceLandmarkImg (`face, confidence, ...`): one file per image, `<csv-dir>/<folder>/<image stem>.csv`,
  one row per detected face; the most confident face is kept, no row means no face.

Headers may use ", " separators (OpenFace 2.0) or "," (2.2); names are stripped. Everything is
parsed and checked before the store is opened for writing, so a bad file costs nothing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store import STATUS_INVALID, STATUS_MISSING, STATUS_OK, FeatureStore
from featheads.core.errors import UserError

# Column groups: name -> pattern of its columns (kept in file order) and the FeatureExtraction flag.
GROUPS = {
    "au": (re.compile(r"AU\d+_[rc]"), "-aus"),  # 17 intensities AU*_r then 18 occurrences AU*_c
    "pose": (re.compile(r"pose_[TR][xyz]"), "-pose"),  # head translation (mm) and rotation (rad)
    "gaze": (re.compile(r"gaze_(\d_[xyz]|angle_[xy])"), "-gaze"),  # eye gaze vectors (+ angles in 2.2)
    "landmarks": (re.compile(r"[xy]_\d+"), "-2Dfp"),  # 68 2D landmarks in pixels: x_0..x_67, y_0..y_67
    "landmarks3d": (re.compile(r"[XYZ]_\d+"), "-3Dfp"),  # 68 3D landmarks in mm
}
DEFAULT_GROUPS = ("au",)
OPENFACE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # what FeatureExtraction -fdir reads (case-sensitive)


def parse_groups(text: str) -> tuple[str, ...]:
    """"au,pose" -> ("au", "pose") in the canonical order of GROUPS (so the order given does not matter)."""
    names = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in names if g not in GROUPS]
    if bad or not names:
        what = f"unknown group {bad[0]!r}" if bad else "no group given"
        raise UserError(f"--groups {text!r}: {what}; choose from {', '.join(GROUPS)}")
    return tuple(g for g in GROUPS if g in names)


@dataclass
class OpenFaceTable:
    """The selected columns of one OpenFace CSV."""

    path: Path
    kind: str  # "sequence" (FeatureExtraction) or "image" (FaceLandmarkImg)
    columns: list[str]  # selected column names, in file order within each group
    values: np.ndarray  # (rows, F) float32
    success: np.ndarray  # (rows,) bool: OpenFace's success flag (all True where the file has none)
    frame: np.ndarray | None = None  # (rows,) int64, sequences only
    confidence: np.ndarray | None = None  # (rows,) float32 where present


def select_columns(header: list[str], groups, path) -> list[int]:
    """Indices of the columns of `groups`, group by group, each in file order."""
    idx = []
    for g in groups:
        pattern, flag = GROUPS[g]
        found = [i for i, name in enumerate(header) if pattern.fullmatch(name)]
        if not found:
            raise UserError(
                f"{path}: no {g!r} columns (like {_example(g)}) in the header; "
                f"OpenFace writes them when run with {flag}"
            )
        idx.extend(found)
    return idx


def _example(group: str) -> str:
    return {"au": "AU01_r, AU01_c", "pose": "pose_Tx, pose_Rx", "gaze": "gaze_0_x, gaze_angle_x",
            "landmarks": "x_0, y_0", "landmarks3d": "X_0, Y_0, Z_0"}[group]


def read_openface_csv(path, groups=DEFAULT_GROUPS) -> OpenFaceTable:
    """Parse one OpenFace CSV; errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError(f"{path}: empty file, not an OpenFace CSV")
    header = [c.strip() for c in lines[0].split(",")]
    if header[0] == "frame":
        kind = "sequence"
        required = ["frame", "success"]
    elif header[0] == "face":
        kind = "image"
        required = []
    else:
        raise UserError(f"{path}: line 1 starts with {header[0]!r}; an OpenFace CSV starts with 'frame' "
                        "(FeatureExtraction) or 'face' (FaceLandmarkImg)")
    for name in required:
        if name not in header:
            raise UserError(f"{path}: line 1 has no {name!r} column")
    sel = select_columns(header, groups, path)
    extra = {n: header.index(n) for n in ("frame", "success", "confidence") if n in header}
    body = lines[1:]
    width = len(header)
    for lineno, line in enumerate(body, start=2):
        if line.count(",") != width - 1:
            raise UserError(f"{path}: line {lineno} has {line.count(',') + 1} fields, the header has {width}")
    cols = sel + list(extra.values())
    data = _parse_numbers(body, cols, header, path)  # (rows, len(cols)) float64
    at = {name: len(sel) + j for j, name in enumerate(extra)}
    table = OpenFaceTable(path=path, kind=kind, columns=[header[i] for i in sel],
                          values=data[:, :len(sel)].astype(np.float32), success=np.ones(len(body), dtype=bool))
    if "success" in at:
        table.success = data[:, at["success"]] > 0.5
    if "confidence" in at:
        table.confidence = data[:, at["confidence"]].astype(np.float32)
    if kind == "sequence":
        frame = data[:, at["frame"]]
        if not np.array_equal(frame, np.round(frame)):
            i = int(np.flatnonzero(frame != np.round(frame))[0])
            cell = body[i].split(",")[extra["frame"]].strip()
            raise UserError(f"{path}: line {i + 2} column 'frame': {cell!r} is not a whole number")
        table.frame = frame.astype(np.int64)
    return table


def _parse_numbers(body: list[str], cols: list[int], header: list[str], path) -> np.ndarray:
    """(len(body), len(cols)) float64 of the given columns (numpy's C parser); a bad cell is an error
    naming its line and column."""
    if not body:
        return np.empty((0, len(cols)), dtype=np.float64)
    try:
        return np.loadtxt(body, delimiter=",", usecols=cols, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        pass
    for lineno, line in enumerate(body, start=2):  # slow path, only to name the bad cell
        fields = line.split(",")
        for i in cols:
            try:
                float(fields[i])
            except ValueError:
                raise UserError(
                    f"{path}: line {lineno} column {header[i]!r}: {fields[i].strip()!r} is not a number"
                ) from None
    raise UserError(f"{path}: cannot read the numbers of columns {', '.join(header[i] for i in cols[:5])} ...")


def list_frames(folder: Path) -> list[str]:
    """File names FeatureExtraction -fdir reads from `folder`, in its order (sorted, byte-wise)."""
    try:
        names = [e.name for e in os.scandir(folder)
                 if e.is_file() and os.path.splitext(e.name)[1] in OPENFACE_EXTENSIONS]
    except OSError as e:
        raise UserError(f"{folder}: cannot list the frames ({e.strerror or e})") from None
    return sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape"))


def folder_of(key: str) -> str:
    """The folder part of a store key ("video1/00001.jpg" -> "video1", "x.jpg" -> "")."""
    return key.rpartition("/")[0]


def sequence_csv_path(csv_dir: Path, folder: str, images: Path | None) -> Path | None:
    """<csv-dir>/<folder>.csv; for the images folder itself, <csv-dir>/<its name>.csv (None when unknown)."""
    if folder:
        return csv_dir / f"{folder}.csv"
    if images is None:
        return None
    return csv_dir / f"{Path(os.path.abspath(images)).name}.csv"


@dataclass
class IngestPlan:
    """What ingest will write, computed without touching the store for writing."""

    rows: np.ndarray  # (n,) store rows to write
    values: np.ndarray  # (n, F) float32 (NaN where status is not OK)
    status: np.ndarray  # (n,) int8
    columns: list[str]
    groups: tuple[str, ...]
    files: list[str] = field(default_factory=list)  # CSVs read
    kinds: dict[str, int] = field(default_factory=dict)  # CSV kind -> count
    reasons: dict[str, int] = field(default_factory=dict)  # why rows are invalid -> count
    kept: int = 0  # rows with no CSV now that keep what the source already had


def plan_ingest(store_path, csv_dir, *, images=None, groups=DEFAULT_GROUPS, split=None,
                source="openface", progress=True) -> IngestPlan:
    """Read the store's keys, parse and check every CSV that covers them, and return what to write.

    Rows without a CSV (or without a row in their folder's CSV) become invalid, but only where the
    source has nothing for them yet: a later ingest from another --csv-dir never erases earlier ones.
    """
    csv_dir = Path(csv_dir)
    images = Path(images) if images is not None else None
    if not csv_dir.is_dir():
        raise UserError(f"--csv-dir {csv_dir}: no such folder")
    if images is not None and not images.is_dir():
        raise UserError(f"--images {images}: no such folder")
    with FeatureStore.open(store_path) as st:
        target = st.rows(split) if split is not None else np.arange(st.n_rows)
        keys = st.samples(target, columns=("key",))["key"] if len(target) else np.array([], dtype=object)
        current = (st.source_status(source, target) if source in st.sources()
                   else np.full(len(target), STATUS_MISSING, dtype=np.int8))
        old_columns = (st.source_info(source)["arrays"].get("values", {}).get("names")
                       if source in st.sources() else None)
    if len(target) == 0:
        raise UserError(f"{store_path}: no rows{f' in split {split!r}' if split else ''}; "
                        "add them with `featurize run` first")

    by_folder: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_folder.setdefault(folder_of(k), []).append(i)
    plan = _PlanBuilder(keys, groups, old_columns, where=f"source {source!r} in {store_path}")

    from tqdm import tqdm

    for folder in tqdm(sorted(by_folder), desc="openface csv", unit="folder", disable=not progress,
                       dynamic_ncols=True):
        members = np.array(by_folder[folder])
        seq = sequence_csv_path(csv_dir, folder, images)
        if seq is not None and seq.is_file():
            plan.add_sequence(seq, images, folder, members)
        else:
            plan.add_images(csv_dir, folder, members)

    if not plan.files:
        first = sorted(by_folder)[0]
        example = sequence_csv_path(csv_dir, first, images) or csv_dir / "<images folder name>.csv"
        raise UserError(
            f"--csv-dir {csv_dir}: no OpenFace CSV for any of the {len(by_folder)} folder(s) of the "
            f"{len(target)} row(s){f' of split {split!r}' if split else ''} (looked for e.g. {example} or "
            f"per-image <folder>/<image stem>.csv)"
        )
    return plan.finish(target, current)


class _PlanBuilder:
    """The values and statuses of an ingest plan, filled CSV by CSV (positions index the target rows)."""

    def __init__(self, keys, groups, old_columns, where: str):
        self.keys, self.groups, self.old_columns, self.where = keys, tuple(groups), old_columns, where
        n = len(keys)
        self.values = np.full((n, 0), np.nan, dtype=np.float32)
        self.status = np.full(n, -1, dtype=np.int8)  # -1: no CSV covers the row
        self.columns: list[str] | None = None
        self.reasons: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.files: list[str] = []

    def invalid(self, why: str, count: int = 1) -> None:
        self.reasons[why] = self.reasons.get(why, 0) + count

    def check_columns(self, table: OpenFaceTable) -> None:
        if self.columns is None:
            self.columns = table.columns
            if self.old_columns is not None and self.old_columns != self.columns:
                raise UserError(
                    f"{table.path}: columns {_diff(self.columns, self.old_columns)} differ from those of "
                    f"{self.where}; use another --source-name or the same --groups"
                )
            self.values = np.full((len(self.keys), len(self.columns)), np.nan, dtype=np.float32)
        elif table.columns != self.columns:
            raise UserError(f"{table.path}: columns {_diff(table.columns, self.columns)} differ from {self.files[0]}")
        self.kinds[table.kind] = self.kinds.get(table.kind, 0) + 1
        self.files.append(str(table.path))

    def take(self, table: OpenFaceTable, positions: np.ndarray, table_rows: np.ndarray) -> None:
        v = table.values[table_rows]
        ok = table.success[table_rows] & np.isfinite(v).all(axis=1)
        for why, mask in (("success 0", ~table.success[table_rows]),
                          ("non-finite value", table.success[table_rows] & ~ok)):
            if mask.any():
                self.invalid(why, int(mask.sum()))
        self.values[positions] = v
        self.status[positions] = np.where(ok, STATUS_OK, STATUS_INVALID)

    def add_sequence(self, seq: Path, images: Path | None, folder: str, members: np.ndarray) -> None:
        """A FeatureExtraction CSV of a whole folder: row i is the folder's i-th sorted frame."""
        if images is None:
            raise UserError(
                f"{seq} is a FeatureExtraction CSV whose rows are numbered frames: pass --images (the "
                "folder OpenFace read) so that frame i can be matched to the i-th sorted file"
            )
        table = read_openface_csv(seq, self.groups)
        if table.kind != "sequence":
            raise UserError(f"{seq}: a FaceLandmarkImg (per-image) CSV where a FeatureExtraction CSV "
                            f"for the folder {folder or images} was expected")
        self.check_columns(table)
        frames = list_frames(images / folder)
        _check_frames(table, frames, images / folder)
        row_of_name = {name: i for i, name in enumerate(frames)}
        pos, trows = [], []
        for m in members:
            r = row_of_name.get(self.keys[m].rpartition("/")[2])
            if r is None:
                self.invalid("not among the folder's frames")
                self.status[m] = STATUS_INVALID
            else:
                pos.append(m)
                trows.append(r)
        if pos:
            self.take(table, np.array(pos), np.array(trows))

    def add_images(self, csv_dir: Path, folder: str, members: np.ndarray) -> None:
        """Per-image FaceLandmarkImg CSVs <csv-dir>/<folder>/<stem>.csv: the most confident face of each."""
        for m in members:
            stem = os.path.splitext(self.keys[m].rpartition("/")[2])[0]
            img_csv = csv_dir / folder / f"{stem}.csv" if folder else csv_dir / f"{stem}.csv"
            if not img_csv.is_file():
                continue
            table = read_openface_csv(img_csv, self.groups)
            if table.kind != "image":
                raise UserError(f"{img_csv}: a FeatureExtraction CSV where a per-image (FaceLandmarkImg) CSV "
                                f"for {self.keys[m]} was expected")
            self.check_columns(table)
            faces = np.flatnonzero(table.success)
            if len(faces) == 0:
                self.invalid("no face found")
                self.status[m] = STATUS_INVALID
                continue
            conf = table.confidence[faces] if table.confidence is not None else np.zeros(len(faces))
            self.take(table, np.array([m]), np.array([faces[int(np.argmax(conf))]]))

    def finish(self, target: np.ndarray, current: np.ndarray) -> IngestPlan:
        """Rows no CSV covers become invalid only where the source has nothing for them yet."""
        uncovered = self.status == -1
        write = ~uncovered | (current == STATUS_MISSING)
        if (uncovered & write).any():
            self.reasons["no CSV"] = int((uncovered & write).sum())
        status = np.where(uncovered, STATUS_INVALID, self.status).astype(np.int8)
        values = self.values
        values[status != STATUS_OK] = np.nan
        return IngestPlan(rows=target[write], values=values[write], status=status[write], columns=self.columns,
                          groups=self.groups, files=self.files, kinds=self.kinds, reasons=self.reasons,
                          kept=int((uncovered & ~write).sum()))


def _check_frames(table: OpenFaceTable, frames: list[str], folder: Path) -> None:
    n = len(table.frame)
    if len(np.unique(table.frame)) != n:
        _, first = np.unique(table.frame, return_index=True)
        i = int(np.setdiff1d(np.arange(n), first)[0])
        raise UserError(
            f"{table.path}: line {i + 2} repeats frame {table.frame[i]}: one row per frame is expected "
            "(several faces per frame, as FaceLandmarkVidMulti writes, are not supported)"
        )
    if n != len(frames):
        raise UserError(
            f"{table.path}: {n} frame rows, but {folder} holds {len(frames)} images "
            f"({'/'.join(OPENFACE_EXTENSIONS)}): the CSV was made from another folder or is incomplete"
        )
    expected = np.arange(1, n + 1)
    if not np.array_equal(table.frame, expected):
        i = int(np.flatnonzero(table.frame != expected)[0])
        raise UserError(f"{table.path}: line {i + 2} is frame {table.frame[i]}, expected {i + 1} "
                        f"(frames must run 1..{n} in order)")


def _diff(a: list[str], b: list[str]) -> str:
    only_a = [c for c in a if c not in b]
    only_b = [c for c in b if c not in a]
    if not only_a and not only_b:
        return "(same names, another order)"
    parts = []
    if only_a:
        parts.append("extra " + ", ".join(only_a[:5]))
    if only_b:
        parts.append("missing " + ", ".join(only_b[:5]))
    return "(" + "; ".join(parts) + ")"


def source_identity(plan: IngestPlan) -> dict:
    """What makes two OpenFace sources comparable: the tool and the columns."""
    return {"tool": "OpenFace 2", "groups": list(plan.groups), "columns": plan.columns}


def write_plan(store_path, plan: IngestPlan, *, source="openface", provenance=None) -> None:
    """Write a checked plan into the store (one short write under the writer lock)."""
    with FeatureStore.open(store_path, "a") as st:
        st.create_source(source, identity=source_identity(plan), provenance=provenance or {},
                         arrays={"values": (len(plan.columns), plan.columns)})
        st.write_features(source, plan.rows, {"values": plan.values}, plan.status)


def ingest(store_path, csv_dir, *, images=None, groups=DEFAULT_GROUPS, split=None, source="openface",
           progress=True, provenance=None) -> IngestPlan:
    """Parse, check, then write OpenFace CSVs into `source`; returns what was written."""
    plan = plan_ingest(store_path, csv_dir, images=images, groups=groups, split=split, source=source,
                       progress=progress)
    prov = {"csv_dir": os.path.abspath(csv_dir), "images": os.path.abspath(images) if images else None,
            "csv_files": len(plan.files), "csv_kinds": plan.kinds, **(provenance or {})}
    write_plan(store_path, plan, source=source, provenance=prov)
    return plan
