"""The heads as estimators: planted signal is learned, seeds reproduce, save/load is exact,
losses and the optimizer match independent references, scikit-learn's estimator checks pass."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from heads import losses, metrics
from heads.gbm import LGBMClassifierHead, LGBMMultilabelHead, LGBMRegressorHead
from heads.joint import JointMLPHead
from heads.linear import LogisticHead, LogisticMultilabelHead, RidgeHead
from heads.mlp import MLPClassifierHead, MLPMultilabelHead, MLPRegressorHead
from heads.persist import load_head, save_head
from heads.targets import au_bce_weights, class_weights
from heads.torch_training import Adam, holdout_split


def planted(n=3000, d=20, seed=0):
    """Expression from a linear rule (8 classes, one rare), 12 AUs, VA in [-1, 1], plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    A = rng.normal(size=(d, 8))
    A[:, 3] -= 1.5  # class 3 is rare
    expr = np.argmax(X @ A + rng.normal(scale=0.8, size=(n, 8)), axis=1)
    au = (X @ rng.normal(size=(d, 12)) + rng.normal(scale=0.8, size=(n, 12)) > np.linspace(0, 2, 12)).astype(int)
    va = np.tanh(0.4 * X[:, :2] + 0.2 * X[:, 2:4] + rng.normal(scale=0.2, size=(n, 2))).astype(np.float32)
    return X, expr, au, va


X, EXPR, AU, VA = planted()
TR, TE = slice(0, 2400), slice(2400, None)
FAST_MLP = dict(epochs=15, batch_size=64, n_threads=1)

# Chance: macro F1 of predicting at random (uniform over 8 classes) is about 1/8 on balanced data and
# less here; for AUs the all-positive prediction gives 2p/(1+p) per AU (computed below); CCC of a
# constant is 0. Each head must clear these by the margins stated in each test.
AU_CHANCE = float(np.mean([metrics.binary_f1(AU[TE][:, j], np.ones(600)) for j in range(12)]))

CLASSIFIERS = [
    MLPClassifierHead(n_classes=8, class_weight="inverse_max", **FAST_MLP),
    MLPClassifierHead(n_classes=8, hidden_layer_sizes=(32,), loss="focal", dropout=0.1, **FAST_MLP),
    MLPClassifierHead(n_classes=8, label_smoothing=0.1, class_weight="balanced", early_stopping=True,
                      **FAST_MLP),
    LogisticHead(n_classes=8, class_weight="balanced"),
    LGBMClassifierHead(n_classes=8, n_estimators=60, class_weight="balanced", n_threads=1),
]
MULTILABEL = [
    MLPMultilabelHead(hidden_layer_sizes=(64,), **FAST_MLP),
    MLPMultilabelHead(hidden_layer_sizes=(), loss="focal", **FAST_MLP),
    LogisticMultilabelHead(class_weight="balanced"),
    LGBMMultilabelHead(n_estimators=60, class_weight="balanced", n_threads=1),
]
REGRESSORS = [
    MLPRegressorHead(output_activation="tanh", loss="ccc", **FAST_MLP),
    MLPRegressorHead(hidden_layer_sizes=(32,), output_activation="tanh", loss="mse", **FAST_MLP),
    RidgeHead(alpha=1.0),
    LGBMRegressorHead(n_estimators=60, n_threads=1),
]


def _name(est):
    return type(est).__name__


