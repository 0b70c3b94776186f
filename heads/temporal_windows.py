"""Windows of consecutive frames for the temporal heads, as row indices (numpy only).

A window of W = 2h + 1 slots (W odd) is centred on a frame number c of one video. Slot k
(k = 0..W-1) holds the row of the SAME video whose frame number is c - h + k, if that row exists
among the rows given and has valid features; otherwise the slot is padding (index -1, masked).
So windows never cross videos; frame order comes from the frame numbers, never from row order;
a video's first/last h frames, missing frames (gaps in the numbering) and rows with invalid
features are all padded and masked the same way. Inference uses the window centred on each row
(its middle slot is that row); training tiles every video's frame range with non-overlapping
windows (optionally shifted by an offset each epoch), so every frame is in exactly one training
window per epoch.

Everything here is an (n, W) int64 index into the rows given; features are gathered by index in
batches (heads.temporal), never copied into an (n, W, D) array.
"""
from __future__ import annotations

import numpy as np

__all__ = ["WindowIndex"]


class WindowIndex:
    """Look-up of (video, frame) -> position among the rows given.

    videos: (n,) video ids (any hashable values); frames: (n,) int frame numbers; valid: (n,) bool
    (rows with invalid features are never placed in a slot; None = all valid). Two rows of one
    video with the same frame number raise ValueError (frame numbers must identify frames).
    """

    def __init__(self, videos, frames, valid=None, *, window: int = 9):
        window = int(window)
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window={window!r}; expected an odd number of frames >= 1")
        self.window, self.half = window, window // 2
        videos = np.asarray(videos)
        frames = np.asarray(frames, dtype=np.int64)
        n = len(videos)
        if frames.shape != (n,):
            raise ValueError(f"frames has shape {frames.shape}; expected ({n},)")
        self.valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        _, self.video_code = np.unique(videos, return_inverse=True)
        self.video_code = self.video_code.astype(np.int64).reshape(n)
        self.frames = frames
        lo = frames.min(initial=0)
        self._span = int(frames.max(initial=0) - lo) + 2 * window + 2  # keys never collide across videos
        self._lo = int(lo) - window - 1
        keys = self.video_code * self._span + (frames - self._lo)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dup = np.flatnonzero(sk[1:] == sk[:-1])
        if len(dup):
            i = order[dup[0]]
            raise ValueError(f"two rows of one video have frame number {int(frames[i])}: temporal heads need "
                             f"distinct frame numbers within a video (rows {int(order[dup[0]])} and "
                             f"{int(order[dup[0] + 1])})")
        self._sorted_keys, self._order = sk, order

    def __len__(self) -> int:
        return len(self.frames)

    def at(self, video_code: np.ndarray, centre_frames: np.ndarray) -> np.ndarray:
        """(m, W) positions of the windows centred on frames `centre_frames` of videos `video_code`; -1 = pad."""
        video_code = np.asarray(video_code, np.int64).reshape(-1, 1)
        offsets = np.arange(-self.half, self.half + 1, dtype=np.int64)
        want = np.asarray(centre_frames, np.int64).reshape(-1, 1) + offsets  # (m, W) frame numbers
        keys = video_code * self._span + (want - self._lo)
        inside = (want - self._lo > 0) & (want - self._lo < self._span)
        pos = np.searchsorted(self._sorted_keys, keys)
        pos_c = np.minimum(pos, len(self._sorted_keys) - 1)
        found = inside & (len(self._sorted_keys) > 0)
        if len(self._sorted_keys):
            found &= self._sorted_keys[pos_c] == keys
        out = np.where(found, self._order[pos_c] if len(self._order) else -1, -1)
        ok = out >= 0
        out[ok] = np.where(self.valid[out[ok]], out[ok], -1)
        return out

    def centred(self, positions=None) -> np.ndarray:
        """(m, W) windows centred on rows `positions` (all rows if None); the middle slot is the row itself
        (or -1 if that row has invalid features)."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions, np.int64)
        return self.at(self.video_code[positions], self.frames[positions])

    def tiling(self, offset: int = 0) -> np.ndarray:
        """Non-overlapping windows covering every video's frame range [first, last], the grid shifted by
        `offset` (0..W-1) frames; windows without any valid row are dropped. (m, W) positions."""
        if len(self) == 0:
            return np.zeros((0, self.window), np.int64)
        n_videos = int(self.video_code.max()) + 1
        first = np.full(n_videos, np.iinfo(np.int64).max)
        last = np.full(n_videos, np.iinfo(np.int64).min)
        np.minimum.at(first, self.video_code, self.frames)
        np.maximum.at(last, self.video_code, self.frames)
        present = first <= last
        W, h = self.window, self.half
        start = first - (int(offset) % W)  # grid start: the first window begins `offset` frames early
        count = np.where(present, (last - start) // W + 1, 0)
        codes = np.repeat(np.arange(n_videos), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        centres = np.repeat(start, count) + k * W + h
        win = self.at(codes, centres)
        return win[(win >= 0).any(axis=1)]
