"""The metrics table printed by `heads fit`."""
from __future__ import annotations

_SCORES = (("P_MTL", "P_MTL = P_VA + P_EXPR + P_AU"), ("P_VA", "mean CCC"), ("ccc_valence", "CCC valence"),
           ("ccc_arousal", "CCC arousal"), ("P_EXPR", "macro F1 (8 classes)"), ("P_LSD", "macro F1 (6 classes)"),
           ("accuracy", "accuracy"), ("abaw2_expr", "ABAW2 EXPR = 0.67 macro F1 + 0.33 accuracy"), ("P_AU", "mean F1 (12 AUs, threshold 0.5)"))


def format_metrics(m: dict, split: str) -> str:
    lines = [f"metrics on split {split!r}"]
    for key, what in _SCORES:
        if key in m:
            lines.append(f"  {key:<12} {m[key]:8.4f}   {what}")
    for table, title in (("per_class_f1", "F1 per class"), ("per_au_f1", "F1 per AU")):
        if m.get(table):
            lines.append(f"  {title}:")
            lines.append("    " + "  ".join(f"{k} {v:.3f}" for k, v in m[table].items()))
    counts = {k: m[k] for k in ("n_va", "n_expr", "n_au", "n_lsd") if k in m}
    if counts:
        lines.append("  labelled rows scored: " + ", ".join(f"{k[2:]} {v}" for k, v in counts.items()))
    missing = {t: n for t, n in m.get("n_without_features", {}).items() if n}
    if missing:
        lines.append("  labelled rows without valid features (not scored): "
                     + ", ".join(f"{t} {n}" for t, n in missing.items()))
    return "\n".join(lines)
