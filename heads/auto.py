"""The `auto` heads: the best of a small fixed set of heads, chosen by cross-validation grouped by
video inside the training rows, then refitted on all of them. The `auto` recipe (the default of
`heads fit`) uses them for every task.

    AutoClassifierHead   EXPR, LSD: logistic regression | MLP with early stopping | LightGBM
    AutoMultilabelHead   AU: the same three, one output per AU
    AutoRegressorHead    VA: ridge | MLP (tanh, 1 - CCC) with early stopping | LightGBM

Why a choice and not one head: on 1,000 rows (CK+, the demo) a linear head wins and networks
overfit; on 28,709 (FER2013) LightGBM wins; on 142k an MLP with early stopping is as good as any
(bench/RESULTS.md). The candidates scale with the data: the MLP's batch is ~n/64 (32..512) and its
epoch cap 3e5/n (20..100), early-stopped on a held-out tenth of its training rows (whole videos);
LightGBM's 100 trees are the `lightgbm` recipe's. The choice: `inner_cv` folds grouped by video (one group per row when
no groups are passed), on a sample of whole videos of at most `max_inner_rows` rows; the score is
the task's (macro F1 over the classes, mean CCC, mean AU F1 at 0.5); the first candidate wins ties.
Nothing but the rows given to fit is used. `chosen_` and `inner_scores_` say what was chosen and why.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from .registry import class_by_name, make_head

__all__ = ["AutoClassifierHead", "AutoMultilabelHead", "AutoRegressorHead", "default_candidates"]


def _mlp_schedule(n_rows: int) -> dict:
    from .search_spaces import batch_size_for

    return {"batch_size": batch_size_for(n_rows), "epochs": int(np.clip(round(3e5 / max(n_rows, 1)), 20, 100)),
            "early_stopping": True, "validation_fraction": 0.1, "n_iter_no_change": 5}


def default_candidates(kind: str, n_rows: int) -> list[dict]:
    """The fixed set, in tie-break order: [{"name", "head", "params"}]."""
    gbm = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31, "colsample": 0.3, "subsample": 0.5,
           "min_child_samples": 20}  # the `lightgbm` recipe's trees
    mlp = {"hidden_layer_sizes": [256], "activation": "relu", "dropout": 0.2, "l2": 1e-5, "learning_rate": 1e-3,
           **_mlp_schedule(n_rows)}
    if kind == "regression":
        return [{"name": "ridge", "head": "linear", "params": {"alpha": 100.0}},
                {"name": "mlp", "head": "mlp", "params": {**mlp, "output_activation": "tanh", "loss": "ccc"}},
                {"name": "lightgbm", "head": "lightgbm", "params": gbm}]
    balanced = {"class_weight": "balanced"}
    extra = {"loss": "weighted_bce"} if kind == "multilabel" else {"class_weight": "balanced"}
    return [{"name": "logistic", "head": "linear", "params": {"C": 0.05, "max_iter": 300, **balanced}},
            {"name": "mlp", "head": "mlp", "params": {**mlp, **extra}},
            {"name": "lightgbm", "head": "lightgbm", "params": {**gbm, **balanced}}]


def _score(kind: str, y, pred, n_classes) -> float:
    from .metrics import binary_f1, ccc, per_class_f1

    if kind == "multiclass":
        k = int(n_classes or (int(np.max(y)) + 1))
        present = np.unique(y)
        return float(per_class_f1(y, np.argmax(pred, axis=1), k)[present].mean())
    if kind == "multilabel":
        return float(np.mean([binary_f1(y[:, j], pred[:, j] >= 0.5) for j in range(y.shape[1])]))
    y2, p2 = np.asarray(y).reshape(len(y), -1), np.asarray(pred).reshape(len(y), -1)
    return float(np.mean([ccc(y2[:, j], p2[:, j]) for j in range(y2.shape[1])]))


def _folds(groups, n_rows: int, n_folds: int, max_rows: int | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """(rows used for the choice, their fold index): whole groups, shuffled, dealt by size."""
    groups = np.arange(n_rows) if groups is None else np.asarray(groups)
    names, inverse, counts = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = rng.permutation(len(names))
    if max_rows and n_rows > max_rows:
        keep = order[:int(np.searchsorted(np.cumsum(counts[order]), max_rows)) + 1]
    else:
        keep = order
    n_folds = max(2, min(n_folds, len(keep)))
    fold_of_group = np.full(len(names), -1)
    size = np.zeros(n_folds, dtype=np.int64)
    for g in keep:
        f = int(np.argmin(size))
        fold_of_group[g] = f
        size[f] += counts[g]
    fold = fold_of_group[inverse]
    used = np.flatnonzero(fold >= 0)
    return used, fold[used]


class _AutoHead(BaseEstimator):
    _kind = ""

    def _candidates(self, n_rows: int) -> list[dict]:
        return list(self.candidates) if self.candidates else default_candidates(self._kind, n_rows)

    def _make(self, cand: dict):
        head = make_head(cand["head"], self._kind, cand.get("params", {}), n_classes=getattr(self, "n_classes", None),
                         seed=self.random_state)
        if "verbose" in head.get_params():
            head.set_params(verbose=False)
        return head

    def _out(self, head, X):
        return head.predict(X) if self._kind == "regression" else head.predict_proba(X)

    def fit(self, X, y, groups=None):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        cands = self._candidates(len(X))
        if not cands:
            raise ValueError("candidates is empty; give at least one {\"head\": ..., \"params\": {...}}")
        rng = np.random.default_rng(self.random_state)
        scores = []
        if len(cands) > 1:
            used, fold = _folds(groups, len(X), int(self.inner_cv), self.max_inner_rows, rng)
            g = None if groups is None else np.asarray(groups)[used]
            Xu, yu = X[used], y[used]
            for cand in cands:
                pred = None
                for k in range(int(fold.max()) + 1):
                    te = fold == k
                    head = self._make(cand).fit(Xu[~te], yu[~te], groups=None if g is None else g[~te])
                    p = np.asarray(self._out(head, Xu[te]), dtype=np.float64).reshape(int(te.sum()), -1)
                    pred = np.zeros((len(Xu), p.shape[1])) if pred is None else pred
                    pred[te] = p
                scores.append(_score(self._kind, yu, pred, getattr(self, "n_classes", None)))
            best = int(np.argmax(np.nan_to_num(np.asarray(scores), nan=-np.inf)))  # first of equals wins
        else:
            best = 0
        self.inner_scores_ = {c.get("name", c["head"]): (None if not scores else float(s))
                              for c, s in zip(cands, scores or [None] * len(cands))}
        self.chosen_ = cands[best].get("name", cands[best]["head"])
        self.chosen_params_ = {"head": cands[best]["head"], "params": dict(cands[best].get("params", {}))}
        self.best_ = self._make(cands[best]).fit(X, y, groups=groups)
        self.n_features_in_ = X.shape[1]
        if hasattr(self.best_, "classes_"):
            self.classes_ = self.best_.classes_
        return self

    def predict(self, X):
        return self.best_.predict(X)

    # -- persistence (heads.persist): the chosen head's state under "best."
    def _fitted_state(self):
        meta, arrays, texts = self.best_._fitted_state()
        doc = {"n_features_in_": int(self.n_features_in_), "chosen_": self.chosen_,
               "chosen_params_": self.chosen_params_, "inner_scores_": self.inner_scores_,
               "best": {"class": type(self.best_).__name__, "params": self.best_.get_params(deep=False),
                        "state": meta, "texts": sorted(texts)}}
        return doc, {f"best.{k}": v for k, v in arrays.items()}, {f"best.{k}": v for k, v in texts.items()}

    def _restore_state(self, meta, arrays, texts):
        for k in ("n_features_in_", "chosen_", "chosen_params_", "inner_scores_"):
            setattr(self, k, meta[k])
        doc = meta["best"]
        h = class_by_name(doc["class"])(**doc["params"])
        h._restore_state(doc["state"], {k[5:]: v for k, v in arrays.items() if k.startswith("best.")},
                         {k[5:]: v for k, v in texts.items() if k.startswith("best.")})
        self.best_ = h
        if hasattr(h, "classes_"):
            self.classes_ = h.classes_


_DOC = """
    candidates: None (the fixed set, heads.auto.default_candidates) or a list of
        {"name": ..., "head": "linear" | "mlp" | "lightgbm", "params": {...}}.
    inner_cv: folds of the choice (grouped by the groups passed to fit).
    max_inner_rows: the choice runs on a sample of whole groups of about this many rows (None: all).
