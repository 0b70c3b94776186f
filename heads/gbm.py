"""LightGBM heads: gradient-boosted trees for classes, AUs (one model per AU) and VA (one per column).

The fitted state is LightGBM's own model text (`Booster.model_to_string`), which loads back without
pickle. The binned training data is built once per head and reused for every output.

    LGBMClassifierHead   multiclass (EXPR, LSD)
    LGBMMultilabelHead   one binary model per output column (AUs)
    LGBMRegressorHead    one regression model per output column, clipped to `clip` (VA)
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .regression_output import RegressionOutputMixin
from .targets import au_bce_weights, check_binary_matrix, class_weights, encode_classes

__all__ = ["LGBMClassifierHead", "LGBMMultilabelHead", "LGBMRegressorHead"]


def _lgb():
    try:
        import lightgbm
    except ImportError as e:  # pragma: no cover - lightgbm is an install requirement
        raise ImportError("the LightGBM heads need lightgbm: pip install lightgbm") from e
    return lightgbm


class _LGBMBase(BaseEstimator):
    """Shared parameters, training and persistence of the boosters in `boosters_`."""

    def _params(self, objective: str, **extra) -> dict:
        p = {
            "objective": objective,
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "min_child_samples": int(self.min_child_samples),
            "feature_fraction": float(self.colsample),
            "bagging_fraction": float(self.subsample),
            "bagging_freq": 1 if self.subsample < 1.0 else 0,
            "lambda_l2": float(self.reg_lambda),
            "seed": int(self.random_state),
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": int(self.n_threads or 0),
            "verbosity": -1,
        }
        p.update(extra)
        return p

    def _dataset(self, X, label, weight=None):
        lgb = _lgb()
        ds = lgb.Dataset(X, label=label, weight=weight, free_raw_data=False,
                         params={"max_bin": int(self.max_bin), "min_data_in_leaf": int(self.min_child_samples),
                                 "feature_pre_filter": False, "verbosity": -1, "seed": int(self.random_state),
                                 "num_threads": int(self.n_threads or 0)})
        return ds.construct()

    def _train(self, params, ds):
        return _lgb().train(params, ds, num_boost_round=int(self.n_estimators))

    def _check_X(self, X):
        check_is_fitted(self, "boosters_")
        return validate_data(self, X, reset=False, dtype=np.float32)

    def _check_fit_data(self, X, y, **kw):
        X, y = validate_data(self, X, y, dtype=np.float32, **kw)
        if len(X) < 2:
            raise ValueError(f"LightGBM needs at least 2 samples; got {len(X)} sample")
        return X, y

    def _fitted_state(self):
        meta = {"n_features_in_": int(self.n_features_in_),
                "constant_": [None if c is None else float(c) for c in self.constant_]}
        texts = {f"booster_{i}": (b.model_to_string() if b is not None else "") for i, b in enumerate(self.boosters_)}
        return meta, {}, texts

    def _restore_state(self, meta, arrays, texts):
        lgb = _lgb()
        self.n_features_in_ = meta["n_features_in_"]
        self.constant_ = meta["constant_"]
        self.boosters_ = [
            lgb.Booster(model_str=texts[f"booster_{i}"]) if c is None else None
            for i, c in enumerate(self.constant_)
        ]


_COMMON_DOC = """
    n_estimators, learning_rate, num_leaves, min_child_samples, max_bin: LightGBM's trees.
    subsample / colsample: row bagging and feature fraction per tree (1.0 = all).
    reg_lambda: L2 on leaf values. n_threads: None = LightGBM's default.
