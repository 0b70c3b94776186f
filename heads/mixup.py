"""Mix-up and Mix-augment on cached features (Jeong et al., ABAW4 LSD; seeds/002), for the torch heads.

Recipe parameter of every torch head (mlp, joint_mlp, gru, transformer):

    "mixup": {"alpha": 0.1, "kind": "mixup"}        # or "kind": "mixaugment"

Per batch, lambda ~ Beta(alpha, alpha) and a random pairing perm of the batch: the network sees
x_mixed = lambda * x_i + (1 - lambda) * x_perm(i), and the targets are mixed the same way: one-hot
class vectors for EXPR/LSD (a soft cross-entropy target), AU 0/1 vectors, VA values. Mix-augment
adds the ordinary loss on the real (unmixed) batch to the mixed loss. A pair takes part in a
task's mixed loss only when BOTH rows have that task's label (a mixed target with an unknown half
does not exist); such a row still appears, mixed, in the other tasks' losses.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MIXUP_KINDS = ("mixup", "mixaugment")


def check_mixup(mixup) -> None:
    """ValueError unless mixup is None or {"alpha": > 0, "kind": "mixup" | "mixaugment"}."""
    if mixup is None:
        return
    if not isinstance(mixup, dict):
        raise ValueError(f'mixup={mixup!r}; expected {{"alpha": 0.1, "kind": "mixup" | "mixaugment"}} or null')
    unknown = set(mixup) - {"alpha", "kind"}
    if unknown:
        raise ValueError(f"mixup has unknown key {sorted(unknown)[0]!r}; keys: alpha, kind")
    alpha = mixup.get("alpha", 0.1)
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"mixup alpha={alpha!r}; expected a number > 0")
    if mixup.get("kind", "mixup") not in MIXUP_KINDS:
        raise ValueError(f"mixup kind={mixup.get('kind')!r}; choose one of {', '.join(MIXUP_KINDS)}")


def mix_pairs(n: int, alpha: float) -> tuple[float, torch.Tensor]:
    """(lambda ~ Beta(alpha, alpha), random permutation of 0..n-1), from torch's (seeded) generator."""
    lam = float(torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample())
    return lam, torch.randperm(n)


def mix_inputs(x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * x + (1.0 - lam) * x[perm]


def mixed_targets(kind: str, targets: torch.Tensor, rows_a, rows_b, lam: float, n_outputs: int) -> torch.Tensor:
    """The mixed targets of pairs (rows_a[i], rows_b[i]) of a target tensor.

    kind "multiclass": targets are class indices -> lam * onehot(a) + (1 - lam) * onehot(b), (m, n_outputs);
    "multilabel" / "regression": targets are (n, k) values -> lam * t[a] + (1 - lam) * t[b].
    """
    a, b = targets[rows_a], targets[rows_b]
    if kind == "multiclass":
        a = F.one_hot(a.long(), n_outputs).float()
        b = F.one_hot(b.long(), n_outputs).float()
    return lam * a + (1.0 - lam) * b


def soft_focal_multiclass(logits, target_probs, *, gamma: float = 2.0, weight=None):
    """Focal loss for soft targets: -sum_c t_c (1 - p_c)^gamma log p_c (class-weighted mean with weight)."""
    logp = F.log_softmax(logits, dim=1)
    per = -(target_probs * (1.0 - logp.exp()) ** gamma * logp)
    if weight is None:
        return per.sum(1).mean()
    per = per * weight
    w = (target_probs * weight).sum(1)
    return per.sum() / w.sum().clamp_min(1e-12)

