"""The torch pieces shared by the MLP heads: network, seeded training loop, held-out split, inference.

Speed matters here (the loop runs on 2 CPU cores over ~100k x 1290 features): the feature matrix is
wrapped without a copy, each batch is one `index_select`, standardisation is the network's first
layer (no standardised copy of X), L2 is Adam's (coupled) weight decay on weight matrices only.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}
_PREDICT_CHUNK = 16384
_MIN_IMPROVEMENT = 1e-4  # relative decrease of the held-out loss that counts as progress (early stopping)


class InputLinear(nn.Linear):
    """A Linear layer on standardised inputs that never builds the standardised batch:
    W ((x - mean) * inv_std) + b = (W * inv_std) x + (b - (W * inv_std) mean). The parameters live in
    standardised space; mean/inv_std are fit-time buffers saved with the state dict."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out)
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("inv_std", torch.ones(n_in))

    def forward(self, x):  # (batch, n_in) -> (batch, n_out)
        w = self.weight * self.inv_std
        return F.linear(x, w, self.bias - w @ self.mean)


class MLP(nn.Module):
    """[Linear -> activation -> Dropout] * len(hidden) -> one Linear per output block, on inputs
    standardised with fit-time statistics (folded into the input layer(s), see InputLinear).

    heads: output widths; with one entry the forward returns a tensor, else a tuple (joint mode).
    out_activations: per head, applied in forward ("identity" leaves raw scores for losses that take logits).
    """

    def __init__(self, n_features: int, hidden: tuple, heads: tuple, *, activation: str, dropout: float,
                 out_activations: tuple):
        super().__init__()
        layers, width = [], n_features
        for h in hidden:
            layers += [InputLinear(width, h) if not layers else nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        out_layer = nn.Linear if hidden else InputLinear
        self.heads = nn.ModuleList(out_layer(width, k) for k in heads)
        self.out_acts = nn.ModuleList(ACTIVATIONS[a]() for a in out_activations)

    def set_standardization(self, mean: torch.Tensor, inv_std: torch.Tensor) -> None:
        for m in self.modules():
            if isinstance(m, InputLinear):
                m.mean.copy_(mean)
                m.inv_std.copy_(inv_std)

    def forward(self, x):  # (batch, features) -> (batch, k) or tuple of them
        z = self.body(x)
        outs = tuple(act(head(z)) for head, act in zip(self.heads, self.out_acts))
        return outs[0] if len(outs) == 1 else outs


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {sorted(map(str, allowed))}")


def as_feature_tensor(X) -> torch.Tensor:
    """float32 C-contiguous tensor sharing memory with X where possible (read-only arrays are copied)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return torch.from_numpy(X if X.flags.writeable else X.copy())


# Rows per chunk of feature_stats: a 4,096 x 1290 float32 chunk is 21 MB, reused for every chunk. Chunks of
# 32,768 rows (169 MB) were fresh allocations each time, faulted in page by page: 0.7 to 2.1 s of a `paper`
# head's fit on 100k rows went there, 0.25 s now (bench/RESULTS.md, 2026-12-08).
_STATS_CHUNK = 4096


def feature_stats(X: torch.Tensor, rows: torch.Tensor, chunk: int = _STATS_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/std of X[rows] per column, by chunks (no full copy); 1/std = 1 for constant columns.

    Sums are taken of x - x0 (x0: the first row), so a column that is constant on these rows has
    exactly zero variance (E[x^2] - E[x]^2 of unshifted float32 sums leaves rounding noise there,
    whose 1/std is huge), and large column means cost no precision."""
    s = torch.zeros(X.shape[1], dtype=torch.float64)
    s2 = torch.zeros(X.shape[1], dtype=torch.float64)
    if len(rows) == 0:
        return s.float(), torch.ones(X.shape[1])
    x0 = X[int(rows[0])].clone()
    contiguous = int(rows[-1]) - int(rows[0]) == len(rows) - 1
    shifted = torch.empty((min(chunk, len(rows)), X.shape[1]), dtype=X.dtype)
    squares = torch.empty_like(shifted)
    for i in range(0, len(rows), chunk):
        if contiguous:  # no gather copy
            xb = X[int(rows[0]) + i:int(rows[0]) + i + chunk][:len(rows) - i]
            d = torch.sub(xb, x0, out=shifted[:len(xb)])
        else:
            idx = rows[i:i + chunk]
            d = torch.index_select(X, 0, idx, out=shifted[:len(idx)]).sub_(x0)
        s += d.sum(0).double()  # float32 (cascaded) sums per chunk, accumulated in float64
        s2 += torch.mul(d, d, out=squares[:len(d)]).sum(0).double()
    n = len(rows)
    shift = s / n
    var = (s2 / n - shift * shift).clamp_min(0)
    std = var.sqrt()
    inv = torch.where(std > 1e-12, 1.0 / std, torch.ones_like(std))
    return (x0.double() + shift).float(), inv.float()


def holdout_split(n: int, fraction: float, groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split 0..n-1 into (train, held-out) with about `fraction` of rows held out, whole groups at a time."""
    if groups is None:
        perm = rng.permutation(n)
        k = max(1, int(round(fraction * n)))
        return np.sort(perm[k:]), np.sort(perm[:k])
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} rows")
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < 2:
        raise ValueError("early stopping by groups needs at least 2 groups (videos) in the training rows")
    sizes = np.bincount(inverse)
    order = rng.permutation(len(uniq))
    cum = np.cumsum(sizes[order])
    k = int(np.searchsorted(cum, fraction * n)) + 1
    k = min(max(k, 1), len(uniq) - 1)
    held = np.isin(inverse, order[:k])
    return np.flatnonzero(~held), np.flatnonzero(held)


# Multiply-adds of one training step (batch x the network's layers) below which one torch thread trains
# faster than two: OpenMP's fork/join on each small operation costs more than the second core gains.
# On 2 cores, 100,000 synthetic rows: `paper`'s VA head (10 -> 2) fitted in 4.1 s on two threads, 2.6 s
# on one; its EXPR head (1290 -> 8) 4.9 s vs 4.4 s; its AU head (1290 -> 128 -> 12, 85M per step) is
# faster on two.
SMALL_STEP_MACS = 20_000_000


def training_threads(requested: int | None, widths, batch_size: int) -> int | None:
    """Threads to train a network of layer `widths` (inputs, hidden..., outputs) with: `requested`
    when given, else 1 for small steps (SMALL_STEP_MACS), else None (torch's setting)."""
    if requested:
        return int(requested)
    macs = int(batch_size) * sum(int(a) * int(b) for a, b in zip(widths[:-1], widths[1:]))
    return 1 if macs < SMALL_STEP_MACS else None


@contextlib.contextmanager
def seeded(seed: int, n_threads: int | None):
    """Run the block with torch's global RNG seeded (restored afterwards) and optionally n threads."""
    old_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if n_threads:
            torch.set_num_threads(int(n_threads))
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)


class Adam:
    """Adam (Kingma & Ba) with coupled L2 weight decay, the update of torch.optim.Adam.

    Written out because torch.optim's first step imports torch._dynamo, which costs seconds and
    ~150 MB per process: more than fitting a `paper` head on 100k rows. param_groups:
    [(params, weight_decay), ...].
    """

    def __init__(self, param_groups, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [(p, wd) for ps, wd in param_groups for p in ps]
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p, _ in self.params]
        self.v = [torch.zeros_like(p) for p, _ in self.params]

    def zero_grad(self) -> None:
        for p, _ in self.params:
            p.grad = None

    def _moments(self):
        """(parameter, gradient with the L2 term, first moment, second moment) of each parameter to update."""
        for (p, wd), m, v in zip(self.params, self.m, self.v):
            if p.grad is None:  # not used by this batch's loss (e.g. a task without labels in it): as torch
                continue
            yield p, (p.grad if not wd else p.grad.add(p, alpha=wd)), m, v

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        bias2 = math.sqrt(1 - b2 ** self.t)
        for p, g, m, v in self._moments():
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bias2).add_(self.eps), value=-step_size)