@pytest.mark.parametrize("head", CLASSIFIERS, ids=_name)
def test_classifier_heads_learn_planted_expression(head, tmp_path):
    head = clone(head).fit(X[TR], EXPR[TR])
    proba = head.predict_proba(X[TE])
    assert proba.shape == (600, 8)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    f1 = metrics.expr_metrics(EXPR[TE], proba)["P_EXPR"]
    assert f1 > 0.45, f"macro F1 {f1:.3f} should beat chance (~0.12) by > 0.3"
    np.testing.assert_array_equal(head.predict(X[TE]), proba.argmax(1))
    # save/load without pickle gives the same numbers
    save_head(head, tmp_path / "h")
    np.testing.assert_allclose(load_head(tmp_path / "h").predict_proba(X[TE]), proba, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("head", MULTILABEL, ids=_name)
def test_multilabel_heads_learn_planted_aus(head, tmp_path):
    head = clone(head).fit(X[TR], AU[TR])
    proba = head.predict_proba(X[TE])
    assert proba.shape == (600, 12) and proba.min() >= 0 and proba.max() <= 1
    f1 = metrics.au_metrics(AU[TE], proba)["P_AU"]
    assert f1 > AU_CHANCE + 0.15, f"P_AU {f1:.3f} vs all-positive {AU_CHANCE:.3f}"
    save_head(head, tmp_path / "h")
    np.testing.assert_allclose(load_head(tmp_path / "h").predict_proba(X[TE]), proba, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("head", REGRESSORS, ids=_name)
def test_regression_heads_learn_planted_va(head, tmp_path):
    head = clone(head).fit(X[TR], VA[TR])
    pred = head.predict(X[TE])
    assert pred.shape == (600, 2) and np.abs(pred).max() <= 1.0
    p_va = metrics.va_metrics(VA[TE], pred)["P_VA"]
    assert p_va > 0.6, f"P_VA {p_va:.3f} should beat a constant (0) by > 0.6"
    save_head(head, tmp_path / "h")
    np.testing.assert_allclose(load_head(tmp_path / "h").predict(X[TE]), pred, rtol=1e-6, atol=1e-7)


def test_joint_head_learns_all_three_tasks_with_missing_labels(tmp_path):
    rng = np.random.default_rng(1)
    Y = {"expr": EXPR.copy(), "va": VA.copy(), "au": AU.copy()}
    Y["expr"][rng.random(3000) < 0.4] = -1
    Y["va"][rng.random(3000) < 0.3] = np.nan
    Y["au"][rng.random(3000) < 0.3] = -1
    Ytr = {k: v[TR] for k, v in Y.items()}
    head = JointMLPHead(hidden_layer_sizes=(64,), **FAST_MLP).fit(X[TR], Ytr, groups=np.arange(2400) // 50)
    out = head.predict_tasks(X[TE])
    assert metrics.expr_metrics(EXPR[TE], out["expr"])["P_EXPR"] > 0.4
    assert metrics.va_metrics(VA[TE], out["va"])["P_VA"] > 0.6
    assert metrics.au_metrics(AU[TE], out["au"])["P_AU"] > AU_CHANCE + 0.1
    again = JointMLPHead(hidden_layer_sizes=(64,), **FAST_MLP).fit(X[TR], Ytr, groups=np.arange(2400) // 50)
    for t in out:
        np.testing.assert_array_equal(again.predict_tasks(X[TE])[t], out[t])
    save_head(head, tmp_path / "j")
    back = load_head(tmp_path / "j").predict_tasks(X[TE])
    for t in out:
        np.testing.assert_allclose(back[t], out[t], rtol=1e-6, atol=1e-7)


def test_mlp_is_reproducible_with_a_seed_and_varies_without():
    a = MLPClassifierHead(n_classes=8, hidden_layer_sizes=(16,), dropout=0.2, random_state=3, **FAST_MLP)
    p1 = clone(a).fit(X[TR], EXPR[TR]).predict_proba(X[TE])
    p2 = clone(a).fit(X[TR], EXPR[TR]).predict_proba(X[TE])
    np.testing.assert_array_equal(p1, p2)
    p3 = clone(a).set_params(random_state=4).fit(X[TR], EXPR[TR]).predict_proba(X[TE])
    assert not np.allclose(p1, p3)
    state = torch.random.get_rng_state()
    clone(a).fit(X[:200], EXPR[:200])
    assert torch.equal(torch.random.get_rng_state(), state), "fit must not disturb torch's global RNG"


def test_classifier_with_fixed_classes_handles_absent_class():
    y = EXPR[TR].copy()
    keep = y != 5
    head = LogisticHead(n_classes=8).fit(X[TR][keep], y[keep])
    proba = head.predict_proba(X[TE])
    assert proba.shape == (600, 8) and proba[:, 5].max() < 1e-6
    mlp = MLPClassifierHead(n_classes=8, class_weight="inverse_max", **FAST_MLP).fit(X[TR][keep], y[keep])
    assert mlp.predict_proba(X[TE]).shape == (600, 8)
    assert mlp.class_weight_[5] == 0.0


def test_early_stopping_uses_held_out_training_groups_only():
    head = MLPClassifierHead(n_classes=8, hidden_layer_sizes=(128, 128), early_stopping=True, n_iter_no_change=2,
                             epochs=200, learning_rate=0.01, batch_size=64, n_threads=1)
    head.fit(X[TR], EXPR[TR], groups=np.arange(2400) // 100)
    assert head.n_iter_ < 200 and len(head.validation_curve_) == head.n_iter_
    assert head.best_epoch_ == int(np.argmin(head.validation_curve_)) + 1
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    fit_rows, held = holdout_split(300, 0.2, groups, rng)
    assert set(groups[fit_rows]).isdisjoint(groups[held])
    assert len(fit_rows) + len(held) == 300 and 30 <= len(held) <= 90


def test_unfitted_and_bad_targets_raise():
    with pytest.raises(NotFittedError):
        MLPClassifierHead().predict(X[:3])
    with pytest.raises(ValueError, match="class indices 0..7"):
        MLPClassifierHead(n_classes=8).fit(X[:10], np.array([-1] + [0] * 9))
    with pytest.raises(ValueError, match="only 0 and 1"):
        MLPMultilabelHead().fit(X[:10], np.full((10, 12), -1))
    with pytest.raises(ValueError, match="loss='hinge'"):
        MLPClassifierHead(loss="hinge").fit(X[:10], EXPR[:10])
    with pytest.raises(ValueError, match="features"):
        LogisticHead().fit(X[:100], EXPR[:100]).predict(X[:5, :3])


# ---------------------------------------------------------------- losses and optimizer vs references


def test_class_weights_and_au_weights_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 2])  # counts 4, 2, 1, 0
    np.testing.assert_allclose(class_weights(y, 4, "inverse_max"), [1.0, 2.0, 4.0, 0.0])
    np.testing.assert_allclose(class_weights(y, 4, "balanced"), [7 / 12, 7 / 6, 7 / 3, 0.0])
    np.testing.assert_allclose(class_weights(y, 3, {"1": 5.0}), [1.0, 5.0, 1.0])
    ya = np.array([[1, 0], [0, 0], [0, 0], [1, 0]])
    w1, w0 = au_bce_weights(ya)
    np.testing.assert_allclose(w1, [4 / 4, 1.0])  # AU 2 has no positive: weight 1
    np.testing.assert_allclose(w0, [4 / 4, 4 / 8])


def test_ccc_loss_matches_metric_and_weighted_bce_by_hand():
    rng = np.random.default_rng(0)
    p, y = rng.uniform(-1, 1, (50, 2)), rng.uniform(-1, 1, (50, 2))
    expected = 1 - 0.5 * (metrics.ccc(y[:, 0], p[:, 0]) + metrics.ccc(y[:, 1], p[:, 1]))
    got = losses.ccc_loss(torch.tensor(p), torch.tensor(y)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    z = torch.tensor([[0.3, -1.2]])
    t = torch.tensor([[1.0, 0.0]])
    w1, w0 = torch.tensor([2.0, 3.0]), torch.tensor([0.5, 0.25])
    s = 1 / (1 + np.exp(-np.array([0.3, -1.2])))
    by_hand = np.mean([-2.0 * np.log(s[0]), -0.25 * np.log(1 - s[1])])
    assert losses.weighted_bce(z, t, w1=w1, w0=w0).item() == pytest.approx(by_hand, rel=1e-6)


def test_adam_matches_torch_optim_adam_with_coupled_weight_decay():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    ref = copy.deepcopy(net)
    split = lambda m: ([p for p in m.parameters() if p.ndim > 1], [p for p in m.parameters() if p.ndim <= 1])
    d, nd = split(net)
    ours = Adam([(d, 0.01), (nd, 0.0)], lr=1e-2)
    d2, nd2 = split(ref)
    theirs = torch.optim.Adam([{"params": d2, "weight_decay": 0.01}, {"params": nd2, "weight_decay": 0.0}], lr=1e-2)
    xb, yb = torch.randn(64, 5), torch.randint(0, 3, (64,))
    for _ in range(30):
        for m, opt in ((net, ours), (ref, theirs)):
            loss = torch.nn.functional.cross_entropy(m(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- scikit-learn's estimator checks

_TINY_MLP = dict(epochs=60, batch_size=32, learning_rate=0.01, n_threads=1)


@parametrize_with_checks(
    [MLPClassifierHead(**_TINY_MLP), MLPRegressorHead(**_TINY_MLP), LogisticHead(), RidgeHead(clip=None),
     LGBMClassifierHead(n_estimators=20, n_threads=1),
     LGBMRegressorHead(n_estimators=50, min_child_samples=2, clip=None, n_threads=1)],
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
