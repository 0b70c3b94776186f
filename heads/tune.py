"""`heads tune`: an Optuna study per task over a head's hyperparameters, scored by cross-validation
inside the training split only, written out as a recipe that `heads fit --recipe tuned.json` uses.

    doc = tune_heads("s.h5", "logistic", "expr", train="train", cv=5, trials=30, out="tuned.json")

For each task (expr, va, au; all three for "mtl"; lsd) the recipe's entry names the features and
the head; heads.search_spaces gives the head's space and the recipe's params are the base the
sampled ones override. With `features` (--features, several specs) the spec is one more study
parameter, every choice scored on the same rows (those valid in all of them) and folds. The training split's labelled rows with valid features are dealt into `cv`
folds grouped by video (or by subject, the video name before the first "_", or one group per row);
a trial fits the head on the other folds and predicts each held-out fold, and its value is the task
score of the pooled out-of-fold predictions (P_EXPR / P_LSD macro F1, P_VA mean CCC, P_AU mean F1 at
0.5). After each fold the mean fold score so far is reported, so Optuna's median pruner stops
trials that are behind after one fold or more. No other split is read: not its labels, not its
features. Nested cross-validation in the sense that matters here: everything chosen is chosen
inside the training rows, and the evaluation split stays an honest test of the tuned recipe (the
best trial's out-of-fold score is optimistic by the selection over trials, like any best-of-N).

Studies are resumable and shareable: `trials` is the number of finished trials (complete or
pruned) the study reaches, counting every worker's (heads.studies.run_budget); the same command
continues an interrupted study, and a study refuses to continue on other data or settings.
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError
from featheads.core.jsonfile import toolkit_version
from store.feature_store import FeatureStore

from . import metrics as M
from .plan import Plan
from .recipe import RecipeError, choose_backbone, fill_backbone, load_recipe
from .registry import fit_takes_rows, make_head
from .search_spaces import SPACES, suggest_params
from .studies import count_trials, describe_storage, open_study, other_settings_error, resolve_storage, run_budget

__all__ = ["tune_heads", "tune_arrays", "GROUPINGS", "TUNE_TASKS", "task_score", "grouped_folds"]

TUNE_TASKS = {"expr": ("expr",), "va": ("va",), "au": ("au",), "mtl": ("expr", "va", "au"), "lsd": ("lsd",)}
GROUPINGS = ("video", "subject", "row")
COUNTED = ("COMPLETE", "PRUNED")  # a pruned trial is a finished trial
SCORE_KEYS = {"expr": "P_EXPR", "va": "P_VA", "au": "P_AU", "lsd": "P_LSD"}


def task_score(task: str, y: np.ndarray, pred: np.ndarray) -> dict:
    """Metrics of out-of-fold predictions (probabilities or VA values) of labelled rows."""
    if task == "expr":
        return M.expr_metrics(y, pred)
    if task == "lsd":
        return M.lsd_metrics(y, pred)
    if task == "va":
        return M.va_metrics(y, pred)
    return M.au_metrics(y, pred)


def _groups(videos: np.ndarray, grouping: str) -> np.ndarray:
    if grouping == "video":
        return np.asarray(videos, dtype=object)
    if grouping == "subject":
        return np.array([str(v).split("_")[0] for v in videos], dtype=object)
    if grouping == "row":
        return np.arange(len(videos))
    raise UserError(f"--groups {grouping!r}: choose one of {', '.join(GROUPINGS)}")


def grouped_folds(groups, n_folds: int, seed: int) -> np.ndarray:
    """Fold index of every row; rows of one group share a fold; groups shuffled with the seed, each
    to the fold with the fewest rows so far (the same rule as blend.folds)."""
    names, inverse, counts = np.unique(np.asarray(groups).astype(str), return_inverse=True, return_counts=True)
    if len(names) < n_folds:
        raise UserError(f"--cv {n_folds}: only {len(names)} groups in the training rows to split into "
                        f"{n_folds} folds; use fewer folds or --groups row")
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    size = np.zeros(n_folds, dtype=np.int64)
    for g in rng.permutation(len(names)):
        f = int(np.argmin(size))
        fold_of_group[g] = f
        size[f] += counts[g]
    return fold_of_group[inverse.reshape(-1)]


def _fingerprint(X, y, groups) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in (X, y):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    h.update("\x00".join(map(str, groups)).encode())
    return h.hexdigest()


class _TaskData:
    """One task's training rows: X per feature spec to choose among (the first: plan.features), y (as
    heads' fit takes it), groups and folds. One spec: nothing to choose; several: a study parameter."""

    def __init__(self, plan: Plan, X, y, groups, folds, labels, templates=None):
        X = X if isinstance(X, dict) else {plan.features: X}
        self.plan, self.Xs, self.y, self.groups, self.folds, self.labels = plan, X, y, groups, folds, labels
        self.X = X[plan.features]
        self.templates = templates or {spec: spec for spec in X}  # spec -> as written ("{backbone}" kept)


