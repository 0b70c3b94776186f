"""Read speed of the feature store against the raw bytes: a split, a two-array feature spec, and random
temporal windows, warm (page cache) and cold, with np.fromfile / np.memmap of the same bytes as the ceiling.

    python bench/store_io.py [--rounds 3] [--repeat 3] [--workdir DIR] [--no-append]

1. Writes the synthetic s-Aff-Wild2-size store of bench/heads_scale.py (142,333 train + 26,876 val rows of
   1280-d embeddings + 10 logits, float32) and, beside it, the train split's embeddings (and logits) as raw
   little-endian float32 files.
2. Each round reads, through `FeatureStore.read_features` and from the raw files:
   - the train split's embeddings (0.73 GB),
   - the spec `embeddings+logits` of the train split (two arrays concatenated),
   - 2,000 random windows of 9 consecutive frames (the rows a temporal head's batch gathers),
   once cold (the files' pages dropped from the page cache with posix_fadvise DONTNEED) and warm (the
   fastest of --repeat reads, store and raw alike: the first touch of fresh memory can wait on the kernel
   compacting pages for transparent huge pages, which times the kernel, not the read).
3. Prints GB/s per round and the ratio store / raw measured in the same round; appends to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from heads_scale import EMB, N_LOGITS, SOURCE, build_store, machine  # noqa: E402

WINDOWS, WINDOW = 2000, 9


def drop_cache(*paths: Path) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def write_raw(store_path: Path, workdir: Path) -> tuple[np.ndarray, Path, Path]:
    from store import FeatureStore

    with FeatureStore.open(store_path) as st:
        rows = st.rows("train")
        E, _ = st.read_features(f"{SOURCE}.embeddings", rows)
        L, _ = st.read_features(f"{SOURCE}.logits", rows)
    emb, logits = workdir / "train_embeddings.f32", workdir / "train_logits.f32"
    E.astype("<f4").tofile(emb)
    L.astype("<f4").tofile(logits)
    return rows, emb, logits


def window_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.integers(WINDOW // 2, n - WINDOW // 2, size=WINDOWS)
    return np.unique((centres[:, None] + np.arange(-(WINDOW // 2), WINDOW // 2 + 1)).ravel())


def one_round(store_path: Path, rows: np.ndarray, emb: Path, logits: Path, seed: int, repeat: int) -> dict:
    from store import FeatureStore

    n = len(rows)
    out = {}
    cases = {
        "split": (f"{SOURCE}.embeddings", rows,
                  lambda: np.fromfile(emb, dtype="<f4").reshape(n, EMB)),
        "spec": (f"{SOURCE}.embeddings+{SOURCE}.logits", rows,
                 lambda: np.concatenate([np.fromfile(emb, dtype="<f4").reshape(n, EMB),
                                         np.fromfile(logits, dtype="<f4").reshape(n, N_LOGITS)], axis=1)),
    }
    win = window_rows(n, seed)
    cases["windows"] = (f"{SOURCE}.embeddings", rows[win],
                        lambda: np.asarray(np.memmap(emb, dtype="<f4", mode="r", shape=(n, EMB))[win]))
    for name, (spec, which, raw) in cases.items():
        for temp in ("cold", "warm"):
            t_store = t_raw = float("inf")
            for _ in range(1 if temp == "cold" else repeat):
                X = R = None  # the last read's arrays go back before the next read allocates
                if temp == "cold":
                    drop_cache(store_path, emb, logits)
                with FeatureStore.open(store_path) as st:
                    t, (X, _) = timed(lambda: st.read_features(spec, which))
                t_store = min(t_store, t)
                if temp == "cold":
                    drop_cache(store_path, emb, logits)
                t, R = timed(raw)
                t_raw = min(t_raw, t)
            assert X.shape == R.shape and np.array_equal(X, R), f"{name}: the store and the raw bytes differ"
            gb = X.nbytes / 1e9
            out[(name, temp)] = {"gb": gb, "store": gb / t_store, "raw": gb / t_raw}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3,
                    help="warm reads per round, store and raw alike; the fastest counts (as timeit does) [3]")
    ap.add_argument("--workdir", default=None, help="where the synthetic store goes [a temporary folder]")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="store_io_", dir=a.workdir) as tmp:
        workdir = Path(tmp)
        store_path = workdir / "saffwild2_synthetic.h5"
        t_store = build_store(store_path)
        rows, emb, logits = write_raw(store_path, workdir)
        rounds = [one_round(store_path, rows, emb, logits, seed=r, repeat=a.repeat) for r in range(a.rounds)]
    lines = ["| read | cache | GB | store GB/s (per round) | raw GB/s (per round) | store / raw (per round) |",
             "|---|---|---|---|---|---|"]
    for key in rounds[0]:
        per = [r[key] for r in rounds]
        lines.append(f"| {key[0]} | {key[1]} | {per[0]['gb']:.3f} | "
                     + ", ".join(f"{p['store']:.2f}" for p in per) + " | "
                     + ", ".join(f"{p['raw']:.2f}" for p in per) + " | "
                     + ", ".join(f"{p['store'] / p['raw']:.2f}" for p in per) + " |")
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        cmd = "python bench/store_io.py " + " ".join(sys.argv[1:])
        section = (f"\n## store_io ({started})\n\nMachine: {info}.\nCommand: `{cmd.strip()}`\n"
                   f"Synthetic s-Aff-Wild2-size store written in {t_store:.0f} s. split: the train split's "
                   f"embeddings ({len(rows):,} x {EMB}); spec: embeddings+logits; windows: {WINDOWS:,} random "
                   f"windows of {WINDOW} frames. Raw: np.fromfile (split, spec) / np.memmap gather (windows) of "
                   f"the same float32 bytes; cold: pages dropped with posix_fadvise before each read; warm: the "
                   f"fastest of {a.repeat} reads, store and raw alike.\n\n"
                   f"{table}\n\nLoad average at the end: {os.getloadavg()[0]:.1f}.\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
