"""Each head's hyperparameter search space for `heads tune`: head name -> suggest(trial, kind, n_rows).

    params = suggest_params(trial, "mlp", "multiclass", n_rows=28709, base={"class_weight": "balanced"})

A space only names parameters the head's class has (so `mixup_alpha` is searched once the MLP heads
have it); the recipe's own params are the base that the suggested ones override, so a recipe fixes
what it does not want searched (e.g. "loss": "ccc") and the study searches the rest.

    mlp       depth 0-2 hidden layers of one width 32-1024 (log), learning_rate 1e-4-1e-2 (log),
              l2 (weight decay) 1e-7-1e-2 (log), dropout 0-0.5, epochs 10-200 with early stopping
              on a held-out tenth of the training fold (grouped), batch size by data size,
              label_smoothing 0-0.2 (classes), mixup on/off with alpha 0.05-0.4 (log; when the
              head has the "mixup" parameter of heads.mixup)
    linear    C 1e-4-10 (log) for logistic heads; alpha 1e-2-1e4 (log) for ridge (VA)
    lightgbm  num_leaves 7-127 (log), learning_rate 0.01-0.3 (log), n_estimators 50-600 (log),
              colsample 0.1-1, subsample 0.3-1, min_child_samples 5-100 (log), reg_lambda
              (L2 on leaf values) 0.1-10 (log): at 0 (LightGBM's default) or 0.01, a learning
              rate near 0.2 over ~550 rounds sent FER2013's raw scores to 1e5-8e5 and nearly
              every prediction to one class (docs/HEADS.md)

Parameter names in the study are the head's own, so `study.best_params` reads as a recipe's params.
"""
from __future__ import annotations

import math

from .registry import head_class, param_names

__all__ = ["SPACES", "suggest_params", "batch_size_for"]


def batch_size_for(n_rows: int) -> int:
    """Mini-batch size: the power of two nearest n_rows / 64 within 32..512 (the paper's 512 from
    ~25k rows): small data still gets ~30+ optimiser steps per epoch."""
    return int(min(512, max(32, 1 << max(0, round(math.log2(max(n_rows, 1) / 64))))))


def _mlp(trial, kind: str, n_rows: int, names) -> dict:
    depth = trial.suggest_int("depth", 0, 2)
    p = {}
    if depth:
        width = trial.suggest_int("width", 32, 1024, log=True)
        p["hidden_layer_sizes"] = [width] * depth
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    else:
        p["hidden_layer_sizes"] = []
    p["learning_rate"] = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    p["l2"] = trial.suggest_float("l2", 1e-7, 1e-2, log=True)
    p["epochs"] = trial.suggest_int("epochs", 10, 200, log=True)
    p["early_stopping"] = True
    p["n_iter_no_change"] = 5
    p["batch_size"] = batch_size_for(n_rows)
    if kind == "multiclass" and "label_smoothing" in names:
        p["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
    if "mixup" in names and trial.suggest_categorical("mixup", [False, True]):  # heads.mixup
        p["mixup"] = {"alpha": trial.suggest_float("mixup_alpha", 0.05, 0.4, log=True), "kind": "mixup"}
    elif "mixup" in names:
        p["mixup"] = None
    return p


def _linear(trial, kind: str, n_rows: int, names) -> dict:
    if "alpha" in names:  # ridge (VA)
        return {"alpha": trial.suggest_float("alpha", 1e-2, 1e4, log=True)}
    return {"C": trial.suggest_float("C", 1e-4, 10.0, log=True)}


def _lightgbm(trial, kind: str, n_rows: int, names) -> dict:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "n_estimators": trial.suggest_int("n_estimators", 50, 600, log=True),
        "colsample": trial.suggest_float("colsample", 0.1, 1.0),
        "subsample": trial.suggest_float("subsample", 0.3, 1.0),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 10.0, log=True),
    }


SPACES = {"mlp": _mlp, "linear": _linear, "lightgbm": _lightgbm}


def suggest_params(trial, head: str, kind: str, *, n_rows: int, base: dict | None = None) -> dict:
    """The recipe's params `base` overridden by the head's space as sampled by `trial` (or a FixedTrial)."""
    if head not in SPACES:
        raise ValueError(f"head {head!r} has no search space; heads tune searches {', '.join(SPACES)}")
    names = set(param_names(head_class(head, kind)))
    sampled = SPACES[head](trial, kind, n_rows, names)
    return {**(base or {}), **{k: v for k, v in sampled.items() if k in names}}
