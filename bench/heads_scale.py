"""Heads at the real s-Aff-Wild2 size: time and peak memory of `heads fit mtl` per recipe, and the
torch MLP head against scikit-learn's MLPClassifier with the same architecture.

    python bench/heads_scale.py [--threads 2] [--recipes paper,logistic,lightgbm] [--workdir DIR] [--loaded [--busy K]]
                                [--floor]

1. Writes a synthetic feature store of the real size: 142,333 train + 26,876 val rows of 1280-d
   embeddings + 10 logits (float32) whose labels follow planted rules, with s-Aff-Wild2's label-missing
   counts (train: VA 103,917, EXPR 90,645, AU 103,316; val: VA 26,876, EXPR 15,440, AU 26,876).
   Numbers are for timing; the metrics only show that the heads learned the planted rules.
2. Runs `heads.fit_mtl` for each recipe in a fresh child process (wall time, per-head fit time,
   peak RSS from /proc/self/status VmHWM). The figure covers everything the command does: reading features from
   the store, fitting, predicting all 169,209 rows, scoring val, writing the run folder and predictions.
3. MLP vs scikit-learn MLPClassifier on a planted 8-class problem (20,000 x 1290 train, 5,000 test),
   both 1290 -> 128 ReLU -> 8 softmax, Adam lr 1e-3, batch 512, the same L2: our head is fitted for 10
   epochs; MLPClassifier is trained epoch by epoch (partial_fit, only those calls timed) until its
   test macro F1 reaches ours minus 0.005 (at most 40 epochs). Ratio = its time to equal F1 / ours.
   The same-10-epochs ratio is printed too.

4. --loaded: each recipe again while K other processes (default: one per CPU this process may use) keep
   the cores busy, with the toolkit's thread settings (featheads/core/threads.py: passive OpenMP waiting
   where the CPUs are busy when the command starts, the libraries' short default spin where they are free)
   and with OpenMP's unbounded spin-waiting (OMP_WAIT_POLICY=ACTIVE); the slowdown of each against the quiet
   run of the same invocation. With T threads and K busy processes on T cores a fair share is (K + T) / T:
   2x for 2 busy processes, 2 threads, 2 cores. The quiet run is repeated with passive waiting forced, the
   cost of waiting passively on free CPUs.

5. --floor: the lower bound of `paper` on these CPUs, each part in a fresh process: importing torch,
   scikit-learn and the heads, reading the split's features (warm), and the AU head's 1290 -> 128 matrix
   products alone (forward and weight gradient) over its 10 epochs. What no implementation escapes.

Thread count: --threads caps the threads of everything (torch, LightGBM, numpy), set as the `heads`
command does (featheads.core.threads.prepare_threads) before they are imported. Prints a table and
appends a section to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if __name__ == "__main__":  # thread counts must be set before numpy / torch are imported
    from featheads.core.threads import prepare_threads

    _p = argparse.ArgumentParser(add_help=False)
    _p.add_argument("--threads", type=int, default=2)
    prepare_threads(_p.parse_known_args()[0].threads)

import datetime as dt
import json
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(ROOT)

N_TRAIN, N_VAL = 142_333, 26_876
TRAIN_LABELLED = {"va": 103_917, "expr": 90_645, "au": 103_316}
VAL_LABELLED = {"va": 26_876, "expr": 15_440, "au": 26_876}
EMB, N_LOGITS = 1280, 10
FRAMES_PER_VIDEO = 1000
SOURCE = "enet_b0_8_va_mtl"


# ---------------------------------------------------------------------------- synthetic store


def build_store(path: Path, seed: int = 0) -> float:
    """Write the synthetic store; returns seconds."""
    from store.feature_store import STATUS_OK, FeatureStore

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    W_logit = rng.normal(size=(EMB, N_LOGITS)).astype(np.float32) / np.sqrt(EMB)
    W_expr = rng.normal(size=(EMB, 8)).astype(np.float32) / np.sqrt(EMB) * 3
    W_au = rng.normal(size=(EMB, 12)).astype(np.float32) / np.sqrt(EMB) * 3
    thr = np.linspace(0.0, 2.0, 12, dtype=np.float32)
    with FeatureStore.open(path, "a") as st:
        st.create_source(SOURCE, identity={"backbone": SOURCE, "synthetic": True},
                         arrays={"embeddings": (EMB, None), "logits": (N_LOGITS, None)})
        v0 = 0
        for split, n, labelled in (("train", N_TRAIN, TRAIN_LABELLED), ("val", N_VAL, VAL_LABELLED)):
            E = rng.standard_normal(size=(n, EMB), dtype=np.float32)
            L = E @ W_logit
            va = np.tanh(L[:, 8:10] * 2 + 0.3 * rng.standard_normal((n, 2), dtype=np.float32))
            expr = np.argmax(E @ W_expr + rng.standard_normal((n, 8), dtype=np.float32), axis=1).astype(np.int8)
            au = (E @ W_au + rng.standard_normal((n, 12), dtype=np.float32) > thr).astype(np.int8)
            for name, arr, missing in (("va", va, np.nan), ("expr", expr, -1), ("au", au, -1)):
                drop = rng.choice(n, size=n - labelled[name], replace=False)
                arr[drop] = missing
            videos = [f"video{v0 + i // FRAMES_PER_VIDEO}" for i in range(n)]
            v0 += n // FRAMES_PER_VIDEO + 1
            keys = [f"{v}/{i % FRAMES_PER_VIDEO + 1:05d}.jpg" for i, v in enumerate(videos)]
            rows = st.add_samples(keys, split=split, videos=videos, frames=np.arange(n) % FRAMES_PER_VIDEO + 1,
                                  labels={"va": va, "expr": expr, "au": au})
            st.write_features(SOURCE, rows, {"embeddings": E, "logits": L}, np.full(n, STATUS_OK, np.int8))
            del E, L
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- one recipe (child process)


def child(recipe: str, store: str, out: str) -> None:
    from heads.fitting import fit_mtl

    t0, c0 = time.perf_counter(), time.process_time()
    m = fit_mtl(store, recipe, out=out, name=Path(out).name, overwrite=True, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run = json.loads((Path(out) / "run.json").read_text())
    print(json.dumps({
        "wall_s": wall, "cpu_s": cpu, "fit_s": {k: v["fit_seconds"] for k, v in run["heads"].items()},
        "fit_cpu_s": {k: v["fit_cpu_seconds"] for k, v in run["heads"].items()},
        "peak_rss_mb": peak_rss_mb(), "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "metrics": {k: m[k] for k in ("P_VA", "P_EXPR", "P_AU", "P_MTL")},
    }))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: on Linux ru_maxrss
    carries over the parent's peak through fork + exec, which would report the store build's."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_recipe(recipe: str, store: Path, workdir: Path, env_extra: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", recipe, "--store", str(store), "--out", str(workdir / "runs" / recipe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env_extra or {})})
    if proc.returncode != 0:
        raise SystemExit(f"recipe {recipe} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class BusyCores:
    """K processes that each keep one core busy (a pure-Python loop), for the length of a `with` block."""

    def __init__(self, k: int):
        self.k, self.procs = k, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.k)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


ACTIVE_WAIT = {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "200"}  # spin without bound


def loaded_runs(recipes, store: Path, workdir: Path, busy: int) -> dict:
    """{recipe: {"featheads": result, "active": result}} with `busy` other processes holding the cores."""
    out = {}
    with BusyCores(busy):
        for recipe in recipes:
            out[recipe] = {}
            for mode, env in (("featheads", None), ("active", ACTIVE_WAIT)):
                out[recipe][mode] = r = run_recipe(recipe, store, workdir, env)
                print(f"{recipe} with {busy} busy processes, {mode} waiting: {r['wall_s']:.1f} s "
                      f"(CPU {r['cpu_s']:.1f} s)", flush=True)
    return out


# ---------------------------------------------------------------------------- lower bound of `paper`


def floor_parts(store: Path, threads: int) -> dict:
    """What no implementation of `heads fit mtl --recipe paper` on these CPUs escapes, each measured in a
    fresh process: importing the libraries the heads need (torch, scikit-learn; the child's wall time
    includes them), reading the split's features (warm), and the matrix products alone of the AU head's
    10 epochs (1290 -> 128: forward and weight gradient, batch 512, float32, `threads` threads)."""
    code = (
        "import time, sys; t = time.perf_counter(); import heads.mlp, heads.fitting; "
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    imports = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                   check=True).stdout.split()[-1])
    code = (
        f"from featheads.core.threads import prepare_threads; prepare_threads({threads}); import time, torch; from store.feature_store import FeatureStore; "
        f"st = FeatureStore.open({str(store)!r}); spec = '{SOURCE}.embeddings+{SOURCE}.logits'; st.read_features(spec); "
        "t = time.perf_counter(); st.read_features(spec); read = time.perf_counter() - t; "
        f"steps = 10 * -(-{TRAIN_LABELLED['au']} // 512); x = torch.randn(512, 1290); "
        "w = torch.randn(128, 1290, requires_grad=True); [(x @ w.t()).sum().backward() for _ in range(20)]; "
        "t = time.perf_counter(); [(x @ w.t()).sum().backward() for _ in range(steps)]; "
        "gemm = time.perf_counter() - t; print(read, gemm, steps)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    read, gemm, steps = float(out[-3]), float(out[-2]), int(out[-1])
    flop = steps * 2 * 2 * 512 * 1290 * 128  # forward and weight gradient, 2 flop per multiply-add
    return {"imports_s": imports, "read_s": read, "au_gemm_s": gemm, "au_steps": steps,
            "au_gflops": flop / gemm / 1e9, "sum_s": imports + read + gemm}


# ---------------------------------------------------------------------------- MLP vs scikit-learn


def mlp_vs_sklearn(seed: int = 0, n=20_000, n_test=5_000, d=1290, epochs=10, max_epochs=40) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from heads.metrics import expr_metrics
    from heads.mlp import MLPClassifierHead

    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, 8)).astype(np.float32) / np.sqrt(d) * 3

    def draw(k):
        X = rng.standard_normal((k, d), dtype=np.float32)
        return X, np.argmax(np.maximum(X @ A, 0) * 2 + rng.standard_normal((k, 8), dtype=np.float32), axis=1)

    X, y = draw(n)
    Xt, yt = draw(n_test)
    alpha = 1e-4  # sklearn: loss + 0.5 * alpha * |W|^2 / batch  ==  ours: loss + l2 * |W|^2
    ours = MLPClassifierHead(hidden_layer_sizes=(128,), epochs=epochs, batch_size=512, learning_rate=1e-3,
                             l2=0.5 * alpha / 512, n_classes=8, random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    ours.fit(X, y)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    f1_ours = expr_metrics(yt, ours.predict_proba(Xt))["P_EXPR"]

    sk = MLPClassifier(hidden_layer_sizes=(128,), batch_size=512, learning_rate_init=1e-3, alpha=alpha,
                       random_state=seed)
    t_sk, c_sk, f1_sk, t_sk_10, c_sk_10, f1_sk_10, ep = 0.0, 0.0, 0.0, None, None, None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        while ep < max_epochs:
            t0, c0 = time.perf_counter(), time.process_time()
            sk.partial_fit(X, y, classes=np.arange(8))
            t_sk += time.perf_counter() - t0
            c_sk += time.process_time() - c0
            ep += 1
            f1_sk = expr_metrics(yt, sk.predict(Xt))["P_EXPR"]
            if ep == epochs:
                t_sk_10, c_sk_10, f1_sk_10 = t_sk, c_sk, f1_sk
            if f1_sk >= f1_ours - 0.005 and ep >= epochs:
                break
    return {"n": n, "d": d, "ours_s": t_ours, "ours_cpu": c_ours, "ours_f1": f1_ours, "sk_epochs_to_equal": ep,
            "sk_s_to_equal": t_sk, "sk_cpu_to_equal": c_sk, "sk_f1_at_stop": f1_sk, "sk_s_10": t_sk_10,
            "sk_cpu_10": c_sk_10, "sk_f1_10": f1_sk_10,
            "reached": f1_sk >= f1_ours - 0.005}


# ---------------------------------------------------------------------------- report


def machine() -> str:
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in subprocess.run(["lscpu"], capture_output=True,
                                                                          text=True).stdout.splitlines()
                     if ln.startswith("Model name"))
    except Exception:
        model = platform.processor() or "unknown CPU"
    load = os.getloadavg()
    return (f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average at start {load[0]:.1f} (shared machine)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL/OpenBLAS threads for everything")
    ap.add_argument("--recipes", default="paper,logistic,lightgbm")
    ap.add_argument("--workdir", default=None, help="where the synthetic store goes [a temporary folder]")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--loaded", action="store_true", help="also run each recipe while other processes keep the "
                    "cores busy, and report the slowdown against the quiet run")
    ap.add_argument("--busy", type=int, default=None, help="--loaded: busy processes [one per available CPU]")
    ap.add_argument("--floor", action="store_true", help="also measure the lower bound of `paper` on these CPUs: "
                    "library imports, the feature read, and the AU head's matrix products alone")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.store, a.out)

    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    t_bench = time.perf_counter()
    info = machine()
    if a.workdir:
        Path(a.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="heads_scale_", dir=a.workdir) as tmp:
        workdir = Path(tmp)
        store = workdir / "saffwild2_synthetic.h5"
        t_store = build_store(store)
        print(f"synthetic store ({N_TRAIN + N_VAL} rows x {EMB + N_LOGITS}) written in {t_store:.1f} s", flush=True)
        results = {}
        for recipe in a.recipes.split(","):
            results[recipe] = run_recipe(recipe, store, workdir)
            r = results[recipe]
            print(f"{recipe}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        loaded, quiet_passive = None, {}
        if a.loaded:
            from featheads.core.threads import PASSIVE_WAIT, available_cpus

            for recipe in results:
                quiet_passive[recipe] = r = run_recipe(recipe, store, workdir, PASSIVE_WAIT)
                print(f"{recipe}, passive waiting forced: {r['wall_s']:.1f} s", flush=True)
            busy = a.busy or available_cpus()
            loaded = loaded_runs(list(results), store, workdir, busy)
        floor = floor_parts(store, a.threads) if a.floor else None
    cmp = None if a.skip_sklearn else mlp_vs_sklearn()

    lines = [f"| recipe | threads | OpenMP waiting | heads fit mtl wall (s) | CPU (s) | fit expr / va / au wall (s) | "
             f"fit expr / va / au CPU (s) | peak RSS (MB) | P_VA | P_EXPR | P_AU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    quiet_rows = [(recipe, r, f"{r['wait_policy']} (featheads)") for recipe, r in results.items()]
    quiet_rows += [(recipe, r, "PASSIVE (forced)") for recipe, r in quiet_passive.items()]
    for recipe, r, waiting in quiet_rows:
        f, c, m = r["fit_s"], r["fit_cpu_s"], r["metrics"]
        lines.append(f"| {recipe} | {a.threads} | {waiting} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{f.get('expr', 0):.1f} / {f.get('va', 0):.1f} / {f.get('au', 0):.1f} | "
                     f"{c.get('expr', 0):.1f} / {c.get('va', 0):.1f} / {c.get('au', 0):.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {m['P_VA']:.3f} | {m['P_EXPR']:.3f} | {m['P_AU']:.3f} |")
    if loaded:
        lines += ["", f"The same recipes while {busy} other processes keep the cores busy (this invocation's quiet "
                  f"run as the reference; a fair share is about {(busy + a.threads) / a.threads:.1f}x):", "",
                  "| recipe | OpenMP waiting | wall (s) | CPU (s) | slowdown vs quiet | fit expr / va / au wall (s) |",
                  "|---|---|---|---|---|---|"]
        for recipe, modes in loaded.items():
            quiet = results[recipe]["wall_s"]
            for mode, r in modes.items():
                f = r["fit_s"]
                label = f"{r['wait_policy']} (featheads)" if mode == "featheads" else "ACTIVE (unbounded spin)"
                lines.append(f"| {recipe} | {label} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                             f"{r['wall_s'] / quiet:.2f}x | {f.get('expr', 0):.1f} / {f.get('va', 0):.1f} / "
                             f"{f.get('au', 0):.1f} |")
    if floor:
        lines += ["", "Lower bound of `paper` here (each part measured alone, in a fresh process; the wall times "
                  "above include all three):", "",
                  "| part | s |", "|---|---|",
                  f"| import torch, scikit-learn and the heads | {floor['imports_s']:.2f} |",
                  f"| read the split's embeddings+logits (warm) | {floor['read_s']:.2f} |",
                  f"| AU head: {floor['au_steps']:,} steps of its 1290 -> 128 products alone (forward + weight "
                  f"gradient, {a.threads} threads, {floor['au_gflops']:.0f} GFLOP/s) | {floor['au_gemm_s']:.2f} |",
                  f"| **sum** (EXPR and VA heads, predictions and writes not counted) | **{floor['sum_s']:.2f}** |"]
    if cmp:
        lines += ["", f"MLP 1290 -> 128 ReLU -> 8 on {cmp['n']:,} x {cmp['d']} (planted rule), Adam 1e-3, batch 512:", "",
                  "| model | epochs | fit wall (s) | fit CPU (s) | test macro F1 |", "|---|---|---|---|---|",
                  f"| heads MLPClassifierHead (torch, float32) | 10 | {cmp['ours_s']:.1f} | {cmp['ours_cpu']:.1f} | "
                  f"{cmp['ours_f1']:.3f} |",
                  f"| sklearn MLPClassifier, same 10 epochs | 10 | {cmp['sk_s_10']:.1f} | {cmp['sk_cpu_10']:.1f} | "
                  f"{cmp['sk_f1_10']:.3f} |",
                  f"| sklearn MLPClassifier, until F1 >= ours - 0.005 | {cmp['sk_epochs_to_equal']} | "
                  f"{cmp['sk_s_to_equal']:.1f} | {cmp['sk_cpu_to_equal']:.1f} | {cmp['sk_f1_at_stop']:.3f} |", "",
                  f"Speed-up at equal F1: {cmp['sk_s_to_equal'] / cmp['ours_s']:.1f}x wall, "
                  f"{cmp['sk_cpu_to_equal'] / cmp['ours_cpu']:.1f}x CPU"
                  + ("" if cmp["reached"] else f" (sklearn did NOT reach equal F1 within {cmp['sk_epochs_to_equal']} epochs: lower bound)")
                  + f"; same 10 epochs: {cmp['sk_s_10'] / cmp['ours_s']:.1f}x wall, "
                  f"{cmp['sk_cpu_10'] / cmp['ours_cpu']:.1f}x CPU."]
    table = "\n".join(lines)
    print(table)
    if not a.no_append:
        cmd = "python bench/heads_scale.py " + " ".join(sys.argv[1:])
        section = (f"\n## heads_scale ({started})\n\nMachine: {info}.\nCommand: `{cmd.strip()}`\n"
                   f"Synthetic s-Aff-Wild2-size store: {N_TRAIN:,} train + {N_VAL:,} val rows, {EMB} + {N_LOGITS} "
                   f"features, real label-missing counts; written in {t_store:.0f} s (not included below). "
                   f"Totals include reading features, fitting, predicting all rows, scoring val and writing.\n\n"
                   f"{table}\n\nLoad average at the end: {os.getloadavg()[0]:.1f}; bench wall time "
                   f"{time.perf_counter() - t_bench:.0f} s. On this shared machine wall times depend on other jobs "
                   f"(OpenMP threads that spin-wait on oversubscribed CPUs take them from the work); CPU seconds are summed over all "
                   f"threads of the process (some libraries use more threads than --threads).\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
