"""Small stores with labels, video/frame structure and prediction runs, for the blend tests,
notebooks and benchmark. Predictions are noisy views of a hidden per-frame truth that changes in
segments, so blending, thresholds and smoothing all have something to gain."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from store.feature_store import STATUS_INVALID, STATUS_OK, FeatureStore
from store.schema import (
    AFFECTNET_CLASSES, AFFECTNET_TO_LSD, AFFECTNET_TO_MTL, AU_NAMES, LSD_CLASSES, LSD_FOLDERS, MTL_EXPR_CLASSES, VA_NAMES,
)

LOGIT_SOURCE = "enet_b0_8_va_mtl"


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate_mtl(rng, n_videos: int, n_frames: int, prefix: str) -> dict:
    """Hidden truth for videos with gaps in their frame numbers."""
    keys, videos, frames, expr, va, au = [], [], [], [], [], []
    for v in range(n_videos):
        video = f"{prefix}{v:03d}"
        f = np.flatnonzero(rng.random(n_frames) < 0.9) + 1  # ~10% of frames missing
        m = len(f)
        e = np.empty(m, dtype=np.int64)
        i = 0
        while i < m:
            length = int(rng.integers(5, 25))
            e[i:i + length] = rng.integers(0, 8)
            i += length
        walk = np.cumsum(rng.normal(0, 0.08, (m, 2)), axis=0) + rng.uniform(-0.5, 0.5, 2)
        a = (rng.random((m, 12)) < 0.15).astype(np.int8)
        a[:, :4] |= (e[:, None] == np.arange(4)).astype(np.int8)  # AUs follow expressions a little
        keys += [f"{video}/{k:05d}.jpg" for k in f]
        videos += [video] * m
        frames.append(f)
        expr.append(e)
        va.append(np.clip(walk, -1, 1))
        au.append(a)
    return {"keys": keys, "videos": videos, "frames": np.concatenate(frames), "expr": np.concatenate(expr),
            "va": np.concatenate(va).astype(np.float32), "au": np.concatenate(au)}


def predictions_for(rng, truth: dict, strength: float, noise: float) -> dict:
    n = len(truth["keys"])
    expr = _softmax(strength * np.eye(8)[truth["expr"]] + rng.normal(0, noise, (n, 8)))
    va = np.clip(truth["va"] * strength / 3 + rng.normal(0, noise / 4, (n, 2)), -1, 1)
    au = _sigmoid(strength * (2 * truth["au"] - 1) + rng.normal(0, noise, (n, 12)) + rng.normal(0, 0.5, 12))
    return {"expr": expr.astype(np.float32), "va": va.astype(np.float32), "au": au.astype(np.float32)}


def write_mtl_store(path, *, seed: int = 0, n_videos: int = 8, n_frames: int = 60,
                    splits=("val", "test")) -> Path:
    """A store with splits (val labelled with missing codes, test unlabelled), runs "mlp" (expr,
    va, au), "openface" (expr, au; NaN on ~10% of rows) and logits source LOGIT_SOURCE."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    with FeatureStore.open(path, "a") as st:
        st.create_source(LOGIT_SOURCE, identity={"backbone": "synthetic"},
                         arrays={"embeddings": (4, None), "logits": (10, list(AFFECTNET_CLASSES) + list(VA_NAMES))})
        for split in splits:
            truth = simulate_mtl(rng, n_videos, n_frames, f"{split}_video")
            n = len(truth["keys"])
            labels = {}
            if split != "test":
                expr = truth["expr"].copy()
                expr[rng.random(n) < 0.3] = -1
                va = truth["va"].copy()
                va[rng.random(n) < 0.1] = np.nan
                au = truth["au"].copy()
                au[rng.random(n) < 0.1] = -1
                labels = {"expr": expr, "va": va, "au": au}
            rows = st.add_samples(truth["keys"], split=split, videos=truth["videos"], frames=truth["frames"],
                                  labels=labels)
            mlp = predictions_for(rng, truth, 2.0, 1.6)
            of = predictions_for(rng, truth, 1.2, 1.4)
            failed = rng.random(n) < 0.1
            for task in ("expr", "va", "au"):
                names = {"expr": MTL_EXPR_CLASSES, "va": VA_NAMES, "au": AU_NAMES}[task]
                st.write_predictions("mlp", task, mlp[task], rows, names=names)
                if task != "va":
                    v = of[task].copy()
                    v[failed] = np.nan
                    st.write_predictions("openface", task, v, rows, names=names)
            pre = predictions_for(rng, truth, 1.0, 1.5)
            logits = np.zeros((n, 10), dtype=np.float32)
            logits[:, list(AFFECTNET_TO_MTL)] = np.log(pre["expr"])
            logits[:, 8:] = pre["va"] * 1.3  # raw VA logits may leave [-1, 1]
            status = np.where(rng.random(n) < 0.02, STATUS_INVALID, STATUS_OK)
            st.write_features(LOGIT_SOURCE, rows, {"embeddings": rng.normal(size=(n, 4)), "logits": logits}, status)
    return path


