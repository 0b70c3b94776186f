"""A synthetic s-Aff-Wild2-like dataset: cartoon faces drawn from known expression, AU and VA parameters.

It is the embedded default of the demo: it needs no download, has the ABAW4 MTL layout
(`cropped_aligned/<video>/<00001>.jpg`, annotation files with the real missing-label codes and
patterns), and its labels are a known function of what is drawn, so heads trained on features of
the faces must beat chance. Videos are sequences: expressions last for segments of frames and their
intensity drifts smoothly, so temporal smoothing helps, as on real videos.

    write_dataset("demo/data", seed=0)   # -> annotation files + images, returns their paths
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from store.schema import AU_NAMES, LSD_FOLDERS, MTL_EXPR_CLASSES

HEADER = "image,valence,arousal,expression," + ",".join(AU_NAMES)
TEST_HEADER = "image,valence,arousal,expression,aus"

# AU prototypes per MTL class (EMFACS-style), in AU_NAMES order:
#            AU1 AU2 AU4 AU6 AU7 AU10 AU12 AU15 AU23 AU24 AU25 AU26
AU_PROTOTYPES = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # Neutral
    [0, 0, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0],  # Anger
    [0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0],  # Disgust
    [1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1],  # Fear
    [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0],  # Happiness
    [1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0],  # Sadness
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],  # Surprise
    [0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0],  # Other
], dtype=np.float32)
VA_PROTOTYPES = np.array([
    [0.0, 0.0], [-0.6, 0.7], [-0.6, 0.4], [-0.5, 0.7], [0.7, 0.4], [-0.6, -0.3], [0.2, 0.8], [-0.1, 0.2],
], dtype=np.float32)
EXPR_PRIOR = np.array([0.30, 0.05, 0.04, 0.04, 0.20, 0.12, 0.08, 0.17])  # roughly Aff-Wild2's imbalance


@dataclass(frozen=True)
class SplitSize:
    videos: int
    frames: int  # frames per video before gaps


DEFAULT_SIZES = {"train": SplitSize(16, 80), "val": SplitSize(6, 80), "test": SplitSize(6, 80)}
FILES = {
    "train": "training_set_annotations.txt",
    "val": "validation_set_annotations.txt",
    "test": "MTL_Challenge_test_set_release.txt",
}


def _smooth_walk(rng, n, scale, lo, hi):
    x = np.cumsum(rng.normal(0, scale, n)) + rng.uniform(lo, hi)
    return np.clip(x, lo, hi)


def simulate_video(rng: np.random.Generator, n_frames: int) -> dict:
    """Per-frame parameters of one video: expression, intensity, continuous AU activations, labels."""
    expr = np.empty(n_frames, dtype=np.int64)
    i = 0
    while i < n_frames:
        length = int(rng.integers(8, 30))
        expr[i:i + length] = rng.choice(8, p=EXPR_PRIOR)
        i += length
    intensity = _smooth_walk(rng, n_frames, 0.05, 0.45, 1.0)
    idiosyncrasy = rng.normal(0, 0.1, 12)
    act = AU_PROTOTYPES[expr] * intensity[:, None] + idiosyncrasy + rng.normal(0, 0.12, (n_frames, 12))
    act = np.clip(act, 0, 1.2)
    au = (act > 0.45).astype(np.int8)
    offset = rng.normal(0, 0.08, 2)
    va = VA_PROTOTYPES[expr] * intensity[:, None] + offset + rng.normal(0, 0.05, (n_frames, 2))
    va = np.clip(va, -1, 1).astype(np.float32)
    return {"expr": expr, "act": act, "au": au, "va": va}


def draw_face(rng: np.random.Generator, act: np.ndarray, style: dict, size: int = 112) -> Image.Image:
    """A cartoon face whose brows, eyes, cheeks and mouth follow the 12 AU activations."""
    a = dict(zip(AU_NAMES, act))
    scale = 4  # draw large, then downsample: smooth edges like a real crop
    S = size * scale
    img = Image.new("RGB", (S, S), style["background"])
    d = ImageDraw.Draw(img)
    cx = S / 2 + style["dx"] * scale + rng.normal(0, 1.0) * scale
    cy = S / 2 + style["dy"] * scale + rng.normal(0, 1.0) * scale
    fw, fh = style["face_w"] * scale, style["face_h"] * scale
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=style["skin"])
    dark = (40, 30, 25)
    # eyes: open wider with AU1/AU2/AU26 (surprise, fear), narrower with AU6/AU7
    eye_open = 5.0 + 3.0 * (a["AU1"] + a["AU2"]) / 2 + 2.0 * a["AU26"] - 2.5 * a["AU6"] - 2.5 * a["AU7"]
    eye_open = max(eye_open, 1.0) * scale
    ey = cy - 0.25 * fh
    for side in (-1, 1):
        ex = cx + side * 0.42 * fw
        d.ellipse([ex - 7 * scale, ey - eye_open, ex + 7 * scale, ey + eye_open], fill=(245, 245, 240))
        d.ellipse([ex - 3 * scale, ey - 3 * scale, ex + 3 * scale, ey + 3 * scale], fill=dark)
        # brows: inner end up with AU1, outer end up with AU2, both down and inwards with AU4
        inner_y = ey - (12 + 6 * a["AU1"] - 5 * a["AU4"]) * scale
        outer_y = ey - (12 + 6 * a["AU2"] - 1 * a["AU4"]) * scale
        inner_x = ex - side * (8 - 2 * a["AU4"]) * scale
        outer_x = ex + side * 9 * scale
        d.line([inner_x, inner_y, outer_x, outer_y], fill=dark, width=int(2.5 * scale))
        if a["AU6"] > 0.3:  # cheek raiser: arcs under the eyes
            d.arc([ex - 8 * scale, ey + 3 * scale, ex + 8 * scale, ey + 12 * scale], 200, 340,
                  fill=(200, 120, 110), width=int(1.5 * scale))
    # nose
    d.line([cx, cy - 0.1 * fh, cx - 3 * scale, cy + 0.15 * fh, cx + 2 * scale, cy + 0.17 * fh],
           fill=(150, 100, 90), width=int(1.5 * scale))
    # mouth: corners up with AU12, down with AU15; narrower with AU23/AU24; open with AU25/AU26;
    # upper lip raised with AU10
    my = cy + 0.5 * fh
    half_w = (13 + 5 * a["AU12"] - 4 * a["AU23"] - 3 * a["AU24"]) * scale
    corner = (-6 * a["AU12"] + 5 * a["AU15"]) * scale
    gap = (1.0 * a["AU25"] * 3 + 7 * a["AU26"]) * scale
    upper = my - 3 * a["AU10"] * scale
    lip = (150, 60, 60)
    if gap > 1.5 * scale:
        d.polygon([(cx - half_w, my + corner), (cx, upper - gap / 2), (cx + half_w, my + corner),
                   (cx, my + gap)], fill=(60, 20, 20))
    d.line([cx - half_w, my + corner, cx, upper - gap / 2, cx + half_w, my + corner], fill=lip,
           width=int((3 - 1.5 * a["AU24"]) * scale))
    d.line([cx - half_w, my + corner, cx, my + gap + 2 * scale, cx + half_w, my + corner], fill=lip,
           width=int(2 * scale))
    img = img.rotate(style["tilt"] + rng.normal(0, 1.5), resample=Image.BILINEAR, fillcolor=style["background"])
    img = img.resize((size, size), Image.BILINEAR).filter(ImageFilter.GaussianBlur(0.4))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 4.0, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _video_style(rng) -> dict:
    tone = rng.uniform(0.45, 1.0)
    return {
        "background": tuple(int(x) for x in rng.integers(20, 230, 3)),
        "skin": (int(235 * tone), int(190 * tone), int(160 * tone)),
        "dx": rng.normal(0, 3), "dy": rng.normal(0, 3),
        "face_w": rng.uniform(34, 40), "face_h": rng.uniform(44, 50), "tilt": rng.normal(0, 6),
    }


def _missing_segments(rng, n, fraction):
    """A mask of n frames with about `fraction` missing, in contiguous runs (as in Aff-Wild2)."""
    miss = np.zeros(n, dtype=bool)
    if fraction <= 0:
        return miss
    while miss.mean() < fraction:
        length = int(rng.integers(5, max(6, n // 3)))
        start = int(rng.integers(0, n))
        miss[start:start + length] = True
    return miss


# Fraction of frames whose label is missing, per split and task (the real train split misses about
# 27% VA, 36% EXPR, 27% AU; val misses 43% EXPR).
MISSING = {"train": {"va": 0.27, "expr": 0.36, "au": 0.27}, "val": {"va": 0.0, "expr": 0.43, "au": 0.0}}


def write_dataset(out, *, seed: int = 0, sizes: dict[str, SplitSize] | None = None, progress: bool = True) -> dict:
    """Write images and annotation files under `out`; return {split: annotation file path, "images": root}.

    Already written images are kept (re-running with the same seed rewrites the same files).
    """
    out = Path(out)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    images = out / "cropped_aligned"
    rng = np.random.default_rng(seed)
    total = sum(s.videos * s.frames for s in sizes.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="synthetic faces", leave=False)
    paths = {"images": images}
    video_no = 0
    for split, size in sizes.items():
        lines = [TEST_HEADER if split == "test" else HEADER]
        for _ in range(size.videos):
            video_no += 1
            video = f"{video_no:03d}-{split}"
            sim = simulate_video(rng, size.frames)
            style = _video_style(rng)
            keep = rng.random(size.frames) > 0.04  # a few frames without a face, as in cropped_aligned
            missing = {t: _missing_segments(rng, size.frames, f) for t, f in MISSING.get(split, {}).items()}
            (images / video).mkdir(parents=True, exist_ok=True)
            for i in range(size.frames):
                face = draw_face(rng, sim["act"][i], style)
                if bar is not None:
                    bar.update(1)
                if not keep[i]:
                    continue
                name = f"{video}/{i + 1:05d}.jpg"
                face.save(images / name, quality=90)
                if split == "test":
                    lines.append(f"{name},,,,")
                    continue
                v, ar = sim["va"][i]
                va = "-5,-5" if missing["va"][i] else f"{v:.4f},{ar:.4f}"
                ex = -1 if missing["expr"][i] else int(sim["expr"][i])
                au = ",".join(["-1"] * 12) if missing["au"][i] else ",".join(str(int(x)) for x in sim["au"][i])
                lines.append(f"{name},{va},{ex},{au}")
        path = out / FILES.get(split, f"{split}_annotations.txt")
        path.write_text("\n".join(lines) + "\n")
        paths[split] = path
    if bar is not None:
        bar.close()
    return paths


# LSD class i is MTL expression LSD_TO_MTL[i] (Anger ... Surprise).
LSD_TO_MTL = (1, 2, 3, 4, 5, 6)
# Per-class image counts of the demo's LSD splits: train imbalanced like the real synthetic set
# (Sadness and Happiness dominate), val smaller and flatter like the real validation images.
LSD_TRAIN_COUNTS = (40, 34, 24, 150, 290, 32)
LSD_VAL_COUNTS = (30, 20, 20, 40, 40, 30)
LSD_DIRS = {"train": "training_set_synthetic_images", "val": "validation_set_real_images"}


def write_lsd_dataset(out, *, seed: int = 0, train_counts=LSD_TRAIN_COUNTS, val_counts=LSD_VAL_COUNTS,
                      progress: bool = True) -> dict:
    """The ABAW4 learning-from-synthetic-data layout: class folders (ANGRER sic ... SURPRISE) of faces.

    The training faces are "synthetic" (flat backgrounds, strong expressions); the validation faces
    are "real" (noisier, weaker, more head tilt): a domain shift, as between the challenge's sets.
    Returns {"train": folder, "val": folder}. File names carry the split, so keys never collide.
    """
    out = Path(out)
    rng = np.random.default_rng(seed + 1)
    total = sum(train_counts) + sum(val_counts)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="synthetic LSD faces", leave=False)
    paths = {}
    for split, counts in (("train", train_counts), ("val", val_counts)):
        root = out / LSD_DIRS[split]
        for cls, n in enumerate(counts):
            folder = root / LSD_FOLDERS[cls]
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                expr = LSD_TO_MTL[cls]
                weak = 0.6 if split == "val" else 1.0
                act = AU_PROTOTYPES[expr] * rng.uniform(0.6, 1.0) * weak + rng.normal(0, 0.12 * (2 - weak), 12)
                style = _video_style(rng)
                if split == "val":
                    style["tilt"] *= 2
                face = draw_face(rng, np.clip(act, 0, 1.2), style)
                face.save(folder / f"{split}_{j + 1:05d}.jpg", quality=90)
                if bar is not None:
                    bar.update(1)
        paths[split] = root
    if bar is not None:
        bar.close()
    return paths


__all__ = ["AU_PROTOTYPES", "DEFAULT_SIZES", "LSD_DIRS", "MTL_EXPR_CLASSES", "SplitSize", "VA_PROTOTYPES",
           "write_dataset", "write_lsd_dataset"]
