"""Blend studies with smoothing's parameters drawn only where they are used (the search space of
blend.tune) against the same parameters drawn in every trial (a flat space: one TPE call per trial
instead of up to three), on the synthetic 3-run EXPR data of bench/blend_speed.py.

The flat space is what would make Optuna's TPE sampler fast enough for 200 trials/s here; this measures
what it costs in the study's result: trials/s, the best in-sample value of a study without folds, and
the out-of-fold score of a 5-fold study, over several seeds. Not a toolkit option: the flat variant
lives in this script only.

    python bench/blend_search_space.py [--seeds 4] [--trials 300] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the data generator the tests use
sys.path.insert(0, str(REPO / "bench"))

from blend_speed import N_ROWS, machine  # noqa: E402


def flat_task_params(trial, data, task):
    """blend.tune.suggest_task_params with delta and sigma drawn in every trial (used only by the kinds
    that take them, as there)."""
    from blend.smoothing import KINDS
    from blend.tune import task_params_from_values

    values = {}
    names = data.blends[task].names
    if len(names) > 1:
        for n in names:
            values[f"{task}.share.{n}"] = trial.suggest_float(f"{task}.share.{n}", 0.0, 1.0)
    if data.temporal:
        top = data.smoother.max_delta
        values[f"{task}.smoothing"] = trial.suggest_categorical(f"{task}.smoothing", KINDS)
        values[f"{task}.delta"] = trial.suggest_int(f"{task}.delta", 1, top)
        values[f"{task}.sigma"] = trial.suggest_float(f"{task}.sigma", 1.0, 2.0 * top * top, log=True)
    return task_params_from_values(data, task, values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--cv-trials", type=int, default=150, help="trials per study of the 5-fold runs")
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()

    import optuna

    import blend.tune as bt
    from blend_fixtures import write_expr_store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    header = machine()
    runs = ["run0", "run1", "run2"]
    spaces = {"conditional (blend.tune)": bt.suggest_task_params, "flat (every parameter every trial)": flat_task_params}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = write_expr_store(Path(d) / "expr.h5", n_rows=N_ROWS, n_videos=70, n_runs=3, n_labelled=15440)
        for label, suggest in spaces.items():
            bt.suggest_task_params = suggest
            try:
                best, rates, kinds, oof = [], [], [], []
                for seed in range(a.seeds):
                    t0 = time.perf_counter()
                    res = bt.tune(store, runs, "expr", "val", trials=a.trials, cv=0, storage="memory", seed=seed,
                                  max_delta=30, progress=False)
                    rates.append(a.trials / (time.perf_counter() - t0))
                    best.append(res.study.best_value)
                    kinds.append(res.study.best_params["expr.smoothing"])
                for seed in range(max(1, a.seeds // 2)):
                    res = bt.tune(store, runs, "expr", "val", trials=a.cv_trials, cv=5, storage="memory", seed=seed,
                                  max_delta=30, progress=False)
                    oof.append(res.spec.scores["out_of_fold"]["P_EXPR"])
            finally:
                bt.suggest_task_params = spaces["conditional (blend.tune)"]
            rows.append((label, rates, best, kinds, oof))
    lines = [f"| search space | trials/s (per seed; reading included) | best in-sample P_EXPR, {a.trials} trials "
             f"(per seed) | its smoothing | out-of-fold P_EXPR, 5 folds x {a.cv_trials} trials (per seed) | mean OOF |",
             "|---|---|---|---|---|---|"]
    for label, rates, best, kinds, oof in rows:
        lines.append(f"| {label} | {', '.join(f'{r:.0f}' for r in rates)} | {', '.join(f'{b:.4f}' for b in best)} | "
                     f"{', '.join(kinds)} | {', '.join(f'{o:.4f}' for o in oof)} | {statistics.mean(oof):.4f} |")
    table = "\n".join(lines)
    print(header)
    print(table)
    if a.no_append:
        return
    command = "python bench/blend_search_space.py " + " ".join(sys.argv[1:])
    with open(REPO / "bench" / "RESULTS.md", "a") as f:
        f.write(f"\n## blend: conditional vs flat smoothing search space ({dt.datetime.now().astimezone().isoformat(timespec='seconds')})\n\n"
                f"- machine: {header}\n- command: `{command.strip()}`\n"
                f"- data: synthetic, s-Aff-Wild2 validation sized ({N_ROWS:,} rows; 15,440 with an expression label; "
                f"70 videos), 3 runs, seeds 0..{a.seeds - 1}\n\n{table}\n")
    print(f"appended to {REPO / 'bench' / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
