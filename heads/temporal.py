"""Temporal heads (Fan et al., ABAW2; seeds/003): a 2-layer GRU or a small Transformer encoder over
windows of W consecutive frames of one video (heads.temporal_windows), one linear output per frame.

    GRUClassifierHead / GRUMultilabelHead / GRURegressorHead                      (recipe head "gru")
    TransformerClassifierHead / TransformerMultilabelHead / TransformerRegressorHead   ("transformer")

fit(X, y, groups=videos, frames=frame numbers) takes ALL rows of the training videos, labelled or
not: y holds -1 (expr, AU) or NaN (VA) where a label is missing, rows with non-finite features are
invalid. Training is many-to-many: every slot of a window with a label adds its own loss (missing
labels and padded slots are masked, so unlabelled rows still give context). Prediction is
many-to-one: the output of the middle slot of the window centred on each row; rows with invalid
features get NaN. Losses are those of the per-frame heads (weighted CE / label smoothing / focal,
weighted BCE / BCE / focal, 1 - CCC / MSE), computed over the labelled frames of a batch of windows.

Network: features standardised with fit-time statistics (folded into the first layer) -> Linear to
hidden_size -> GRU (num_layers, optionally bidirectional) or Transformer encoder (sinusoidal
positional encoding of the slot, n_heads, ff_size, num_layers; padded slots are masked out of
attention) -> Linear per frame. Optimiser: Adam (default) or SGD with momentum and a multi-step
learning-rate decay (lr_milestones, lr_gamma), the paper's `optimizer="sgd", learning_rate=5e-4`.
Windows are gathered by index per batch; the features are never copied into an (n, W, D) array,
and at prediction each row is projected once and the windows gather the (n, hidden) projections.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn
from tqdm.auto import tqdm

from . import losses
from .mixup import check_mixup, mix_pairs, mixed_targets, soft_focal_multiclass
from .regression_output import RegressionOutputMixin
from .targets import au_bce_weights, class_weights
from .temporal_windows import WindowIndex
from .torch_training import (
    FlatAdam, FlatParameters, InputLinear, as_feature_tensor, check_choice, feature_stats, seeded,
)

__all__ = [
    "GRUClassifierHead", "GRUMultilabelHead", "GRURegressorHead",
    "TransformerClassifierHead", "TransformerMultilabelHead", "TransformerRegressorHead",
]

ARCHITECTURES = ("gru", "transformer")
_PREDICT_WINDOWS = 2048
_PROJECT_CHUNK = 16384


def sinusoidal_encoding(length: int, width: int) -> torch.Tensor:
    """The positional encoding of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    pe = torch.zeros(length, width)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, :width // 2]
    return pe