class FlatParameters:
    """A model's parameters moved into one contiguous tensor (each parameter a view of it), their
    gradients into another (autograd accumulates into the views in place), with a per-element weight
    decay. An optimiser step is then a handful of operations on one tensor instead of a handful per
    parameter tensor (a 2-layer Transformer head has 28): in torch's profiler, 9% less CPU time per
    training step of the `transformer` VA head at 32 windows per batch.

    Only for models whose every parameter gets a gradient on every step (a parameter without one
    would still move with its momentum, where torch's optimisers skip it). param_groups:
    [(params, weight_decay), ...]. `release()` gives each parameter its own storage back."""

    def __init__(self, param_groups):
        self.params = [(p, float(wd)) for ps, wd in param_groups for p in ps]
        total = sum(p.numel() for p, _ in self.params)
        self.data = torch.empty(total)
        self.grad = torch.zeros(total)
        self.weight_decay = torch.empty(total)
        offset = 0
        for p, wd in self.params:
            n = p.numel()
            self.data[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = self.data[offset:offset + n].view_as(p)
            p.grad = self.grad[offset:offset + n].view_as(p)
            self.weight_decay[offset:offset + n] = wd
            offset += n
        self.any_decay = any(wd for _, wd in self.params)

    def zero_grad(self) -> None:
        self.grad.zero_()

    def gradient(self) -> torch.Tensor:
        """The gradient with the coupled L2 term: grad + weight_decay * param."""
        return self.grad.addcmul(self.weight_decay, self.data) if self.any_decay else self.grad

    def release(self) -> None:
        for p, _ in self.params:
            p.data = p.data.clone()
            p.grad = None


class FlatAdam(Adam):
    """Adam's update (the same `step`) on FlatParameters: one parameter tensor, one gradient."""

    def __init__(self, flat: FlatParameters, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.flat, self.lr, self.betas, self.eps, self.t = flat, lr, betas, eps, 0
        self.m = torch.zeros_like(flat.data)
        self.v = torch.zeros_like(flat.data)

    def zero_grad(self) -> None:
        self.flat.zero_grad()

    def _moments(self):
        yield self.flat.data, self.flat.gradient(), self.m, self.v


def train(model: nn.Module, X: torch.Tensor, train_rows: torch.Tensor, loss_fn, *, epochs: int,
          batch_size: int, learning_rate: float, l2: float, held_rows: torch.Tensor | None = None,
          n_iter_no_change: int = 3, verbose: bool = False, desc: str = "mlp", mixup: dict | None = None,
          mixed_loss_fn=None) -> dict:
    """Adam on mini-batches of X[train_rows]; loss_fn(outputs, rows) -> scalar.

    L2: `l2 * sum(W**2)` added to the loss for weight matrices (Keras kernel_regularizer semantics),
    implemented as Adam weight_decay = 2 * l2. With held_rows, the held-out loss is computed after
    every epoch; the best epoch's weights are restored and training stops after n_iter_no_change
    epochs without a relative improvement of 1e-4. Returns {"n_epochs", "best_epoch", "loss_curve", "validation_curve"}.

    mixup {"alpha", "kind"} (heads.mixup): each batch is mixed with a random pairing of itself,
    lambda ~ Beta(alpha, alpha); mixed_loss_fn(outputs, rows_a, rows_b, lambda) -> scalar or None (no
    pair has the labels); kind "mixaugment" adds loss_fn on the real batch. Held-out losses are unmixed.
    """
    from .mixup import mix_inputs, mix_pairs

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = Adam([(decay, 2.0 * l2), (no_decay, 0.0)], lr=learning_rate)
    n = len(train_rows)
    n_batches = max(1, math.ceil(n / batch_size))
    history = {"loss_curve": [], "validation_curve": [], "best_epoch": epochs, "n_epochs": 0}
    best, best_state, stale = math.inf, None, 0
    buf = torch.empty((math.ceil(n / n_batches), X.shape[1]), dtype=X.dtype)
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not verbose, leave=False, delay=1.0)
    for epoch in bar:
        model.train()
        perm = train_rows[torch.randperm(n)]
        total = torch.zeros(())
        for idx in torch.tensor_split(perm, n_batches):  # near-equal batches, none tiny
            xb = torch.index_select(X, 0, idx, out=buf[:len(idx)])  # reused buffer: no allocation per batch
            if mixup:
                lam, perm = mix_pairs(len(idx), float(mixup.get("alpha", 0.1)))
                loss = mixed_loss_fn(model(mix_inputs(xb, perm, lam)), idx, idx[perm], lam)
                if mixup.get("kind", "mixup") == "mixaugment":
                    real = loss_fn(model(xb), idx)
                    loss = real if loss is None else loss + real
                if loss is None:
                    continue
            else:
                loss = loss_fn(model(xb), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        history["loss_curve"].append(float(total) / n)
        history["n_epochs"] = epoch + 1
        if held_rows is not None:
            with torch.no_grad():
                model.eval()
                val = float(loss_fn(forward_chunks(model, X, held_rows), held_rows))
            history["validation_curve"].append(val)
            bar.set_postfix(loss=f"{history['loss_curve'][-1]:.4f}", held_out=f"{val:.4f}", refresh=False)
            if best == math.inf or val < best - _MIN_IMPROVEMENT * abs(best):
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                history["best_epoch"] = epoch + 1
            else:
                stale += 1
                if stale >= n_iter_no_change:
                    break
        else:
            bar.set_postfix(loss=f"{history['loss_curve'][-1]:.4f}", refresh=False)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def forward_chunks(model: nn.Module, X: torch.Tensor, rows: torch.Tensor | None = None):
    """model(X[rows]) in chunks, without autograd; tuples of outputs are concatenated per output."""
    n = X.shape[0] if rows is None else len(rows)
    outs = []
    with torch.no_grad():
        for i in range(0, n, _PREDICT_CHUNK):
            xb = X[i:i + _PREDICT_CHUNK] if rows is None else X.index_select(0, rows[i:i + _PREDICT_CHUNK])
            outs.append(model(xb))
    if not outs:
        return None
    if isinstance(outs[0], tuple):
        return tuple(torch.cat([o[j] for o in outs]) for j in range(len(outs[0])))
    return torch.cat(outs)
