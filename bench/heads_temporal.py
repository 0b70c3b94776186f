"""Temporal heads (`gru`, `transformer`) against per-frame heads and smoothing, and their cost at scale.

    python bench/heads_temporal.py [--workdir DIR] [--threads 2] [--trials 40] [--cv 5]
                                   [--scale 1.0] [--epochs N] [--scale-runs gru:expr,...]
                                   [--skip-demo] [--skip-scale]

1. Demo data (featheads.app.demo's synthetic s-Aff-Wild2-like videos, featurized with the demo's
   backbone; their expression, AUs and VA drift smoothly within a video by construction): `heads fit
   mtl` with the recipes paper, logistic, gru and transformer on train, then, on val, OUT-OF-FOLD
   (blend tune --cv K, folds grouped by video: every choice made on the other folds) for each run
   alone without smoothing (--max-delta 0: only the AU thresholds are tuned), each run alone with
   tuned smoothing (--max-delta 30), and the blend of all four with smoothing. P_VA, P_EXPR, P_AU,
   P_MTL. Also the single + multi-task fusion of Chang et al.: a hand-written blend spec with the
   paper's fixed weights (VA 0.4 single + 0.6 joint; EXPR and AU 0.6 single + 0.4 joint; AU
   thresholds 0.5), applied with `blend apply` to the val split of a `paper` and a `paper --joint` run.
2. Scale: bench/heads_scale.py's synthetic store (142,333 + 26,876 rows x 1290 features at
   --scale 1; --scale s keeps the fraction s of the rows, videos of 1000 frames), then each temporal
   recipe one task at a time in a fresh child process: wall time of fit + predict of every row
   (+ scoring and writing), and peak RSS (VmHWM). --epochs overrides the recipes' 10 epochs.

Prints the tables and appends a section to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

if __name__ == "__main__":  # thread counts must be set before numpy / torch are imported
    from featheads.core.threads import prepare_threads

    _p = argparse.ArgumentParser(add_help=False)
    _p.add_argument("--threads", type=int, default=2)
    prepare_threads(_p.parse_known_args()[0].threads)

import datetime as dt
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path


ROOT = Path(ROOT)
RECIPES = ("paper", "logistic", "gru", "transformer")
TEMPORAL = ("gru", "transformer")
KEYS = ("P_VA", "P_EXPR", "P_AU", "P_MTL")
# Chang et al. (seeds/001): p = lambda * single-task + (1 - lambda) * multi-task; lambda 0.4 VA, 0.6 EXPR and AU
FUSION_LAMBDA = {"va": 0.4, "expr": 0.6, "au": 0.6}


# ---------------------------------------------------------------------------- 1. demo data


def demo_store(work: Path, seed: int = 0) -> Path:
    """The demo's MTL store (synthetic videos featurized with the demo's backbone); built once."""
    store = work / "demo_store.h5"
    if store.is_file():
        return store
    from featheads.app.demo import DEFAULT_BACKBONE, _pick_backbone
    from featurize.pipeline import run_featurize
    from featurize.synthetic import write_dataset

    files = write_dataset(work / "data", seed=seed, progress=False)
    backbone, weights, _ = _pick_backbone(DEFAULT_BACKBONE, None, print)
    tmp = work / "demo_store.h5.part"
    tmp.unlink(missing_ok=True)
    for split in ("train", "val", "test"):
        run_featurize(source="abaw-mtl", annotations=files[split], images=files["images"], split=split, store=tmp,
                      backbone=backbone, weights=weights, progress=False)
    tmp.rename(store)
    return store


def fusion_spec(single: str, joint: str) -> dict:
    """The hand-written blend spec of Chang et al.'s fixed-weight single + multi-task fusion."""
    from store.schema import AU_NAMES

    tasks = {}
    for t, lam in FUSION_LAMBDA.items():
        tasks[t] = {"weights": {single: lam, joint: 1.0 - lam}, "smoothing": {"kind": "none"}}
    tasks["au"]["thresholds"] = {a: 0.5 for a in AU_NAMES}
    return {"format": "featheads-blend-spec", "version": 1, "task": "mtl", "split": "val",
            "inputs": [single, joint], "tasks": tasks}


