"""Optuna studies over blend weights and temporal smoothing, with exact per-AU thresholds.

Search space, per task (expr, va, au, lsd; all three MTL tasks at once for "mtl"):

    <task>.share.<input>  in [0, 1]   weights = shares / sum(shares) (a point on the simplex;
                                       only when the task blends two inputs or more)
    <task>.smoothing      none | box | gaussian     (only when the split has frame numbers)
    <task>.delta          1 .. max_delta frames     (box and gaussian)
    <task>.sigma          1 .. 2 max_delta^2, log   (gaussian: exp(-d^2 / sigma))

AU thresholds are not sampled: every trial computes the exactly F1-optimal threshold of each AU
on the rows it scores (blend.thresholds). The objective is the challenge score: P_EXPR, P_VA,
P_AU, P_LSD, or P_MTL = P_VA + P_EXPR + P_AU.

Honest estimate (cv = K, the default 5): the split's videos are dealt into K folds; for each
fold a study chooses parameters on the other folds' rows only and its choice is scored on the
held-out fold; the held-out decisions of all folds together give the out-of-fold score. A last
study on all rows gives the parameters written to the spec and the in-sample score (the
published practice, and all there is with cv = 0).

Each study is resumable: `trials` is the number of finished trials a study should reach, counting
every worker's (heads.studies: several processes may share one storage and stop at exactly that
many), so running the same command again after an interruption continues where it stopped. A study
remembers what it was made for (task, split, inputs, data fingerprint, ...) and refuses to
continue on anything else.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from .combine import SCORE_KEYS, TaskParams, decide, fit_score, task_metrics
from .data import BlendData, task_list
from .folds import grouped_folds
from .smoothing import KINDS, Smoothing
from .spec import BlendSpec
from .storage import append_trials, describe_storage, finished_trials, is_file_storage, resolve_storage
from heads.studies import file_lock, lock_file, open_study, other_settings_error, run_budget

__all__ = ["TuneResult", "suggest_params", "params_from_values", "evaluate", "tune", "study_objective"]


@dataclass
class TuneResult:
    spec: BlendSpec
    study: object  # optuna.Study on all rows: the spec's parameters
    fold_studies: list = field(default_factory=list)  # one per fold (cv > 0)
    data: BlendData | None = None


# ---------------------------------------------------------------------------- search space


def suggest_task_params(trial, data: BlendData, task: str) -> TaskParams:
    names = data.blends[task].names
    values = {}
    if len(names) > 1:
        for n in names:
            values[f"{task}.share.{n}"] = trial.suggest_float(f"{task}.share.{n}", 0.0, 1.0)
    if data.temporal:
        kind = values[f"{task}.smoothing"] = trial.suggest_categorical(f"{task}.smoothing", KINDS)
        if kind != "none":
            top = data.smoother.max_delta
            values[f"{task}.delta"] = trial.suggest_int(f"{task}.delta", 1, top)
            if kind == "gaussian":
                values[f"{task}.sigma"] = trial.suggest_float(f"{task}.sigma", 1.0, 2.0 * top * top, log=True)
    return task_params_from_values(data, task, values)


def task_params_from_values(data: BlendData, task: str, values: dict) -> TaskParams:
    """A task's parameters from a trial's values (trial.params): what `suggest_task_params` returns."""
    names = data.blends[task].names
    if len(names) == 1:
        weights = {names[0]: 1.0}
    else:
        shares = [values[f"{task}.share.{n}"] for n in names]
        total = sum(shares)
        weights = {n: (s / total if total > 0 else 1.0 / len(names)) for n, s in zip(names, shares)}
    smoothing = Smoothing()
    if data.temporal:
        kind = values[f"{task}.smoothing"]
        if kind != "none":
            sigma = values[f"{task}.sigma"] if kind == "gaussian" else None
            smoothing = Smoothing(kind, values[f"{task}.delta"], sigma)
    return TaskParams(weights, smoothing)


def suggest_params(trial, data: BlendData) -> dict[str, TaskParams]:
    """Parameters of every task from an Optuna trial (or optuna.trial.FixedTrial(best.params))."""
    return {t: suggest_task_params(trial, data, t) for t in data.tasks}


def params_from_values(data: BlendData, values: dict) -> dict[str, TaskParams]:
    """Parameters of every task from a finished trial's values (study.best_trial.params)."""
    return {t: task_params_from_values(data, t, values) for t in data.tasks}


# ---------------------------------------------------------------------------- evaluation


