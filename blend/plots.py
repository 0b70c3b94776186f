"""matplotlib figures of a blend: confusion matrix, per-AU F1 bars, blend-weight curves.

Figures are built with the object API (matplotlib.figure.Figure), so saving them needs no GUI
backend and notebooks show them with ``display(fig)``. Each is built in matplotlib's default style
(`toolkit_style`), so a style another library set globally (Optuna's plots set one) does not leak in.
"""
from __future__ import annotations

import functools

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.figure import Figure

__all__ = ["confusion_figure", "au_f1_figure", "weight_curve_figure"]


def toolkit_style(build):
    """Build the figure under matplotlib's defaults, whatever style is active globally."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(), matplotlib.style.context("default"):
            return build(*args, **kwargs)
    return wrapper


@toolkit_style

def confusion_figure(y, pred, class_names, title: str = "") -> Figure:
    """Row-normalised confusion matrix (true class per row), with counts in the cells.

    A class with no true row in the split has no rate to show: its row stays blank (not 0.00)."""
    k = len(class_names)
    counts = np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k)
    n_true = counts.sum(axis=1, keepdims=True)
    rate = np.where(n_true > 0, counts / np.maximum(n_true, 1), np.nan)
    fig = Figure(figsize=(1.4 + 0.75 * k, 0.8 + 0.7 * k), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(rate), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        if n_true[i, 0] == 0:
            continue
        for j in range(k):
            ax.text(j, i, f"{rate[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if rate[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class's rows")
    return fig


@toolkit_style
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
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize=8)  # above the bars
    return fig


@toolkit_style
def weight_curve_figure(curves: dict, score_names: dict) -> Figure:
    """curves: {task: {"curves": {input: (weights, scores)}, "tuned": {input: weight}, "tuned_score": s}}.

    Each curve is the score on the plotted split as one weight varies (the others keep their proportions);
    the star is the weight of the spec, at its score. A star below its curve's maximum is expected: the
    study searched every weight and the smoothing together with a finite number of trials, and a curve's
    maximum is picked by looking at this split (in-sample), which the tuner does not do."""
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
        ax.set_title(f"{t}: score on this split by weight\n(stars: the spec's weights; curve maxima are in-sample)",
                     fontsize=9)
        ax.legend(fontsize=7)
    return fig