def _load(st: FeatureStore, plan: Plan, train_rows: np.ndarray, grouping: str, cv: int, seed: int,
          templates=None) -> _TaskData:
    """The training rows of one task; with `templates` ({feature spec: as written}, the first
    plan.features), only the rows valid in every spec, so that every choice is scored on the same
    rows and folds."""
    from store import STATUS_OK

    from .fitting import _training_data

    specs = list(templates or [plan.features])
    if len(specs) > 1:
        sources = dict.fromkeys(src for spec in specs for src, _ in st.parse_feature_spec(spec))
        keep = np.logical_and.reduce([st.source_status(src, train_rows) == STATUS_OK for src in sources])
        train_rows = train_rows[keep]
    Xs, y, videos = {}, None, None
    for spec in specs:
        spec_plan = Plan(plan.key, spec, plan.head, plan.params)
        Xs[spec], y, videos, _ = _training_data(st, spec_plan, train_rows, "recipe")
    groups = _groups(videos, grouping)
    folds = grouped_folds(groups, cv, seed)
    labels = y if plan.kind != "regression" else y.astype(np.float32)
    return _TaskData(plan, Xs, y, groups, folds, labels, templates)


def _predict(plan: Plan, head, X):
    return head.predict(X) if plan.kind == "regression" else head.predict_proba(X)


def cross_validate(data: _TaskData, params: dict, seed: int, trial=None,
                   features: str | None = None) -> tuple[float, dict, np.ndarray]:
    """(value, metrics, out-of-fold predictions) of params on the task's folds, on the features of
    spec `features` (default: the plan's); reports each fold's running mean to `trial` and raises
    optuna.TrialPruned when the pruner says so."""
    plan, X, y = data.plan, data.Xs[features or data.plan.features], data.y
    task = plan.key
    oof = None
    fold_scores = []
    for k in range(int(data.folds.max()) + 1):
        te = data.folds == k
        tr = ~te
        head = make_head(plan.head, plan.kind, params, n_classes=plan.n_classes, seed=seed)
        if fit_takes_rows(head):  # the MLP heads train on X's rows in place: no copy per fold and trial
            head.fit(X, y[tr], groups=data.groups[tr], rows=np.flatnonzero(tr))
        else:
            head.fit(X[tr], y[tr], groups=data.groups[tr])
        p = np.asarray(_predict(plan, head, X[te]), dtype=np.float64).reshape(int(te.sum()), -1)
        if oof is None:
            oof = np.zeros((len(X), p.shape[1]))
        oof[te] = p
        fold_scores.append(task_score(task, data.labels[te], p)[SCORE_KEYS[task]])
        if trial is not None:
            import optuna

            trial.report(float(np.mean(fold_scores)), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
    m = task_score(task, data.labels, oof)
    summary = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in m.items()
               if k in (SCORE_KEYS[task], "accuracy", "ccc_valence", "ccc_arousal", "per_au_f1", "per_class_f1")}
    summary["fold_scores"] = [float(s) for s in fold_scores]
    return float(m[SCORE_KEYS[task]]), summary, oof


