"""Readers: annotation files and image layouts -> a list of `Sample` rows for the store.

    samples = read_abaw_mtl("training_set_annotations.txt")          # ABAW4 MTL annotations or test list
    samples = read_class_folders(open_image_root("LSD/train"), task="lsd")   # <CLASS>/<image>
    samples = read_images(open_image_root("faces/"))                 # every image, no labels
    samples = read_images(root, file_list="LSD_Challenge_test_set_release.txt")
    rows = store.add_samples([s.key for s in samples], split="train", **sample_columns(samples))

Every reader checks its whole input before returning, so a malformed line stops a run before any work,
with "FILE:LINE: what is wrong". Whether an image exists or decodes is not checked here: that is found
out while featurizing, and such rows are recorded as invalid for the source.
"""
from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from store.schema import AU_NAMES, EXPR_NAME_TO_MTL, LSD_FOLDERS, TASKS

from .images import is_image_name

MTL_HEADER = ("image", "valence", "arousal", "expression") + AU_NAMES
MTL_TEST_HEADER = ("image", "valence", "arousal", "expression", "aus")
VA_MISSING = -5.0

# Class-folder names -> MTL expression index, case-insensitive (angry/anger, happy/happiness, ...).
EXPR_FOLDERS = EXPR_NAME_TO_MTL
# The organisers' LSD folder names (ANGRER sic) -> LSD index, case-insensitive.
LSD_FOLDER_INDEX = {name.lower(): i for i, name in enumerate(LSD_FOLDERS)}