def evaluate(data: BlendData, params: dict[str, TaskParams], positions: dict[str, np.ndarray],
             objective: str | None = None) -> tuple[float, dict]:
    """Objective on the given positions of each task: (sum of task scores, {task: (score, thresholds)}).
    objective "abaw2": the expr score is 0.67 macro F1 + 0.33 accuracy (blend.combine.fit_score)."""
    total, parts = 0.0, {}
    for t, p in params.items():
        idx = positions[t]
        scores = data.blends[t].scores(p.weights, p.smoothing)
        parts[t] = fit_score(t, scores[:, idx], data.labels[t][idx], objective)
        total += parts[t][0]
    return total, parts


def study_objective(data: BlendData, positions: dict[str, np.ndarray], score: str | None = None):
    """The function an Optuna study maximises: the challenge score on `positions` (score "abaw2":
    the ABAW2 expression score). The same number as `evaluate`, bit for bit, from scorers laid out
    once for these positions (blend.combine.PositionScorer)."""
    scorers = {t: data.blends[t].scorer(positions[t]) for t in data.tasks}
    labels = {t: data.labels[t][positions[t]] for t in data.tasks}

    def objective(trial) -> float:
        total = 0.0
        for t, p in suggest_params(trial, data).items():
            total += fit_score(t, scorers[t](p.weights, p.smoothing), labels[t], score)[0]
        return total

    return objective


OBJECTIVES = ("challenge", "abaw2")  # abaw2: expr only, 0.67 macro F1 + 0.33 accuracy


def _score_key(task: str, objective: str | None) -> str:
    return "abaw2_expr" if objective == "abaw2" and task == "expr" else SCORE_KEYS[task]


def _fixed_params(data: BlendData, study) -> dict[str, TaskParams]:
    return params_from_values(data, study.best_trial.params)


def _summary(task: str, per_task: dict[str, dict]) -> dict:
    """Headline numbers of a set of per-task metrics."""
    out = {}
    for t, m in per_task.items():
        out[SCORE_KEYS[t]] = m[SCORE_KEYS[t]]
        for k in ("accuracy", "abaw2_expr", "ccc_valence", "ccc_arousal"):
            if k in m:
                out[k] = m[k]
        if "per_au_f1" in m:
            out["per_au_f1"] = m["per_au_f1"]
    if task == "mtl":
        out["P_MTL"] = out["P_VA"] + out["P_EXPR"] + out["P_AU"]
    return out


# ---------------------------------------------------------------------------- studies


@contextmanager
def _quiet_optuna():
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(old)


def _sampler(seed: int, storage_label: str):
    """TPE with the study's seed. Studies sampled in this process alone (in memory, and file
    storages, which are sampled against an in-memory copy: _optimize) never hold another worker's
    running trial, so TPE's constant liar (on by default in recent Optuna) changes none of their
    trials and only costs passes over the history and a stored attribute per trial: it is off there.
    Database URLs, where workers share running trials, keep Optuna's default."""
    import optuna

    in_process = storage_label == "memory" or is_file_storage(storage_label)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=not in_process)


def _open_study(storage, storage_label: str, name: str, config: dict, seed: int):
    # open_study: workers started at once on an empty database never race (heads.studies)
    study = open_study(storage, storage_label, name, sampler=_sampler(seed, storage_label))
    old = study.user_attrs.get("featheads")
    if old is None:
        if study.trials and not any(t.user_attrs.get("surplus") for t in study.trials):
            raise UserError(
                f"study {name!r} in {describe_storage(storage_label)} was not made by blend tune; "
                "choose another --study"
            )
        study.set_user_attr("featheads", config)
    elif old != config:
        raise other_settings_error(name, storage_label, old, config)
    return study


FLUSH_SECONDS = 2.0  # a buffered study writes its finished trials to the storage at least this often