def run_demo_part(work: Path, trials: int, cv: int, seed: int) -> dict:
    from blend.apply import apply_spec
    from blend.spec import parse_spec
    from blend.tune import tune
    from heads.fitting import fit_mtl

    store = demo_store(work, seed)
    out = {"heads": {}, "alone": {}, "smoothed": {}, "fit_s": {}}
    for r in RECIPES:
        t0 = time.perf_counter()
        out["heads"][r] = fit_mtl(store, r, out=work / "runs" / r, name=r, seed=seed, overwrite=True)
        out["fit_s"][r] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit_mtl(store, "paper", out=work / "runs" / "joint", name="joint", joint=True, seed=seed, overwrite=True)
    out["fit_s"]["joint"] = time.perf_counter() - t0
    for r in RECIPES:
        for key, delta in (("alone", 0), ("smoothed", 30)):
            res = tune(store, [r], "mtl", "val", trials=trials, cv=cv, seed=seed, max_delta=delta,
                       storage="memory", progress=False)
            out[key][r] = res.spec.scores["out_of_fold"]
    res = tune(store, list(RECIPES), "mtl", "val", trials=trials, cv=cv, seed=seed, max_delta=30,
               storage="memory", progress=False)
    out["blend"] = res.spec.scores["out_of_fold"]
    out["blend_weights"] = {t: p.weights for t, p in res.spec.tasks.items()}
    spec = parse_spec(fusion_spec("paper", "joint"), "fusion spec")
    fused = apply_spec(spec, store, "val", name="fusion")
    out["fusion"] = _mtl_from_apply(fused)
    out["joint"] = _mtl_from_apply(apply_spec(parse_spec(_single_input_spec("joint"), "joint"), store, "val",
                                              name="joint_val"))
    out["paper_fixed"] = _mtl_from_apply(apply_spec(parse_spec(_single_input_spec("paper"), "paper"), store, "val",
                                                    name="paper_val"))
    with __import__("store").FeatureStore.open(store) as st:
        out["rows"] = {s: int(len(st.rows(s))) for s in ("train", "val")}
        out["videos"] = {s: int(len(set(st.samples(st.rows(s))["video"]))) for s in ("train", "val")}
    return out


def _single_input_spec(run: str) -> dict:
    spec = fusion_spec(run, run)
    for t in spec["tasks"].values():
        t["weights"] = {run: 1.0}
    spec["inputs"] = [run]
    return spec


def _mtl_from_apply(metrics: dict) -> dict:
    m = {"P_VA": metrics["va"]["P_VA"], "P_EXPR": metrics["expr"]["P_EXPR"], "P_AU": metrics["au"]["P_AU"]}
    m["P_MTL"] = m["P_VA"] + m["P_EXPR"] + m["P_AU"]
    return m


# ---------------------------------------------------------------------------- 2. scale


def child(recipe: str, task: str, store: str, out: str, epochs: int | None) -> None:
    from heads.fitting import fit_tasks
    from heads.recipe import load_recipe

    doc, _ = load_recipe(recipe)
    doc = {**doc, "tasks": {task: doc["tasks"][task]}}
    if epochs:
        doc["tasks"][task]["params"]["epochs"] = epochs
    t0, c0 = time.perf_counter(), time.process_time()
    m = fit_tasks(store, doc, (task,), command=task, out=out, name=Path(out).name, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run = json.loads((Path(out) / "run.json").read_text())
    score = {"va": "P_VA", "expr": "P_EXPR", "au": "P_AU"}[task]
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "fit_s": run["heads"][task]["fit_seconds"],
                      "peak_rss_mb": peak_rss_mb(), "score": m[score]}))


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_scale_part(work: Path, scale: float, epochs: int | None, threads: int, only=None) -> dict:
    import heads_scale

    heads_scale.N_TRAIN = int(round(heads_scale.N_TRAIN * scale))
    heads_scale.N_VAL = int(round(heads_scale.N_VAL * scale))
    heads_scale.TRAIN_LABELLED = {k: int(round(v * scale)) for k, v in heads_scale.TRAIN_LABELLED.items()}
    heads_scale.VAL_LABELLED = {k: int(round(v * scale)) for k, v in heads_scale.VAL_LABELLED.items()}
    store = work / f"scale_{scale:g}.h5"
    build_s = None
    if not store.is_file():
        build_s = heads_scale.build_store(store)
    out = {"rows": (heads_scale.N_TRAIN, heads_scale.N_VAL), "build_s": build_s, "runs": {}}
    for recipe in TEMPORAL:
        for task in ("expr", "va", "au"):
            if only and f"{recipe}:{task}" not in only:
                continue
            cmd = [sys.executable, __file__, "--child", recipe, task, str(store), str(work / "runs" / f"{recipe}_{task}"),
                   str(epochs or 0), "--threads", str(threads)]
            p = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if p.returncode:
                raise SystemExit(f"{recipe} {task} failed:\n{p.stderr[-3000:]}")
            out["runs"][f"{recipe} {task}"] = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"  {recipe} {task}: {out['runs'][f'{recipe} {task}']}", flush=True)
    return out