class TemporalNet(nn.Module):
    """(batch, W, D) windows + (batch, W) mask -> (batch, W, n_outputs) per-frame outputs."""

    def __init__(self, n_features: int, n_outputs: int, *, architecture: str, window: int, hidden_size: int,
                 num_layers: int, bidirectional: bool, n_heads: int, ff_size: int, dropout: float,
                 out_activation: str):
        super().__init__()
        self.architecture = architecture
        self.proj = InputLinear(n_features, hidden_size)
        if architecture == "gru":
            self.seq = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                              bidirectional=bool(bidirectional), dropout=dropout if num_layers > 1 else 0.0)
            width = hidden_size * (2 if bidirectional else 1)
        else:
            layer = nn.TransformerEncoderLayer(hidden_size, n_heads, ff_size, dropout, batch_first=True)
            self.seq = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.register_buffer("pe", sinusoidal_encoding(window, hidden_size))
            width = hidden_size
        self.out = nn.Linear(width, n_outputs)
        self.out_activation = out_activation

    def project(self, x):  # (..., D) -> (..., hidden)
        return self.proj(x)

    def _padded_zero(self, z, mask):  # padded slots -> 0
        return torch.where(mask[..., None], z, torch.zeros((), dtype=z.dtype))

    def _output(self, h):  # (..., width) -> (..., n_outputs)
        y = self.out(h)
        return torch.tanh(y) if self.out_activation == "tanh" else y

    def forward_projected(self, z, mask):
        """z (batch, W, hidden) projected frames (anything on padded slots), mask (batch, W) bool."""
        z = self._padded_zero(z, mask)
        if self.architecture == "gru":
            h, _ = self.seq(z)
        else:
            h = self.seq(z + self.pe[: z.shape[1]], src_key_padding_mask=~mask)
        return self._output(h)

    def forward(self, x, mask):
        return self.forward_projected(self.project(x), mask)

    def middle_output(self, z, mask):
        """forward_projected(z, mask)[:, W // 2], the output of the middle slot (eval mode). The
        Transformer's last layer runs for that slot only: its keys and values need every slot, but its
        query, attention output and feed-forward only the middle one (the same numbers up to rounding)."""
        h = z.shape[1] // 2
        if self.architecture == "gru":
            return self.forward_projected(z, mask)[:, h]
        z = self._padded_zero(z, mask) + self.pe[: z.shape[1]]
        *first, last = self.seq.layers
        for layer in first:
            z = layer(z, src_key_padding_mask=~mask)
        q = z[:, h:h + 1]
        a = last.self_attn(q, z, z, key_padding_mask=~mask, need_weights=False)[0]
        m = last.norm1(q + a)  # post-norm layer (norm_first=False), dropout off in eval
        m = last.norm2(m + last.linear2(last.activation(last.linear1(m))))
        return self._output(m[:, 0])


# Training steps are small (batch_size windows x W frames: ~300 rows through layers 128 wide), and on
# small operations OpenMP's fork/join costs more than a second thread gains. At the s-Aff-Wild2 size on
# 2 cores (bench/heads_temporal.py, fit + predict): gru expr 163 s on two threads, 107 s on one;
# transformer va 153 s vs 117 s. Prediction (chunks of thousands of windows) keeps all threads.
_TRAIN_THREADS = 1


class FlatSGD:
    """SGD with momentum and coupled L2 weight decay (torch.optim.SGD's update) on FlatParameters,
    written out for the same reason as torch_training.Adam (torch.optim imports torch._dynamo on
    first step)."""

    def __init__(self, flat: FlatParameters, lr: float, momentum: float = 0.9):
        self.flat, self.lr, self.momentum = flat, lr, momentum
        self.buf = torch.zeros_like(flat.data)

    def zero_grad(self) -> None:
        self.flat.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        self.buf.mul_(self.momentum).add_(self.flat.gradient())
        self.flat.data.add_(self.buf, alpha=-self.lr)