def _optimize(study, objective, trials: int, bar, *, buffered: bool, lock_path=None) -> None:
    """Run the study until it has `trials` finished trials, counting every worker's.

    buffered: sample and evaluate against an in-memory copy of the study and write the finished
    trials to the real storage in batches (every FLUSH_SECONDS, at the end, and on Ctrl-C or an
    error), instead of one write per parameter and state change. Used for file storages, where each
    write is a synced append: a SQLite file takes a batch in one transaction (blend.storage.
    append_trials); each batch is written under a lock file beside the storage (lock_path) and cut
    to what the study still lacks, so that workers sharing the file stop at exactly `trials`.
    Database URLs are written directly (heads.studies.run_budget), so that several workers sharing
    one study see each other's trials at once.

    The sampler sees the same history either way (the storage's finished trials, then this
    process's own), so a new study gives the same trials for a seed in memory and in a file.
    """
    import optuna

    remaining = trials - finished_trials(study)
    if remaining <= 0:
        return
    name = study.study_name
    complete = optuna.trial.TrialState.COMPLETE
    best = [None]

    def tick(s, trial):  # the bar, and the best value without asking the storage for it
        bar.update(1)
        if trial.state == complete and (best[0] is None or trial.value > best[0]):
            best[0] = trial.value
            bar.set_postfix_str(f"{name} best {best[0]:.4f}", refresh=False)

    in_memory = lock_path is None and study._storage.__class__.__name__ == "InMemoryStorage"
    if not buffered:
        if in_memory:
            study.optimize(objective, n_trials=remaining, callbacks=[tick])  # one process: nothing to share
        else:
            run_budget(study, objective, trials, callbacks=[_shared_tick(bar, name)])
        return
    memory = optuna.create_study(direction="maximize", sampler=study.sampler)
    history = study.get_trials(deepcopy=False, states=(complete,))
    memory.add_trials(history)  # the history the sampler learns from
    if history:
        best[0] = max(t.value for t in history)
    pending = []  # finished here, not yet written
    last_flush = time.monotonic()
    lacking = remaining  # what the storage lacked at the last flush
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def flush() -> bool:
        """Write the pending trials (no more than the storage lacks); True when it has them all."""
        nonlocal last_flush, lacking
        batch = [_with_worker(t, worker) for t in pending]
        pending.clear()
        last_flush = time.monotonic()
        with file_lock(lock_path):
            lacking = append_trials(study, batch, trials)  # other workers may have written theirs meanwhile
        return lacking <= 0

    def collect(s, trial):
        tick(s, trial)
        if trial.state == complete:
            pending.append(trial)  # a copy of the in-memory trial: optimize hands callbacks copies
        if len(pending) >= lacking or time.monotonic() - last_flush >= FLUSH_SECONDS:
            if flush():
                s.stop()

    try:
        memory.optimize(objective, n_trials=None, callbacks=[collect])
    finally:
        flush()


def _shared_tick(bar, name: str):
    """The bar of a study shared as it runs: the best value of every worker's trials."""

    def tick(s, trial):
        bar.update(1)
        try:
            bar.set_postfix_str(f"{name} best {s.best_value:.4f}", refresh=False)
        except ValueError:  # no finished trial yet
            pass

    return tick


def _with_worker(trial, worker: str):
    trial.user_attrs = {**trial.user_attrs, "worker": worker}  # as heads.studies.run_budget records it
    return trial


def tune(
    store_path,
    inputs: list[str],
    task: str,
    split: str = "val",
    *,
    trials: int = 300,
    storage: str | None = None,
    study_name: str | None = None,
    cv: int = 5,
    seed: int = 0,
    max_delta: int = 30,
    spec_path=None,
    progress: bool = True,
    objective: str = "challenge",
) -> TuneResult:
    """Run (or continue) the studies and return the blend spec (not written; see write_spec).

    storage: as `blend tune --storage` (blend.storage); None puts a SQLite file beside spec_path,
    or keeps studies in memory when there is no spec_path either.
    """
    from tqdm import tqdm

    _check_options(trials, objective, task, cv)
    score = None if objective == "challenge" else objective
    tasks = task_list(task)
    with FeatureStore.open(store_path, "r") as st:
        data = BlendData.load(st, inputs, task, split, max_delta=max_delta)
        store_abs = str(st.path)
    for t in tasks:
        if len(data.scored[t]) == 0:
            raise UserError(f"{store_path}: split {split!r} has no row with both a {t!r} label and a prediction")
    if storage is None and spec_path is None:
        storage = "memory"
    storage_obj, storage_label = resolve_storage(storage, spec_path or "blend.json")
    buffered = is_file_storage(storage_label)
    base = study_name or f"blend-{task}-{split}" + (f"-{score}" if score else "")
    config = {
        "task": task, "split": split, "inputs": list(inputs), "max_delta": int(max_delta) if data.temporal else 0,
        "cv": int(cv), "seed": int(seed), "fingerprint": data.fingerprint(),
    }
    if score:  # a study tuned for another objective is not continued
        config["objective"] = score

    group_by = "video" if data.temporal else "row"
    with _quiet_optuna():
        plans = _study_plans(data, tasks, cv, seed, base, config, storage_obj, storage_label)
        final = plans[-1][0]

        total = sum(max(0, trials - finished_trials(s)) for s, _, _ in plans)
        with tqdm(total=total, desc="blend tune", unit="trial", disable=not progress or total == 0) as bar:
            for study, positions, _ in plans:
                objective_fn = study_objective(data, positions) if score is None else \
                    study_objective(data, positions, score)
                _optimize(study, objective_fn, trials, bar, buffered=buffered,
                          lock_path=lock_file(storage_label))

    cv_info: dict = {"folds": int(cv)}
    oof_summary = None
    if cv:
        oof_summary, fold_scores = _out_of_fold(data, task, plans[:-1], score)
        cv_info.update({"group_by": group_by, "seed": int(seed), "fold_scores": fold_scores})
    params, in_sample = _in_sample(data, task, final, score)

    spec = BlendSpec(
        task=task, split=split, inputs=list(inputs), tasks=params,
        scores={"in_sample": in_sample, "out_of_fold": oof_summary},
        cv=cv_info,
        study={"name": base, "storage": describe_storage(storage_label), "trials": finished_trials(final),
               "best_trial": int(final.best_trial.number), "best_value": float(final.best_value),
               "sampler": "TPESampler", "seed": int(seed), "objective": objective},
        rows={"split": int(len(data.rows)),
              "labelled": {t: int(st_mask.sum()) for t, st_mask in _labelled(data).items()},
              "scored": {t: int(len(data.scored[t])) for t in tasks}},
        max_delta=config["max_delta"],
        store=store_abs,
    )
    return TuneResult(spec=spec, study=final, fold_studies=[p[0] for p in plans[:-1]], data=data)


