"""ABAW4 challenge files from a predictions run, in the order of the official test list, validated.

    abaw4-mtl   image,valence,arousal,expression,aus
                video/00001.jpg,v,a,e,au1,...,au12        v, a in [-1, 1]; e 0..7 (MTL order); AUs 0/1
    abaw4-lsd   image,expression
                00001.jpg,e                               e 0..5 (LSD order)

Expressions are the argmax of the run's probabilities, AUs its scores at the per-AU thresholds
stored with the run (`blend apply` puts the spec's there; 0.5 for a run without them), VA its
values clipped to [-1, 1]. The file is written beside the target, re-read and validated (header,
row count and order against the test list, value ranges), and only then renamed over it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore
from store.schema import AU_NAMES, LSD_CLASSES, MTL_EXPR_CLASSES

from .combine import decide

__all__ = ["FORMATS", "read_test_list", "write_submission", "validate_submission"]


@dataclass(frozen=True)
class Format:
    header: str
    tasks: tuple[str, ...]
    n_classes: int


FORMATS = {
    "abaw4-mtl": Format("image,valence,arousal,expression,aus", ("va", "expr", "au"), len(MTL_EXPR_CLASSES)),
    "abaw4-lsd": Format("image,expression", ("lsd",), len(LSD_CLASSES)),
}


def read_test_list(path) -> list[str]:
    """Image names of a test list (a header line, then one image per line, first column)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such test list") from None
    if not lines or not lines[0].split(",")[0].strip().lower() == "image":
        raise UserError(f"{path}: line 1: expected a header starting with 'image', got {lines[0] if lines else ''!r}")
    images, seen = [], {}
    for i, line in enumerate(lines[1:], start=2):
        name = line.split(",")[0].strip()
        if not name:
            if line.strip():
                raise UserError(f"{path}: line {i}: no image name")
            continue
        if name in seen:
            raise UserError(f"{path}: line {i}: image {name!r} is listed again (first on line {seen[name]})")
        seen[name] = i
        images.append(name)
    if not images:
        raise UserError(f"{path}: the test list names no image")
    return images


def _line_of(images: list[str], j: int) -> str:
    return f"image {images[j]!r} (entry {j + 1} of the test list)"


def _decisions(store: FeatureStore, run: str, split: str, images: list[str], fmt: Format, notes: list) -> dict:
    rows = store.find_rows(images, missing="ignore")
    if (rows < 0).any():
        j = int(np.flatnonzero(rows < 0)[0])
        example = store.samples(store.rows(split)[:1], columns=("key",))["key"] if store.n_rows else []
        hint = f" (keys of split {split!r} look like {example[0]!r})" if len(example) else ""
        raise UserError(f"{store.path}: {_line_of(images, j)} is not in the store{hint}; "
                        f"{int((rows < 0).sum())} listed images are missing")
    splits = store.samples(rows, columns=("split",))["split"]
    other = np.flatnonzero(splits != split)
    if len(other):
        j = int(other[0])
        raise UserError(f"{store.path}: {_line_of(images, j)} belongs to split {splits[j]!r}, not {split!r}")
    out = {}
    for t in fmt.tasks:
        pred = store.read_predictions(run, t, rows).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(pred).reshape(len(rows), -1).all(axis=1))
        if len(bad):
            raise UserError(f"{store.path}: run {run!r} has no {t!r} prediction for {len(bad)} listed images, "
                            f"first {_line_of(images, int(bad[0]))}")
        thresholds = None
        if t == "au":
            attrs = store.prediction_attrs(run, "au")
            if "thresholds" in attrs:
                thresholds = np.asarray(_as_list(attrs["thresholds"]), dtype=np.float64)
                if thresholds.shape != (len(AU_NAMES),):
                    raise UserError(f"{store.path}: predictions/{run}/au has {thresholds.shape} thresholds, not 12")
            else:
                notes.append(f"run {run!r} stores no AU thresholds: using 0.5")
        if t == "va":
            outside = int((np.abs(pred) > 1).sum())
            if outside:
                notes.append(f"{outside} VA values outside [-1, 1] clipped")
            pred = np.clip(pred, -1.0, 1.0)
        out[t] = decide(t, pred.T, thresholds)
    return out


def _as_list(v):
    if isinstance(v, str):
        import json

        return json.loads(v)
    return list(v)


def write_submission(fmt_name: str, store_path, run: str, split: str, test_list, out) -> tuple[Path, list[str]]:
    """Write and validate a challenge file; returns (path, notes printed to the user)."""
    fmt = FORMATS[fmt_name]
    images = read_test_list(test_list)
    notes: list[str] = []
    with FeatureStore.open(store_path, "r") as st:
        dec = _decisions(st, run, split, images, fmt, notes)
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    lines = [fmt.header]
    if fmt_name == "abaw4-mtl":
        va, expr, au = dec["va"], dec["expr"], dec["au"]
        for j, name in enumerate(images):
            aus = ",".join(str(int(x)) for x in au[j])
            lines.append(f"{name},{va[j, 0]:.6f},{va[j, 1]:.6f},{int(expr[j])},{aus}")
    else:
        lines += [f"{name},{int(e)}" for name, e in zip(images, dec["lsd"])]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    try:
        validate_submission(fmt_name, tmp, images, shown_as=out)
    except UserError:
        tmp.unlink()
        raise
    os.replace(tmp, out)
    return out, notes


def validate_submission(fmt_name: str, path, images: list[str], *, shown_as=None) -> None:
    """Check a challenge file against the test list: header, rows in order, value ranges."""
    fmt = FORMATS[fmt_name]
    shown = shown_as or path
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].strip() != fmt.header:
        raise UserError(f"{shown}: line 1: header must be {fmt.header!r}")
    body = lines[1:]
    if len(body) != len(images):
        raise UserError(f"{shown}: {len(body)} rows for {len(images)} images in the test list")
    width = 16 if fmt_name == "abaw4-mtl" else 2
    for i, (line, name) in enumerate(zip(body, images), start=2):
        f = line.split(",")
        if len(f) != width:
            raise UserError(f"{shown}: line {i}: {len(f)} columns, expected {width}")
        if f[0] != name:
            raise UserError(f"{shown}: line {i}: image {f[0]!r} where the test list has {name!r}")
        e = f[3] if fmt_name == "abaw4-mtl" else f[1]
        if not e.isdigit() or not 0 <= int(e) < fmt.n_classes:
            raise UserError(f"{shown}: line {i}: expression {e!r} is not an integer in 0..{fmt.n_classes - 1}")
        if fmt_name == "abaw4-mtl":
            for what, v in (("valence", f[1]), ("arousal", f[2])):
                try:
                    x = float(v)
                except ValueError:
                    x = math.nan
                if not (math.isfinite(x) and -1.0 <= x <= 1.0):
                    raise UserError(f"{shown}: line {i}: {what} {v!r} is not a number in [-1, 1]")
            bad = [a for a in f[4:] if a not in ("0", "1")]
            if bad:
                raise UserError(f"{shown}: line {i}: AU value {bad[0]!r} is not 0 or 1")
