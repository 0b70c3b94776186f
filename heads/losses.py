"""Training losses of the torch heads, each `(outputs, targets) -> scalar tensor`.

Outputs are raw (pre-activation) scores for classification and multi-label heads (the
activation is folded into the loss, as in torch), and activated values for regression heads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits, y, *, weight=None, label_smoothing: float = 0.0):
    """Softmax cross-entropy, optionally class-weighted (weighted mean, as torch) and smoothed."""
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)


def focal_multiclass(logits, y, *, gamma: float = 2.0, weight=None):
    """Multi-class focal loss -(1 - p_t)^gamma log p_t, optionally class-weighted (weighted mean)."""
    logp = F.log_softmax(logits, dim=1)  # (batch, classes)
    logp_t = logp.gather(1, y[:, None])[:, 0]
    loss = -((1.0 - logp_t.exp()) ** gamma) * logp_t
    if weight is None:
        return loss.mean()
    w = weight[y]
    return (w * loss).sum() / w.sum().clamp_min(1e-12)


def weighted_bce(logits, y, *, w1=None, w0=None):
    """Binary cross-entropy per output with weight w1 on positives and w0 on negatives (per column)."""
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # (batch, outputs)
    if w1 is not None:
        loss = loss * (y * w1 + (1.0 - y) * w0)
    return loss.mean()


def focal_binary(logits, y, *, gamma: float = 2.0, w1=None, w0=None):
    """Binary focal loss per output: positives weighted (1 - p)^gamma, negatives p^gamma."""
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1.0 - p) * (1.0 - y)
    loss = (1.0 - p_t) ** gamma * bce
    if w1 is not None:
        loss = loss * (y * w1 + (1.0 - y) * w0)
    return loss.mean()


def ccc_loss(pred, y):
    """1 - mean over columns of the CCC, with population moments over the batch."""
    mp, my = pred.mean(0), y.mean(0)
    dp, dy = pred - mp, y - my
    cov = (dp * dy).mean(0)
    denom = (dp * dp).mean(0) + (dy * dy).mean(0) + (mp - my) ** 2
    return 1.0 - (2.0 * cov / denom.clamp_min(1e-8)).mean()


def mse(pred, y):
    return F.mse_loss(pred, y)
