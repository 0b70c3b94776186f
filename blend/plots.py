"""matplotlib figures of a blend: confusion matrix, per-AU F1 bars, blend-weight curves.

Figures are built with the object API (matplotlib.figure.Figure), so saving them needs no GUI
backend and notebooks show them with ``display(fig)``.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["confusion_figure", "au_f1_figure", "weight_curve_figure"]


def confusion_figure(y, pred, class_names, title: str = "") -> Figure:
    """Row-normalised confusion matrix (true class per row), with counts in the cells."""
    k = len(class_names)
    counts = np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k)
    rate = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rate[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if rate[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def au_f1_figure(per_au_f1: dict, thresholds=None, title: str = "") -> Figure:
    """F1 per AU as bars, the decision threshold of each written above its bar."""
    names = list(per_au_f1)
    f1 = np.array([per_au_f1[n] for n in names], dtype=float)
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(names, f1, color="tab:blue")
    ax.axhline(np.nanmean(f1), color="tab:red", ls="--", lw=1, label=f"P_AU = {np.nanmean(f1):.4f}")
    if thresholds is not None:
        for b, t in zip(bars, thresholds):
            ax.annotate(f"t={t:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.set_title(title or "per-AU F1")
    ax.legend(loc="lower right")
    return fig


def weight_curve_figure(curves: dict, score_names: dict) -> Figure:
    """curves: {task: {"curves": {input: (weights, scores)}, "tuned": {input: weight}, "tuned_score": s}}."""
    tasks = [t for t in curves if curves[t]["curves"]]
    fig = Figure(figsize=(4.6 * max(len(tasks), 1), 3.6), layout="constrained")
    if not tasks:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "every task blends a single input: no weight to vary", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, t in zip(axes, tasks):
        c = curves[t]
        for name, (w, s) in c["curves"].items():
            line, = ax.plot(w, s, marker=".", label=name)
            ax.plot([c["tuned"][name]], [c["tuned_score"]], marker="*", ms=12, color=line.get_color())
        ax.set_xlabel("weight of the input (others keep their proportions)")
        ax.set_ylabel(score_names[t])
        ax.set_title(f"{t}: blend-weight curves (stars: tuned)", fontsize=9)
        ax.legend(fontsize=7)
    return fig
