"""Small feature stores with PLANTED signal for the heads tests.

Features: a backbone-like source "tinynet" with embeddings (n, 24) and logits (n, 10), where
    expr = argmax(E @ A + noise) over 8 classes           (A fixed by the seed)
    va   = tanh(L[:, 8:10] * 1.5 + noise)                 (the last two logits carry VA, as in MT-EmotiEffNet)
    au_j = 1[E @ B_j + noise > q_j]                       (q_j: quantiles giving different base rates)
    lsd  = argmax(E @ C + noise) over 6 classes           (make_lsd_store)
Missing labels: ~30% of rows miss expr, ~20% miss VA, ~20% miss the AU vector, in any combination;
a few rows have invalid features (status 2). Splits: train, val (labelled) and test (no labels);
videos of 40 frames so that grouped early stopping has groups to hold out.
"""
from __future__ import annotations

import numpy as np

from store.feature_store import STATUS_INVALID, STATUS_OK, FeatureStore

SOURCE = "tinynet"
EMB, N_LOGITS = 24, 10


def _planted(n: int, rng: np.random.Generator, W: dict):
    E = rng.normal(size=(n, EMB)).astype(np.float32)
    L = (E @ W["logit"]).astype(np.float32)
    L[:, 8:10] = rng.normal(size=(n, 2))
    expr = np.argmax(E @ W["expr"] + rng.normal(scale=0.7, size=(n, 8)), axis=1)
    va = np.tanh(1.5 * L[:, 8:10] + rng.normal(scale=0.3, size=(n, 2))).astype(np.float32)
    au_score = E @ W["au"] + rng.normal(scale=0.6, size=(n, 12))
    au = (au_score > W["au_q"]).astype(np.int8)
    lsd = np.argmax(E @ W["lsd"] + rng.normal(scale=0.7, size=(n, 6)), axis=1)
    return E, L, expr, va, au, lsd


def _weights(seed: int) -> dict:
    rng = np.random.default_rng(seed + 1000)
    return {"logit": rng.normal(size=(EMB, N_LOGITS)), "expr": rng.normal(size=(EMB, 8)),
            "au": rng.normal(size=(EMB, 12)), "au_q": np.linspace(0.0, 2.0, 12),
            "lsd": rng.normal(size=(EMB, 6))}


def make_mtl_store(path, *, n_videos=(30, 8, 4), frames=40, seed=0, source=SOURCE) -> dict:
    """Write a store with train/val/test splits; returns the planted arrays per split."""
    rng = np.random.default_rng(seed)
    W = _weights(seed)
    truth = {}
    with FeatureStore.open(path, "a") as st:
        st.create_source(source, identity={"backbone": source, "sha256": "planted"},
                         arrays={"embeddings": (EMB, None), "logits": (N_LOGITS, [f"l{i}" for i in range(10)])})
        v0 = 0
        for split, nv in zip(("train", "val", "test"), n_videos):
            n = nv * frames
            E, L, expr, va, au, lsd = _planted(n, rng, W)
            videos = [f"video{v0 + i // frames}" for i in range(n)]
            keys = [f"{videos[i]}/{i % frames + 1:05d}.jpg" for i in range(n)]
            v0 += nv
            labels = {}
            if split != "test":
                e = expr.copy()
                e[rng.random(n) < 0.3] = -1
                v = va.copy()
                v[rng.random(n) < 0.2] = np.nan
                a = au.copy()
                a[rng.random(n) < 0.2] = -1
                labels = {"expr": e, "va": v, "au": a}
            rows = st.add_samples(keys, split=split, videos=videos, frames=np.arange(n) % frames + 1, labels=labels)
            status = np.full(n, STATUS_OK, np.int8)
            status[rng.random(n) < 0.01] = STATUS_INVALID
            st.write_features(source, rows, {"embeddings": E, "logits": L}, status)
            truth[split] = {"rows": rows, "expr": expr, "va": va, "au": au, "labels": labels, "status": status}
    return truth


def make_lsd_store(path, *, n_train=1200, n_val=400, seed=0, source=SOURCE) -> None:
    rng = np.random.default_rng(seed)
    W = _weights(seed)
    with FeatureStore.open(path, "a") as st:
        st.create_source(source, identity={"backbone": source, "sha256": "planted"},
                         arrays={"embeddings": (EMB, None), "logits": (N_LOGITS, None)})
        for split, n in (("train", n_train), ("val", n_val)):
            E, L, _, _, _, lsd = _planted(n, rng, W)
            keys = [f"{split}/{i:06d}.jpg" for i in range(n)]
            rows = st.add_samples(keys, split=split, labels={"lsd": lsd})
            st.write_features(source, rows, {"embeddings": E, "logits": L}, np.full(n, STATUS_OK, np.int8))
