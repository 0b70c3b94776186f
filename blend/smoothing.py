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
sum for the box (an FFT for Gaussian windows wider than FFT_ABOVE frames). Build one
`TemporalSmoother` per set of rows and call it many times:

    sm = TemporalSmoother(videos, frames, max_delta=30)
    smoothed = sm(scores, "gaussian", delta=12, sigma=40.0)    # (n, C) -> (n, C)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "Smoothing", "TemporalSmoother", "smooth"]

KINDS = ("none", "box", "gaussian")
FFT_ABOVE = 12  # Gaussian windows wider than this many frames each side are summed by FFT


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
            raise ValueError(f"video {str(videos[i])!r} has two rows with frame {int(frames[i])}; "
                             "frame numbers must be unique per video")
        window = self.max_delta + 1
        step = np.where(same_video, np.minimum(gap, window), window)
        step[:1] = 0
        self.rows = order  # rows placed on the time line
        self._all_rows_in_order = bool(len(order) == self.n and np.array_equal(order, np.arange(self.n)))
        self.pos = np.cumsum(step)  # their cells
        self.length = int(self.pos[-1]) + 1 if len(order) else 0
        self.temporal = bool(np.any(same_video & (gap <= self.max_delta)))  # some row has a neighbour
        self._buffers: dict = {}

    def __call__(self, values, kind: str, delta: int = 0, sigma: float | None = None) -> np.ndarray:
        """Smooth values (n,) or (n, C); returns an array of the same shape and float dtype."""
        v = np.asarray(values)
        if v.shape[0] != self.n:
            raise ValueError(f"values have {v.shape[0]} rows; the smoother was built for {self.n}")
        cols = v.reshape(self.n, -1).T  # (C, n)
        return self.smooth_columns(cols, Smoothing(kind, delta, sigma)).T.reshape(v.shape)

    def smooth_columns(self, cols: np.ndarray, smoothing: Smoothing) -> np.ndarray:
        """Smooth a columns-first array (C, n) -> new (C, n) array; the fast path used inside studies."""
        cols = np.asarray(cols)
        if not np.issubdtype(cols.dtype, np.floating):
            cols = cols.astype(np.float64)
        if smoothing.kind == "none" or self.length == 0:
            return cols
        n_cols = cols.shape[0]
        on_line = cols if self._all_rows_in_order else cols[:, self.rows]  # (C, m)
        ok = np.isfinite(on_line).all(axis=0)  # (m,)
        all_ok = bool(ok.all())
        # The line lives in the middle of a zero-padded buffer kept between calls: cells that hold
        # no row are never written, so they stay 0, and shifted views need no copies.
        line = self._buffer("line", (n_cols + 1, self.padded_length), cols.dtype, zero=True)
        cells = line[:, self.max_delta:self.max_delta + self.length]
        cells[:n_cols, self.pos] = on_line if all_ok else np.where(ok, on_line, 0)
        cells[n_cols, self.pos] = ok  # the presence row: sums to the total weight of each window
        total = self.window_sums(line, smoothing)
        done = total[:n_cols, self.pos]
        done /= total[n_cols, self.pos]
        if not all_ok:
            done[:, ~ok] = np.nan
        if self._all_rows_in_order:
            return done
        out = cols.copy()
        out[:, self.rows] = done
        return out

    @property
    def padded_length(self) -> int:
        """Cells of the padded time line that `window_sums` takes: max_delta empty cells each side."""
        return self.length + 2 * self.max_delta

    def cell_of_rows(self) -> np.ndarray:
        """(n,) int64: the cell of each row on the (unpadded) time line, -1 for rows not on it."""
        cells = np.full(self.n, -1, dtype=np.int64)
        cells[self.rows] = self.pos
        return cells

    def check(self, smoothing: Smoothing) -> None:
        if smoothing.kind != "none" and int(smoothing.delta) > self.max_delta:
            raise ValueError(f"delta {int(smoothing.delta)} is larger than this smoother's max_delta {self.max_delta}")

    def window_sums(self, line: np.ndarray, smoothing: Smoothing) -> np.ndarray:
        """Window sums of every cell of a padded time line (k, padded_length) -> (k, length).

        The numeric core of `smooth_columns` (which puts the values and a presence row on the
        line, then divides by the presence row's sums): a pure function of the line's contents,
        so a caller that lays out the same line itself gets the same bits. The result is a work
        buffer of this smoother, valid until its next call.
        """
        self.check(smoothing)
        if smoothing.kind == "box":
            return self._box_sum(line, int(smoothing.delta))
        d = np.arange(int(smoothing.delta) + 1, dtype=np.float64)
        return self._symmetric_sum(line, np.exp(-(d * d) / float(smoothing.sigma)))

    # Work buffers are kept between calls: fresh multi-megabyte arrays cost page faults on every
    # call, which dominated the time of a trial.
    def _buffer(self, name: str, shape: tuple, dtype, zero: bool = False) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = np.zeros(shape, dtype=dtype) if zero else np.empty(shape, dtype=dtype)
        return buf

    def _symmetric_sum(self, line: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """sum over |k| <= K of weights[|k|] * cell[t + k] for the cells of the padded line.

        Short kernels go offset by offset; longer ones through an FFT, whose cost does not grow
        with K (in float32 the two agree to about 1e-6).
        """
        K, pad, length = len(weights) - 1, self.max_delta, self.length
        if K > FFT_ABOVE:
            return _fft_symmetric_sum(line[:, pad - K:pad + length + K], weights)[:, K:K + length]
        w = weights.astype(line.dtype)
        shape = (line.shape[0], length)
        out = self._buffer("sum", shape, line.dtype)
        tmp = self._buffer("tmp", shape, line.dtype)
        np.multiply(line[:, pad:pad + length], w[0], out=out)
        for k in range(1, K + 1):
            np.add(line[:, pad - k:pad - k + length], line[:, pad + k:pad + k + length], out=tmp)
            tmp *= w[k]
            out += tmp
        return out

    def _box_sum(self, line: np.ndarray, delta: int) -> np.ndarray:
        """sum over |k| <= delta of cell[t + k], from one cumulative sum (float64 against cancellation)."""
        pad, length = self.max_delta, self.length
        # csum[:, j] = sum of line[:, :j]; the window of cell t is csum[t + pad + delta + 1] - csum[t + pad - delta]
        csum = self._buffer("csum", (line.shape[0], line.shape[1] + 1), np.float64)
        csum[:, 0] = 0
        np.cumsum(line, axis=1, dtype=np.float64, out=csum[:, 1:])
        out = self._buffer("sum", (line.shape[0], length), line.dtype)
        np.subtract(csum[:, pad + delta + 1:pad + delta + 1 + length], csum[:, pad - delta:pad - delta + length],
                    out=out, casting="same_kind")
        return out


def _fft_symmetric_sum(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Linear (not circular) correlation of each row of x with the symmetric kernel, via scipy.fft."""
    import scipy.fft

    K, length = len(weights) - 1, x.shape[1]
    n = scipy.fft.next_fast_len(length + K, real=True)
    kernel = np.zeros(n)
    kernel[:K + 1] = weights
    kernel[n - K:] = weights[1:][::-1]  # negative offsets wrap around
    spectrum = scipy.fft.rfft(kernel).astype(np.result_type(x.dtype, np.complex64))
    f = scipy.fft.rfft(x, n=n, axis=1)
    f *= spectrum
    return scipy.fft.irfft(f, n=n, axis=1)[:, :length].astype(x.dtype, copy=False)


def smooth(values, videos, frames, kind: str, delta: int = 0, sigma: float | None = None) -> np.ndarray:
    """One-off smoothing of values (n,) or (n, C) over frames of the same video (see the module doc)."""
    return TemporalSmoother(videos, frames, max_delta=max(int(delta), 0))(values, kind, delta, sigma)