class _TemporalHead(BaseEstimator):
    """Shared fit/predict machinery; the subclass sets the label kind, the architecture comes from the class."""

    temporal = True  # heads.fitting / heads.predicting pass all rows of the videos with groups and frames
    _architecture = "gru"
    _losses: tuple = ()
    _out_activations: tuple = ("identity",)

    # -- subclass hooks
    def _prepare_targets(self, y):  # -> (targets tensor, labelled mask (n,) bool, n_outputs)
        raise NotImplementedError

    def _frame_loss(self, targets, labelled):  # -> loss(outputs (m, k), target rows (m,)) on labelled frames
        raise NotImplementedError

    def _mixed_frame_loss(self):  # -> loss(outputs (m, k), mixed targets (m, ...))
        raise NotImplementedError

    def _output_activation(self):
        return self.output_activation or self._out_activations[0]

    def _check_params(self):
        check_choice("loss", self.loss, self._losses)
        check_choice("output_activation", self._output_activation(), self._out_activations)
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        for name in ("window", "hidden_size", "num_layers", "n_heads", "ff_size", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}={v!r}; expected a positive integer")
        if self.window % 2 == 0:
            raise ValueError(f"window={self.window!r}; expected an odd number of frames (the middle one is predicted)")
        if self._architecture == "transformer" and self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of n_heads={self.n_heads}")
        if self._architecture == "transformer" and self.hidden_size % 2:
            raise ValueError(f"hidden_size={self.hidden_size} must be even (sinusoidal positional encoding)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}; expected 0 <= dropout < 1")
        if self.l2 < 0 or self.learning_rate <= 0:
            raise ValueError(f"l2={self.l2!r} must be >= 0 and learning_rate={self.learning_rate!r} > 0")
        check_mixup(self.mixup)

    def _build(self, n_features: int, n_outputs: int) -> TemporalNet:
        act = self._output_activation()
        return TemporalNet(n_features, n_outputs, architecture=self._architecture, window=int(self.window),
                           hidden_size=int(self.hidden_size), num_layers=int(self.num_layers),
                           bidirectional=bool(self.bidirectional), n_heads=int(self.n_heads),
                           ff_size=int(self.ff_size), dropout=float(self.dropout),
                           out_activation="tanh" if act == "tanh" else "identity")

    @staticmethod
    def _inputs(X, groups, frames):
        X = as_feature_tensor(X)
        if X.ndim != 2:
            raise ValueError(f"X must be (n, features); got shape {tuple(X.shape)}")
        n = X.shape[0]
        if groups is None:
            raise ValueError("temporal heads need groups= (the video of every row) and frames=")
        groups = np.asarray(groups)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} rows")
        if frames is None:  # row order within each video
            frames = np.zeros(n, np.int64)
            _, inv = np.unique(groups, return_inverse=True)
            for g in np.unique(inv):
                idx = np.flatnonzero(inv == g)
                frames[idx] = np.arange(len(idx))
        valid = np.isfinite(X.numpy()).all(axis=1)  # numpy: one pass; torch.isfinite builds full-size temporaries
        return X, groups, np.asarray(frames), valid

    def fit(self, X, y, groups=None, frames=None):
        self._check_params()
        Xt, groups, frames, valid = self._inputs(X, groups, frames)
        n = Xt.shape[0]
        if len(y) != n:
            raise ValueError(f"y has {len(y)} rows for {n} rows of X")
        index = WindowIndex(groups, frames, valid, window=int(self.window))
        targets, labelled, n_outputs = self._prepare_targets(y)
        labelled = labelled & valid
        if not labelled.any():
            raise ValueError("no row has both a label and valid features")
        self._loss_rows = np.flatnonzero(labelled)
        rng = np.random.default_rng(self.random_state)
        with seeded(int(rng.integers(2**31)), self.n_threads or _TRAIN_THREADS):
            net = self._build(Xt.shape[1], n_outputs)
            mean, inv_std = feature_stats(Xt, torch.from_numpy(np.flatnonzero(valid)))
            net.proj.mean.copy_(mean)
            net.proj.inv_std.copy_(inv_std)
            history = self._train(net, Xt, index, targets, labelled, rng)
        del self._loss_rows
        self.network_ = net
        self.n_features_in_ = int(Xt.shape[1])
        self.n_outputs_ = int(n_outputs)
        self.n_iter_ = history["n_epochs"]
        self.loss_curve_ = history["loss_curve"]
        return self

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate of epoch `epoch` (0-based): constant for Adam; for SGD multi-step decay,
        learning_rate * lr_gamma ** (number of milestones m <= epoch)."""
        if self.optimizer != "sgd":
            return float(self.learning_rate)
        passed = sum(epoch >= int(m) for m in (self.lr_milestones or ()))
        return float(self.learning_rate) * float(self.lr_gamma) ** passed

    def _optimizer(self, net):
        decay = [p for p in net.parameters() if p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.ndim <= 1]
        flat = FlatParameters([(decay, 2.0 * float(self.l2)), (no_decay, 0.0)])  # every parameter gets a gradient
        if self.optimizer == "sgd":
            return FlatSGD(flat, lr=float(self.learning_rate), momentum=float(self.momentum))
        return FlatAdam(flat, lr=float(self.learning_rate))

    def _train(self, net, Xt, index: WindowIndex, targets, labelled: np.ndarray, rng) -> dict:
        opt = self._optimizer(net)
        frame_loss = self._frame_loss(targets, labelled)
        mixed_loss = self._mixed_frame_loss() if self.mixup else None
        labelled_t = torch.from_numpy(np.append(labelled, False))  # index -1 (pad) -> not labelled
        W = int(self.window)
        history = {"loss_curve": [], "n_epochs": 0}
        bar = tqdm(range(int(self.epochs)), desc=type(self).__name__, unit="epoch", disable=not self.verbose,
                   leave=False, delay=1.0)
        for epoch in bar:
            opt.lr = self.learning_rate_at(epoch)
            net.train()
            win = index.tiling(int(rng.integers(W)))
            win = win[labelled_t.numpy()[win].any(axis=1)]  # windows with at least one labelled frame
            if len(win) == 0:
                break
            win_t = torch.from_numpy(win[rng.permutation(len(win))])
            total, count = 0.0, 0
            for wb in torch.split(win_t, int(self.batch_size)):
                mask = wb >= 0
                xb = Xt.index_select(0, wb.clamp_min(0).reshape(-1)).reshape(len(wb), W, -1)
                xb = torch.where(mask[..., None], xb, torch.zeros((), dtype=xb.dtype))
                lab = labelled_t[wb]  # (b, W): padded slots are never labelled
                z = net.project(xb)
                if mixed_loss is None:
                    out = net.forward_projected(z, mask)
                    loss = frame_loss(out[lab], wb[lab])
                else:
                    loss = self._mix_step(net, z, mask, wb, lab, targets, frame_loss, mixed_loss)
                if loss is None:
                    continue
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(wb)
                count += len(wb)
            history["loss_curve"].append(total / max(count, 1))
            history["n_epochs"] = epoch + 1
            bar.set_postfix(loss=f"{history['loss_curve'][-1]:.4f}", refresh=False)
        opt.flat.release()
        net.eval()
        return history

    def _mix_step(self, net, z, mask, wb, lab, targets, frame_loss, mixed_loss):
        """Mix-up of whole windows: window i with window perm[i], lambda ~ Beta(alpha, alpha); a frame's
        mixed loss needs the labels of both frames; Mix-augment adds the loss on the real windows."""
        lam, perm = mix_pairs(len(wb), float(self.mixup.get("alpha", 0.1)))
        zm = lam * torch.where(mask[..., None], z, 0.0) + (1 - lam) * torch.where(mask[perm][..., None], z[perm], 0.0)
        out = net.forward_projected(zm, mask | mask[perm])
        both = lab & lab[perm]
        loss = None
        if both.any():
            t = mixed_targets(self._target_kind, targets, wb[both], wb[perm][both], lam, self.n_outputs_fit_)
            loss = mixed_loss(out[both], t)
        if self.mixup.get("kind", "mixup") == "mixaugment":
            real = net.forward_projected(z, mask)
            lr = frame_loss(real[lab], wb[lab]) if lab.any() else None
            loss = lr if loss is None else (loss if lr is None else loss + lr)
        return loss

    # -- prediction
    def _raw(self, X, groups=None, frames=None) -> np.ndarray:
        check_is_fitted(self, "network_")
        Xt, groups, frames, valid = self._inputs(X, groups, frames)
        if Xt.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Xt.shape[1]} features; the head was fitted on {self.n_features_in_}")
        n = Xt.shape[0]
        out = np.full((n, self.n_outputs_), np.nan)
        rows = np.flatnonzero(valid)
        if len(rows) == 0:
            return out
        index = WindowIndex(groups, frames, valid, window=int(self.window))
        net = self.network_
        with seeded(0, self.n_threads), torch.no_grad():
            net.eval()
            Z = torch.zeros((n + 1, net.proj.out_features))  # last row: the pad
            for i in range(0, len(rows), _PROJECT_CHUNK):
                r = torch.from_numpy(rows[i:i + _PROJECT_CHUNK])
                Z[r] = net.project(Xt.index_select(0, r))
            for i in range(0, len(rows), _PREDICT_WINDOWS):
                win = torch.from_numpy(index.centred(rows[i:i + _PREDICT_WINDOWS]))
                mask = win >= 0
                zb = Z[torch.where(mask, win, n)]
                out[rows[i:i + _PREDICT_WINDOWS]] = net.middle_output(zb, mask).numpy()
        return out

    # -- persistence (heads.persist): arrays only, no pickle
    def _fitted_state(self) -> tuple[dict, dict, dict]:
        meta = {"n_features_in_": self.n_features_in_, "n_outputs_": self.n_outputs_, "n_iter_": self.n_iter_,
                "loss_curve_": self.loss_curve_}
        arrays = {f"network.{k}": v.numpy() for k, v in self.network_.state_dict().items()}
        return meta, arrays, {}

    def _restore_state(self, meta: dict, arrays: dict, texts: dict) -> None:
        for k, v in meta.items():
            setattr(self, k, v)
        net = self._build(meta["n_features_in_"], meta["n_outputs_"])
        net.load_state_dict({k[len("network."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                             if k.startswith("network.")})
        net.eval()
        self.network_ = net


_COMMON_DOC = """
    Window and network: window (odd, default 9 frames), hidden_size, num_layers, dropout;
    bidirectional (GRU only); n_heads, ff_size (Transformer only). Training: epochs, batch_size
    (windows), learning_rate, l2, optimizer "adam" | "sgd" (momentum, lr_milestones, lr_gamma: the
    learning rate is multiplied by lr_gamma at each milestone epoch), mixup (heads.mixup).
    n_threads: torch threads while training (None: one, faster than more for these small steps) and
    predicting (None: torch's default).
"""


class _TemporalClassifier(ClassifierMixin, _TemporalHead):
    """Per-frame softmax over n_classes (EXPR, LSD). y: class index per row, -1 = no label.

    class_weight: None, "inverse_max", "balanced" or a list (computed on the labelled training rows);
    loss: "cross_entropy" (label_smoothing) or "focal" (focal_gamma).
    """

    _losses = ("cross_entropy", "focal")
    _out_activations = ("softmax",)
    _target_kind = "multiclass"

    def __init__(self, *, window=9, hidden_size=128, num_layers=2, bidirectional=False, n_heads=4, ff_size=256,
                 dropout=0.1, l2=0.0, output_activation=None, loss="cross_entropy", class_weight=None,
                 label_smoothing=0.0, focal_gamma=2.0, n_classes=None, epochs=10, batch_size=32,
                 learning_rate=1e-3, optimizer="adam", momentum=0.9, lr_milestones=(2, 4, 8), lr_gamma=0.1,
                 mixup=None, random_state=0, n_threads=None, verbose=False):
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.n_heads = n_heads
        self.ff_size = ff_size
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
        self.optimizer = optimizer
        self.momentum = momentum
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _prepare_targets(self, y):
        y = np.asarray(y).reshape(-1).astype(np.int64)
        lab = y >= 0
        if self.n_classes is None:
            self.classes_ = np.unique(y[lab])
            enc = np.full(len(y), -1, np.int64)
            enc[lab] = np.searchsorted(self.classes_, y[lab])
        else:
            if lab.any() and y[lab].max() >= self.n_classes:
                raise ValueError(f"y has class indices >= n_classes={self.n_classes}")
            self.classes_ = np.arange(self.n_classes)
            enc = y
        self.n_outputs_fit_ = len(self.classes_)
        return torch.from_numpy(np.where(lab, enc, 0)), lab, len(self.classes_)

    def _frame_loss(self, targets, labelled):
        w = class_weights(targets.numpy()[self._loss_rows], len(self.classes_), self.class_weight, self.classes_)
        self.class_weight_ = None if w is None else w.tolist()
        self._wt = None if w is None else torch.tensor(w, dtype=torch.float32)
        wt, ls, gamma = self._wt, float(self.label_smoothing), float(self.focal_gamma)
        if self.loss == "focal":
            return lambda out, rows: losses.focal_multiclass(out, targets[rows], gamma=gamma, weight=wt)
        return lambda out, rows: losses.cross_entropy(out, targets[rows], weight=wt, label_smoothing=ls)

    def _mixed_frame_loss(self):
        wt, ls, gamma = self._wt, float(self.label_smoothing), float(self.focal_gamma)
        if self.loss == "focal":
            return lambda out, t: soft_focal_multiclass(out, t, gamma=gamma, weight=wt)
        return lambda out, t: losses.cross_entropy(out, t, weight=wt, label_smoothing=ls)

    def _fitted_state(self):
        meta, arrays, texts = super()._fitted_state()
        meta["classes_"] = self.classes_.tolist()
        meta["class_weight_"] = self.class_weight_
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        super()._restore_state(meta, arrays, texts)
        self.classes_ = np.asarray(self.classes_)

    def predict_proba(self, X, groups=None, frames=None) -> np.ndarray:
        z = self._raw(X, groups, frames)
        out = np.full_like(z, np.nan)
        ok = np.isfinite(z).all(axis=1)  # rows with invalid features stay NaN
        e = np.exp(z[ok] - z[ok].max(axis=1, keepdims=True))
        out[ok] = e / e.sum(axis=1, keepdims=True)
        return out

    def predict(self, X, groups=None, frames=None):
        p = self.predict_proba(X, groups, frames)
        return self.classes_[np.argmax(np.nan_to_num(p, nan=-1.0), axis=1)]


class _TemporalMultilabel(_TemporalHead):
    """Per-frame sigmoids (AUs). y: (n, k) 0/1, a row with any -1 has no label.
    loss: "weighted_bce" (per AU w1 = n/(2 pos), w0 = n/(2 neg) on the labelled rows), "bce", "focal"."""

    _losses = ("weighted_bce", "bce", "focal")
    _out_activations = ("sigmoid",)
    _target_kind = "multilabel"

    def __init__(self, *, window=9, hidden_size=128, num_layers=2, bidirectional=False, n_heads=4, ff_size=256,
                 dropout=0.1, l2=0.0, output_activation=None, loss="weighted_bce", focal_gamma=2.0, epochs=10,
                 batch_size=32, learning_rate=1e-3, optimizer="adam", momentum=0.9, lr_milestones=(2, 4, 8),
                 lr_gamma=0.1, mixup=None, random_state=0, n_threads=None, verbose=False):
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.n_heads = n_heads
        self.ff_size = ff_size
        self.dropout = dropout
        self.l2 = l2
        self.output_activation = output_activation
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _prepare_targets(self, y):
        y = np.asarray(y)
        if y.ndim != 2:
            raise ValueError(f"y must be a (n, k) matrix of 0/1 (-1: no label); got shape {y.shape}")
        lab = (y >= 0).all(axis=1)
        if lab.any() and not np.isin(y[lab], (0, 1)).all():
            raise ValueError("y must hold 0/1 on labelled rows (-1 for a missing AU vector)")
        self.n_outputs_fit_ = y.shape[1]
        return torch.from_numpy(np.where(lab[:, None], y, 0).astype(np.float32)), lab, y.shape[1]

    def _frame_loss(self, targets, labelled):
        self._w1, self._w0 = None, None
        gamma = float(self.focal_gamma)
        if self.loss == "bce":
            return lambda out, rows: losses.weighted_bce(out, targets[rows])
        if self.loss == "focal":
            return lambda out, rows: losses.focal_binary(out, targets[rows], gamma=gamma)
        w1, w0 = au_bce_weights(targets.numpy()[self._loss_rows])
        self._w1, self._w0 = torch.tensor(w1, dtype=torch.float32), torch.tensor(w0, dtype=torch.float32)
        w1t, w0t = self._w1, self._w0
        return lambda out, rows: losses.weighted_bce(out, targets[rows], w1=w1t, w0=w0t)

    def _mixed_frame_loss(self):
        gamma, w1t, w0t = float(self.focal_gamma), self._w1, self._w0
        if self.loss == "focal":
            return lambda out, t: losses.focal_binary(out, t, gamma=gamma)
        return lambda out, t: losses.weighted_bce(out, t, w1=w1t, w0=w0t)

    def predict_proba(self, X, groups=None, frames=None) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self._raw(X, groups, frames)))

    def predict(self, X, groups=None, frames=None):
        return (self.predict_proba(X, groups, frames) >= 0.5).astype(np.int64)


class _TemporalRegressor(RegressionOutputMixin, RegressorMixin, _TemporalHead):
    """Per-frame continuous outputs (VA): y (n, k) float, a row with any NaN has no label.
    output_activation "identity" (default) or "tanh"; loss "mse" or "ccc" (1 - mean CCC over the
    labelled frames of the batch)."""

    _losses = ("mse", "ccc")
    _out_activations = ("identity", "tanh")
    _target_kind = "regression"

    def __init__(self, *, window=9, hidden_size=128, num_layers=2, bidirectional=False, n_heads=4, ff_size=256,
                 dropout=0.1, l2=0.0, output_activation=None, loss="mse", epochs=10, batch_size=32,
                 learning_rate=1e-3, optimizer="adam", momentum=0.9, lr_milestones=(2, 4, 8), lr_gamma=0.1,
                 mixup=None, random_state=0, n_threads=None, verbose=False):
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.n_heads = n_heads
        self.ff_size = ff_size
        self.dropout = dropout
        self.l2 = l2
        self.output_activation = output_activation
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.mixup = mixup
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _prepare_targets(self, y):
        y = np.asarray(y, dtype=np.float32)
        self._remember_output_shape(y)
        y2 = y.reshape(len(y), -1)
        lab = np.isfinite(y2).all(axis=1)
        self.n_outputs_fit_ = y2.shape[1]
        return torch.from_numpy(np.where(lab[:, None], y2, 0.0).astype(np.float32)), lab, y2.shape[1]

    def _frame_loss(self, targets, labelled):
        f = losses.ccc_loss if self.loss == "ccc" else losses.mse

        def loss(out, rows):
            return f(out, targets[rows]) if len(rows) > 1 else None

        return loss

    def _mixed_frame_loss(self):
        f = losses.ccc_loss if self.loss == "ccc" else losses.mse
        return lambda out, t: f(out, t) if len(t) > 1 else None

    def predict(self, X, groups=None, frames=None) -> np.ndarray:
        return self._shaped_output(self._raw(X, groups, frames))


for _cls in (_TemporalClassifier, _TemporalMultilabel, _TemporalRegressor):
    _cls.__doc__ += _COMMON_DOC


class GRUClassifierHead(_TemporalClassifier):
    __doc__ = "GRU over windows, softmax per frame." + _TemporalClassifier.__doc__
    _architecture = "gru"


class GRUMultilabelHead(_TemporalMultilabel):
    __doc__ = "GRU over windows, sigmoids per frame." + _TemporalMultilabel.__doc__
    _architecture = "gru"


class GRURegressorHead(_TemporalRegressor):
    __doc__ = "GRU over windows, regression per frame." + _TemporalRegressor.__doc__
    _architecture = "gru"


class TransformerClassifierHead(_TemporalClassifier):
    __doc__ = "Transformer encoder over windows, softmax per frame." + _TemporalClassifier.__doc__
    _architecture = "transformer"


class TransformerMultilabelHead(_TemporalMultilabel):
    __doc__ = "Transformer encoder over windows, sigmoids per frame." + _TemporalMultilabel.__doc__
    _architecture = "transformer"


class TransformerRegressorHead(_TemporalRegressor):
    __doc__ = "Transformer encoder over windows, regression per frame." + _TemporalRegressor.__doc__
    _architecture = "transformer"
