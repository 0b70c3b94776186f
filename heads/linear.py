"""Linear heads on scikit-learn: logistic regression for classes and AUs, ridge for VA.

scikit-learn does the fitting (on standardised inputs); the fitted head keeps only plain arrays
(`coef_`, `intercept_` in the original feature space), so predicting and saving need no pickle.

    LogisticHead            multinomial logistic regression (EXPR, LSD)
    LogisticMultilabelHead  one binary logistic regression per output (AUs)
    RidgeHead               multi-output ridge regression, clipped to `clip` (VA in [-1, 1])
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .regression_output import RegressionOutputMixin
from .targets import au_bce_weights, check_binary_matrix, class_weights, encode_classes

__all__ = ["LogisticHead", "LogisticMultilabelHead", "RidgeHead"]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _ArrayLinear(BaseEstimator):
    """Shared: scores = X @ coef_.T + intercept_; persistence of the fitted arrays."""

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X.astype(np.float64, copy=False) @ self.coef_.T + self.intercept_

    def _fitted_state(self):
        meta = {"n_features_in_": int(self.n_features_in_)}
        return meta, {"coef_": self.coef_, "intercept_": self.intercept_}, {}

    def _restore_state(self, meta, arrays, texts):
        self.n_features_in_ = meta["n_features_in_"]
        self.coef_ = np.asarray(arrays["coef_"])
        self.intercept_ = np.asarray(arrays["intercept_"])


def _standardized(X):
    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return (X - scaler.mean_.astype(X.dtype)) / scale.astype(X.dtype), scaler.mean_, scale


def _unstandardize(coef, intercept, mean, scale):
    """Fold the standardisation into the weights: W (x - m)/s + b = (W/s) x + (b - (W/s) m)."""
    w = coef / scale
    return w, intercept - w @ mean


def _logistic(C, max_iter, random_state):
    return LogisticRegression(C=C, max_iter=max_iter, random_state=random_state)


class LogisticHead(ClassifierMixin, _ArrayLinear):
    """Multinomial logistic regression (L2, lbfgs) on standardised inputs.

    n_classes: fixed classes 0..n_classes-1 (absent classes get probability 0); None: classes in y.
    class_weight: None, "inverse_max", "balanced" or a list (as the MLP heads).
    """

    def __init__(self, *, C=1.0, class_weight=None, n_classes=None, max_iter=200, random_state=0):
        self.C = C
        self.class_weight = class_weight
        self.n_classes = n_classes
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, y_enc = encode_classes(y, self.n_classes)
        k = len(self.classes_)
        w = class_weights(y_enc, k, self.class_weight, self.classes_)
        present = np.unique(y_enc)
        Xs, mean, scale = _standardized(X)
        coef = np.zeros((k, X.shape[1]))
        intercept = np.full(k, -1e4)  # classes absent from the training rows: probability ~0
        self.n_iter_ = 0
        if len(present) == 1:
            intercept[present[0]] = 0.0
        else:
            lr = _logistic(self.C, self.max_iter, self.random_state)
            lr.fit(Xs, y_enc, sample_weight=None if w is None else w[y_enc])
            c, b = lr.coef_, lr.intercept_
            if len(present) == 2:  # sklearn stores one row for two classes: softmax([0, z]) = sigmoid(z)
                c, b = np.vstack([np.zeros_like(c), c]), np.concatenate([[0.0], b])
            coef[present], intercept[present] = c, b
            self.n_iter_ = int(np.max(lr.n_iter_))
        self.coef_, self.intercept_ = _unstandardize(coef, intercept, mean, scale)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        return _softmax(self._scores(X))

    def predict(self, X):
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def _fitted_state(self):
        meta, arrays, texts = super()._fitted_state()
        meta["classes_"] = self.classes_.tolist()
        meta["n_iter_"] = self.n_iter_
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        super()._restore_state(meta, arrays, texts)
        self.classes_ = np.asarray(meta["classes_"])
        self.n_iter_ = meta["n_iter_"]


class LogisticMultilabelHead(_ArrayLinear):
    """One binary logistic regression per output column of a 0/1 matrix y (n, k).

    class_weight: None or "balanced" (w1 = n/(2 pos), w0 = n/(2 neg) per output, as the weighted BCE).
    An output that is constant in the training rows predicts that constant.
    """

    def __init__(self, *, C=1.0, class_weight=None, max_iter=200, random_state=0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True)
        y = check_binary_matrix(y)
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight={self.class_weight!r}; allowed: None, 'balanced'")
        w1, w0 = au_bce_weights(y)
        Xs, mean, scale = _standardized(X)
        coef = np.zeros((y.shape[1], X.shape[1]))
        intercept = np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            yj = y[:, j]
            if yj.min() == yj.max():
                intercept[j] = 1e4 if yj[0] == 1 else -1e4
                continue
            sw = np.where(yj == 1, w1[j], w0[j]) if self.class_weight == "balanced" else None
            lr = _logistic(self.C, self.max_iter, self.random_state).fit(Xs, yj, sample_weight=sw)
            coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]
        self.coef_, self.intercept_ = _unstandardize(coef, intercept, mean, scale)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        return 1.0 / (1.0 + np.exp(-np.clip(self._scores(X), -500, 500)))

    def predict(self, X):
        return (self.predict_proba(X) >= 0.5).astype(np.int64)


class RidgeHead(RegressionOutputMixin, RegressorMixin, _ArrayLinear):
    """Ridge regression (alpha) on standardised inputs; predictions clipped to `clip` (None: no clip)."""

    def __init__(self, *, alpha=1.0, clip=(-1.0, 1.0)):
        self.alpha = alpha
        self.clip = clip

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], multi_output=True, y_numeric=True)
        self._remember_output_shape(y)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        Xs, mean, scale = _standardized(X)
        r = Ridge(alpha=self.alpha).fit(Xs, y2)
        coef, intercept = np.atleast_2d(r.coef_), np.atleast_1d(r.intercept_)
        self.coef_, self.intercept_ = _unstandardize(coef, intercept, mean, scale)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        return self._shaped_output(self._scores(X))