"""


class AutoClassifierHead(ClassifierMixin, _AutoHead):
    __doc__ = "The best of the candidates for single-label classes (EXPR, LSD).\n" + _DOC
    _kind = "multiclass"

    def __init__(self, *, candidates=None, inner_cv=3, max_inner_rows=20000, n_classes=None, random_state=0):
        self.candidates = candidates
        self.inner_cv = inner_cv
        self.max_inner_rows = max_inner_rows
        self.n_classes = n_classes
        self.random_state = random_state

    def predict_proba(self, X):
        return self.best_.predict_proba(X)


class AutoMultilabelHead(_AutoHead):
    __doc__ = "The best of the candidates for independent binary outputs (AUs).\n" + _DOC
    _kind = "multilabel"

    def __init__(self, *, candidates=None, inner_cv=3, max_inner_rows=20000, random_state=0):
        self.candidates = candidates
        self.inner_cv = inner_cv
        self.max_inner_rows = max_inner_rows
        self.random_state = random_state

    def predict_proba(self, X):
        return self.best_.predict_proba(X)


class AutoRegressorHead(RegressorMixin, _AutoHead):
    __doc__ = "The best of the candidates for continuous outputs (VA, clipped to [-1, 1] by each candidate).\n" + _DOC
    _kind = "regression"

    def __init__(self, *, candidates=None, inner_cv=3, max_inner_rows=20000, random_state=0):
        self.candidates = candidates
        self.inner_cv = inner_cv
        self.max_inner_rows = max_inner_rows
        self.random_state = random_state
