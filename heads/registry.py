"""Head names used in recipes -> estimator classes, by label kind. Classes are imported when used,
so that a recipe of linear heads never imports torch.

    kind        expr, lsd: "multiclass"   au: "multilabel"   va: "regression"
    "mlp"       MLPClassifierHead / MLPMultilabelHead / MLPRegressorHead         (heads.mlp, torch)
    "linear"    LogisticHead / LogisticMultilabelHead / RidgeHead                 (heads.linear)
    "lightgbm"  LGBMClassifierHead / LGBMMultilabelHead / LGBMRegressorHead       (heads.gbm)
    "joint_mlp" JointMLPHead: one network for expr + va + au (`heads fit mtl --joint`)  (heads.joint)
    "auto"      AutoClassifierHead / ...MultilabelHead / ...RegressorHead: the best of linear, MLP, LightGBM
                by inner grouped CV on the training rows (heads.auto; the `auto` recipe)
    "gru"       GRUClassifierHead / GRUMultilabelHead / GRURegressorHead   (heads.temporal: windows of frames)
    "transformer" TransformerClassifierHead / ...MultilabelHead / ...RegressorHead   (heads.temporal)

Any head's params may hold "bagging": {"estimators", "fraction", "seed"}: make_head then returns a
heads.bagging.BaggedHead of that head (soft voting of members fitted on samples of videos).
"""
from __future__ import annotations

import importlib
import inspect

from store.schema import LSD_CLASSES, MTL_EXPR_CLASSES

# task -> (kind, n_classes or None)
TASK_KINDS = {
    "expr": ("multiclass", len(MTL_EXPR_CLASSES)),
    "lsd": ("multiclass", len(LSD_CLASSES)),
    "au": ("multilabel", None),
    "va": ("regression", None),
}

HEADS = {
    "mlp": {"multiclass": "heads.mlp:MLPClassifierHead", "multilabel": "heads.mlp:MLPMultilabelHead",
            "regression": "heads.mlp:MLPRegressorHead"},
    "linear": {"multiclass": "heads.linear:LogisticHead", "multilabel": "heads.linear:LogisticMultilabelHead",
               "regression": "heads.linear:RidgeHead"},
    "lightgbm": {"multiclass": "heads.gbm:LGBMClassifierHead", "multilabel": "heads.gbm:LGBMMultilabelHead",
                 "regression": "heads.gbm:LGBMRegressorHead"},
    "joint_mlp": {"joint": "heads.joint:JointMLPHead"},
    "auto": {"multiclass": "heads.auto:AutoClassifierHead", "multilabel": "heads.auto:AutoMultilabelHead",
             "regression": "heads.auto:AutoRegressorHead"},
    "gru": {"multiclass": "heads.temporal:GRUClassifierHead", "multilabel": "heads.temporal:GRUMultilabelHead",
            "regression": "heads.temporal:GRURegressorHead"},
    "transformer": {"multiclass": "heads.temporal:TransformerClassifierHead",
                    "multilabel": "heads.temporal:TransformerMultilabelHead",
                    "regression": "heads.temporal:TransformerRegressorHead"},
}
# Classes that wrap other heads (not recipe head names; they load from run folders like the others).
WRAPPERS = {"BaggedHead": "heads.bagging:BaggedHead"}


def _import(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def head_class(name: str, kind: str):
    """The estimator class of head `name` for label kind `kind`; ValueError naming what exists."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; heads: {', '.join(HEADS)}")
    if kind not in HEADS[name]:
        raise ValueError(f"head {name!r} cannot do {kind} tasks (it does: {', '.join(HEADS[name])})")
    return _import(HEADS[name][kind])


def class_by_name(class_name: str):
    """A head class from its class name (used when loading a saved head: only these classes load)."""
    for kinds in HEADS.values():
        for ref in kinds.values():
            if ref.split(":")[1] == class_name:
                return _import(ref)
    if class_name in WRAPPERS:
        return _import(WRAPPERS[class_name])
    raise ValueError(f"unknown head class {class_name!r}")


def param_names(cls) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p for p in sig.parameters if p != "self"]


def make_head(name: str, kind: str, params: dict, *, n_classes: int | None = None, seed: int | None = None):
    """Instantiate a head; unknown parameter names raise ValueError listing the allowed ones.

    n_classes is set for multiclass heads (fixed class order of the task); seed sets random_state.
    params["bagging"] (any head) makes a heads.bagging.BaggedHead of that head.
    """
    if "bagging" in params:
        from .bagging import BaggedHead, check_bagging

        rest = {k: v for k, v in params.items() if k != "bagging"}
        check_bagging(params["bagging"])
        make_head(name, kind, rest, n_classes=n_classes, seed=seed)  # unknown parameters fail here, now
        return BaggedHead(head=name, kind=kind, params=rest, bagging=params["bagging"], n_classes=n_classes,
                          random_state=0 if seed is None else seed)
    cls = head_class(name, kind)
    allowed = param_names(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"head {name!r} ({cls.__name__}) has no parameter {', '.join(map(repr, unknown))}; "
                         f"parameters: {', '.join(allowed)}")
    kw = dict(params)
    if n_classes is not None and "n_classes" in allowed:
        kw["n_classes"] = n_classes
    if seed is not None and "random_state" in allowed:
        kw["random_state"] = seed
    return cls(**kw)


def fit_takes_rows(head) -> bool:
    """Whether `head.fit(X, y, groups, rows=rows)` trains on X[rows] in place (the MLP heads): callers
    holding every row's features then hand over the matrix and the rows instead of a copy of them."""
    return "rows" in inspect.signature(head.fit).parameters
