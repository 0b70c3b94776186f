"""heads.metrics against scikit-learn and hand-computed cases, including the degenerate ones."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from heads import metrics as M


# ---------------------------------------------------------------- CCC


def test_ccc_hand_computed():
    # x = [1, 2, 3], y = [2, 2, 5]: mx 2, my 3, var_x 2/3, var_y 2, cov (-1*-1 + 0 + 1*2)/3 = 1
    # CCC = 2*1 / (2/3 + 2 + 1) = 6/11
    assert M.ccc([1, 2, 3], [2, 2, 5]) == pytest.approx(6 / 11)


def test_ccc_matches_population_formula_random():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    y = 0.6 * x + rng.normal(scale=0.5, size=500) + 0.2
    ref = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    assert M.ccc(x, y) == pytest.approx(ref, rel=1e-12)
    assert M.ccc(x, x) == pytest.approx(1.0)
    assert M.ccc(x - x.mean(), x.mean() - x) == pytest.approx(-1.0)


def test_ccc_degenerate_cases():
    assert M.ccc([0.3, 0.3], [0.3, 0.3]) == 1.0  # both constant and equal
    assert M.ccc([0.3, 0.3], [0.1, 0.1]) == 0.0  # both constant, different
    assert M.ccc([0.1, 0.5, -0.2], [0.0, 0.0, 0.0]) == 0.0  # constant prediction
    assert math.isnan(M.ccc([np.nan, np.nan], [0.1, 0.2]))  # no label
    assert math.isnan(M.ccc([], []))


def test_ccc_ignores_missing_rows_and_rejects_nan_predictions():
    assert M.ccc([1, np.nan, 2, 3], [2, 99, 2, 5]) == pytest.approx(6 / 11)
    assert M.ccc([1, np.nan, 2, 3], [2, np.nan, 2, 5]) == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match="NaN"):
        M.ccc([1, 2, 3], [1, np.nan, 3])
    with pytest.raises(ValueError, match="rows"):
        M.ccc([1, 2, 3], [1, 2])


def test_va_metrics_excludes_rows_with_nan_in_either_column():
    y = np.array([[1, 0.5], [2, np.nan], [2, 0.1], [3, 0.9], [np.nan, 0.2]])
    p = np.array([[2, 0.4], [0, 0], [2, 0.2], [5, 0.7], [0, 0]])
    m = M.va_metrics(y, p)
    assert m["n_va"] == 3
    assert m["ccc_valence"] == pytest.approx(6 / 11)
    assert m["ccc_arousal"] == pytest.approx(M.ccc([0.5, 0.1, 0.9], [0.4, 0.2, 0.7]))
    assert m["P_VA"] == pytest.approx(0.5 * (m["ccc_valence"] + m["ccc_arousal"]))
    assert math.isnan(M.va_metrics(np.full((3, 2), np.nan), np.zeros((3, 2)))["P_VA"])


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expr_metrics_match_sklearn_with_missing_and_absent_classes(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice([0, 1, 2, 4, 7, -1], size=300)  # classes 3, 5, 6 absent from the truth
    pred = rng.integers(0, 7, size=300)  # class 7 never predicted
    m = M.expr_metrics(y, pred)
    keep = y >= 0
    ref = f1_score(y[keep], pred[keep], average="macro", labels=range(8), zero_division=0)
    assert m["P_EXPR"] == pytest.approx(ref, abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(y[keep], pred[keep]))
    per = f1_score(y[keep], pred[keep], average=None, labels=range(8), zero_division=0)
    assert list(m["per_class_f1"]) == ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness",
                                       "Surprise", "Other"]
    np.testing.assert_allclose(list(m["per_class_f1"].values()), per)
    assert m["n_expr"] == int(keep.sum())


def test_expr_metrics_accepts_scores_and_constant_prediction():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 8, size=200)
    scores = rng.random((200, 8))
    assert M.expr_metrics(y, scores)["P_EXPR"] == pytest.approx(
        f1_score(y, scores.argmax(1), average="macro", labels=range(8), zero_division=0))
    # constant prediction of class 4: only class 4 has a non-zero F1 = 2*n4/(n4+n)
    n4 = int(np.sum(y == 4))
    m = M.expr_metrics(y, np.full(200, 4))
    assert m["per_class_f1"]["Happiness"] == pytest.approx(2 * n4 / (n4 + 200))
    assert m["P_EXPR"] == pytest.approx(2 * n4 / (n4 + 200) / 8)


def test_expr_all_missing_is_nan_and_bad_labels_raise():
    m = M.expr_metrics(np.full(5, -1), np.zeros(5))
    assert math.isnan(m["P_EXPR"]) and math.isnan(m["accuracy"]) and m["n_expr"] == 0
    with pytest.raises(ValueError, match="outside 0..7"):
        M.expr_metrics(np.array([0, 9]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        M.expr_metrics(np.array([0, 1]), np.array([[0.1, 0.9], [np.nan, 0.1]]))


def test_lsd_and_abaw2_scores():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 6, size=120)
    p = np.where(rng.random(120) < 0.6, y, rng.integers(0, 6, size=120))
    m = M.lsd_metrics(y, p)
    assert m["P_LSD"] == pytest.approx(f1_score(y, p, average="macro", labels=range(6), zero_division=0))
    assert list(m["per_class_f1"]) == ["Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise"]
    y7 = rng.integers(0, 7, size=120)
    p7 = np.where(rng.random(120) < 0.5, y7, rng.integers(0, 7, size=120))
    ref = 0.67 * f1_score(y7, p7, average="macro", labels=range(7), zero_division=0) + 0.33 * accuracy_score(y7, p7)
    assert M.abaw2_expr_score(y7, p7) == pytest.approx(ref)
    with pytest.raises(ValueError, match="n_classes"):
        M.abaw2_expr_score(np.array([7]), np.array([7]))


# ---------------------------------------------------------------- AU and MTL


def test_binary_f1_matches_sklearn():
    rng = np.random.default_rng(5)
    for _ in range(20):
        t = rng.integers(0, 2, 50)
        q = rng.integers(0, 2, 50)
        assert M.binary_f1(t, q) == pytest.approx(f1_score(t, q, zero_division=0))
    assert M.binary_f1([0, 0], [0, 0]) == 0.0  # no positive anywhere
    assert M.binary_f1([1, 1], [1, 1]) == 1.0


def test_au_metrics_match_sklearn_excluding_missing_rows():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, size=(200, 12))
    y[:, 3] = 0  # an AU never active in the truth
    y[::7] = -1  # rows with the AU vector missing
    prob = rng.random((200, 12))
    m = M.au_metrics(y, prob)
    keep = (y >= 0).all(1)
    ref = f1_score(y[keep], (prob[keep] >= 0.5).astype(int), average=None, zero_division=0)
    np.testing.assert_allclose(list(m["per_au_f1"].values()), ref)
    assert m["P_AU"] == pytest.approx(ref.mean())
    assert m["n_au"] == keep.sum() and list(m["per_au_f1"])[0] == "AU1"
    thr = np.linspace(0.1, 0.9, 12)
    ref_t = f1_score(y[keep], (prob[keep] >= thr).astype(int), average=None, zero_division=0)
    assert M.au_metrics(y, prob, threshold=thr)["P_AU"] == pytest.approx(ref_t.mean())
    # constant all-ones prediction: F1_j = 2 pos_j / (pos_j + n)
    ones = M.au_metrics(y, np.ones_like(prob))
    pos = (y[keep] == 1).sum(0)
    np.testing.assert_allclose(list(ones["per_au_f1"].values()), 2 * pos / (pos + keep.sum()))
    assert math.isnan(M.au_metrics(np.full((4, 12), -1), np.zeros((4, 12)))["P_AU"])


def test_mtl_metrics_sum_and_missing_task():
    rng = np.random.default_rng(7)
    n = 100
    y_va = rng.uniform(-1, 1, (n, 2))
    p_va = np.clip(y_va + rng.normal(scale=0.3, size=(n, 2)), -1, 1)
    y_e = rng.integers(-1, 8, n)
    p_e = rng.random((n, 8))
    y_au = rng.integers(0, 2, (n, 12))
    p_au = rng.random((n, 12))
    m = M.mtl_metrics(y_va, p_va, y_e, p_e, y_au, p_au)
    assert m["P_MTL"] == pytest.approx(m["P_VA"] + m["P_EXPR"] + m["P_AU"])
    assert m["P_VA"] == pytest.approx(M.va_metrics(y_va, p_va)["P_VA"])
    assert m["P_EXPR"] == pytest.approx(M.expr_metrics(y_e, p_e)["P_EXPR"])
    assert m["P_AU"] == pytest.approx(M.au_metrics(y_au, p_au)["P_AU"])
    m2 = M.mtl_metrics(y_va, p_va, None, None, y_au, p_au)
    assert math.isnan(m2["P_EXPR"]) and math.isnan(m2["P_MTL"])
