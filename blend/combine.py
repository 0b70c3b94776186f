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
        self._line = self._line_built = None  # the inputs on the smoother's time line (_line_inputs)

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

    def normalised_weights(self, weights: dict[str, float]) -> np.ndarray:
        """The weights in input order as float32, divided by their sum (checked: >= 0, positive sum)."""
        w = self.weight_vector(weights)
        total = float(w.sum())
        if not np.isfinite(total) or total <= 0 or (w < 0).any():
            raise ValueError(f"weights must be >= 0 with a positive sum; got {weights}")
        return (w / np.float32(total)).astype(np.float32)

    def scores(self, weights: dict[str, float], smoothing: Smoothing) -> np.ndarray:
        """(C, n) scores of the blend; NaN on rows no input covers.

        The one weight rule (tune, apply, report and hand-written specs alike): weights are relative
        and normalised over the inputs present on each row, so 2:1 is 2/3 : 1/3 where both inputs are
        there and the present input alone (weight 1) where the other is missing."""
        w = self.normalised_weights(weights)
        out = _blend_rows(self._cols, self._present, self.covered, w, self.width)
        if smoothing.kind != "none":
            if self.smoother is None:
                raise ValueError("these rows have no frame numbers: smoothing is not available")
            out = self.smoother.smooth_columns(out, smoothing)
        if self.task == "va":
            np.clip(out, -1.0, 1.0, out=out)
        return out

    def scorer(self, positions: np.ndarray) -> "PositionScorer":
        """`scores(weights, smoothing)[:, positions]` for many parameter sets (a study's trials)."""
        return PositionScorer(self, positions)

    def _line_inputs(self) -> np.ndarray | None:
        """(R, C * padded_length) float32: the inputs on the smoother's padded time line, zero in the
        cells that hold no row; None when smoothing cannot start from it (an input missing on some
        row, rows off the line, or values so large that a weighted sum could overflow)."""
        if self._line_built is None:
            self._line_built = True
            sm = self.smoother
            fits = self._present is None and sm is not None and sm.length > 0 and len(sm.rows) == self.n
            if fits and (self._cols.size == 0 or float(np.abs(self._cols).max()) < 1e37):
                R, C = len(self.names), self.width
                line = np.zeros((R, C, sm.padded_length), dtype=np.float32)
                line[:, :, sm.max_delta + sm.pos] = self._cols.reshape(R, C, self.n)[:, :, sm.rows]
                self._line = line.reshape(R, -1)
        return self._line


class PositionScorer:
    """`blend.scores(weights, smoothing)[:, positions]`, bit for bit, at a fraction of the cost: what
    a study's objective calls once per trial (blend.tune.study_objective).

    Laid out once per study: the inputs at the positions only (trials without smoothing blend just
    those), and the inputs on the smoother's padded time line, so that a smoothed trial writes the
    blend straight onto the line (the very values `TaskBlend.scores` would scatter there), sums the
    windows with the smoother's own code (`TemporalSmoother.window_sums`) and reads back only the
    positions. The arithmetic is the same, operation for operation; where this layout does not apply
    (an input missing on some rows, rows without a frame number) it takes `TaskBlend.scores`.
    tests/test_blend_tune.py checks the identity.
    """

    def __init__(self, blend: TaskBlend, positions: np.ndarray):
        self.blend = blend
        self.positions = np.asarray(positions, dtype=np.int64)
        R, C, n = len(blend.names), blend.width, blend.n
        cols = blend._cols.reshape(R, C, n)[:, :, self.positions]
        self._cols = np.ascontiguousarray(cols.reshape(R, -1))  # (R, C * m)
        self._present = None if blend._present is None else np.ascontiguousarray(blend._present[:, self.positions])
        self._covered = blend.covered[self.positions]
        self._cells = None  # cells of the positions on the time line, once smoothing is asked for
        self._work = None

    def __call__(self, weights: dict[str, float], smoothing: Smoothing) -> np.ndarray:
        b = self.blend
        if smoothing.kind == "none":
            out = _blend_rows(self._cols, self._present, self._covered, b.normalised_weights(weights), b.width)
        else:
            line = b._line_inputs() if b.smoother is not None else None
            if line is None:  # the general path
                return b.scores(weights, smoothing)[:, self.positions]
            out = self._smoothed(line, b.normalised_weights(weights), smoothing)
        if b.task == "va":
            np.clip(out, -1.0, 1.0, out=out)
        return out

    def _smoothed(self, line: np.ndarray, w: np.ndarray, smoothing: Smoothing) -> np.ndarray:
        b, sm, C = self.blend, self.blend.smoother, self.blend.width
        if self._work is None:
            # rows 0..C-1: the blend on the line; row C: the presence row (1 where a row is), as
            # TemporalSmoother.smooth_columns lays them out when every row has a value
            self._work = np.zeros((C + 1, sm.padded_length), dtype=np.float32)
            self._work[C, sm.max_delta + sm.pos] = 1.0
            self._tmp = np.empty(C * sm.padded_length, dtype=np.float32)
            self._cells = sm.cell_of_rows()[self.positions]
        _weighted_sum(line, w, out=self._work[:C].reshape(-1), tmp=self._tmp)  # a view: onto the line
        total = sm.window_sums(self._work, smoothing)
        out = np.take(total[:C], self._cells, axis=1)  # (C, m), rows contiguous
        out /= np.take(total[C], self._cells)
        return out


