"""Lanczos-4 resizing of uint8 images, computed the way OpenCV's `cv2.resize(..., INTER_LANCZOS4)` does.

The Real-ESRGAN reference (`RealESRGANer.enhance`) runs the x4 network, rounds its output to uint8 and,
when the requested scale is not 4, resizes that image with `cv2.INTER_LANCZOS4`. This module repeats
that resize without depending on OpenCV:

- source coordinate of output pixel d: ``f = float32((d + 0.5) * src/dst - 0.5)``, taps at
  ``floor(f) - 3 ... floor(f) + 4``, indices outside the image clamped to the edge;
- weights ``sinc(t) * sinc(t / 4)`` at the 8 tap distances, normalised to sum 1 (no widening of the
  kernel when shrinking, unlike PIL's LANCZOS, which is Lanczos-3 with antialiasing);
- OpenCV's fixed-point arithmetic for 8-bit images: weights rounded to multiples of 1/2048, a
  horizontal pass into integers, a vertical pass, then ``(v + 2**21) >> 22`` saturated to 0..255.

tests/test_sr_resize.py checks it against a float64 Lanczos-4 written from the formula (within 1 grey
level) and, where OpenCV is installed, against cv2.resize itself.
"""
from __future__ import annotations

import numpy as np

_COEF_BITS = 11  # OpenCV INTER_RESIZE_COEF_BITS: weights are multiples of 1/2048
_COEF_SCALE = 1 << _COEF_BITS
_SHIFT = 2 * _COEF_BITS  # both passes' weights multiply
_ROW_BLOCK = 256  # output rows per vertical block, bounds memory for large images

# cos/sin of the 8 phase offsets used to evaluate sin(pi * t / 4) from one sine and cosine.
_S45 = 0.70710678118654752440084436210485
_PHASE = np.array(
    [[1, 0], [-_S45, -_S45], [0, 1], [_S45, -_S45], [-1, 0], [_S45, _S45], [0, -1], [-_S45, _S45]],
    dtype=np.float64,
)


def lanczos4_weights(frac: np.ndarray) -> np.ndarray:
    """Normalised float32 Lanczos-4 weights (n, 8) of taps -3..4 for fractional offsets `frac` (n,)."""
    frac = np.asarray(frac, dtype=np.float32)
    y0 = -(frac.astype(np.float64) + 3) * np.pi * 0.25
    s0, c0 = np.sin(y0)[:, None], np.cos(y0)[:, None]
    t = (frac[:, None] + np.float32(3)) - np.arange(8, dtype=np.float32)[None, :]  # tap distances
    y = -t.astype(np.float64) * np.pi * 0.25
    with np.errstate(divide="ignore", invalid="ignore"):
        w = ((_PHASE[:, 0] * s0 + _PHASE[:, 1] * c0) / (y * y)).astype(np.float32)
    w[np.abs(t) < 1e-6] = np.float32(1e30)  # the sample falls on a tap: that tap takes all the weight
    total = np.zeros(len(frac), dtype=np.float32)
    for k in range(8):  # float32 running sum in tap order
        total += w[:, k]
    return w * (np.float32(1) / total)[:, None]


def _axis_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (dst, 8) clamped to the image and fixed-point weights (dst, 8) of one axis."""
    scale = 1.0 / (dst / src)
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(pos)
    frac = (pos - start).astype(np.float32)
    weights = lanczos4_weights(frac) * np.float32(_COEF_SCALE)
    fixed = np.clip(np.rint(weights), -32768, 32767).astype(np.int64)
    idx = np.clip(start.astype(np.int64)[:, None] + np.arange(-3, 5)[None, :], 0, src - 1)
    return idx, fixed


def resize_lanczos4(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 image (H, W) or (H, W, C) to `size` = (width, height) like cv2 INTER_LANCZOS4."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"resize_lanczos4 expects uint8, got {image.dtype}")
    out_w, out_h = int(size[0]), int(size[1])
    if out_w <= 0 or out_h <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    gray = image.ndim == 2
    img = image[:, :, None] if gray else image  # (H, W, C)
    h, w = img.shape[:2]
    xi, xw = _axis_taps(w, out_w)
    yi, yw = _axis_taps(h, out_h)

    # Horizontal pass over the source rows the vertical pass needs: integers scaled by 2**11.
    rows_needed = np.unique(yi)
    src = img[rows_needed].astype(np.int64)  # (R, W, C)
    horiz = np.zeros((len(rows_needed), out_w, img.shape[2]), dtype=np.int64)
    for k in range(8):
        horiz += src[:, xi[:, k], :] * xw[:, k][None, :, None]
    row_of = np.searchsorted(rows_needed, yi)  # (out_h, 8) positions in `horiz`

    out = np.empty((out_h, out_w, img.shape[2]), dtype=np.uint8)
    for r0 in range(0, out_h, _ROW_BLOCK):
        r1 = min(r0 + _ROW_BLOCK, out_h)
        acc = np.zeros((r1 - r0, out_w, img.shape[2]), dtype=np.int64)
        for k in range(8):
            acc += horiz[row_of[r0:r1, k]] * yw[r0:r1, k][:, None, None]
        out[r0:r1] = np.clip((acc + (1 << (_SHIFT - 1))) >> _SHIFT, 0, 255)
    return out[:, :, 0] if gray else out
