"""Metrics and plots of a predictions run on a labelled split.

    reports = task_reports(store, "final", "val")      # {task: TaskReport}
    print(metrics_table(reports))
    write_report("store.h5", "final", "val", "report/") # table + metrics.json + PNGs

Decisions are taken as `blend submit` takes them: argmax for expr/lsd, the run's per-AU
thresholds (0.5 when it stores none), VA as stored. When the run was written by `blend apply`,
its spec is read back and the blend-weight curves are drawn: the in-sample score of each task as
one input's weight goes from 0 to 1 while the other inputs keep their tuned proportions (AU
thresholds re-optimised at every point, as in tuning), the tuned weights marked.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore
from store.schema import AU_NAMES, get_task

from .combine import SCORE_KEYS, decide, fit_score, task_metrics
from .data import BlendData
from .spec import BlendSpec, parse_spec

__all__ = ["TaskReport", "task_reports", "spec_reports", "metrics_table", "run_spec", "weight_curves", "write_report"]


@dataclass
class TaskReport:
    task: str
    y: np.ndarray  # labels of the scored rows
    decisions: np.ndarray  # labels, VA values or 0/1 AUs on those rows
    metrics: dict  # heads.metrics' result
    thresholds: np.ndarray | None = None


def _thresholds(store: FeatureStore, run: str) -> np.ndarray | None:
    v = store.prediction_attrs(run, "au").get("thresholds")
    if v is None:
        return None
    return np.asarray(json.loads(v) if isinstance(v, str) else v, dtype=np.float64)


def task_reports(store: FeatureStore, run: str, split: str) -> dict[str, TaskReport]:
    """Metrics of every task of the run that has labels on the split (rows with a prediction)."""
    runs = store.runs()
    if run not in runs:
        raise UserError(f"{store.path}: no predictions run {run!r}; runs: {', '.join(sorted(runs)) or 'none'}")
    rows = store.rows(split)
    out = {}
    for t in ("expr", "va", "au", "lsd"):
        if t not in runs[run]:
            continue
        y = store.labels(t, rows)
        pred = store.read_predictions(run, t, rows)
        keep = FeatureStore.label_mask(t, y) & np.isfinite(pred.reshape(len(rows), -1)).all(axis=1)
        if not keep.any():
            continue
        thr = _thresholds(store, run) if t == "au" else None
        dec = decide(t, pred[keep].T, thr)
        out[t] = TaskReport(t, y[keep], dec, task_metrics(t, y[keep], dec),
                            thr if thr is not None or t != "au" else np.full(len(AU_NAMES), 0.5))
    if not out:
        raise UserError(f"{store.path}: run {run!r} has no prediction on a labelled row of split {split!r}")
    return out


def spec_reports(spec: BlendSpec, data: BlendData) -> dict[str, TaskReport]:
    """Reports of a spec on loaded data, in memory (nothing written): what `blend apply` then
    `task_reports` would give on the same split."""
    out = {}
    for t, p in spec.tasks.items():
        idx = data.scored[t]
        scores = data.blends[t].scores(p.weights, p.smoothing)[:, idx]
        dec = decide(t, scores, p.thresholds)
        y = data.labels[t][idx]
        out[t] = TaskReport(t, y, dec, task_metrics(t, y, dec), p.thresholds)
    return out


def metrics_table(reports: dict[str, TaskReport]) -> str:
    lines = [f"{'task':<5} {'metric':<22} {'value':>8} {'rows':>7}"]
    for t, r in reports.items():
        m = r.metrics
        n = m.get(f"n_{t}", "")
        lines.append(f"{t:<5} {SCORE_KEYS[t]:<22} {m[SCORE_KEYS[t]]:>8.4f} {n:>7}")
        for k in ("accuracy", "ccc_valence", "ccc_arousal"):
            if k in m:
                lines.append(f"{t:<5} {k:<22} {m[k]:>8.4f}")
        for group in ("per_class_f1", "per_au_f1"):
            for name, v in m.get(group, {}).items():
                lines.append(f"{t:<5} {'F1 ' + name:<22} {v:>8.4f}")
    if all(t in reports for t in ("expr", "va", "au")):
        total = sum(reports[t].metrics[SCORE_KEYS[t]] for t in ("expr", "va", "au"))
        lines.append(f"{'mtl':<5} {'P_MTL':<22} {total:>8.4f}")
    return "\n".join(lines)


def run_spec(store: FeatureStore, run: str) -> BlendSpec | None:
    """The blend spec `blend apply` stored with a run (None for runs of heads)."""
    raw = store.prediction_attrs(run).get("spec")
    if not raw:
        return None
    return parse_spec(json.loads(raw), f"{store.path}: predictions/{run} attribute 'spec'")


def weight_curves(spec: BlendSpec, data: BlendData, n_points: int = 21) -> dict:
    """{task: {"curves": {input: (weights, scores)}, "tuned": {input: w}, "tuned_score": s}}."""
    grid = np.linspace(0.0, 1.0, n_points)
    out = {}
    for t, p in spec.tasks.items():
        idx, blend = data.scored[t], data.blends[t]
        y = data.labels[t][idx]

        def score(weights):
            return fit_score(t, blend.scores(weights, p.smoothing)[:, idx], y)[0]

        names = list(p.weights)
        curves = {}
        if len(names) > 1 and len(idx):
            for name in names:
                rest = {n: p.weights[n] for n in names if n != name}
                total = sum(rest.values())
                shares = {n: (v / total if total > 0 else 1.0 / len(rest)) for n, v in rest.items()}
                curves[name] = (grid, np.array([score({name: g, **{n: (1 - g) * s for n, s in shares.items()}})
                                                for g in grid]))
        out[t] = {"curves": curves, "tuned": dict(p.weights), "tuned_score": score(p.weights) if len(idx) else np.nan}
    return out


def write_report(store_path, run: str, split: str, out_dir) -> tuple[str, list[Path]]:
    """Write metrics.json and PNG plots into out_dir; return (metrics table, files written)."""
    from .apply import blend_split
    from .plots import au_f1_figure, confusion_figure, weight_curve_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    with FeatureStore.open(store_path, "r") as st:
        reports = task_reports(st, run, split)
        spec = run_spec(st, run)
        curves = None
        if spec is not None:
            data, _ = blend_split(spec, st, split)
            curves = weight_curves(spec, data)
    table = metrics_table(reports)
    metrics = {t: r.metrics for t, r in reports.items()}
    path = out_dir / "metrics.json"
    path.write_text(json.dumps({"run": run, "split": split, "metrics": metrics}, indent=2, default=float) + "\n")
    files.append(path)
    for t in ("expr", "lsd"):
        if t in reports:
            r = reports[t]
            fig = confusion_figure(r.y, r.decisions, get_task(t).names, f"{run} on {split}: {t} (row-normalised)")
            files.append(_save(fig, out_dir / f"confusion_{t}.png"))
    if "au" in reports:
        r = reports["au"]
        files.append(_save(au_f1_figure(r.metrics["per_au_f1"], r.thresholds, f"{run} on {split}: per-AU F1"),
                           out_dir / "au_f1.png"))
    if curves is not None:
        fig = weight_curve_figure(curves, {t: SCORE_KEYS[t] for t in curves})
        files.append(_save(fig, out_dir / "blend_weights.png"))
    return table, files


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path