def write_lsd_store(path, *, seed: int = 0, n_val: int = 240, n_test: int = 60) -> Path:
    """An LSD store: class-folder keys, no frame numbers, run "finetuned" (lsd) and LOGIT_SOURCE."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    with FeatureStore.open(path, "a") as st:
        st.create_source(LOGIT_SOURCE, identity={"backbone": "synthetic"},
                         arrays={"embeddings": (4, None), "logits": (10, list(AFFECTNET_CLASSES) + list(VA_NAMES))})
        for split, n in (("val", n_val), ("test", n_test)):
            y = rng.integers(0, 6, n)
            if split == "val":
                keys = [f"validation_set_real_images/{LSD_FOLDERS[c]}/{i:05d}.jpg" for i, c in enumerate(y)]
                videos = [LSD_FOLDERS[c] for c in y]
                labels = {"lsd": y}
            else:
                keys = [f"{i:05d}.jpg" for i in range(n)]
                videos = ["test"] * n
                labels = {}
            rows = st.add_samples(keys, split=split, videos=videos, frames=[-1] * n, labels=labels)
            ft = _softmax(2.0 * np.eye(6)[y] + rng.normal(0, 1.3, (n, 6)))
            st.write_predictions("finetuned", "lsd", ft, rows, names=LSD_CLASSES)
            logits = rng.normal(0, 1.0, (n, 10)).astype(np.float32)
            logits[np.arange(n), np.asarray(AFFECTNET_TO_LSD)[y]] += 1.5
            st.write_features(LOGIT_SOURCE, rows, {"embeddings": rng.normal(size=(n, 4)), "logits": logits},
                              np.full(n, STATUS_OK))
    return path


def write_expr_store(path, *, n_rows: int = 26876, n_videos: int = 70, n_runs: int = 3, n_labelled: int = 15440,
                     seed: int = 0) -> Path:
    """One "val" split of exactly n_rows frames (s-Aff-Wild2 validation sized by default: 26,876 rows,
    15,440 with an expression label) and n_runs expr runs "run0", "run1", ... of varying quality."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n_rows), n_videos - 1, replace=False))
    lengths = np.diff(np.concatenate([[0], cuts, [n_rows]]))
    keys, videos, frames, expr = [], [], [], []
    for v, m in enumerate(lengths):
        f = np.cumsum(1 + (rng.random(m) < 0.05))  # a few missing frames
        e = np.repeat(rng.integers(0, 8, m // 5 + 1), rng.integers(5, 40, m // 5 + 1))[:m]
        e = np.concatenate([e, np.full(m - len(e), e[-1] if len(e) else 0)])
        keys += [f"video{v:03d}/{k:05d}.jpg" for k in f]
        videos += [f"video{v:03d}"] * m
        frames.append(f)
        expr.append(e)
    truth = np.concatenate(expr)
    y = truth.copy()
    y[rng.permutation(n_rows)[n_labelled:]] = -1
    with FeatureStore.open(Path(path), "a") as st:
        rows = st.add_samples(keys, split="val", videos=videos, frames=np.concatenate(frames), labels={"expr": y})
        for r in range(n_runs):
            p = _softmax((1.0 + 0.5 * r) * np.eye(8)[truth] + rng.normal(0, 1.5, (n_rows, 8)))
            st.write_predictions(f"run{r}", "expr", p.astype(np.float32), rows, names=MTL_EXPR_CLASSES)
    return Path(path)
