"""The numeric core shared by `blend tune`, `apply` and `report`: blend, smooth, decide, score.

One `TaskBlend` holds one task's inputs on a fixed set of rows, laid out once for speed
(columns first, float32, missing predictions zeroed), and turns parameters into scores:

    scores = weighted mean of the inputs present on each row     (R inputs -> one (C, n) array;
             weights normalised over the inputs present on that row, so a spec's weights are relative)
    scores = temporal smoothing of scores                        (blend.smoothing)
    scores = clip(scores, -1, 1)                                 (va only)

then `fit_score` scores them against labels (expr/lsd: macro F1 of the argmax; va: mean CCC;
au: mean F1 at the exactly F1-optimal per-AU thresholds, which it returns) and `decide` turns
them into challenge decisions (class labels, VA values, 0/1 AUs at given thresholds).

Tuning and applying run this same code on the same arrays, so `blend apply` on the tuning split
reproduces the tuned score bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from heads.metrics import au_metrics, binarize_au, ccc, expr_metrics, lsd_metrics, per_class_f1, va_metrics

from .smoothing import Smoothing, TemporalSmoother
from .thresholds import best_thresholds

__all__ = ["TaskParams", "TaskBlend", "fit_score", "decide", "task_metrics", "SCORE_KEYS"]

SCORE_KEYS = {"expr": "P_EXPR", "va": "P_VA", "au": "P_AU", "lsd": "P_LSD"}


@dataclass
class TaskParams:
    """What a blend spec holds for one task."""

    weights: dict[str, float]  # input name -> weight >= 0, relative: normalised over the inputs present on a row
    smoothing: Smoothing = field(default_factory=Smoothing)
    thresholds: np.ndarray | None = None  # au: one per AU (predict score >= t)


class TaskBlend:
    """One task's inputs on fixed rows; `scores(weights, smoothing)` -> (C, n) float32.

    inputs: (R, n, C) predictions of R inputs (NaN where an input has none).
    smoother: built for the same n rows (None: smoothing not available).
    """

    def __init__(self, task: str, names: list[str], inputs: np.ndarray, smoother: TemporalSmoother | None):
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 3 or inputs.shape[0] != len(names):
            raise ValueError(f"inputs must be (R={len(names)}, n, C); got {inputs.shape}")
        self.task = task
        self.names = list(names)
        n_inputs, self.n, self.width = inputs.shape
        present = np.isfinite(inputs).all(axis=2)  # (R, n)
        cols = np.where(present[..., None], inputs, 0).transpose(0, 2, 1)  # (R, C, n)
        self._cols = np.ascontiguousarray(cols.reshape(n_inputs, -1))  # (R, C * n)
        self._present = None if present.all() else present.astype(np.float32)  # (R, n)
        self.covered = present.any(axis=0)  # rows with at least one prediction
        self.smoother = smoother

    def update_hash(self, h) -> None:
        """Feed the inputs (names, values, presence) into a hashlib object."""
        h.update(",".join(self.names).encode())
        h.update(self._cols.tobytes())
        h.update(b"" if self._present is None else self._present.tobytes())

    def weight_vector(self, weights: dict[str, float]) -> np.ndarray:
        missing = [n for n in self.names if n not in weights]
        if missing:
            raise ValueError(f"no weight for input {missing[0]!r}")
        return np.array([weights[n] for n in self.names], dtype=np.float32)

    def scores(self, weights: dict[str, float], smoothing: Smoothing) -> np.ndarray:
        """(C, n) scores of the blend; NaN on rows no input covers.

        The one weight rule (tune, apply, report and hand-written specs alike): weights are relative
        and normalised over the inputs present on each row, so 2:1 is 2/3 : 1/3 where both inputs are
        there and the present input alone (weight 1) where the other is missing."""
        w = self.weight_vector(weights)
        total = float(w.sum())
        if not np.isfinite(total) or total <= 0 or (w < 0).any():
            raise ValueError(f"weights must be >= 0 with a positive sum; got {weights}")
        w = (w / np.float32(total)).astype(np.float32)
        # A weighted sum input by input (not a BLAS product: the same bits whatever the threads).
        out = _weighted_sum(self._cols, w).reshape(self.width, self.n)
        if self._present is not None:
            den = _weighted_sum(self._present, w)  # (n,) total weight of the inputs present on each row
            with np.errstate(invalid="ignore", divide="ignore"):
                out /= den
            zero = self.covered & (den <= 0)  # only zero-weight inputs here: take their plain mean
            if zero.any():
                cnt = self._present[:, zero].sum(axis=0)
                plain = self._cols.reshape(len(w), self.width, self.n)[:, :, zero].sum(axis=0)
                out[:, zero] = plain / cnt
            out[:, ~self.covered] = np.nan
        if smoothing.kind != "none":
            if self.smoother is None:
                raise ValueError("these rows have no frame numbers: smoothing is not available")
            out = self.smoother.smooth_columns(out, smoothing)
        if self.task == "va":
            np.clip(out, -1.0, 1.0, out=out)
        return out


def _weighted_sum(stack: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_r w[r] * stack[r] for a (R, m) stack, in input order."""
    out = stack[0] * w[0]
    tmp = np.empty_like(out)
    for r in range(1, len(w)):
        np.multiply(stack[r], w[r], out=tmp)
        out += tmp
    return out


def _argmax_columns(s: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of (C, m), first maximum on ties (as np.argmax), in C vector passes."""
    best = s[0].copy()
    idx = np.zeros(s.shape[1], dtype=np.int64)
    for c in range(1, s.shape[0]):
        better = s[c] > best
        np.copyto(best, s[c], where=better)
        idx[better] = c
    return idx


def fit_score(task: str, scores: np.ndarray, y: np.ndarray, objective: str | None = None
              ) -> tuple[float, np.ndarray | None]:
    """Score (C, m) scores against m labelled rows; au also returns its F1-optimal thresholds.
    objective "abaw2" (expr only): 0.67 macro F1 + 0.33 accuracy instead of macro F1."""
    if task == "expr" and objective == "abaw2":
        q = _argmax_columns(scores)
        f1 = float(per_class_f1(y, q, scores.shape[0]).mean())
        return 0.67 * f1 + 0.33 * float(np.mean(q == y)), None
    if task in ("expr", "lsd"):
        return float(per_class_f1(y, _argmax_columns(scores), scores.shape[0]).mean()), None
    if task == "va":
        return 0.5 * (ccc(y[:, 0], scores[0]) + ccc(y[:, 1], scores[1])), None
    thresholds, f1 = best_thresholds(scores.T, y)
    return float(f1.mean()), thresholds


def decide(task: str, scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Challenge decisions from (C, m) scores: class labels (m,), VA (m, 2), or 0/1 AUs (m, 12)."""
    if task in ("expr", "lsd"):
        return _argmax_columns(scores)
    if task == "va":
        return scores.T.copy()
    return binarize_au(scores.T, 0.5 if thresholds is None else thresholds)


def task_metrics(task: str, y: np.ndarray, decisions: np.ndarray) -> dict:
    """heads.metrics' full metrics of one task's decisions (labels, VA values or 0/1 AUs)."""
    if task == "expr":
        m = expr_metrics(y, decisions)
        m["abaw2_expr"] = 0.67 * m["P_EXPR"] + 0.33 * m["accuracy"]  # the ABAW2 expression score
        return m
    if task == "lsd":
        return lsd_metrics(y, decisions)
    if task == "va":
        return va_metrics(y, decisions)
    return au_metrics(y, decisions)
