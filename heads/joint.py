"""The hard-shared multi-task MLP (Chang et al., ABAW4; seeds/001): shared hidden layer(s), three
outputs (EXPR softmax, VA tanh, AU sigmoid), each task's loss computed only on the rows of the batch
that have that task's label (masked losses), summed with `task_weights`.

It sits next to the separate heads (`heads fit mtl` vs `heads fit mtl --joint`) so that both can be
blended later, as in the paper (p = lambda * single + (1 - lambda) * multi).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from store.schema import MTL_EXPR_CLASSES

from . import losses
from .mixup import check_mixup, mixed_targets
from .targets import au_bce_weights, class_weights
from .torch_training import (
    ACTIVATIONS, MLP, InputLinear, as_feature_tensor, check_choice, feature_stats, forward_chunks, holdout_split,
    seeded, train,
)

__all__ = ["JointMLPHead"]

TASK_ORDER = ("expr", "va", "au")


class JointMLPHead(BaseEstimator):
    """One network, three outputs, masked losses.

    fit(X, Y) with Y = {"expr": (n,) int, -1 missing; "va": (n, 2) float, NaN missing;
    "au": (n, k) int, -1 missing}; a row may miss any subset (a row missing all three is dropped).
    predict_tasks(X) -> {"expr": (n, 8) probabilities, "va": (n, 2) in [-1, 1], "au": (n, k) probabilities}.

    class_weight (EXPR): None, "inverse_max", "balanced" or a list. au_loss: "weighted_bce", "bce",
    "focal". va_loss: "ccc" (1 - mean CCC over the labelled rows of the batch) or "mse".
    task_weights: {"expr": 1, "va": 1, "au": 1} multipliers of the three losses.

    Auxiliary task (Jeong et al.; `heads fit mtl --joint --aux landmarks`): Y["landmarks"] (n, k) float,
    a row with a NaN has none; an extra linear output regresses it with MSE x aux_weight over the rows
    of the batch that have it (normalised landmarks: heads.landmarks). It is not predicted.
    """

    def __init__(self, *, hidden_layer_sizes=(128,), activation="relu", dropout=0.0, l2=0.0,
                 n_classes=len(MTL_EXPR_CLASSES), class_weight="inverse_max", label_smoothing=0.0,
                 au_loss="weighted_bce", focal_gamma=2.0, va_loss="ccc", task_weights=None, aux_weight=1.0, epochs=10,
                 batch_size=512, learning_rate=1e-3, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=3, mixup=None, random_state=0, n_threads=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.l2 = l2
        self.n_classes = n_classes
        self.class_weight = class_weight
        self.label_smoothing = label_smoothing
        self.au_loss = au_loss
        self.focal_gamma = focal_gamma
        self.va_loss = va_loss
        self.task_weights = task_weights
        self.aux_weight = aux_weight
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

    def _check_params(self):
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("au_loss", self.au_loss, ("weighted_bce", "bce", "focal"))
        check_choice("va_loss", self.va_loss, ("ccc", "mse"))
        unknown = set(self.task_weights or {}) - set(TASK_ORDER)
        if unknown:
            raise ValueError(f"task_weights has unknown tasks {sorted(unknown)}; tasks: {', '.join(TASK_ORDER)}")
        if self.early_stopping and not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r}; expected 0 < f < 1")
        check_mixup(self.mixup)

    def fit(self, X, Y, groups=None):
        self._check_params()
        X = validate_data(self, X, dtype=np.float32)
        n = len(X)
        ye = np.asarray(Y["expr"], dtype=np.int64).reshape(n)
        yv = np.asarray(Y["va"], dtype=np.float32).reshape(n, -1)
        ya = np.asarray(Y["au"], dtype=np.int64).reshape(n, -1)
        me, mv, ma = ye >= 0, np.isfinite(yv).all(1), (ya >= 0).all(1)
        if ye.max(initial=-1) >= self.n_classes:
            raise ValueError(f"Y['expr'] has labels >= n_classes={self.n_classes}")
        if ma.any() and not np.isin(ya[ma], (0, 1)).all():
            raise ValueError("Y['au'] must hold 0/1 on labelled rows (-1 for a missing AU vector)")
        keep = me | mv | ma
        yl = Y.get("landmarks")
        yl = None if yl is None else np.asarray(yl, dtype=np.float32).reshape(n, -1)
        ml = np.zeros(n, bool) if yl is None else np.isfinite(yl).all(1)
        n_aux = 0 if yl is None else yl.shape[1]
        if not keep.any():
            raise ValueError("no row has any of the expr, va, au labels")
        rng = np.random.default_rng(self.random_state)
        rows = np.flatnonzero(keep)
        held = None
        if self.early_stopping:
            g = None if groups is None else np.asarray(groups)[rows]
            fit_pos, held_pos = holdout_split(len(rows), self.validation_fraction, g, rng)
            rows, held = rows[fit_pos], rows[held_pos]
        k_au = ya.shape[1]
        we = class_weights(ye[rows][me[rows]], self.n_classes, self.class_weight)
        w1, w0 = au_bce_weights(ya[rows][ma[rows]])
        tw = {t: float((self.task_weights or {}).get(t, 1.0)) for t in TASK_ORDER}
        t = {
            "ye": torch.from_numpy(np.where(me, ye, 0)), "me": torch.from_numpy(me),
            "yv": torch.from_numpy(np.where(mv[:, None], yv, 0.0).astype(np.float32)), "mv": torch.from_numpy(mv),
            "ya": torch.from_numpy(np.where(ma[:, None], ya, 0).astype(np.float32)), "ma": torch.from_numpy(ma),
            "ml": torch.from_numpy(ml),
        }
        if n_aux:
            t["yl"] = torch.from_numpy(np.where(ml[:, None], yl, 0.0).astype(np.float32))
        joint_loss = _JointLoss(
            t, tasks={"expr": tw["expr"], "va": tw["va"], "au": tw["au"], "landmarks": float(self.aux_weight)},
            n_classes=self.n_classes, k_au=k_au, n_aux=n_aux, va_loss=self.va_loss, au_loss=self.au_loss,
            class_weight=None if we is None else torch.tensor(we, dtype=torch.float32),
            au_weights=(torch.tensor(w1, dtype=torch.float32), torch.tensor(w0, dtype=torch.float32)),
            label_smoothing=float(self.label_smoothing), focal_gamma=float(self.focal_gamma))

        Xt = as_feature_tensor(X)
        with seeded(int(rng.integers(2**31)), self.n_threads):
            rows_t = torch.from_numpy(rows)
            net = self._build(X.shape[1], k_au, n_aux)
            mean, inv_std = feature_stats(Xt, rows_t)
            net.set_standardization(mean, inv_std)
            history = train(
                net, Xt, rows_t, joint_loss.plain, epochs=int(self.epochs), batch_size=int(self.batch_size),
                learning_rate=float(self.learning_rate), l2=float(self.l2),
                held_rows=None if held is None else torch.from_numpy(held),
                n_iter_no_change=int(self.n_iter_no_change), verbose=self.verbose, desc="JointMLPHead",
                mixup=self.mixup, mixed_loss_fn=joint_loss.mixed if self.mixup else None,
            )
        self.network_ = net
        self.n_features_in_ = X.shape[1]
        self.n_au_ = k_au
        self.n_aux_ = n_aux
        self.class_weight_ = None if we is None else we.tolist()
        self.n_iter_ = history["n_epochs"]
        self.best_epoch_ = history["best_epoch"]
        self.loss_curve_ = history["loss_curve"]
        self.validation_curve_ = history["validation_curve"]
        return self

    def _build(self, n_features, n_au, n_aux=0):
        hidden = tuple(int(h) for h in self.hidden_layer_sizes)
        net = MLP(n_features, hidden, (self.n_classes, 2, n_au), activation=self.activation,
                  dropout=float(self.dropout), out_activations=("identity", "tanh", "identity"))
        if n_aux:  # auxiliary output, initialised on a forked RNG: the rest trains as without it
            with torch.random.fork_rng(devices=[]):
                layer = (nn.Linear if hidden else InputLinear)(hidden[-1] if hidden else n_features, n_aux)
            net.heads.append(layer)
            net.out_acts.append(nn.Identity())
        return net

    def predict_tasks(self, X) -> dict:
        check_is_fitted(self, "network_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        if len(X) == 0:
            return {"expr": np.zeros((0, self.n_classes), np.float32), "va": np.zeros((0, 2), np.float32),
                    "au": np.zeros((0, self.n_au_), np.float32)}
        with seeded(0, self.n_threads):
            oe, ov, oa = forward_chunks(self.network_, as_feature_tensor(X))[:3]
        return {"expr": torch.softmax(oe, 1).numpy(), "va": ov.numpy(), "au": torch.sigmoid(oa).numpy()}

    def _fitted_state(self):
        meta = {k: getattr(self, k) for k in ("n_features_in_", "n_au_", "class_weight_", "n_iter_",
                                              "best_epoch_", "loss_curve_", "validation_curve_")}
        meta["n_aux_"] = int(getattr(self, "n_aux_", 0))
        arrays = {f"network.{k}": v.numpy() for k, v in self.network_.state_dict().items()}
        return meta, arrays, {}

    def _restore_state(self, meta, arrays, texts):
        for k, v in meta.items():
            setattr(self, k, v)
        self.n_aux_ = int(meta.get("n_aux_", 0))
        net = self._build(meta["n_features_in_"], meta["n_au_"], self.n_aux_)
        net.load_state_dict({k[len("network."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        net.eval()
        self.network_ = net


class _JointLoss:
    """The joint head's loss: the weighted sum of the task losses over the rows that have each label.

    `plain(out, idx)` scores rows `idx`; `mixed(out, a, b, lam)` scores Mix-up pairs (heads.mixup), a task
    only over the pairs where both rows have its label (None when no pair has any)."""

    # task -> (output index, mask key, target key, mixup kind)
    TASKS = {"landmarks": (3, "ml", "yl", "regression"), "expr": (0, "me", "ye", "multiclass"),
             "va": (1, "mv", "yv", "regression"), "au": (2, "ma", "ya", "multilabel")}

    def __init__(self, tensors, *, tasks, n_classes, k_au, n_aux, va_loss, au_loss, class_weight, au_weights,
                 label_smoothing, focal_gamma):
        self.t, self.weights = tensors, tasks
        self.width = {"landmarks": n_aux, "expr": n_classes, "va": 2, "au": k_au}
        self.n_aux, self.va_loss, self.au_loss = n_aux, va_loss, au_loss
        self.class_weight, (self.w1, self.w0) = class_weight, au_weights
        self.label_smoothing, self.focal_gamma = label_smoothing, focal_gamma

    def task_loss(self, task, out, target):
        if task == "landmarks":
            return losses.mse(out, target)
        if task == "expr":
            return losses.cross_entropy(out, target, weight=self.class_weight, label_smoothing=self.label_smoothing)
        if task == "va":
            return (losses.ccc_loss if self.va_loss == "ccc" else losses.mse)(out, target)
        if self.au_loss == "focal":
            return losses.focal_binary(out, target, gamma=self.focal_gamma)
        if self.au_loss == "bce":
            return losses.weighted_bce(out, target)
        return losses.weighted_bce(out, target, w1=self.w1, w0=self.w0)

    def _sum(self, out, select):
        """select(mask key, target key, kind, width) -> (row mask, targets of the masked rows)."""
        total, any_term = out[0].new_zeros(()), False
        for task, (i, mask_key, target_key, kind) in self.TASKS.items():
            if task == "landmarks" and not self.n_aux:
                continue
            m, target = select(mask_key, target_key, kind, self.width[task])
            if int(m.sum()) > (1 if task == "va" else 0):  # CCC needs two rows
                total = total + self.weights[task] * self.task_loss(task, out[i][m], target(m))
                any_term = True
        return total, any_term

    def plain(self, out, idx):
        return self._sum(out, lambda mk, yk, kind, width: (self.t[mk][idx], lambda m: self.t[yk][idx][m]))[0]

    def mixed(self, out, a, b, lam):
        def select(mk, yk, kind, width):
            m = self.t[mk][a] & self.t[mk][b]
            return m, lambda m: mixed_targets(kind, self.t[yk], a[m], b[m], lam, width)

        total, any_pair = self._sum(out, select)
        return total if any_pair else None
