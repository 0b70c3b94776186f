#!/usr/bin/env python
"""Time of a `heads tune` study per head on an existing store, and the tuned recipe's score on the
held-out split, the way a user runs it (the two CLI commands, as child processes).

    python bench/heads_tune_time.py --store fer2013_fer_mini_xception.h5 --train train --eval test \\
        --recipes logistic,lightgbm,paper --trials 50 --cv 5 --groups row

For each recipe: `heads tune --task T --trials N` (its study in a SQLite file in a scratch folder:
the default storage), then `heads fit T --recipe tuned.json --eval E` on a scratch copy of the store.
The study reads the training split only; the eval split is scored once, by the refitted recipe.
Reports wall and CPU seconds of the study, finished / pruned trials, the best out-of-fold value, and
the held-out accuracy and P_EXPR (or the task's score), next to the untuned recipe fitted the same way.
bench/real_data.py (`--store` build: run it first) makes the FER2013 store this is meant for.
Prints a table; appends it to bench/RESULTS.md unless --no-append.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from heads_scale import machine  # noqa: E402

SCORES = {"expr": ("accuracy", "P_EXPR"), "va": ("P_VA",), "au": ("P_AU",), "lsd": ("accuracy", "P_LSD")}


def _cli(tool: str) -> str:
    return str(Path(sys.executable).with_name(tool))


def run_timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of a command that must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fit_and_score(store: Path, recipe: str, task: str, train: str, eval_split: str, out: Path,
                  threads: int) -> dict:
    copy = out.with_suffix(".h5")
    shutil.copyfile(store, copy)  # heads fit writes predictions: never into the user's store
    run_timed([_cli("heads"), "fit", task, "--store", str(copy), "--recipe", recipe, "--train", train,
                         "--eval", eval_split, "--out", str(out), "--no-progress", "--threads", str(threads)])
    copy.unlink()
    return json.loads((out / "metrics.json").read_text())


def bench_recipe(store: Path, recipe: str, a, work: Path) -> dict:
    tuned = work / f"{Path(recipe).stem}_tuned.json"
    wall, cpu = run_timed([_cli("heads"), "tune", "--store", str(store), "--recipe", recipe, "--task", a.task,
                           "--train", a.train, "--cv", str(a.cv), "--trials", str(a.trials), "--groups", a.groups,
                           "--seed", str(a.seed), "--out", str(tuned), "--no-progress", "--threads", str(a.threads)])
    record = json.loads(tuned.read_text())["tuning"]["tasks"][a.task]
    tuned_metrics = fit_and_score(store, str(tuned), a.task, a.train, a.eval, work / f"{tuned.stem}_run", a.threads)
    base_metrics = fit_and_score(store, recipe, a.task, a.train, a.eval, work / f"{Path(recipe).stem}_run",
                                    a.threads)
    return {"recipe": recipe, "wall": wall, "cpu": cpu, "trials": record["trials"], "best": record["best_value"],
            "params": record["best_params"], "tuned": tuned_metrics, "base": base_metrics}


def table(results: list[dict], task: str) -> str:
    keys = SCORES[task]
    head = (["recipe", "study wall (s)", "study CPU (s)", "complete + pruned", "best out-of-fold"]
            + [f"{a} {k}" for a in ("untuned", "tuned") for k in keys])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        t = r["trials"]
        cells = [r["recipe"], f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{t['complete']} + {t['pruned']}",
                 f"{r['best']:.4f}"] + [f"{r[a][k]:.4f}" for a in ("base", "tuned") for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--task", default="expr", choices=sorted(SCORES))
    ap.add_argument("--train", default="train")
    ap.add_argument("--eval", default="test")
    ap.add_argument("--recipes", default="logistic,lightgbm,paper")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--groups", default="video", choices=("video", "subject", "row"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    a = ap.parse_args(argv)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    info = machine()
    with tempfile.TemporaryDirectory(prefix="heads_tune_time_") as tmp:
        results = []
        for recipe in [r.strip() for r in a.recipes.split(",") if r.strip()]:
            results.append(bench_recipe(a.store.resolve(), recipe, a, Path(tmp)))
            print(f"{recipe}: {results[-1]['wall']:.1f} s, best params {results[-1]['params']}", flush=True)
    text = table(results, a.task)
    print(text)
    if not a.no_append:
        cmd = "python bench/heads_tune_time.py " + " ".join(sys.argv[1:])
        params = "; ".join(f"{r['recipe']}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in r["params"].items()) for r in results)
        section = (f"\n## heads_tune_time ({started})\n\nMachine: {info}.\nCommand: `{cmd.strip()}`\n"
                   f"Store {a.store.name}: `heads tune --task {a.task} --cv {a.cv} --groups {a.groups} --trials "
                   f"{a.trials}` per recipe on split {a.train!r} only (SQLite study, {a.threads} threads), then "
                   f"`heads fit {a.task}` of the tuned and the untuned recipe on {a.train!r}, scored once on "
                   f"{a.eval!r}.\n\n{text}\n\nBest params: {params}.\n\nLoad average at the end: "
                   f"{os.getloadavg()[0]:.1f}.\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()
