"""Losses and validation scores of a fine-tune, missing labels masked task by task.

lsd / expr: weighted cross-entropy, class weights `mean(counts) / counts` over the training labels
(LSD as published; a class without training images gets weight 0), label smoothing 0.1.
mtl (HSE-NN): (1 - mean CCC of valence and arousal) + weighted CE of the 8 expressions + BCE of the
12 AUs (pos_weight = negatives / positives per AU), each term over the rows that carry its label and
weighted by the recipe's `mtl_weights`; a term whose task has no labelled row in the batch is 0.

Scores (featheads' ABAW conventions, the same as heads.metrics; restated here because featurize
never imports heads): macro F1 over all the task's classes (zero_division 0); P_MTL = mean CCC +
expression macro F1 + mean AU F1 (AU logit >= 0, i.e. probability >= 0.5).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .finetune_heads import MTL_SLICES


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """mean(counts) / counts over the classes present in `labels` (-1 missing); 0 for absent classes."""
    y = labels[labels >= 0]
    counts = np.bincount(y, minlength=k).astype(np.float64)[:k]
    w = np.zeros(k)
    present = counts > 0
    if present.any():
        w[present] = counts[present].mean() / counts[present]
    return torch.tensor(w, dtype=torch.float32)


def au_pos_weight(au: np.ndarray) -> torch.Tensor:
    """negatives / positives per AU over labelled rows (1 where an AU has no positive or no negative)."""
    rows = au[(au >= 0).all(axis=1)] if len(au) else au
    pos = rows.sum(axis=0).astype(np.float64)
    neg = len(rows) - pos
    w = np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(w, dtype=torch.float32)


def _zero(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0  # keeps the graph (and the dtype/device) for an empty term


def weighted_ce(logits, y, weight, smoothing: float) -> torch.Tensor:
    keep = y >= 0
    if not bool(keep.any()):
        return _zero(logits)
    return F.cross_entropy(logits[keep].float(), y[keep], weight=weight, label_smoothing=smoothing)


def ccc_torch(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CCC per column, population moments: (B, C), (B, C) -> (C,)."""
    mp, my = pred.mean(0), y.mean(0)
    vp, vy = pred.var(0, unbiased=False), y.var(0, unbiased=False)
    cov = ((pred - mp) * (y - my)).mean(0)
    return 2 * cov / (vp + vy + (mp - my) ** 2 + 1e-8)


def ccc_loss(pred, va) -> torch.Tensor:
    keep = torch.isfinite(va).all(dim=1)
    if int(keep.sum()) < 2:
        return _zero(pred)
    return 1 - ccc_torch(pred[keep].float(), va[keep]).mean()


def au_bce(logits, au, pos_weight) -> torch.Tensor:
    keep = (au >= 0).all(dim=1)
    if not bool(keep.any()):
        return _zero(logits)
    return F.binary_cross_entropy_with_logits(logits[keep].float(), au[keep].float(), pos_weight=pos_weight)


class FinetuneLoss:
    """loss(outputs, labels) for a task; labels: {"y": (B,)} or {"expr": (B,), "va": (B, 2), "au": (B, 12)}."""

    def __init__(self, task: str, recipe_loss: dict, train_labels: dict, k: int, device):
        self.task = task
        self.smoothing = float(recipe_loss["label_smoothing"])
        weighted = recipe_loss["class_weights"] == "mean_over_counts"
        cls = train_labels["expr"] if task == "mtl" else train_labels["y"]
        kc = 8 if task == "mtl" else k
        self.weight = class_weights(cls, kc).to(device) if weighted else None
        self.pos_weight = None
        if task == "mtl":
            self.mtl = recipe_loss["mtl_weights"]
            if recipe_loss["au_pos_weight"]:
                self.pos_weight = au_pos_weight(train_labels["au"]).to(device)

    def terms(self, out, labels) -> dict:
        if self.task != "mtl":
            return {"ce": weighted_ce(out, labels["y"], self.weight, self.smoothing)}
        return {
            "va": ccc_loss(out[:, MTL_SLICES["va"]], labels["va"]),
            "expr": weighted_ce(out[:, MTL_SLICES["expr"]], labels["expr"], self.weight, self.smoothing),
            "au": au_bce(out[:, MTL_SLICES["au"]], labels["au"], self.pos_weight),
        }

    def __call__(self, out, labels) -> torch.Tensor:
        t = self.terms(out, labels)
        if self.task != "mtl":
            return t["ce"]
        return sum(float(self.mtl[k]) * v for k, v in t.items())


def macro_f1(y: np.ndarray, scores: np.ndarray, k: int) -> float:
    from sklearn.metrics import f1_score

    keep = y >= 0
    if not keep.any():
        return float("nan")
    return float(f1_score(y[keep], scores[keep].argmax(1), labels=list(range(k)), average="macro", zero_division=0))


def _ccc_np(t, p) -> float:
    mt, mp = t.mean(), p.mean()
    denom = t.var() + p.var() + (mt - mp) ** 2
    return 1.0 if denom == 0 else float(2 * np.mean((t - mt) * (p - mp)) / denom)


def score(task: str, outputs: np.ndarray, labels: dict) -> dict:
    """Validation scores: {"F1": ...} (lsd, expr) or {"P_VA", "P_EXPR", "P_AU", "P_MTL"} (mtl)."""
    from sklearn.metrics import f1_score

    if task != "mtl":
        return {"F1": macro_f1(labels["y"], outputs, outputs.shape[1])}
    va, expr, au = labels["va"], labels["expr"], labels["au"]
    keep = np.isfinite(va).all(1)
    p_va = (np.mean([_ccc_np(va[keep, j].astype(np.float64), outputs[keep, 8 + j].astype(np.float64))
                     for j in range(2)]) if keep.any() else float("nan"))
    p_expr = macro_f1(expr, outputs[:, MTL_SLICES["expr"]], 8)
    keep = (au >= 0).all(1)
    if keep.any():
        pred = (outputs[keep][:, MTL_SLICES["au"]] >= 0).astype(int)
        p_au = float(np.mean([f1_score(au[keep, j], pred[:, j], zero_division=0) for j in range(12)]))
    else:
        p_au = float("nan")
    return {"P_VA": float(p_va), "P_EXPR": p_expr, "P_AU": p_au, "P_MTL": float(p_va + p_expr + p_au)}


def headline(task: str) -> str:
    return "P_MTL" if task == "mtl" else "F1"
