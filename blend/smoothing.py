"""Temporal smoothing of per-frame predictions over neighbouring frames of the same video.

The smoothed value of row i is the weighted mean of the values of the rows j of the same video
whose frame numbers lie within ``delta`` frames of i's (|f_j - f_i| <= delta, i itself included):

    gaussian  w = exp(-(f_j - f_i)^2 / sigma)     (sigma is NOT squared, as in the ABAW7 notebook)
    box       w = 1

Neighbours are found by frame NUMBER, not position: a missing frame simply contributes nothing and
the weights of the frames present are renormalised. Rows whose frame is unknown (frame < 0) are
left as they are. Rows with a NaN in any column neither contribute nor get a value (they stay NaN).

The rows are laid out once on a dense time line (sorted by video then frame; gaps longer than the
largest window shrink to one window, videos are separated by one window of empty cells), so each
call is a few vectorised passes over that line: one per frame offset for the Gaussian, a cumulative
sum for the box. Build one `TemporalSmoother` per set of rows and call it many times:

    sm = TemporalSmoother(videos, frames, max_delta=30)
    smoothed = sm(scores, "gaussian", delta=12, sigma=40.0)    # (n, C) -> (n, C)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "Smoothing", "TemporalSmoother", "smooth"]

KINDS = ("none", "box", "gaussian")


@dataclass(frozen=True)
class Smoothing:
    """Parameters of one smoothing: kind in KINDS, delta (frames each side), sigma (Gaussian only)."""

    kind: str = "none"
    delta: int = 0
    sigma: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"smoothing kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.kind != "none" and (int(self.delta) != self.delta or self.delta < 1):
            raise ValueError(f"smoothing delta must be an integer >= 1 frame; got {self.delta!r}")
        if self.kind == "gaussian" and not (self.sigma is not None and self.sigma > 0):
            raise ValueError(f"gaussian smoothing needs sigma > 0; got {self.sigma!r}")

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        if self.kind != "none":
            out["delta"] = int(self.delta)
        if self.kind == "gaussian":
            out["sigma"] = float(self.sigma)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Smoothing":
        return cls(kind=d.get("kind", "none"), delta=int(d.get("delta", 0)), sigma=d.get("sigma"))


class TemporalSmoother:
    """Smoothing over frames for a fixed set of rows (their videos and frame numbers).

    max_delta: the largest window (frames each side) this smoother will be asked for.
    Raises ValueError when a video holds two rows with the same frame number.
    """

    def __init__(self, videos, frames, max_delta: int):
        videos = np.asarray(videos)
        frames = np.asarray(frames, dtype=np.int64)
        if videos.shape != frames.shape or frames.ndim != 1:
            raise ValueError(f"videos and frames must be 1-D of equal length; got {videos.shape}, {frames.shape}")
        self.n = len(frames)
        self.max_delta = int(max_delta)
        codes = np.unique(videos, return_inverse=True)[1].reshape(-1) if self.n else np.zeros(0, np.int64)
        framed = np.flatnonzero(frames >= 0)
        order = framed[np.lexsort((frames[framed], codes[framed]))]  # rows on the time line, sorted
        f, c = frames[order], codes[order]
        same_video = np.zeros(len(order), dtype=bool)
        same_video[1:] = c[1:] == c[:-1]
        gap = np.zeros(len(order), dtype=np.int64)
        gap[1:] = f[1:] - f[:-1]
        dup = np.flatnonzero(same_video & (gap == 0))
        if len(dup):
            i = order[dup[0]]
            raise ValueError(f"video {str(videos[i])!r} has two rows with frame {int(frames[i])}; frame numbers must be unique per video")
        window = self.max_delta + 1
        step = np.where(same_video, np.minimum(gap, window), window)
        step[:1] = 0
        self.rows = order  # rows placed on the time line
        self.pos = np.cumsum(step)  # their cells
        self.length = int(self.pos[-1]) + 1 if len(order) else 0
        self.temporal = bool(np.any(same_video & (gap <= self.max_delta)))  # some row has a neighbour

    def __call__(self, values, kind: str, delta: int = 0, sigma: float | None = None) -> np.ndarray:
        """Smooth values (n,) or (n, C); returns an array of the same shape and float dtype."""
        v = np.asarray(values)
        if v.shape[0] != self.n:
            raise ValueError(f"values have {v.shape[0]} rows; the smoother was built for {self.n}")
        cols = v.reshape(self.n, -1).T  # (C, n)
        return self.smooth_columns(cols, Smoothing(kind, delta, sigma)).T.reshape(v.shape)

    def smooth_columns(self, cols: np.ndarray, smoothing: Smoothing) -> np.ndarray:
        """Smooth a columns-first array (C, n) -> (C, n); the fast path used inside studies."""
        cols = np.asarray(cols)
        if not np.issubdtype(cols.dtype, np.floating):
            cols = cols.astype(np.float64)
        if smoothing.kind == "none" or self.length == 0:
            return cols
        delta = int(smoothing.delta)
        if delta > self.max_delta:
            raise ValueError(f"delta {delta} is larger than this smoother's max_delta {self.max_delta}")
        n_cols = cols.shape[0]
        on_line = cols[:, self.rows]  # (C, m)
        ok = np.isfinite(on_line).all(axis=0)  # (m,)
        grid = np.zeros((n_cols + 1, self.length), dtype=cols.dtype)  # values, then the presence row
        grid[:n_cols, self.pos] = np.where(ok, on_line, 0)
        grid[n_cols, self.pos] = ok
        if smoothing.kind == "box":
            total = _box_sum(grid, delta)
        else:
            d = np.arange(delta + 1, dtype=np.float64)
            weights = np.exp(-(d * d) / float(smoothing.sigma))
            total = _symmetric_sum(grid, weights)
        out = cols.copy()
        done = total[:n_cols, self.pos] / total[n_cols, self.pos]
        out[:, self.rows] = np.where(ok, done, np.nan)
        return out


def _symmetric_sum(grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum over |k| <= K of weights[|k|] * grid[:, t + k] (cells outside the line count as 0)."""
    w = weights.astype(grid.dtype)
    out = grid * w[0]
    tmp = np.empty_like(grid)
    for k in range(1, len(w)):
        np.multiply(grid[:, :-k], w[k], out=tmp[:, :-k])
        out[:, k:] += tmp[:, :-k]
        np.multiply(grid[:, k:], w[k], out=tmp[:, :-k])
        out[:, :-k] += tmp[:, :-k]
    return out


def _box_sum(grid: np.ndarray, delta: int) -> np.ndarray:
    """sum over |k| <= delta of grid[:, t + k], from one cumulative sum (float64 against cancellation)."""
    length = grid.shape[1]
    csum = np.zeros((grid.shape[0], length + 1), dtype=np.float64)
    np.cumsum(grid, axis=1, dtype=np.float64, out=csum[:, 1:])
    t = np.arange(length)
    hi = np.minimum(t + delta + 1, length)
    lo = np.maximum(t - delta, 0)
    return (csum[:, hi] - csum[:, lo]).astype(grid.dtype, copy=False)


def smooth(values, videos, frames, kind: str, delta: int = 0, sigma: float | None = None) -> np.ndarray:
    """One-off smoothing of values (n,) or (n, C) over frames of the same video (see the module doc)."""
    return TemporalSmoother(videos, frames, max_delta=max(int(delta), 0))(values, kind, delta, sigma)