def _check_options(trials: int, objective: str, task: str, cv: int) -> None:
    if trials < 1:
        raise UserError(f"--trials {trials}: need at least 1 trial")
    if objective not in OBJECTIVES:
        raise UserError(f"--objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if objective == "abaw2" and task != "expr":
        raise UserError(f"--objective abaw2 is the ABAW2 expression score: use it with --task expr, not {task}")
    if cv < 0 or cv == 1:
        raise UserError(f"--cv {cv}: use 0 (in-sample only) or 2 folds and more")


def _study_plans(data, tasks, cv: int, seed: int, base: str, config: dict, storage_obj, storage_label) -> list:
    """[(study, positions it tunes on, held-out positions or None)]: one study per fold (videos dealt into
    `cv` folds), then the final study on every scored row."""
    plans = []
    if cv:
        groups = data.videos if data.temporal else np.arange(len(data.rows))
        fold_of_row = grouped_folds(groups, cv, seed)
    for k in range(cv):
        train = {t: data.scored[t][fold_of_row[data.scored[t]] != k] for t in tasks}
        held = {t: data.scored[t][fold_of_row[data.scored[t]] == k] for t in tasks}
        for t in tasks:
            if len(train[t]) == 0:
                raise UserError(f"--cv {cv}: fold {k + 1} leaves no labelled {t!r} rows to tune on; "
                                "use fewer folds")
        name = f"{base}-fold{k + 1}of{cv}"
        study = _open_study(storage_obj, storage_label, name, {**config, "fold": k + 1}, seed + k + 1)
        plans.append((study, train, held))
    plans.append((_open_study(storage_obj, storage_label, base, config, seed), data.scored, None))
    return plans


def _out_of_fold(data: BlendData, task: str, fold_plans: list, score: str | None = None) -> tuple[dict, list]:
    """Each fold's held-out rows decided with the parameters its own study chose on the other folds
    (AU thresholds included); the pooled decisions give the out-of-fold scores."""
    oof = {t: None for t in data.tasks}  # decisions on data.scored[t], filled fold by fold
    fold_scores = []
    for k, (study, train, held) in enumerate(fold_plans):
        params = _fixed_params(data, study)
        train_score, parts = evaluate(data, params, train, score)
        held_total = 0.0
        for t in data.tasks:
            scores = data.blends[t].scores(params[t].weights, params[t].smoothing)
            dec = decide(t, scores[:, held[t]], parts[t][1])
            if oof[t] is None:
                oof[t] = np.zeros((len(data.scored[t]),) + dec.shape[1:], dtype=dec.dtype)
            oof[t][np.searchsorted(data.scored[t], held[t])] = dec
            if len(held[t]):
                held_total += task_metrics(t, data.labels[t][held[t]], dec)[_score_key(t, score)]
        fold_scores.append({"fold": k + 1, "train": float(train_score), "held_out": float(held_total),
                            "rows": {t: int(len(held[t])) for t in data.tasks}})
    per_task = {t: task_metrics(t, data.labels[t][data.scored[t]], oof[t]) for t in data.tasks}
    return _summary(task, per_task), fold_scores


def _in_sample(data: BlendData, task: str, study, score: str | None = None) -> tuple[dict[str, TaskParams], dict]:
    """The study's best parameters with their in-sample thresholds, and their in-sample scores."""
    params = _fixed_params(data, study)
    _, parts = evaluate(data, params, data.scored, score)
    per_task = {}
    for t in data.tasks:
        idx = data.scored[t]
        params[t].thresholds = parts[t][1]
        scores = data.blends[t].scores(params[t].weights, params[t].smoothing)
        per_task[t] = task_metrics(t, data.labels[t][idx], decide(t, scores[:, idx], parts[t][1]))
    return params, _summary(task, per_task)


def _labelled(data: BlendData) -> dict[str, np.ndarray]:
    return {t: FeatureStore.label_mask(t, data.labels[t]) for t in data.tasks}
