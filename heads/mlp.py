"""Torch MLP heads with the scikit-learn estimator contract, one per label kind.

    MLPClassifierHead   single-label classes (EXPR, LSD): softmax; cross-entropy or focal loss
    MLPMultilabelHead   independent binary outputs (AUs): sigmoid; weighted BCE, BCE or focal loss
    MLPRegressorHead    continuous outputs (VA): tanh or identity; 1 - mean CCC or MSE

hidden_layer_sizes=() is a single dense layer (the `paper` EXPR and VA heads). Inputs are
standardised with fit-time mean/std inside the network. Training is seeded (random_state) and
reproducible on the same machine and thread count; early stopping holds out part of the TRAINING
rows (whole groups when `groups` is passed to fit), never the evaluation split.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import losses
from .mixup import check_mixup, mixed_targets, soft_focal_multiclass
from .regression_output import RegressionOutputMixin
from .targets import au_bce_weights, check_binary_matrix, class_weights, encode_classes
from .torch_training import (
    ACTIVATIONS, MLP, as_feature_tensor, check_choice, feature_stats, forward_chunks, holdout_split,
    seeded, train, training_threads,
)

__all__ = ["MLPClassifierHead", "MLPMultilabelHead", "MLPRegressorHead"]


class _MLPHead(BaseEstimator):
    """Shared fit/predict machinery; subclasses define targets, losses and output activation."""

    _losses: tuple = ()
    _out_activations: tuple = ()

    # -- subclass hooks
    def _prepare_targets(self, y):  # -> (y as fitted, torch targets, n_outputs)
        raise NotImplementedError

    def _make_loss(self, y_fit):  # -> loss(outputs, targets)
        raise NotImplementedError

    def _make_mixed_loss(self, targets):  # -> loss(outputs, rows_a, rows_b, lam) on mixed targets (heads.mixup)
        raise NotImplementedError

    # -- shared
    def _check_params(self):
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("loss", self.loss, self._losses)
        check_choice("output_activation", self._output_activation(), self._out_activations)
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r}; expected a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}; expected 0 <= dropout < 1")
        if self.l2 < 0 or self.learning_rate <= 0:
            raise ValueError(f"l2={self.l2!r} must be >= 0 and learning_rate={self.learning_rate!r} > 0")
        if self.early_stopping and not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r}; expected 0 < f < 1")
        check_mixup(self.mixup)

    def _output_activation(self):
        return self.output_activation or self._out_activations[0]

    def _build(self, n_features: int, n_outputs: int) -> MLP:
        # Classification losses take raw scores: the softmax/sigmoid is applied at predict time.
        act = self._output_activation()
        in_net = act if act in ("tanh", "identity") else "identity"
        return MLP(n_features, tuple(int(h) for h in self.hidden_layer_sizes), (n_outputs,),
                   activation=self.activation, dropout=float(self.dropout), out_activations=(in_net,))

    def _validated(self, X, y, rows, *, y_dtype=None, **validate_kw):
        """validate_data(X, y); with rows (fit on X[rows], y one entry per row): X is taken as float32
        (no copy when it is a C-contiguous float32 matrix) without a pass over it (its training rows
        are checked while their statistics are taken), and y is checked on its own."""
        if rows is None:
            return validate_data(self, X, y, dtype=np.float32, **validate_kw)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
        rows = np.asarray(rows)
        if rows.ndim != 1 or len(rows) != len(y) or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows: expected {len(y)} row indices, one per label, got shape {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= X.shape[0]):
            raise ValueError(f"rows: indices must lie in 0..{X.shape[0] - 1}")
        y = check_array(y, ensure_2d=False, dtype=y_dtype, input_name="y")
        self.n_features_in_ = X.shape[1]
        return X, y

    def _fit(self, X, y, groups, rows=None):
        """Train on X (or on X[rows]: y and groups then have one entry per row; no copy of X is made)."""
        self._check_params()
        y_fit, targets, n_outputs = self._prepare_targets(y)
        Xt = as_feature_tensor(X)
        n = len(y_fit)
        rng = np.random.default_rng(self.random_state)
        held = None
        fit_rows = np.arange(n)
        if self.early_stopping:
            fit_rows, held = holdout_split(n, self.validation_fraction, groups, rng)
        loss = self._make_loss(y_fit[fit_rows])
        if rows is not None:  # positions -> rows of X; targets laid out by row of X (the loss indexes them so)
            rows = np.asarray(rows, dtype=np.int64)
            fit_rows, held = rows[fit_rows], (None if held is None else rows[held])
            by_row = targets.new_zeros((Xt.shape[0], *targets.shape[1:]))
            by_row[torch.from_numpy(rows)] = targets
            targets = by_row
        widths = [Xt.shape[1], *(int(h) for h in self.hidden_layer_sizes), n_outputs]
        with seeded(int(rng.integers(2**31)), training_threads(self.n_threads, widths, self.batch_size)):
            fit_t = torch.from_numpy(fit_rows)
            net = self._build(Xt.shape[1], n_outputs)
            mean, inv_std = feature_stats(Xt, fit_t)
            if rows is not None and not bool(torch.isfinite(mean).all()):
                raise ValueError("Input X contains NaN or infinity in the training rows")
            net.set_standardization(mean, inv_std)
            history = train(
                net, Xt, fit_t, lambda out, idx: loss(out, targets[idx]),
                epochs=int(self.epochs), batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate), l2=float(self.l2),
                held_rows=None if held is None else torch.from_numpy(held),
                n_iter_no_change=int(self.n_iter_no_change), verbose=self.verbose,
                desc=type(self).__name__, mixup=self.mixup,
                mixed_loss_fn=self._make_mixed_loss(targets) if self.mixup else None,
            )
        self.network_ = net
        self.n_features_in_ = Xt.shape[1]
        self.n_outputs_ = n_outputs
        self.n_iter_ = history["n_epochs"]
        self.best_epoch_ = history["best_epoch"]
        self.loss_curve_ = history["loss_curve"]
        self.validation_curve_ = history["validation_curve"]
        return self

    def _raw(self, X) -> np.ndarray:
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with seeded(0, self.n_threads):
            out = forward_chunks(self.network_, as_feature_tensor(X))
        return np.zeros((0, self.n_outputs_)) if out is None else out.numpy().astype(np.float64)

    # -- persistence (heads.persist): arrays only, no pickle
    def _fitted_state(self) -> tuple[dict, dict, dict]:
        meta = {"n_features_in_": int(self.n_features_in_), "n_outputs_": int(self.n_outputs_),
                "n_iter_": self.n_iter_, "best_epoch_": self.best_epoch_,
                "loss_curve_": self.loss_curve_, "validation_curve_": self.validation_curve_}
        arrays = {f"network.{k}": v.numpy() for k, v in self.network_.state_dict().items()}
        return meta, arrays, {}

    def _restore_state(self, meta: dict, arrays: dict, texts: dict) -> None:
        for k, v in meta.items():
            setattr(self, k, v)
        net = self._build(meta["n_features_in_"], meta["n_outputs_"])
        state = {k[len("network."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                 if k.startswith("network.")}
        net.load_state_dict(state)
        net.eval()
        self.network_ = net


class MLPClassifierHead(ClassifierMixin, _MLPHead):
    """Softmax MLP for single-label classes.

    n_classes: fixed class set 0..n_classes-1 (predict_proba always has n_classes columns, also for
    classes absent from the training rows); None takes the classes found in y (scikit-learn style).
    class_weight: None, "inverse_max" (max count / count: `paper` EXPR), "balanced" (mean count / count)
    or a list. loss: "cross_entropy" (with label_smoothing) or "focal" (focal_gamma).
    """

    _losses = ("cross_entropy", "focal")
    _out_activations = ("softmax",)

    def __init__(self, *, hidden_layer_sizes=(), activation="relu", dropout=0.0, l2=0.0,
                 output_activation=None, loss="cross_entropy", class_weight=None, label_smoothing=0.0,
                 focal_gamma=2.0, n_classes=None, epochs=10, batch_size=512, learning_rate=1e-3,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=3, mixup=None, random_state=0,
                 n_threads=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.output_activation = output_activation
        self.loss = loss
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.focal_gamma = focal_gamma
        self.n_classes = n_classes
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def fit(self, X, y, groups=None, rows=None):
        """rows: train on X[rows] (y and groups one entry per row) without copying them out of X."""
        X, y = self._validated(X, y, rows)
        check_classification_targets(y)
        return self._fit(X, y, groups, rows)

    def _prepare_targets(self, y):
        self.classes_, y_enc = encode_classes(y, self.n_classes)
        return y_enc, torch.from_numpy(y_enc), len(self.classes_)

    def _make_loss(self, y_fit):
        w = class_weights(y_fit, len(self.classes_), self.class_weight, self.classes_)
        self.class_weight_ = None if w is None else w.tolist()
        wt = self._wt = None if w is None else torch.tensor(w, dtype=torch.float32)
        if self.loss == "focal":
            gamma = float(self.focal_gamma)
            return lambda out, t: losses.focal_multiclass(out, t, gamma=gamma, weight=wt)
        ls = float(self.label_smoothing)
        return lambda out, t: losses.cross_entropy(out, t, weight=wt, label_smoothing=ls)

    def _make_mixed_loss(self, targets):
        wt, k, ls, gamma = self._wt, len(self.classes_), float(self.label_smoothing), float(self.focal_gamma)
        if self.loss == "focal":
            return lambda out, a, b, lam: soft_focal_multiclass(
                out, mixed_targets("multiclass", targets, a, b, lam, k), gamma=gamma, weight=wt)
        return lambda out, a, b, lam: losses.cross_entropy(
            out, mixed_targets("multiclass", targets, a, b, lam, k), weight=wt, label_smoothing=ls)

    def _fitted_state(self):
        meta, arrays, texts = super()._fitted_state()
        meta["classes_"] = self.classes_.tolist()
        meta["class_weight_"] = self.class_weight_
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        super()._restore_state(meta, arrays, texts)
        self.classes_ = np.asarray(self.classes_)

    def predict_proba(self, X) -> np.ndarray:
        z = self._raw(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class MLPMultilabelHead(_MLPHead):
    """Sigmoid MLP for independent binary outputs (AUs): y is (n, k) of 0/1.

    loss: "weighted_bce" (per output w1 = n/(2 pos), w0 = n/(2 neg), docs/REFERENCE.md), "bce" or "focal".
    predict gives 0/1 at threshold 0.5; tune thresholds on predict_proba (blend).
    """

    _losses = ("weighted_bce", "bce", "focal")
    _out_activations = ("sigmoid",)

    def __init__(self, *, hidden_layer_sizes=(128,), activation="relu", dropout=0.0, l2=0.0,
                 output_activation=None, loss="weighted_bce", focal_gamma=2.0, epochs=10, batch_size=512,
                 learning_rate=1e-3, early_stopping=False, validation_fraction=0.1, n_iter_no_change=3,
                 mixup=None, random_state=0, n_threads=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.output_activation = output_activation
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def fit(self, X, y, groups=None, rows=None):
        """rows: train on X[rows] (y and groups one entry per row) without copying them out of X."""
        X, y = self._validated(X, y, rows, multi_output=True)
        return self._fit(X, y, groups, rows)

    def _prepare_targets(self, y):
        y = check_binary_matrix(y)
        return y, torch.from_numpy(y.astype(np.float32)), y.shape[1]

    def _make_loss(self, y_fit):
        self._w = (None, None)
        if self.loss == "bce":
            return lambda out, t: losses.weighted_bce(out, t)
        w1, w0 = au_bce_weights(y_fit)
        w1t, w0t = torch.tensor(w1, dtype=torch.float32), torch.tensor(w0, dtype=torch.float32)
        if self.loss != "focal":
            self._w = (w1t, w0t)
        if self.loss == "focal":
            gamma = float(self.focal_gamma)
            return lambda out, t: losses.focal_binary(out, t, gamma=gamma)
        return lambda out, t: losses.weighted_bce(out, t, w1=w1t, w0=w0t)

    def _make_mixed_loss(self, targets):
        (w1t, w0t), gamma, k = self._w, float(self.focal_gamma), targets.shape[1]
        if self.loss == "focal":
            return lambda out, a, b, lam: losses.focal_binary(
                out, mixed_targets("multilabel", targets, a, b, lam, k), gamma=gamma)
        return lambda out, a, b, lam: losses.weighted_bce(
            out, mixed_targets("multilabel", targets, a, b, lam, k), w1=w1t, w0=w0t)

    def predict_proba(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self._raw(X)))

    def predict(self, X):
        return (self.predict_proba(X) >= 0.5).astype(np.int64)


class MLPRegressorHead(RegressionOutputMixin, RegressorMixin, _MLPHead):
    """MLP for continuous outputs: output_activation "identity" (default) or "tanh" (VA in [-1, 1]);
    loss "mse" or "ccc" (1 - mean CCC over the outputs, population moments per batch)."""

    _losses = ("mse", "ccc")
    _out_activations = ("identity", "tanh")

    def __init__(self, *, hidden_layer_sizes=(), activation="relu", dropout=0.0, l2=0.0,
                 output_activation=None, loss="mse", epochs=10, batch_size=512, learning_rate=1e-3,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=3, mixup=None, random_state=0,
                 n_threads=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.output_activation = output_activation
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y, groups=None, rows=None):
        """rows: train on X[rows] (y and groups one entry per row) without copying them out of X."""
        X, y = self._validated(X, y, rows, y_dtype="numeric", multi_output=True, y_numeric=True)
        return self._fit(X, y, groups, rows)

    def _prepare_targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        self._remember_output_shape(y)
        y2 = y.reshape(len(y), -1)
        return y2, torch.from_numpy(np.ascontiguousarray(y2)), y2.shape[1]

    def _make_loss(self, y_fit):
        return losses.ccc_loss if self.loss == "ccc" else losses.mse

    def _make_mixed_loss(self, targets):
        f, k = self._make_loss(None), targets.shape[1]
        return lambda out, a, b, lam: f(out, mixed_targets("regression", targets, a, b, lam, k))

    def predict(self, X) -> np.ndarray:
        return self._shaped_output(self._raw(X))