# ---------------------------------------------------------------------------- report


def _row(name, m):
    return f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS) + " |"


def report(args, demo: dict | None, scale: dict | None, seconds: float) -> str:
    load = os.getloadavg()[0]
    lines = [f"## heads_temporal: temporal heads vs per-frame heads and smoothing ({dt.datetime.now():%Y-%m-%d %H:%M})",
             "", f"`python bench/heads_temporal.py {' '.join(sys.argv[1:])}`", ""]
    if demo:
        lines += [f"Demo data: {demo['rows']['train']} train rows ({demo['videos']['train']} videos), "
                  f"{demo['rows']['val']} val rows ({demo['videos']['val']} videos). Heads fitted on train; "
                  f"scores on val, OUT-OF-FOLD ({args.cv} folds grouped by video, {args.trials} trials per study).",
                  "", "| val, out-of-fold | " + " | ".join(KEYS) + " |", "|---|---:|---:|---:|---:|"]
        for r in RECIPES:
            lines.append(_row(f"{r}, no smoothing (AU thresholds tuned)", demo["alone"][r]))
            lines.append(_row(f"{r}, tuned smoothing", demo["smoothed"][r]))
        lines.append(_row("blend of the four, tuned smoothing", demo["blend"]))
        lines += ["", "Single + multi-task fusion (Chang et al., fixed weights from a hand-written spec, AU "
                  "thresholds 0.5, no smoothing, `blend apply` on val; in-sample by nature but nothing is tuned):",
                  "", "| val | " + " | ".join(KEYS) + " |", "|---|---:|---:|---:|---:|",
                  _row("paper (separate heads)", demo["paper_fixed"]), _row("paper --joint", demo["joint"]),
                  _row("fusion 0.4/0.6 VA, 0.6/0.4 EXPR+AU", demo["fusion"]), "",
                  "Fit + predict seconds on the demo: " + ", ".join(f"{k} {v:.1f}" for k, v in demo["fit_s"].items()),
                  "", "Blend weights: " + "; ".join(
                      f"{t}: " + ", ".join(f"{n} {w:.2f}" for n, w in ws.items()) for t, ws in demo["blend_weights"].items()),
                  ""]
    if scale:
        n_tr, n_va = scale["rows"]
        lines += [f"Scale: synthetic store of bench/heads_scale.py at --scale {args.scale:g} ({n_tr:,} train + "
                  f"{n_va:,} val rows x 1290, videos of 1000 frames), one task per child process, "
                  f"{args.threads} threads, epochs {args.epochs or 'as the recipes (10)'}:", "",
                  "| recipe task | wall s (fit + predict + write) | fit s | CPU s | peak RSS MB | val score |",
                  "|---|---:|---:|---:|---:|---:|"]
        for k, r in scale["runs"].items():
            lines.append(f"| {k} | {r['wall_s']:.1f} | {r['fit_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                         f"{r['score']:.3f} |")
        lines.append("")
    lines += [f"Machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}; load average (1 min) at "
              f"the end {load:.1f}; bench wall time {seconds:.0f} s. The machine was SHARED with other jobs while "
              "this ran: wall times are upper bounds, compare within a table only.", ""]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        recipe, task, store, out, epochs = sys.argv[2:7]
        child(recipe, task, store, out, int(epochs) or None)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--scale-runs", default=None,
                    help="Comma-separated recipe:task pairs to time at scale (default: gru and transformer x expr, va, au).")
    ap.add_argument("--no-results", action="store_true", help="Print only; do not append to bench/RESULTS.md.")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="heads_temporal_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    demo = None if args.skip_demo else run_demo_part(work, args.trials, args.cv, args.seed)
    only = set(args.scale_runs.split(",")) if args.scale_runs else None
    scale = None if args.skip_scale else run_scale_part(work, args.scale, args.epochs, args.threads, only)
    text = report(args, demo, scale, time.perf_counter() - t0)
    print(text)
    if not args.no_results:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