class AnnotationError(UserError):
    """A malformed annotation file or image layout; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    """One row: its store key, grouping, frame number, where its image is, and its labels."""

    key: str  # unique join key, e.g. "video45_1/00001.jpg"
    video: str  # grouping for temporal heads and grouped cross-validation
    frame: int  # frame number from the file name, -1 if none
    image: str  # path of the image relative to the image root
    labels: dict = field(default_factory=dict)  # task -> value in store conventions (see sample_columns)


def frame_number(key: str) -> int:
    stem = posixpath.splitext(posixpath.basename(key))[0]
    return int(stem) if stem.isdigit() else -1


def _split_line(line: str) -> list[str]:
    return [f.strip() for f in line.split(",")]


def _parse_key(path: Path, lineno: int, text: str) -> str:
    key = text.strip().replace("\\", "/")
    if not key:
        raise AnnotationError(f"{path}:{lineno}: empty image name")
    norm = posixpath.normpath(key)
    if key.startswith("/") or norm == ".." or norm.startswith("../"):
        raise AnnotationError(f"{path}:{lineno}: image {key!r} must be a path relative to the image root")
    return key


def _number(path: Path, lineno: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{path}:{lineno}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}:{lineno}: {column} {text!r} is not a finite number")
    return value


def _integer(path: Path, lineno: int, column: str, text: str, allowed: range) -> int:
    value = _number(path, lineno, column, text)
    if value != int(value) or int(value) not in allowed:
        raise AnnotationError(
            f"{path}:{lineno}: {column} {text!r} is not one of {allowed.start}..{allowed.stop - 1}"
        )
    return int(value)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such annotation file") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror or e})") from None
    return text.splitlines()


def _check_unique(path: Path, samples: list[Sample], linenos: list[int]) -> None:
    first: dict[str, int] = {}
    for s, lineno in zip(samples, linenos):
        if s.key in first:
            raise AnnotationError(f"{path}:{lineno}: image {s.key!r} already listed on line {first[s.key]}")
        first[s.key] = lineno


def read_abaw_mtl(annotations) -> list[Sample]:
    """Rows of an ABAW4 MTL annotation file (labels with the missing codes) or of the test list.

    Annotation header: image,valence,arousal,expression,AU1,...,AU26. Missing codes: valence/arousal
    -5 -> NaN, expression -1, any AU -1 -> the whole AU vector missing (-1). Test-list header:
    image,valence,arousal,expression,aus, rows with an image name and empty fields (no labels).
    """
    path = Path(annotations)
    lines = _read_lines(path)
    if not lines:
        raise AnnotationError(f"{path}:1: empty file; expected the header {','.join(MTL_HEADER)}")
    header = tuple(f.lower() for f in _split_line(lines[0]))
    labelled = header == tuple(h.lower() for h in MTL_HEADER)
    if not labelled and header != MTL_TEST_HEADER:
        raise AnnotationError(
            f"{path}:1: unexpected header {lines[0].strip()!r}; expected {','.join(MTL_HEADER)} "
            f"(annotations) or {','.join(MTL_TEST_HEADER)} (test list)"
        )
    samples, linenos = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = _split_line(line)
        key = _parse_key(path, lineno, fields[0])
        if labelled:
            if len(fields) != len(MTL_HEADER):
                raise AnnotationError(
                    f"{path}:{lineno}: {len(fields)} fields, expected {len(MTL_HEADER)} ({','.join(MTL_HEADER)})"
                )
            labels = _mtl_labels(path, lineno, fields)
        else:
            if len(fields) not in (1, len(MTL_TEST_HEADER)):
                raise AnnotationError(
                    f"{path}:{lineno}: {len(fields)} fields, expected 1 or {len(MTL_TEST_HEADER)} "
                    f"({','.join(MTL_TEST_HEADER)})"
                )
            labels = {}
        samples.append(Sample(key=key, video=posixpath.dirname(key), frame=frame_number(key), image=key,
                              labels=labels))
        linenos.append(lineno)
    _check_unique(path, samples, linenos)
    return samples


def _mtl_labels(path: Path, lineno: int, fields: list[str]) -> dict:
    va = []
    for column, text in zip(("valence", "arousal"), fields[1:3]):
        v = _number(path, lineno, column, text)
        if v == VA_MISSING:
            v = math.nan
        elif not -1.0 <= v <= 1.0:
            raise AnnotationError(f"{path}:{lineno}: {column} {text!r} is outside [-1, 1] (and not -5, missing)")
        va.append(v)
    expr = _integer(path, lineno, "expression", fields[3], range(-1, 8))
    au = [_integer(path, lineno, name, text, range(-1, 2)) for name, text in zip(AU_NAMES, fields[4:])]
    if -1 in au:
        au = [-1] * len(AU_NAMES)
    if math.isnan(va[0]) or math.isnan(va[1]):  # one missing means the pair is missing
        va = [math.nan, math.nan]
    return {"expr": expr, "va": va, "au": au}


def _folder_index(task: str) -> dict[str, int]:
    if task == "lsd":
        return LSD_FOLDER_INDEX
    if task == "expr":
        return EXPR_FOLDERS
    raise AnnotationError(f"--task {task!r}: class folders are read for the tasks lsd and expr")


def read_class_folders(root, task: str) -> list[Sample]:
    """Rows of a class-folder layout `<CLASS>/<...>/<image>` with labels of `task` ("lsd" or "expr").

    lsd: the organisers' folders ANGRER (sic), DISGUST, FEAR, HAPPINESS, SADNESS, SURPRISE -> 0..5.
    expr: common names (angry/anger, disgust, fear, happy/happiness, neutral, sad/sadness, surprise,
    contempt/other) -> the MTL order. key = path relative to the root; video = key without extension.
    """
    index = _folder_index(task)
    names = root.list_images()
    if not names:
        raise AnnotationError(f"{root.describe('')}: no images found")
    samples = []
    for name in names:
        folder, sep, _ = name.partition("/")
        if not sep:
            raise AnnotationError(
                f"{root.describe(name)}: not inside a class folder (expected <class>/<image>)"
            )
        label = index.get(folder.lower())
        if label is None:
            known = ", ".join(LSD_FOLDERS) if task == "lsd" else ", ".join(EXPR_FOLDERS)
            raise AnnotationError(
                f"{root.describe(folder)}: unknown class folder {folder!r} for --task {task}; known: {known}"
            )
        samples.append(Sample(key=name, video=posixpath.splitext(name)[0], frame=-1, image=name,
                              labels={task: label}))
    return samples


def read_images(root, file_list=None) -> list[Sample]:
    """Rows without labels: every image below `root`, or the paths listed in `file_list`.

    A file list has one path (relative to the root) per line; a header line starting with "image"
    (as in LSD_Challenge_test_set_release.txt, `image,expression`) is skipped and only the first
    comma-separated field of each line is read. key = the path; video = key without extension.
    """
    if file_list is None:
        names = root.list_images()
        if not names:
            raise AnnotationError(f"{root.describe('')}: no images found")
        linenos = list(range(1, len(names) + 1))
        path = Path(root.describe(""))
    else:
        path = Path(file_list)
        lines = _read_lines(path)
        has_header = bool(lines) and lines[0].strip().lower().startswith("image") and not is_image_name(
            _split_line(lines[0])[0])
        names, linenos = [], []
        for lineno, line in enumerate(lines, start=1):
            if (lineno == 1 and has_header) or not line.strip():
                continue
            text = _split_line(line)[0] if has_header else line.strip()
            names.append(_parse_key(path, lineno, text))
            linenos.append(lineno)
        if not names:
            raise AnnotationError(f"{path}: lists no images")
    samples = [Sample(key=n, video=posixpath.splitext(n)[0], frame=-1, image=n) for n in names]
    _check_unique(path, samples, linenos)
    return samples


def sample_columns(samples: list[Sample]) -> dict:
    """videos, frames and labels of `samples`, as keyword arguments of `FeatureStore.add_samples`.

    Only tasks that some sample carries appear in labels: expr/lsd int8 (-1 missing), va float32 (n, 2)
    NaN missing, au int8 (n, 12) -1 missing.
    """
    tasks = sorted({t for s in samples for t in s.labels})
    labels = {}
    for task in tasks:
        t = TASKS[task]
        missing = np.nan if t.kind == "regression" else -1
        arr = np.full((len(samples),) + t.shape_tail, missing, dtype=t.dtype)
        for i, s in enumerate(samples):
            if task in s.labels:
                arr[i] = s.labels[task]
        labels[task] = arr
    return {
        "videos": [s.video for s in samples],
        "frames": np.fromiter((s.frame for s in samples), dtype=np.int32, count=len(samples)),
        "labels": labels,
    }
