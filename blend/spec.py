"""The blend spec: a small JSON file that `blend tune` writes and `blend apply` replays exactly.

    {
      "format": "featheads-blend-spec", "version": 1,
      "task": "mtl", "split": "val", "inputs": ["mlp", "openface"],
      "tasks": {
        "expr": {"inputs": ["mlp", "openface"], "weights": {"mlp": 0.63, "openface": 0.37},
                 "smoothing": {"kind": "gaussian", "delta": 12, "sigma": 41.5}},
        "va":   {..., "smoothing": {"kind": "box", "delta": 6}},
        "au":   {..., "smoothing": {"kind": "none"}, "thresholds": {"AU1": 0.41, ...}}
      },
      "scores": {"in_sample": {"P_EXPR": ..., "P_MTL": ...}, "out_of_fold": {...} or null},
      "cv": {"folds": 5, "group_by": "video", "seed": 0, "fold_scores": [...]} or {"folds": 0},
      "study": {"name": ..., "storage": ..., "trials": 200, "best_trial": 117, "sampler": "TPESampler", "seed": 0},
      "rows": {"split": 26876, "labelled": {...}, "scored": {"expr": 15440, ...}}, "max_delta": 30,
      "store": "/abs/path/store.h5", "created": "...", "toolkit_version": "..."
    }

Floats are written with repr, so weights and thresholds read back bit for bit.

Weights are relative: each must be a number >= 0 and a task's must not all be 0; on every row
they are normalised over the inputs that have a prediction there (blend.combine.TaskBlend.scores),
so {"a": 2, "b": 1} blends 2/3 a + 1/3 b where both exist and gives a (or b) alone where the other
is missing. `blend tune` writes weights that sum to 1; a hand-written spec need not.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from featheads.core.jsonfile import read_json, toolkit_version
from store.schema import AU_NAMES

from .combine import SCORE_KEYS, TaskParams
from .data import TASK_GROUPS
from .smoothing import Smoothing

__all__ = ["FORMAT", "VERSION", "BlendSpec", "spec_to_json", "parse_spec", "read_spec", "write_spec", "summary_lines"]

FORMAT = "featheads-blend-spec"
VERSION = 1


@dataclass
class BlendSpec:
    task: str
    split: str
    inputs: list[str]
    tasks: dict[str, TaskParams]
    scores: dict = field(default_factory=dict)
    cv: dict = field(default_factory=dict)
    study: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    max_delta: int = 0  # the largest smoothing window the study searched (lays out the time line)
    store: str = ""
    created: str = ""
    toolkit_version: str = ""

    def task_inputs(self) -> dict[str, list[str]]:
        return {t: list(p.weights) for t, p in self.tasks.items()}

    def smoothing_window(self) -> int:
        """Window to lay the time line out with: the study's, so that apply sums exactly as tune did."""
        used = [p.smoothing.delta for p in self.tasks.values() if p.smoothing.kind != "none"]
        return max(used + [int(self.max_delta)])

    def to_dict(self) -> dict:
        tasks = {}
        for t, p in self.tasks.items():
            d = {"inputs": list(p.weights), "weights": {k: float(v) for k, v in p.weights.items()},
                 "smoothing": p.smoothing.to_dict()}
            if p.thresholds is not None:
                d["thresholds"] = {n: float(v) for n, v in zip(AU_NAMES, p.thresholds)}
            tasks[t] = d
        return {
            "format": FORMAT, "version": VERSION, "task": self.task, "split": self.split,
            "inputs": list(self.inputs), "tasks": tasks, "scores": self.scores, "cv": self.cv,
            "study": self.study, "rows": self.rows, "max_delta": int(self.max_delta), "store": self.store,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "toolkit_version": self.toolkit_version or toolkit_version(),
        }


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, NaN to null."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def spec_to_json(spec: BlendSpec, indent: int | None = 2) -> str:
    return json.dumps(_clean(spec.to_dict()), indent=indent)