def _blend_rows(cols: np.ndarray, present: np.ndarray | None, covered: np.ndarray, w: np.ndarray,
                width: int) -> np.ndarray:
    """(C, m) weighted mean of (R, C * m) inputs with normalised weights w, renormalised over the
    inputs present on each row (present (R, m) float32, None when all are); NaN where none is."""
    m = cols.shape[1] // width if width else 0
    # A weighted sum input by input (not a BLAS product: the same bits whatever the threads).
    out = _weighted_sum(cols, w).reshape(width, m)
    if present is not None:
        den = _weighted_sum(present, w)  # (m,) total weight of the inputs present on each row
        with np.errstate(invalid="ignore", divide="ignore"):
            out /= den
        zero = covered & (den <= 0)  # only zero-weight inputs here: take their plain mean
        if zero.any():
            cnt = present[:, zero].sum(axis=0)
            plain = cols.reshape(len(w), width, m)[:, :, zero].sum(axis=0)
            out[:, zero] = plain / cnt
        out[:, ~covered] = np.nan
    return out


def _weighted_sum(stack: np.ndarray, w: np.ndarray, out: np.ndarray | None = None,
                  tmp: np.ndarray | None = None) -> np.ndarray:
    """sum_r w[r] * stack[r] for a (R, m) stack, in input order (into out, with a work array tmp)."""
    out = np.multiply(stack[0], w[0], out=out)
    tmp = np.empty_like(out) if tmp is None else tmp
    for r in range(1, len(w)):
        np.multiply(stack[r], w[r], out=tmp)
        out += tmp
    return out


def _argmax_columns(s: np.ndarray) -> np.ndarray:
    """argmax over axis 0 of (C, m), first maximum on ties (as np.argmax), in C vector passes;
    NaN never wins (a column whose first entry is NaN gives 0)."""
    m = s.shape[1]
    idx = np.zeros(m, dtype=np.int64)
    if s.shape[0] == 0 or m == 0:
        return idx
    best = s[0].copy()
    better = np.empty(m, dtype=bool)
    for c in range(1, s.shape[0]):
        np.greater(s[c], best, out=better)
        np.maximum(best, s[c], out=best)  # = s[c] where better, as long as no NaN is met
        np.copyto(idx, c, where=better)
    if np.isnan(best).any():  # np.maximum carries a NaN along: redo those columns NaN-aware
        cols = np.flatnonzero(np.isnan(best))
        sub = s[:, cols]
        top = sub[0].copy()
        sub_idx = np.zeros(len(cols), dtype=np.int64)
        for c in range(1, s.shape[0]):
            gt = sub[c] > top
            np.copyto(top, sub[c], where=gt)
            sub_idx[gt] = c
        idx[cols] = sub_idx
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
