"""Face detectors behind one small interface, so that others (RetinaFace, ...) can be added.

    det = load_detector("mtcnn", device="cpu", min_face=20)
    faces = det.detect_batch([frame1, frame2])   # RGB uint8 (H, W, 3) arrays of one size
    faces[0][0].box, .score, .landmarks          # (x0, y0, x1, y1), float, (5, 2) in image pixels

Landmarks come in the order left eye, right eye, nose tip, left mouth corner, right mouth corner
(left/right as seen in the image), the order `featurize.face_align.TEMPLATE_112` expects.

A detector registers a loader in DETECTORS: name -> (loader, description). Its weights must ship with
an installed package (no download at run time), so that `featurize faces` works offline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from featheads.core.errors import UserError

EXTRA_HINT = 'pip install -e ".[faces]"'


@dataclass(frozen=True)
class Face:
    """One detected face in image pixels."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    landmarks: np.ndarray  # (5, 2) float64

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class MtcnnDetector:
    """MTCNN (Zhang et al. 2016) from facenet-pytorch, whose P/R/O-Net weights ship in its wheel.

    Frames of one size are detected as one batch (one image pyramid for the batch)."""

    name = "mtcnn"

    def __init__(self, device: str = "cpu", min_face: int = 20, thresholds=(0.6, 0.7, 0.7), factor=0.709):
        try:
            import torch
            from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
            from facenet_pytorch.models.utils.detect_face import detect_face
        except ImportError as e:
            raise UserError(f"the mtcnn detector needs facenet-pytorch ({e}); install it with {EXTRA_HINT}") from None
        self._torch = torch
        self._detect_face = detect_face
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = (net().to(self.device).eval() for net in (PNet, RNet, ONet))
        self.min_face = int(min_face)
        self.thresholds = list(thresholds)
        self.factor = float(factor)

    def identity(self) -> dict:
        from importlib.metadata import version

        return {"detector": self.name, "package": f"facenet-pytorch {version('facenet-pytorch')}",
                "min_face": self.min_face, "thresholds": self.thresholds, "factor": self.factor}

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces of each image; images of one size are detected together (a video whose size
        changes midway is split by size; an image smaller than --min-face has none)."""
        out: list[list[Face]] = [[] for _ in images]
        by_shape: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            if min(img.shape[:2]) >= self.min_face:  # smaller: no pyramid level, no face
                by_shape.setdefault(img.shape, []).append(i)
        for idx in by_shape.values():
            for i, faces in zip(idx, self._detect_same_size([images[i] for i in idx])):
                out[i] = faces
        return out

    def _detect_same_size(self, images: list[np.ndarray]) -> list[list[Face]]:
        batch = np.ascontiguousarray(np.stack(images))
        with self._torch.inference_mode():
            boxes, points = self._detect_face(batch, self.min_face, self.pnet, self.rnet, self.onet,
                                              self.thresholds, self.factor, self.device)
        out = []
        for b, p in zip(boxes, points):
            faces = []
            for row, lm in zip(np.asarray(b, dtype=np.float64).reshape(-1, 5),
                               np.asarray(p, dtype=np.float64).reshape(-1, 5, 2)):
                faces.append(Face(box=tuple(float(v) for v in row[:4]), score=float(row[4]), landmarks=lm))
            out.append(faces)
        return out


DETECTORS: dict[str, tuple[Callable[..., object], str]] = {
    "mtcnn": (MtcnnDetector, "MTCNN (facenet-pytorch 2.5.3 weights in the wheel): boxes, scores, 5 landmarks"),
}


def load_detector(name: str, *, device: str = "cpu", min_face: int = 20):
    if name not in DETECTORS:
        raise UserError(f"--detector {name!r}: unknown; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name][0](device=device, min_face=min_face)
