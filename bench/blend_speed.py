"""Speed of the blend tools on s-Aff-Wild2-sized data (26,876 validation rows).

1. Per-AU thresholds, 12 AUs: the exact search (blend.thresholds) against a 0.01 grid scored with
   scikit-learn's f1_score, in the same run, on the same scores. Target: >= 100x faster at equal or
   better F1.
2. Trials per second of a 3-run EXPR blend study (blend.tune, weights + smoothing), by storage;
   target >= 200 trials/s in memory, >= 100 on the default SQLite file. Also the objective alone
   (no Optuna; the study's scorer and the general path of blend apply), Optuna's sampler alone
   (the study replayed with its own values) and the study without smoothing, to show where the
   time goes.

Prints a table and appends a section to bench/RESULTS.md.

    python bench/blend_speed.py [--trials 300] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the data generator the tests use

N_ROWS = 26876
AU_RATES = np.array([0.12, 0.05, 0.16, 0.26, 0.39, 0.34, 0.28, 0.03, 0.03, 0.03, 0.62, 0.09])  # Aff-Wild2-like


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; 1-min load average at start {load:.2f}")


def bench_thresholds(repeats: int = 5) -> list[tuple[str, str]]:
    from sklearn.metrics import f1_score

    from blend.thresholds import best_thresholds

    rng = np.random.default_rng(0)
    y = (rng.random((N_ROWS, 12)) < AU_RATES).astype(np.int8)
    s = (1 / (1 + np.exp(-(1.6 * (2 * y - 1) + rng.normal(0, 1.6, (N_ROWS, 12)) - 0.8)))).astype(np.float32)

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        thr, f1_exact = best_thresholds(s, y)
        times.append(time.perf_counter() - t0)
    t_exact = float(np.median(times))

    grid = np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 2)
    t0 = time.perf_counter()
    f1_grid = np.array([max(f1_score(y[:, j], s[:, j] >= g, zero_division=0) for g in grid) for j in range(12)])
    t_grid = time.perf_counter() - t0
    worse = int(np.sum(f1_exact < f1_grid - 1e-12))
    return [
        ("thresholds: rows x AUs", f"{N_ROWS} x 12"),
        ("thresholds: exact search (median of %d)" % repeats, f"{t_exact * 1e3:.1f} ms"),
        ("thresholds: 0.01 grid, sklearn f1_score (101 x 12 calls)", f"{t_grid * 1e3:.0f} ms"),
        ("thresholds: speed-up exact vs grid", f"{t_grid / t_exact:.0f}x (target >= 100x)"),
        ("thresholds: mean F1 exact / grid", f"{f1_exact.mean():.5f} / {f1_grid.mean():.5f} "
                                             f"(AUs where exact < grid: {worse})"),
    ]



def bench_study(trials: int) -> list[tuple[str, str]]:
    import optuna

    from blend.data import BlendData
    from blend.tune import evaluate, params_from_values, study_objective, suggest_params, tune
    from blend_fixtures import write_expr_store
    from store.feature_store import FeatureStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = ["run0", "run1", "run2"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = write_expr_store(Path(d) / "expr.h5", n_rows=N_ROWS, n_videos=70, n_runs=3, n_labelled=15440)

        # The objective alone: random points of the same search space, no Optuna sampling or storage.
        with FeatureStore.open(store) as st:
            data = BlendData.load(st, runs, "expr", "val", max_delta=30)
        objective = study_objective(data, data.scored)
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        asked = [study.ask() for _ in range(100)]
        t0, c0 = time.perf_counter(), time.process_time()
        for trial in asked:
            objective(trial)
        rows.append(("study: objective alone (random params, with smoothing)",
                     f"{len(asked) / (time.perf_counter() - t0):.0f} evaluations/s "
                     f"({len(asked) / (time.process_time() - c0):.0f} per CPU second)"))
        # The same points through the general path (TaskBlend.scores, what blend apply runs): same values.
        t0, c0 = time.perf_counter(), time.process_time()
        for trial in asked:
            evaluate(data, params_from_values(data, trial.params), data.scored)
        rows.append(("study: the same points, general path (TaskBlend.scores as in blend apply)",
                     f"{len(asked) / (time.perf_counter() - t0):.0f} evaluations/s "
                     f"({len(asked) / (time.process_time() - c0):.0f} per CPU second)"))

        t0, c0 = time.perf_counter(), time.process_time()
        with FeatureStore.open(store) as st:
            BlendData.load(st, runs, "expr", "val", max_delta=30)
        t_load, c_load = time.perf_counter() - t0, time.process_time() - c0
        rows.append(("study: reading the 3 runs from the store (once per command)", f"{t_load * 1e3:.0f} ms"))
        for label, storage, n, max_delta in (
            ("in memory", "memory", trials, 30),
            ("in memory, no smoothing (--max-delta 0)", "memory", trials, 0),
            ("SQLite file (the default)", str(Path(d) / "s.db"), trials, 30),
            ("journal file", str(Path(d) / "s.log"), trials, 30),
        ):
            t0, c0 = time.perf_counter(), time.process_time()
            res = tune(store, runs, "expr", "val", trials=n, cv=0, storage=storage, seed=0, max_delta=max_delta,
                       progress=False)
            wall = time.perf_counter() - t0 - t_load
            cpu = time.process_time() - c0 - c_load
            rows.append((f"study: 3-run EXPR, {label}, {n} trials",
                         f"{n / wall:.0f} trials/s (wall time less reading; {n / cpu:.0f} per CPU second; "
                         f"best P_EXPR {res.study.best_value:.4f})"))
            if label == "in memory":
                values = [t.value for t in res.study.trials]
        # Optuna alone: the in-memory study again, its objective replaced by the values it had (same trials).
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=0, constant_liar=False))
        t0, c0 = time.perf_counter(), time.process_time()
        study.optimize(lambda trial: (suggest_params(trial, data), values[trial.number])[1], n_trials=len(values))
        rows.append((f"study: Optuna's TPE sampler alone (the in-memory study replayed), {len(values)} trials",
                     f"{len(values) / (time.perf_counter() - t0):.0f} trials/s "
                     f"({len(values) / (time.process_time() - c0):.0f} per CPU second)"))
        # Reference: the same study written to SQLite by Optuna directly, one synced write per change.
        n = max(trials // 5, 20)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                    storage=f"sqlite:///{Path(d) / 'direct.db'}")
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=n)
        rows.append((f"study: same objective, plain optuna on a SQLite file (unbuffered), {n} trials",
                     f"{n / (time.perf_counter() - t0):.0f} trials/s"))
    rows.append(("study: target", ">= 200 trials/s in memory, >= 100 trials/s on the SQLite file"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()

    import numpy
    import optuna
    import sklearn

    header = machine()
    command = "python bench/blend_speed.py " + " ".join(sys.argv[1:])
    rows = bench_thresholds() + bench_study(args.trials)
    width = max(len(k) for k, _ in rows)
    print(header)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.no_append:
        return
    versions = f"numpy {numpy.__version__}, scikit-learn {sklearn.__version__}, optuna {optuna.__version__}"
    lines = [
        "", f"## blend: per-AU thresholds and blend-study speed ({dt.date.today().isoformat()})", "",
        f"- machine: {header}", f"- libraries: {versions}", f"- command: `{command.strip()}`",
        "- data: synthetic, s-Aff-Wild2 validation sized (26,876 rows; 15,440 with an expression label; 70 videos)",
        "", "| measurement | value |", "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows]
    with open(REPO / "bench" / "RESULTS.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {REPO / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
