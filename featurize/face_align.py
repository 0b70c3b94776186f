"""From a detected face to a square crop: plain (box + margin) or aligned (five landmarks -> template).

    crop = plain_crop(image, box, size=112, margin=0.0)                 # PIL image, size x size
    matrix = similarity_to_template(landmarks, size=112, margin=0.0)    # 2x3, image -> crop pixels
    crop = warp(image, matrix, size=112)

The template is the five-point ArcFace/InsightFace layout for 112x112 crops (eye centres, nose tip,
mouth corners), the convention of aligned face crops such as Aff-Wild2's `cropped_aligned`. A margin
m shrinks the template towards the crop centre by 1/(1+m), so the face keeps the same place but more
of the head and background is kept; for plain crops the square around the box grows by (1+m).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# (x, y) in a 112x112 crop: left eye, right eye, nose tip, left mouth corner, right mouth corner
# (left/right as seen in the image).
TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


def template(size: int, margin: float = 0.0) -> np.ndarray:
    """The five template points for a size x size crop with `margin` (5, 2)."""
    centre = np.array([56.0, 56.0])
    return ((TEMPLATE_112 - centre) / (1.0 + margin) + centre) * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking `src` to `dst` (Umeyama
    1991, without reflection): a 2x3 matrix M with dst ~ M @ [x, y, 1]."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (s ** 2).sum() / len(src)
    scale = np.trace(np.diag(sig) @ sign) / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def similarity_to_template(landmarks, size: int, margin: float = 0.0) -> np.ndarray:
    """2x3 matrix taking image pixels to crop pixels so that the landmarks land on the template."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template(size, margin))


def apply(matrix: np.ndarray, points) -> np.ndarray:
    """Points (n, 2) mapped by a 2x3 matrix."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ matrix[:, :2].T + matrix[:, 2]


def warp(image: Image.Image, matrix: np.ndarray, size: int) -> Image.Image:
    """The size x size crop of `image` under `matrix` (bilinear; black outside the image).

    PIL's affine transform maps output coordinates to input coordinates, so it gets the inverse.
    """
    inv = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))
    return image.transform((size, size), Image.Transform.AFFINE, data=tuple(inv[:2].ravel()),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def square_box(box, margin: float = 0.0) -> tuple[float, float, float, float]:
    """The square with the centre of `box` (x0, y0, x1, y1) and side max(w, h) * (1 + margin)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def plain_crop_matrix(box, size: int, margin: float = 0.0) -> np.ndarray:
    """2x3 matrix of the plain crop: the square box scaled to size x size (no rotation)."""
    x0, y0, x1, y1 = square_box(box, margin)
    s = size / max(x1 - x0, 1e-6)
    return np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]])


def plain_crop(image: Image.Image, box, size: int, margin: float = 0.0) -> Image.Image:
    """The square around `box` (grown by `margin`), resized to size x size; black outside the image."""
    x0, y0, x1, y1 = square_box(box, margin)
    area = tuple(int(round(v)) for v in (x0, y0, x1, y1))
    if area[2] <= area[0] or area[3] <= area[1]:
        area = (area[0], area[1], area[0] + 1, area[1] + 1)
    return image.crop(area).resize((size, size), Image.Resampling.BILINEAR)