def write_spec(spec: BlendSpec, path: str | os.PathLike) -> Path:
    """Write atomically (a temporary file renamed over the target)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(spec_to_json(spec) + "\n")
    os.replace(tmp, path)
    return path


def read_spec(path: str | os.PathLike) -> BlendSpec:
    """Read and validate a spec; every problem is a UserError naming the file and key."""
    return parse_spec(read_json(path, what="blend spec"), str(path))


def parse_spec(d: dict, path: str) -> BlendSpec:
    """Validate a spec's JSON object; `path` names where it came from in error messages."""
    if not isinstance(d, dict):
        raise UserError(f"{path}: a blend spec is a JSON object")

    def need(obj, key, kind, where):
        if not isinstance(obj, dict) or key not in obj:
            raise UserError(f"{path}: missing key '{where}{key}'")
        if not isinstance(obj[key], kind):
            raise UserError(f"{path}: key '{where}{key}' must be a {'JSON object' if kind is dict else 'string'}")
        return obj[key]

    if d.get("format") != FORMAT:
        raise UserError(f"{path}: not a blend spec (key 'format' is {d.get('format')!r}, expected {FORMAT!r})")
    if int(d.get("version", 0)) > VERSION:
        raise UserError(f"{path}: spec version {d.get('version')} is newer than this toolkit reads ({VERSION})")
    task = need(d, "task", str, "")
    if task not in TASK_GROUPS:
        raise UserError(f"{path}: key 'task' is {task!r}; expected one of {', '.join(TASK_GROUPS)}")
    raw_tasks = need(d, "tasks", dict, "")
    tasks = {}
    for t in TASK_GROUPS[task]:
        where = f"tasks.{t}."
        if t not in raw_tasks:
            raise UserError(f"{path}: missing key 'tasks.{t}' (task {task!r} needs {', '.join(TASK_GROUPS[task])})")
        td = raw_tasks[t]
        weights = need(td, "weights", dict, where)
        if not weights:
            raise UserError(f"{path}: key '{where}weights' is empty")
        for k, v in weights.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UserError(f"{path}: key '{where}weights.{k}' must be a number >= 0; got {v!r}")
        if sum(weights.values()) <= 0:
            raise UserError(f"{path}: key '{where}weights': the weights sum to 0; give at least one a weight > 0")
        if "inputs" in td and list(td["inputs"]) != list(weights):
            raise UserError(f"{path}: key '{where}inputs' {td['inputs']!r} does not match the inputs of "
                            f"'{where}weights' {list(weights)!r}")
        top_inputs = d.get("inputs") or []
        stray = [k for k in weights if top_inputs and k not in top_inputs]
        if stray:
            raise UserError(f"{path}: key '{where}weights.{stray[0]}' is not one of the spec's inputs "
                            f"({', '.join(top_inputs)})")
        try:
            smoothing = Smoothing.from_dict(need(td, "smoothing", dict, where))
        except (ValueError, TypeError) as e:
            raise UserError(f"{path}: key '{where}smoothing': {e}") from None
        thresholds = None
        if t == "au":
            th = need(td, "thresholds", dict, where)
            missing = [a for a in AU_NAMES if a not in th]
            if missing:
                raise UserError(f"{path}: key '{where}thresholds' has no {missing[0]!r}")
            bad = [a for a in AU_NAMES if not isinstance(th[a], (int, float)) or not math.isfinite(th[a])]
            if bad:
                raise UserError(f"{path}: key '{where}thresholds.{bad[0]}' must be a finite number")
            thresholds = np.array([float(th[a]) for a in AU_NAMES])
        tasks[t] = TaskParams({str(k): float(v) for k, v in weights.items()}, smoothing, thresholds)
    return BlendSpec(
        task=task, split=str(d.get("split", "")), inputs=list(d.get("inputs", [])), tasks=tasks,
        scores=d.get("scores", {}), cv=d.get("cv", {}), study=d.get("study", {}), rows=d.get("rows", {}),
        max_delta=int(d.get("max_delta", 0) or 0),
        store=str(d.get("store", "")), created=str(d.get("created", "")),
        toolkit_version=str(d.get("toolkit_version", "")),
    )


def _format_weights(weights: dict) -> str:
    return ", ".join(f"{n} {w:.3f}" for n, w in weights.items())


def _format_smoothing(s) -> str:
    if s.kind == "none":
        return "none"
    return f"{s.kind} delta={s.delta}" + (f" sigma={s.sigma:.3g}" if s.kind == "gaussian" else "")


def summary_lines(spec) -> list[str]:
    """The table `blend tune` prints: per task weights, smoothing, in-sample and out-of-fold scores."""
    ins = spec.scores.get("in_sample") or {}
    oof = spec.scores.get("out_of_fold") or {}
    lines = [f"{'task':<5} {'score':<7} {'in-sample':>9} {'out-of-fold':>11}  weights | smoothing"]
    for t, p in spec.tasks.items():
        k = SCORE_KEYS[t]
        o = f"{oof[k]:>11.4f}" if k in oof else f"{'-':>11}"
        how = f"{_format_weights(p.weights)} | {_format_smoothing(p.smoothing)}"
        lines.append(f"{t:<5} {k:<7} {ins[k]:>9.4f} {o}  {how}")
        if p.thresholds is not None:
            lines.append("      thresholds: " + " ".join(f"{a}={v:.3f}" for a, v in zip(AU_NAMES, p.thresholds)))
    if "P_MTL" in ins:
        o = f"{oof['P_MTL']:>11.4f}" if "P_MTL" in oof else f"{'-':>11}"
        lines.append(f"{'mtl':<5} {'P_MTL':<7} {ins['P_MTL']:>9.4f} {o}")
    return lines