"""


class LGBMClassifierHead(ClassifierMixin, _LGBMBase):
    __doc__ = """Multiclass LightGBM (softmax objective).

    n_classes: fixed classes 0..n_classes-1; None: classes in y. class_weight as the MLP heads.
    """ + _COMMON_DOC

    def __init__(self, *, n_estimators=200, learning_rate=0.1, num_leaves=31, min_child_samples=20,
                 max_bin=63, subsample=0.8, colsample=0.5, reg_lambda=0.0, class_weight=None,
                 n_classes=None, random_state=0, n_threads=None):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.n_classes = n_classes
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X, y, groups=None):
        X, y = self._check_fit_data(X, y)
        check_classification_targets(y)
        self.classes_, y_enc = encode_classes(y, self.n_classes)
        k = len(self.classes_)
        w = class_weights(y_enc, k, self.class_weight, self.classes_)
        if len(np.unique(y_enc)) == 1:
            self.boosters_, self.constant_ = [None], [float(y_enc[0])]
        else:
            ds = self._dataset(X, y_enc, None if w is None else w[y_enc])
            self.boosters_ = [self._train(self._params("multiclass", num_class=k), ds)]
            self.constant_ = [None]
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        X = self._check_X(X)
        if self.boosters_[0] is None:
            p = np.zeros((len(X), len(self.classes_)))
            p[:, int(self.constant_[0])] = 1.0
            return p
        return self.boosters_[0].predict(X).reshape(len(X), -1)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _fitted_state(self):
        meta, arrays, texts = super()._fitted_state()
        meta["classes_"] = self.classes_.tolist()
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        super()._restore_state(meta, arrays, texts)
        self.classes_ = np.asarray(meta["classes_"])


class LGBMMultilabelHead(_LGBMBase):
    __doc__ = """One binary LightGBM per output column of a 0/1 matrix y (n, k).

    class_weight: None or "balanced" (w1 = n/(2 pos), w0 = n/(2 neg) per output).
    """ + _COMMON_DOC

    def __init__(self, *, n_estimators=200, learning_rate=0.1, num_leaves=31, min_child_samples=20,
                 max_bin=63, subsample=0.8, colsample=0.5, reg_lambda=0.0, class_weight=None,
                 random_state=0, n_threads=None):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X, y, groups=None):
        X, y = self._check_fit_data(X, y, multi_output=True)
        y = check_binary_matrix(y)
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight={self.class_weight!r}; allowed: None, 'balanced'")
        w1, w0 = au_bce_weights(y)
        ds = None
        self.boosters_, self.constant_ = [], []
        for j in range(y.shape[1]):
            yj = y[:, j].astype(np.float32)
            if yj.min() == yj.max():
                self.boosters_.append(None)
                self.constant_.append(float(yj[0]))
                continue
            sw = np.where(yj == 1, w1[j], w0[j]) if self.class_weight == "balanced" else None
            if ds is None:
                ds = self._dataset(X, yj, sw)
            else:
                ds.set_label(yj)
                if sw is not None:
                    ds.set_weight(sw)
            self.boosters_.append(self._train(self._params("binary"), ds))
            self.constant_.append(None)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        X = self._check_X(X)
        cols = [np.full(len(X), c) if b is None else b.predict(X) for b, c in zip(self.boosters_, self.constant_)]
        return np.stack(cols, axis=1)

    def predict(self, X):
        return (self.predict_proba(X) >= 0.5).astype(np.int64)


class LGBMRegressorHead(RegressionOutputMixin, RegressorMixin, _LGBMBase):
    __doc__ = """One LightGBM regression (L2 loss) per output column; predictions clipped to `clip`.
    """ + _COMMON_DOC

    def __init__(self, *, n_estimators=200, learning_rate=0.1, num_leaves=31, min_child_samples=20,
                 max_bin=63, subsample=0.8, colsample=0.5, reg_lambda=0.0, clip=(-1.0, 1.0),
                 random_state=0, n_threads=None):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample = colsample
        self.reg_lambda = reg_lambda
        self.clip = clip
        self.random_state = random_state
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y, groups=None):
        X, y = self._check_fit_data(X, y, multi_output=True, y_numeric=True)
        self._remember_output_shape(y)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        ds = None
        self.boosters_, self.constant_ = [], []
        for j in range(y2.shape[1]):
            if ds is None:
                ds = self._dataset(X, y2[:, j])
            else:
                ds.set_label(y2[:, j])
            self.boosters_.append(self._train(self._params("regression"), ds))
            self.constant_.append(None)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        X = self._check_X(X)
        return self._shaped_output(np.stack([b.predict(X) for b in self.boosters_], axis=1))