def tune_heads(store, recipe, task: str, *, train: str = "train", cv: int = 5, trials: int = 30,
               storage: str | None = None, study_name: str | None = None, groups: str = "video",
               seed: int = 0, backbone: str | None = None, out=None, progress: bool = False,
               features=()) -> dict:
    """Run (or continue) one study per task; return the tuned recipe (written to `out` when given).

    features: feature specs to choose among (--features, "{backbone}" allowed), a categorical
    parameter of each study; the tuned recipe keeps the chosen one. Default: the recipe's."""
    import optuna

    _check_options(task, cv, trials, groups)
    doc, source = load_recipe(recipe)
    tasks = TUNE_TASKS[task]
    _check_recipe(doc, source, tasks)
    default_storage = None if out is None else Path(out).with_name(Path(out).stem + ".optuna.db")
    storage_obj, storage_label = resolve_storage(storage, default_storage)
    recipe_name = doc.get("name", Path(source).stem)
    base = study_name or f"heads-{recipe_name}-{train}"
    datas, store_abs = _load_tasks(store, doc, source, tasks, train, groups, cv, seed, backbone, features)

    old_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    tuned = copy.deepcopy(doc)
    tuned["name"] = f"{recipe_name}-tuned"
    tuned["description"] = (f"{recipe_name} with hyperparameters tuned by `heads tune` ({cv}-fold CV grouped by "
                            f"{groups} on split {train!r} only). " + doc.get("description", ""))
    tuning = {}
    try:
        for t, data in datas.items():
            config = {"task": t, "train": train, "head": data.plan.head,
                      "features": list(data.Xs) if len(data.Xs) > 1 else data.plan.features,
                      "base_params": data.plan.params, "cv": int(cv), "groups": groups, "seed": int(seed),
                      "fingerprint": _fingerprint(data.X, data.y, data.groups)}
            params, tuning[t] = _run_study(data, f"{base}-{t}", config, storage_obj, storage_label, trials=trials,
                                           seed=seed, source=source, progress=progress)
            chosen = data.templates[tuning[t]["features"]]
            tuned["tasks"][t] = {"features": chosen, "head": data.plan.head, "params": json.loads(json.dumps(params))}
    finally:
        optuna.logging.set_verbosity(old_verbosity)
    tuned["tuning"] = {"recipe": source, "store": store_abs, "tasks": tuning, "toolkit_version": toolkit_version(),
                       "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if out is not None:
        _write_json(out, tuned)
    return tuned


def tune_arrays(plan: Plan, X, y: np.ndarray, groups: np.ndarray, *, cv: int = 5, trials: int = 30,
                seed: int = 0) -> tuple[dict, dict]:
    """The study of tune_heads on arrays already in memory (no store, no storage kept): the head's
    search space scored by `cv`-fold cross-validation grouped by `groups` over these rows only.
    X, y as the head's fit takes them (heads.plan.training_target); X may be {feature spec: array} of
    the same rows, to choose among (the first is plan.features' place). Returns (the best params, the
    record a tuned recipe keeps; its "features" is the chosen spec). For benchmarks that tune inside
    each outer fold."""
    import optuna

    _check_options(plan.key, cv, trials, "row")
    groups = np.asarray(groups)
    labels = y if plan.kind != "regression" else np.asarray(y, dtype=np.float32)
    Xs = dict(X) if isinstance(X, dict) else {plan.features: X}
    plan = Plan(plan.key, next(iter(Xs)), plan.head, plan.params)  # the first spec takes the plan's place
    data = _TaskData(plan, Xs, y, groups, grouped_folds(groups, cv, seed), labels)
    config = {"task": plan.key, "train": "arrays", "head": plan.head, "features": list(Xs),
              "base_params": plan.params, "cv": int(cv), "groups": "given", "seed": int(seed)}
    storage_obj, storage_label = resolve_storage("memory", None)
    old_verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        return _run_study(data, f"arrays-{plan.key}", config, storage_obj, storage_label, trials=trials, seed=seed,
                          source=plan.head, progress=False)
    finally:
        optuna.logging.set_verbosity(old_verbosity)


def _check_options(task: str, cv: int, trials: int, groups: str) -> None:
    if task not in TUNE_TASKS:
        raise UserError(f"--task {task!r}: choose one of {', '.join(TUNE_TASKS)}")
    if cv < 2:
        raise UserError(f"--cv {cv}: cross-validation needs at least 2 folds")
    if trials < 1:
        raise UserError(f"--trials {trials}: need at least 1 trial")
    if groups not in GROUPINGS:
        raise UserError(f"--groups {groups!r}: choose one of {', '.join(GROUPINGS)}")


def _check_recipe(doc: dict, source: str, tasks) -> None:
    """Every task is in the recipe, with a head that has a search space and no bagging."""
    missing = [t for t in tasks if t not in doc.get("tasks", {})]
    if missing:
        raise RecipeError(f"{source}: tasks.{missing[0]}: missing; this recipe has {', '.join(doc.get('tasks', {}))}")
    for t in tasks:
        if doc["tasks"][t]["head"] not in SPACES:
            raise RecipeError(f"{source}: tasks.{t}.head: {doc['tasks'][t]['head']!r} has no search space; "
                              f"heads tune searches {', '.join(SPACES)}")
        if "bagging" in doc["tasks"][t].get("params", {}):
            raise RecipeError(f"{source}: tasks.{t}.params.bagging: tune the head without bagging, then add it")


def _load_tasks(store, doc, source, tasks, train, groups, cv, seed, backbone, choices=()) -> tuple[dict, str]:
    """{task: its training rows' features, labels and folds}, reading the training split only."""
    with FeatureStore.open(store, "r") as st:
        train_rows = st.rows(train)  # the only rows read: no other split's labels or features
        if any("{backbone}" in spec for spec in [doc["tasks"][t]["features"] for t in tasks] + list(choices)):
            arrays = {s: list(st.source_info(s)["arrays"]) for s in st.sources()}
            backbone = choose_backbone(arrays, backbone, st.path)
        datas = {}
        for t in tasks:
            e = doc["tasks"][t]
            templates = list(dict.fromkeys(choices)) or [e["features"]]
            filled = {}
            for i, tpl in enumerate(templates):
                where, key = (source, f"tasks.{t}.features") if not choices else ("--features", f"choice {i + 1}")
                spec = fill_backbone(tpl, backbone, where, key)
                try:
                    st.parse_feature_spec(spec)
                except UserError as err:
                    raise RecipeError(f"{where}: {key} {spec!r}: {err}") from None
                filled[spec] = tpl
            plan = Plan(t, next(iter(filled)), e["head"], dict(e.get("params", {})))
            datas[t] = _load(st, plan, train_rows, groups, cv, seed, templates=filled)
        return datas, str(Path(st.path).resolve())


def _run_study(data, name: str, config: dict, storage_obj, storage_label: str, *, trials: int, seed: int,
               source: str, progress: bool) -> tuple[dict, dict]:
    """One task's study to `trials` counted trials -> (the best params, what the tuned recipe records)."""
    import optuna
    from tqdm.auto import tqdm

    plan, n_rows = data.plan, len(data.X)
    study = open_study(storage_obj, storage_label, name, sampler=optuna.samplers.TPESampler(seed=seed),
                       pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0))
    _check_config(study, name, storage_label, config)

    choices = list(data.Xs)

    def objective(trial):
        features = trial.suggest_categorical("features", choices) if len(choices) > 1 else choices[0]
        params = suggest_params(trial, plan.head, plan.kind, n_rows=n_rows, base=plan.params)
        try:
            value, summary, _ = cross_validate(data, params, seed, trial, features=features)
        except ValueError as e:  # parameters the head refuses: a recipe problem
            raise RecipeError(f"{source}: tasks.{plan.key}: {e}") from None
        trial.set_user_attr("oof", summary)
        return value

    t0 = time.perf_counter()
    left = max(0, trials - count_trials(study, COUNTED))
    with tqdm(total=left, desc=f"heads tune {plan.key}", unit="trial", disable=not progress or left == 0) as bar:
        def tick(s, tr):
            bar.update(1)
            try:
                bar.set_postfix_str(f"best {s.best_value:.4f}", refresh=False)
            except ValueError:
                pass

        run_budget(study, objective, trials, counted=COUNTED, callbacks=[tick])
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {name!r}: no trial completed (all pruned or failed); run more --trials") from None
    params = suggest_params(optuna.trial.FixedTrial(best.params), plan.head, plan.kind, n_rows=n_rows,
                            base=plan.params)
    features = best.params.get("features", choices[0])
    states = [tr.state.name for tr in study.get_trials(deepcopy=False)]
    record = {
        "study": name, "storage": describe_storage(storage_label), "best_trial": int(best.number),
        "best_value": float(best.value), "score": SCORE_KEYS[plan.key], "out_of_fold": best.user_attrs.get("oof"),
        "best_params": best.params, "trials": {"complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
                                               "failed": states.count("FAIL")},
        "cv": int(config["cv"]), "groups": config["groups"], "train": config["train"], "n_rows": int(n_rows),
        "features": features, "feature_choices": choices if len(choices) > 1 else None, "seed": int(seed),
        "seconds_this_run": round(time.perf_counter() - t0, 2),
    }
    return params, record


def _check_config(study, name: str, storage_label: str, config: dict) -> None:
    old = study.user_attrs.get("featheads-heads-tune")
    if old is None:
        if any(t.state.name != "FAIL" for t in study.get_trials(deepcopy=False)):
            raise UserError(f"study {name!r} in {describe_storage(storage_label)} was not made by heads tune; "
                            "choose another --study")
        study.set_user_attr("featheads-heads-tune", json.loads(json.dumps(config)))
        return
    config = json.loads(json.dumps(config))
    if old != config:
        raise other_settings_error(name, storage_label, old, config)


def _write_json(path, doc: dict) -> None:
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def tuned_summary(doc: dict) -> list[str]:
    """The lines `heads tune` prints: per task, best out-of-fold score, trials and best params."""
    lines = [f"{'task':<5} {'score':<7} {'out-of-fold':>11} {'trials':>14}  params"]
    for t, info in doc["tuning"]["tasks"].items():
        tr = info["trials"]
        counts = f"{tr['complete']}+{tr['pruned']}p"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in info["best_params"].items())
        lines.append(f"{t:<5} {info['score']:<7} {info['best_value']:>11.4f} {counts:>14}  {params}")
    return lines


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
