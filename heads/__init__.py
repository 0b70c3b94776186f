"""Fit heads (MLP, logistic, LightGBM) on cached features; metrics of the ABAW challenges.

    from heads import fit_mtl, predict_run
    metrics = fit_mtl("store.h5", "paper", out="runs/paper")

Public names are imported when first used, so `import heads` (and `heads --help`) stays light.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "fit_mtl": "heads.fitting", "fit_expr": "heads.fitting", "fit_lsd": "heads.fitting",
    "fit_tasks": "heads.fitting", "predict_run": "heads.predicting", "load_recipe": "heads.recipe",
    "builtin_recipes": "heads.recipe", "load_head": "heads.persist", "save_head": "heads.persist",
    "MLPClassifierHead": "heads.mlp", "MLPMultilabelHead": "heads.mlp", "MLPRegressorHead": "heads.mlp",
    "JointMLPHead": "heads.joint", "LogisticHead": "heads.linear", "LogisticMultilabelHead": "heads.linear",
    "RidgeHead": "heads.linear", "LGBMClassifierHead": "heads.gbm", "LGBMMultilabelHead": "heads.gbm",
    "LGBMRegressorHead": "heads.gbm",
}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'heads' has no attribute {name!r}")
