"""The inputs of a blend: prediction runs of the store, or a backbone's raw logits.

An input name is either a run (`/predictions/<run>/<task>`, written by `heads fit`, OpenFace heads,
or an earlier `blend apply`) or `logits:<source>`, the logits of a feature source read as
predictions. Logits are matched to classes by their names (store.schema.EXPR_NAME_TO_MTL: AffectNet
"Anger" ... "Contempt", FER2013 "angry" ... "neutral", any case): a softmax over the emotion logits,
placed in the MTL order for expr (AffectNet Contempt -> Other; a class without a logit gets 0), and
the six basic emotions renormalised to sum to 1 for lsd; the `valence` and `arousal` logits as they
are for va. A logits source without names is read as the MT-EmotiEffNet layout (8 AffectNet
emotions, then valence and arousal) when it has 8 or 10 columns.

Every input gives an (n, width) float32 array for the task, NaN on rows it does not cover.
"""
from __future__ import annotations

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore
from store.schema import AFFECTNET_CLASSES, EXPR_NAME_TO_MTL, MTL_TO_LSD, VA_NAMES, get_task

__all__ = ["LOGITS_PREFIX", "task_width", "parse_input_names", "input_tasks", "read_input", "read_inputs"]

LOGITS_PREFIX = "logits:"
_LOGIT_TASKS = ("expr", "va", "lsd")


def task_width(task: str) -> int:
    t = get_task(task)
    return len(t.names)


def parse_input_names(text: str | list[str]) -> list[str]:
    """"a, b,logits:src" -> ["a", "b", "logits:src"]; empty or repeated names are errors."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if not names or any(not s for s in names):
        raise UserError(f"--runs {text!r}: give comma-separated run names (or logits:<source>), none empty")
    dup = {s for s in names if names.count(s) > 1}
    if dup:
        raise UserError(f"--runs {text!r}: {sorted(dup)[0]!r} is named twice")
    return names


def _logit_columns(store: FeatureStore, source: str) -> list[str]:
    if source not in store.sources():
        raise UserError(
            f"{store.path}: input 'logits:{source}': no feature source {source!r}; "
            f"sources: {', '.join(store.sources()) or 'none'}"
        )
    info = store.source_info(source)["arrays"]
    if "logits" not in info:
        raise UserError(f"{store.path}: input 'logits:{source}': source {source!r} has no logits array")
    names, width = info["logits"]["names"], info["logits"]["shape"][1]
    if names is None:
        names = list(AFFECTNET_CLASSES) + (list(VA_NAMES) if width == 10 else [])
        if width not in (8, 10):
            raise UserError(
                f"{store.path}: input 'logits:{source}': its {width} logits have no names; only the "
                "MT-EmotiEffNet layout (8 AffectNet emotions, then valence and arousal) is read without names"
            )
    return list(names)


def _emotion_columns(names: list[str]) -> list[tuple[int, int]]:
    """(logit column, MTL class) of every logit whose name is an emotion."""
    return [(i, EXPR_NAME_TO_MTL[n.lower()]) for i, n in enumerate(names) if n.lower() in EXPR_NAME_TO_MTL]


def input_tasks(store: FeatureStore, name: str) -> list[str]:
    """The tasks an input can give predictions for."""
    if name.startswith(LOGITS_PREFIX):
        names = _logit_columns(store, name[len(LOGITS_PREFIX):])
        classes = {c for _, c in _emotion_columns(names)}
        out = []
        if len(classes) >= 2:
            out.append("expr")
        if set(VA_NAMES) <= set(names):
            out.append("va")
        if set(MTL_TO_LSD) <= classes:
            out.append("lsd")
        return out
    runs = store.runs()
    if name not in runs:
        raise UserError(f"{store.path}: no predictions run {name!r}; runs: {', '.join(sorted(runs)) or 'none'}")
    return [t for t in runs[name] if t in ("expr", "va", "au", "lsd")]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _read_logits(store: FeatureStore, source: str, task: str, rows: np.ndarray) -> np.ndarray:
    names = _logit_columns(store, source)
    X, valid = store.read_features(f"{source}.logits", rows)
    X = X.astype(np.float64)
    X[~valid] = np.nan
    if task == "va":
        return X[:, [names.index(n) for n in VA_NAMES]].astype(np.float32)
    cols = _emotion_columns(names)
    probs = _softmax(X[:, [i for i, _ in cols]])  # over the emotion logits only
    mtl = np.zeros((len(X), len(get_task("expr").names)))
    np.add.at(mtl.T, [c for _, c in cols], probs.T)
    mtl[~np.isfinite(probs).all(axis=1)] = np.nan
    if task == "expr":
        return mtl.astype(np.float32)
    six = mtl[:, sorted(MTL_TO_LSD, key=MTL_TO_LSD.get)]
    return (six / six.sum(axis=1, keepdims=True)).astype(np.float32)


def read_input(store: FeatureStore, name: str, task: str, rows: np.ndarray) -> np.ndarray:
    """(len(rows), width) float32 predictions of one input for a task, NaN where it has none."""
    if task not in input_tasks(store, name):
        have = ", ".join(input_tasks(store, name)) or "none"
        raise UserError(f"{store.path}: input {name!r} has no {task!r} predictions (it has: {have})")
    if name.startswith(LOGITS_PREFIX):
        return _read_logits(store, name[len(LOGITS_PREFIX):], task, rows)
    values = np.asarray(store.read_predictions(name, task, rows), dtype=np.float32)
    width = task_width(task)
    if values.ndim != 2 or values.shape[1] != width:
        raise UserError(
            f"{store.path}: predictions/{name}/{task} has shape {values.shape}; a {task} input needs "
            f"{width} columns ({', '.join(get_task(task).names)})"
        )
    return values


def read_inputs(store: FeatureStore, names: list[str], task: str, rows: np.ndarray) -> np.ndarray:
    """(R, len(rows), width) float32: the task's predictions of every input, stacked."""
    return np.stack([read_input(store, name, task, rows) for name in names])
