#!/usr/bin/env python
"""Real-data benchmark: a real pretrained emotion CNN end to end, featurize -> store -> heads -> blend.

    python bench/real_data.py                                   # FER2013 + CK+ from ../shared/data
    python bench/real_data.py --limit 300 --results /tmp/r.md   # a quick subset
    python bench/real_data.py --dataset abaw-mtl --backbone enet_b0_8_va_mtl \\
        --annotations training_set_annotations.txt --eval-annotations validation_set_annotations.txt \\
        --images cropped_aligned                                # s-Aff-Wild2, when you have it
    python bench/real_data.py --dataset store --store affwild2.h5 --backbone enet_b0_8_va_mtl \\
        --train-split train --test-split val                    # features already in a store

Each dataset is featurized into its own store under --work-dir (resumable: a second run reuses the
features), then evaluated with one of two protocols, the same code for every dataset:

- hold-out (FER2013, or any dataset with a test split): heads fitted on the train split, scored on the
  test split;
- grouped cross-validation (CK+, or a dataset without a test split): --folds outer folds grouped by
  subject (CK+) or video; every number is scored on the held-out fold.

Predictors, per task (expr, au, va, whichever the dataset labels): the backbone's own logits mapped
to the MTL classes ("zero-shot"), one head per recipe of --recipes (built-in `paper` = MLP,
`logistic`, `lightgbm`), and a blend of them. Blend weights and per-AU thresholds are tuned ONLY on
out-of-fold predictions of the heads on the training rows (--inner-folds, grouped like the outer
folds; one image per group for FER2013), then applied unchanged to the held-out rows.

Everything numeric is the toolkit's: featurize.pipeline, heads (recipes, estimators, metrics),
blend (Optuna search space and objective, exact per-AU thresholds). This script only wires them.
Prints a table; appends a section to --results (bench/RESULTS.md); writes all figures as JSON.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(REPO))

from featheads.core.errors import UserError  # noqa: E402
from store.feature_store import FeatureStore  # noqa: E402
from store.schema import AU_NAMES, MTL_EXPR_CLASSES  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "fer_mini_xception.hdf5"
DEFAULT_RESULTS = REPO / "bench" / "RESULTS.md"
DATASETS = ("fer2013", "ckplus", "abaw-mtl", "store")
ZERO_SHOT = "zero-shot"
BLEND = "blend"
TASK_ORDER = ("expr", "au", "va")


# ---------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """Rows of one store to evaluate, and how."""

    name: str
    store: Path
    source: str  # feature source of the backbone in the store
    train_rows: np.ndarray  # store rows
    test_rows: np.ndarray | None  # None: grouped cross-validation over train_rows
    group_by: str  # "video" or "subject" (the part of the video name before "_")
    featurized: list = field(default_factory=list)  # featurize.pipeline.RunSummary of this run
    note: str = ""


def _subset(samples: list, limit: int | None, seed: int) -> list:
    """At most `limit` samples, drawn at random with `seed` (kept in their original order)."""
    if limit is None or len(samples) <= limit:
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def _store_path(work: Path, dataset: str, backbone: str, pooled_maps=()) -> Path:
    """One store per dataset, backbone and --pooled-maps (a source holds the same arrays for every row)."""
    maps = "".join(f"_{pm.array}" for pm in pooled_maps)
    return work / f"{dataset}_{re.sub(r'[^A-Za-z0-9_.-]', '_', backbone)}{maps}.h5"


class Featurizer:
    """Loads the backbone once and featurizes sample lists into stores (featurize.pipeline)."""

    def __init__(self, backbone: str, weights, config):
        self.name, self.weights, self.config = backbone, weights, config
        self._loaded = None

    def __call__(self, samples, *, root, store: Path, split: str):
        from featurize.backbones import load_backbone
        from featurize.pipeline import featurize_samples

        if self._loaded is None:
            self._loaded = load_backbone(self.name, self.weights)
        summary = featurize_samples(samples, root=root, store=store, split=split, backbone=self._loaded,
                                    config=self.config)
        click.echo(f"  {summary}", err=True)
        with FeatureStore.open(store) as st:
            rows = st.find_rows([s.key for s in samples])
        return summary, np.sort(rows)


def prepare_fer2013(data_dir: Path, work: Path, featurize: Featurizer, limit, seed) -> Dataset:
    """FER2013 from the zip: fer2013/train -> split train, fer2013/test -> split test, one store."""
    from featurize.images import open_image_root
    from featurize.readers import read_class_folders

    zip_path = data_dir / "fer2013.zip"
    store = _store_path(work, "fer2013", featurize.name, featurize.config.pooled_maps)
    runs, rows = [], {}
    for split in ("train", "test"):
        root = open_image_root(zip_path, f"fer2013/{split}")
        samples = _subset(read_class_folders(root, "expr"), limit, seed)
        summary, rows[split] = featurize(samples, root=root, store=store, split=split)
        runs.append(summary)
    return Dataset("FER2013", store, featurize.name, rows["train"], rows["test"], "video", runs,
                   note="groups for the inner folds: one image each")


def prepare_abaw(name: str, annotations, eval_annotations, images, work: Path, featurize: Featurizer,
                 limit, seed, group_by: str, split_names=("train", "val")) -> Dataset:
    """A dataset in the ABAW4 MTL layout (annotation file(s) + an image root): CK+ or s-Aff-Wild2."""
    from featurize.images import open_image_root
    from featurize.readers import read_abaw_mtl

    root = open_image_root(images)
    store = _store_path(work, name.lower().replace("+", "plus"), featurize.name, featurize.config.pooled_maps)
    runs, rows = [], []
    for split, path in zip(split_names, (annotations, eval_annotations)):
        if path is None:
            continue
        samples = _subset(read_abaw_mtl(path), limit, seed)
        summary, r = featurize(samples, root=root, store=store, split=split)
        runs.append(summary)
        rows.append(r)
    return Dataset(name, store, featurize.name, rows[0], rows[1] if len(rows) > 1 else None, group_by, runs)


def prepare_store(store: Path, source: str, train_split: str, test_split: str | None, group_by: str,
                  limit, seed) -> Dataset:
    """Rows of an existing store (nothing is featurized)."""
    with FeatureStore.open(store) as st:
        if source not in st.sources():
            raise UserError(f"{store}: no feature source {source!r} (--backbone); sources: "
                            f"{', '.join(st.sources()) or 'none'}")
        rows = [_subset(list(st.rows(s)), limit, seed) for s in (train_split, test_split) if s]
    rows = [np.asarray(r, dtype=np.int64) for r in rows]
    return Dataset(store.stem, store, source, rows[0], rows[1] if len(rows) > 1 else None, group_by)


# ---------------------------------------------------------------------------- predictors


def zero_shot_scores(st: FeatureStore, source: str, task: str, rows: np.ndarray) -> np.ndarray | None:
    """The backbone's own logits as predictions of `task` (blend's `logits:<source>` input: a softmax
    over the logits named as emotions, FER2013 or AffectNet, in the MTL order; valence/arousal logits
    for va), or None when the logits name no such thing (AUs; a timm model's numbered logits)."""
    from blend.inputs import LOGITS_PREFIX, input_tasks, read_input

    name = LOGITS_PREFIX + source
    return read_input(st, name, task, rows) if task in input_tasks(st, name) else None


@dataclass
class HeadPlan:
    """One recipe's head for one task (heads.plan.Plan) under a display name."""

    name: str
    plan: object
    threads: int | None = None  # n_threads of heads that have it (MLP, LightGBM); None: their default
    tune_trials: int = 0  # > 0: heads tune's study (tune_cv folds) on each outer fold's training rows
    tune_cv: int = 3
    feature_choices: list = field(default_factory=list)  # specs the study chooses among (tuned heads)
    params: dict | None = None  # the tuned params of the current outer fold (None: the recipe's)
    features: str | None = None  # the tuned feature spec of the current outer fold (None: the plan's)
    tuned: list = field(default_factory=list)  # per outer fold: (best params, out-of-fold value)

    def specs(self) -> list[str]:
        return self.feature_choices or [self.plan.features]

    def tune(self, X: dict, y, groups, fit, seed) -> None:
        """heads tune on the outer fold's training rows `fit` only (X: feature spec -> all rows); its best
        params and features then serve the inner out-of-fold fits (blend) and the held-out fit alike."""
        from heads.plan import training_target
        from heads.tune import tune_arrays

        if not self.tune_trials:
            return
        params, record = tune_arrays(self.plan, {s: X[s][fit] for s in self.specs()},
                                     training_target(self.plan.key, y[fit]), groups[fit],
                                     cv=self.tune_cv, trials=self.tune_trials, seed=seed)
        self.params, self.features = params, record["features"]
        self.tuned.append((record["best_params"], record["best_value"]))

    def fit_predict(self, X: dict, y, groups, fit, predict, seed) -> np.ndarray:
        from heads.plan import head_scores, training_target
        from heads.registry import make_head

        p = self.plan
        X = X[self.features or p.features]
        head = make_head(p.head, p.kind, self.params or p.params, n_classes=p.n_classes, seed=seed)
        if self.threads and "n_threads" in head.get_params():
            head.set_params(n_threads=self.threads)
        head.fit(X[fit], training_target(p.key, y[fit]), groups=groups[fit])
        return head_scores(p, head, X[predict])[p.key]


def head_plans(recipes: list[str], task: str, source: str, threads: int | None = None, *, tune: list[str] = (),
               tune_trials: int = 30, tune_cv: int = 3, tune_features: list[str] = ()) -> list[HeadPlan]:
    """The head of every recipe that has `task` (recipes are heads.recipe names or JSON files), then
    one `heads tune`d head per recipe of `tune` (choosing among `tune_features` specs when given)."""
    from heads.plan import Plan
    from heads.recipe import fill_backbone, load_recipe

    out = []
    for recipe, tuned in [(r, False) for r in recipes] + [(r, True) for r in tune]:
        doc, where = load_recipe(recipe)
        entry = doc["tasks"].get(task)
        if entry is None:
            continue
        features = fill_backbone(entry["features"], source, where, f"tasks.{task}.features")
        label = f"{'tuned ' if tuned else ''}{Path(recipe).stem} ({entry['head']})"
        plan = Plan(task, features, entry["head"], dict(entry.get("params", {})))
        choices = [fill_backbone(f, source, "--tune-features", f"choice {i + 1}")
                   for i, f in enumerate(tune_features if tuned else ())]
        out.append(HeadPlan(label, plan, threads, tune_trials=tune_trials if tuned else 0, tune_cv=tune_cv,
                            feature_choices=choices))
    return out


# ---------------------------------------------------------------------------- blend


def tune_blend(task: str, names: list[str], inputs: np.ndarray, y: np.ndarray, *, trials: int, seed: int):
    """blend's Optuna study (search space, objective, exact AU thresholds) on in-memory inputs.

    inputs: (R, n, C) predictions of the R inputs on n labelled training rows. Returns the
    blend.combine.TaskParams of the best trial, with its per-AU thresholds for au.
    """
    import optuna

    from blend.combine import TaskBlend
    from blend.data import BlendData
    from blend.tune import evaluate, study_objective, suggest_params

    n = inputs.shape[1]
    blend = TaskBlend(task, names, inputs, None)
    data = BlendData(split="train", rows=np.arange(n), keys=np.arange(n).astype(str), videos=np.zeros(n, str),
                     frames=np.full(n, -1), smoother=None, blends={task: blend}, labels={task: y},
                     scored={task: np.flatnonzero(blend.covered)})
    if len(names) > 1:
        optuna.logging.set_verbosity(logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(study_objective(data, data.scored), n_trials=trials)
        fixed = study.best_trial.params
    else:
        fixed = {}
    params = suggest_params(optuna.trial.FixedTrial(fixed), data)
    _, parts = evaluate(data, params, data.scored)
    params[task].thresholds = parts[task][1]
    return params[task]


def apply_blend(task: str, params, inputs: np.ndarray) -> np.ndarray:
    """(n, C) blended scores of (R, n, C) held-out inputs with tuned parameters."""
    from blend.combine import TaskBlend

    return TaskBlend(task, list(params.weights), inputs, None).scores(params.weights, params.smoothing).T


# ---------------------------------------------------------------------------- protocol


@dataclass
class Fold:
    train: np.ndarray  # positions (into the evaluated rows) to fit and tune on
    test: np.ndarray  # positions to score


def outer_folds(ds: Dataset, groups: np.ndarray, n_train: int, n_folds: int, seed: int) -> list[Fold]:
    if ds.test_rows is not None:
        return [Fold(np.arange(n_train), np.arange(n_train, len(groups)))]
    from blend.folds import grouped_folds

    fold = grouped_folds(groups, n_folds, seed)
    return [Fold(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


def evaluate_task(task, y, X, usable, groups, zero_shot, plans, folds, *, inner_folds, trials, seed, bar) -> dict:
    """Out-of-fold scores of every predictor of one task, scored on the held-out rows of `folds`.

    X: feature spec -> (n, D) features; usable: (n,) rows with a label and valid features.
    Returns {"scores": name -> (n, C) float (NaN outside held-out labelled rows),
             "tuned": name -> (n, 12) 0/1 at thresholds tuned on training rows (au only),
             "weights": [per-fold blend weights], "thresholds": [per-fold blend thresholds]}.
    """
    from blend.folds import grouped_folds
    from blend.thresholds import best_thresholds
    from heads.metrics import binarize_au

    width = y.shape[1] if y.ndim == 2 else len(MTL_EXPR_CLASSES)
    names = ([ZERO_SHOT] if zero_shot is not None else []) + [p.name for p in plans]
    scores = {n: np.full((len(y), width), np.nan) for n in names + [BLEND]}
    tuned = {n: np.full((len(y), width), -1, np.int8) for n in names + [BLEND]} if task == "au" else {}
    weights, thresholds = [], []
    for k, fold in enumerate(folds):
        tr, te = fold.train[usable[fold.train]], fold.test[usable[fold.test]]
        if len(te) == 0:
            bar.update(len(plans) * (inner_folds + 1) + 1)
            continue
        inner = grouped_folds(groups[tr], inner_folds, seed + k)
        oof = {}
        if zero_shot is not None:
            oof[ZERO_SHOT], scores[ZERO_SHOT][te] = zero_shot[tr], zero_shot[te]
        for p in plans:
            p.tune(X, y, groups, tr, seed + k)
            scores[p.name][te] = p.fit_predict(X, y, groups, tr, te, seed)
            bar.update(1)
            oof[p.name] = np.zeros((len(tr), width))
            for j in range(inner_folds):
                fit, held = tr[inner != j], tr[inner == j]
                oof[p.name][inner == j] = p.fit_predict(X, y, groups, fit, held, seed)
                bar.update(1)
        if task == "au":
            for n in names:
                t, _ = best_thresholds(oof[n], y[tr])
                tuned[n][te] = binarize_au(scores[n][te], t)
        params = tune_blend(task, names, np.stack([oof[n] for n in names]), y[tr], trials=trials, seed=seed + k)
        scores[BLEND][te] = apply_blend(task, params, np.stack([scores[n][te] for n in names]))
        if task == "au":
            tuned[BLEND][te] = binarize_au(scores[BLEND][te], params.thresholds)
            thresholds.append([float(v) for v in params.thresholds])
        weights.append({n: float(w) for n, w in params.weights.items()})
        bar.update(1)
    studies = {p.name: [{"best_params": bp, "out_of_fold": v} for bp, v in p.tuned] for p in plans if p.tuned}
    return {"names": names + [BLEND], "scores": scores, "tuned": tuned, "weights": weights,
            "thresholds": thresholds, "studies": studies}


def task_metrics(task: str, y: np.ndarray, out: dict) -> dict:
    """Headline metrics per predictor on the rows that every predictor scored (heads.metrics)."""
    from heads.metrics import au_metrics, class_predictions, per_class_f1, va_metrics

    scored = np.isfinite(out["scores"][BLEND]).all(axis=1)
    y = y[scored]
    res = {"n": int(scored.sum()), "predictors": {}}
    if task == "expr":
        present = np.unique(y)
        res["classes"] = [MTL_EXPR_CLASSES[c] for c in present]
    for name in out["names"]:
        s = out["scores"][name][scored]
        if task == "expr":
            pred = class_predictions(s)
            f1 = per_class_f1(y, pred, len(MTL_EXPR_CLASSES))
            res["predictors"][name] = {"accuracy": float(np.mean(pred == y)), "macro_f1": float(f1[present].mean()),
                                       "per_class_f1": {MTL_EXPR_CLASSES[c]: float(f1[c]) for c in present}}
        elif task == "au":
            at_half = au_metrics(y, s, threshold=0.5)
            tuned = au_metrics(y, out["tuned"][name][scored])
            res["predictors"][name] = {"f1_at_0.5": at_half["P_AU"], "f1_tuned": tuned["P_AU"],
                                       "per_au_f1_tuned": tuned["per_au_f1"]}
        else:
            m = va_metrics(y, s)
            res["predictors"][name] = {k: m[k] for k in ("ccc_valence", "ccc_arousal", "P_VA")}
    names = out["names"][:-1]
    res["blend_weights"] = {n: float(np.mean([w[n] for w in out["weights"]])) for n in names}
    if out["studies"]:
        res["studies"] = out["studies"]
    if out["thresholds"]:
        res["blend_thresholds"] = dict(zip(AU_NAMES, np.mean(out["thresholds"], axis=0).round(4).tolist()))
    return res


def evaluate_dataset(ds: Dataset, recipes, *, folds, inner_folds, trials, seed, threads, progress, tune=(),
                     tune_trials=30, tune_cv=3, tune_features=()) -> dict:
    from tqdm import tqdm

    t0 = time.perf_counter()
    rows = ds.train_rows if ds.test_rows is None else np.concatenate([ds.train_rows, ds.test_rows])
    with FeatureStore.open(ds.store) as st:
        if ds.source not in st.sources():
            raise UserError(f"{ds.store}: no feature source {ds.source!r}")
        videos = st.samples(rows, columns=("video",))["video"]
        labels = {t: st.labels(t, rows) for t in TASK_ORDER if t in st.tasks()}
        tasks = [t for t, y in labels.items() if FeatureStore.label_mask(t, y).any()]
        if not tasks:
            raise UserError(f"{ds.store}: the rows to evaluate carry no expr, au or va label")
        plans = {t: head_plans(recipes, t, ds.source, threads, tune=tune, tune_trials=tune_trials, tune_cv=tune_cv,
                               tune_features=tune_features) for t in tasks}
        specs = {spec for ps in plans.values() for p in ps for spec in p.specs()}
        X = {spec: st.read_features(spec, rows)[0] for spec in specs}
        ok = st.read_features(f"{ds.source}.logits", rows)[1]  # validity is per source
        zero_shot = {t: zero_shot_scores(st, ds.source, t, rows) for t in tasks}
    groups = np.array([v.split("_")[0] for v in videos] if ds.group_by == "subject" else videos, dtype=object)
    fold_list = outer_folds(ds, groups, len(ds.train_rows), folds, seed)
    n_fits = sum(len(fold_list) * (len(plans[t]) * (inner_folds + 1) + 1) for t in tasks)
    results = {}
    with tqdm(total=n_fits, desc=f"{ds.name} heads+blend", unit="fit", disable=not progress,
              dynamic_ncols=True) as bar:
        for t in tasks:
            usable = ok & FeatureStore.label_mask(t, labels[t])
            zs = zero_shot[t]
            if zs is None and not plans[t]:
                click.echo(f"{ds.name}: no recipe has a {t!r} head and the logits do not name it; {t} skipped",
                           err=True)
                bar.update(len(fold_list))
                continue
            out = evaluate_task(t, labels[t], X, usable, groups, zs, plans[t], fold_list, inner_folds=inner_folds,
                                trials=trials, seed=seed, bar=bar)
            results[t] = task_metrics(t, labels[t], out)
    return {
        "dataset": ds.name, "store": str(ds.store), "source": ds.source,
        "protocol": ("hold-out: fit on train, score test" if ds.test_rows is not None else
                     f"{len(fold_list)}-fold cross-validation grouped by {ds.group_by}"),
        "inner": f"{inner_folds}-fold out-of-fold predictions on the training rows, grouped by "
                 f"{'image' if ds.name == 'FER2013' else ds.group_by}, tune blend weights and thresholds",
        "rows": {"train": int(len(ds.train_rows)), "test": None if ds.test_rows is None else int(len(ds.test_rows))},
        "note": ds.note,
        "featurize": [{"split": s.split, "rows": s.rows, "ok": s.ok, "invalid": s.invalid, "computed": s.computed,
                       "skipped": s.skipped, "seconds": round(s.seconds, 1),
                       "images_per_second": round(s.images_per_second, 1), "device": s.device}
                      for s in ds.featurized],
        "heads_blend_seconds": round(time.perf_counter() - t0, 1),
        "tasks": results,
    }


# ---------------------------------------------------------------------------- report


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def format_table(res: dict) -> str:
    tasks = res["tasks"]
    header, cols = ["predictor"], []
    if "expr" in tasks:
        k = len(tasks["expr"]["classes"])
        header += ["expr accuracy", f"expr macro F1 ({k} classes)"]
        cols += [("expr", "accuracy"), ("expr", "macro_f1")]
    if "au" in tasks:
        header += ["AU F1 @0.5", "AU F1 tuned thr."]
        cols += [("au", "f1_at_0.5"), ("au", "f1_tuned")]
    if "va" in tasks:
        header += ["CCC V", "CCC A", "P_VA"]
        cols += [("va", "ccc_valence"), ("va", "ccc_arousal"), ("va", "P_VA")]
    names = []
    for t in tasks.values():
        names += [n for n in t["predictors"] if n not in names]
    names = [n for n in names if n != BLEND] + [BLEND]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in names:
        cells = [_f(tasks[t]["predictors"].get(n, {}).get(m)) for t, m in cols]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_dataset(res: dict) -> str:
    rows = res["rows"]
    size = f"{rows['train']} train / {rows['test']} test rows" if rows["test"] is not None else f"{rows['train']} rows"
    out = [f"### {res['dataset']} ({size}; features `{res['source']}`)", "",
           f"- Protocol: {res['protocol']}; inner: {res['inner']}."]
    if res.get("note"):
        out.append(f"- {res['note']}.")
    for t, m in res["tasks"].items():
        extra = f" over {', '.join(m['classes'])}" if t == "expr" else ""
        out.append(f"- {t}: {m['n']} labelled rows scored{extra}.")
    for f in res["featurize"]:
        out.append(f"- featurize {f['split']}: {f['rows']} rows ({f['invalid']} invalid), {f['computed']} computed in "
                   f"{f['seconds']} s ({f['images_per_second']} images/s on {f['device']}), {f['skipped']} reused.")
    out.append(f"- heads + blend: {res['heads_blend_seconds']} s.")
    out += ["", format_table(res), ""]
    for t, m in res["tasks"].items():
        w = ", ".join(f"{n} {v:.2f}" for n, v in m["blend_weights"].items())
        out.append(f"- blend weights, {t} (mean over folds): {w}")
        for name, folds in m.get("studies", {}).items():
            best = "; ".join(", ".join(f"{k}={_short(v, res['source'])}" for k, v in f["best_params"].items())
                             for f in folds)
            values = ", ".join(f"{f['out_of_fold']:.4f}" for f in folds)
            out.append(f"- {name}, {t}: heads tune best params per outer fold (out-of-fold {values} on the "
                       f"fold's training rows): {best}")
        if "blend_thresholds" in m:
            thr = ", ".join(f"{k} {v:.2f}" for k, v in m["blend_thresholds"].items())
            out.append(f"- blend AU thresholds (mean over folds): {thr}")
    return "\n".join(out)


def _short(v, source: str = "") -> str:
    """A param for the report: floats to 3 digits; a feature spec without its source prefix."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace(f"{source}.", "") if source else str(v)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())  # 1/5/15 min; other work skews the timings


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else model
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    return (f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def results_section(datasets: list[dict], *, command: str, seconds: float, backbone: str, threads,
                    load_start: str) -> str:
    date = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    names = " and ".join(d["dataset"] for d in datasets)
    head = [f"## Real data: `{backbone}` end to end on {names} (bench/real_data.py)", "",
            f"- Date: {date}", f"- Machine: {machine()}",
            f"- Load average (1/5/15 min) at the start {load_start}, at the end {_load()} (shared machine).",
            f"- Command: `{command}`",
            f"- Runtime of the whole benchmark: {seconds:.0f} s ({seconds / 60:.1f} min), featurizing included; "
            f"head fits with {threads or 'the library default of'} thread(s) each.",
            "- Predictors: `zero-shot` = the backbone's own logits mapped to the MTL classes (softmax); one head per "
            "recipe (built-in recipes: fitted on embeddings+logits); `blend` = Optuna-tuned weights of all of them (blend's search "
            "space), tuned on out-of-fold predictions of the training rows only. AU `tuned thr.` = blend's exact "
            "F1-optimal per-AU thresholds chosen on the same out-of-fold predictions. Expression macro F1 is "
            "averaged over the classes present in the labels.", ""]
    return "\n".join(head + [format_dataset(d) + "\n" for d in datasets])


# ---------------------------------------------------------------------------- command line


def _split_csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(DATASETS),
              help="What to run (repeatable). Default: fer2013 and ckplus from --data-dir. abaw-mtl: "
                   "--annotations/--eval-annotations/--images; store: --store (skips featurizing).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="Holds fer2013.zip and ckplus/ (annotations.txt, cropped_aligned/).")
@click.option("--backbone", default="fer_mini_xception", show_default=True,
              help="Registered backbone (`featurize backbones`) or timm:<name>; with --dataset store, the "
                   "feature source to read.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Weights file. Default for fer_mini_xception: {DEFAULT_WEIGHTS} if present, else the "
                   "cache (see docs/REAL_DATA.md).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the stores and the JSON results go (reused: features are computed once). "
                   "Default: $FEATHEADS_CACHE/real_data.")
@click.option("--limit", type=click.IntRange(min=10), help="At most N random rows per split (a quick subset).")
@click.option("--folds", type=click.IntRange(min=2), default=10, show_default=True,
              help="Outer folds of the grouped cross-validation (datasets without a test split: CK+).")
@click.option("--inner-folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the out-of-fold predictions on training rows that blends and thresholds are tuned on.")
@click.option("--trials", type=click.IntRange(min=1), default=100, show_default=True,
              help="Optuna trials per blend study.")
@click.option("--recipes", default="paper,logistic,lightgbm", show_default=True,
              help="Comma-separated head recipes (built-in names or JSON files); each gives one head per task.")
@click.option("--tune", "tune", default="", show_default=True,
              help="Comma-separated recipes to `heads tune` as well: one more predictor each, its hyperparameters "
                   "chosen by a study on each outer fold's training rows only (heads.tune.tune_arrays).")
@click.option("--tune-features", "tune_features", multiple=True, metavar="SPEC",
              help="Feature specs the --tune studies choose among (repeatable; \"{backbone}\" allowed), e.g. with "
                   "--pooled-maps. Default: each recipe's own features.")
@click.option("--pooled-maps", metavar="MODULE:G[,...]",
              help="Featurize inner maps too (featurize run --pooled-maps), as arrays map_<module>_<G>x<G>; the "
                   "store gets its own file under --work-dir.")
@click.option("--tune-trials", type=click.IntRange(min=1), default=30, show_default=True,
              help="Trials of each heads tune study.")
@click.option("--tune-cv", type=click.IntRange(min=2), default=3, show_default=True,
              help="Folds of each heads tune study (grouped like the inner folds).")
@click.option("--seed", type=int, default=0, show_default=True, help="Subsets, folds, heads and studies.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="Threads of each MLP/LightGBM head fit (0: the library default). One thread is fastest for "
                   "the many small fits of CK+ and on a busy machine (OpenMP spin-waits when cores are shared).")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="abaw-mtl: training annotation file (ABAW4 MTL layout).")
@click.option("--eval-annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="abaw-mtl: validation annotation file; without it, grouped cross-validation on --annotations.")
@click.option("--images", type=click.Path(exists=True, path_type=Path),
              help="abaw-mtl: image root (cropped_aligned folder or a .zip).")
@click.option("--store", "store_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="store: an existing feature store holding --backbone features.")
@click.option("--train-split", default="train", show_default=True, help="store: split to fit on.")
@click.option("--test-split", help="store: split to score; without it, grouped cross-validation on --train-split.")
@click.option("--groups", type=click.Choice(["video", "subject"]), default="video", show_default=True,
              help="abaw-mtl/store: grouping of the folds (subject = video name before the first '_').")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_RESULTS,
              show_default=True, help="Markdown file the results section is APPENDED to.")
@click.option("--no-results", is_flag=True, help="Print only; append nothing.")
@click.option("--gpu", is_flag=True, help="Featurize on the CUDA GPU.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), help="Image decoding processes (default: one per core, <= 8).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def main(datasets, data_dir, backbone, weights, work_dir, limit, folds, inner_folds, trials, recipes, tune,
         tune_features, pooled_maps, tune_trials, tune_cv, seed, threads,
         annotations, eval_annotations, images, store_path, train_split, test_split, groups, results,
         no_results, gpu, batch_size, workers, no_progress):
    """Real-data benchmark: featurize -> store -> heads -> blend on FER2013 and CK+ (or your ABAW data)."""
    try:
        run(**locals())
    except UserError as e:
        raise click.ClickException(str(e)) from None


def run(*, datasets, data_dir, backbone, weights, work_dir, limit, folds, inner_folds, trials, recipes, tune="",
        tune_features=(), pooled_maps=None, tune_trials=30, tune_cv=3, seed, threads,
        annotations, eval_annotations, images, store_path, train_split, test_split, groups, results,
        no_results, gpu, batch_size, workers, no_progress) -> list[dict]:
    start, load_start = time.perf_counter(), _load()
    datasets = list(datasets) or ["fer2013", "ckplus"]
    recipes = _split_csv(recipes)
    if not recipes:
        raise UserError("--recipes: name at least one recipe")
    if "abaw-mtl" in datasets and (annotations is None or images is None):
        raise UserError("--dataset abaw-mtl needs --annotations FILE and --images DIR")
    if "store" in datasets and store_path is None:
        raise UserError("--dataset store needs --store FILE")
    for d in ("fer2013", "ckplus"):
        if d in datasets and not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir}: no such folder (it should hold fer2013.zip and ckplus/)")
    if weights is None and backbone == "fer_mini_xception" and DEFAULT_WEIGHTS.is_file():
        weights = DEFAULT_WEIGHTS
    if work_dir is None:
        from featurize.weights import cache_dir

        work_dir = cache_dir() / "real_data"
    work_dir.mkdir(parents=True, exist_ok=True)

    from featurize.pipeline import FeaturizeConfig
    from featurize.pooled_maps import parse_pooled_maps

    if tune_features and not tune:
        raise UserError("--tune-features: name the recipes to tune with --tune")
    featurizer = Featurizer(backbone, weights, FeaturizeConfig(gpu=gpu, batch_size=batch_size, workers=workers,
                                                               progress=not no_progress,
                                                               pooled_maps=parse_pooled_maps(pooled_maps)))
    prepared = []
    for d in datasets:
        click.echo(f"[{d}] preparing", err=True)
        if d == "fer2013":
            prepared.append(prepare_fer2013(data_dir, work_dir, featurizer, limit, seed))
        elif d == "ckplus":
            ck = data_dir / "ckplus"
            prepared.append(prepare_abaw("CK+", ck / "annotations.txt", None, ck / "cropped_aligned", work_dir,
                                         featurizer, limit, seed, "subject", split_names=("ckplus",)))
        elif d == "abaw-mtl":
            prepared.append(prepare_abaw("ABAW-MTL", annotations, eval_annotations, images,
                                         work_dir, featurizer, limit, seed, groups))
        else:
            prepared.append(prepare_store(store_path, backbone, train_split, test_split, groups, limit, seed))
        res = evaluate_dataset(prepared[-1], recipes, folds=folds, inner_folds=inner_folds, trials=trials,
                               seed=seed, threads=threads or None, progress=not no_progress, tune=_split_csv(tune),
                               tune_trials=tune_trials, tune_cv=tune_cv, tune_features=list(tune_features))
        prepared[-1] = res
        click.echo("\n" + format_dataset(res) + "\n")

    seconds = time.perf_counter() - start
    command = "python bench/real_data.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    section = results_section(prepared, command=command.strip(), seconds=seconds, backbone=backbone,
                              threads=threads, load_start=load_start)
    click.echo(f"Runtime of the whole benchmark: {seconds:.0f} s")
    json_path = work_dir / "real_data_results.json"
    json_path.write_text(json.dumps({"command": command, "seconds": round(seconds, 1), "datasets": prepared},
                                    indent=1, default=float) + "\n")
    click.echo(f"figures: {json_path}", err=True)
    if not no_results:
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a", encoding="utf-8") as f:
            f.write(("\n" if results.stat().st_size else "") + section)
        click.echo(f"appended to {results}", err=True)
    return prepared


if __name__ == "__main__":
    main()
