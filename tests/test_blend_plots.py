"""The blend's figures: what they show for edge cases, and that a global style does not leak into them."""
import matplotlib
import matplotlib.style
import numpy as np
import pytest

from blend.plots import au_f1_figure, confusion_figure, weight_curve_figure


def _image(fig):
    return fig.axes[0].images[0].get_array()


def test_confusion_matrix_leaves_classes_absent_from_the_split_blank_and_labels_its_colour_bar():
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 1, 1, 1, 0])
    fig = confusion_figure(y, pred, ["a", "b", "c"])
    rate = _image(fig)
    assert rate.mask[2].all() and not rate.mask[:2].any()  # class c has no true row: blank, not 0.00
    assert rate[0].tolist() == [0.5, 0.5, 0.0] and rate[1].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 6 and "0.50\n1" in texts  # no cell text on the blank row
    colour_bar = fig.axes[1]
    assert colour_bar.get_ylabel()


def test_au_legend_sits_above_the_bars_not_over_the_last_ones():
    f1 = {f"AU{i}": 0.9 for i in range(12)}
    fig = au_f1_figure(f1, thresholds=[0.5] * 12)
    ax = fig.axes[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    legend_box = ax.get_legend().get_window_extent()
    for bar in ax.patches:
        assert not legend_box.overlaps(bar.get_window_extent())


def test_weight_curve_title_says_what_the_star_and_the_curve_are():
    curves = {"va": {"curves": {"a": (np.linspace(0, 1, 5), np.array([0.1, 0.3, 0.5, 0.4, 0.2]))},
                     "tuned": {"a": 0.25}, "tuned_score": 0.3}}
    fig = weight_curve_figure(curves, {"va": "P_VA"})
    assert "in-sample" in fig.axes[0].get_title()


def test_a_global_style_does_not_leak_into_the_toolkit_figures():
    with matplotlib.style.context("ggplot"):  # what Optuna's matplotlib plots switch on
        assert matplotlib.rcParams["axes.grid"]
        fig = confusion_figure(np.array([0, 1]), np.array([0, 1]), ["a", "b"])
    ax = fig.axes[0]
    assert not any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())
    assert ax.get_facecolor() == matplotlib.colors.to_rgba("white")
