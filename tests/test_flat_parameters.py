"""heads.torch_training.FlatParameters / FlatAdam and heads.temporal.FlatSGD: one flat tensor for all
parameters and gradients gives the very updates of the per-parameter optimisers."""
from __future__ import annotations

import torch

from heads.temporal import FlatSGD, TemporalNet
from heads.torch_training import Adam, FlatAdam, FlatParameters


def _net(seed: int, architecture: str) -> TemporalNet:
    torch.manual_seed(seed)
    return TemporalNet(6, 3, architecture=architecture, window=5, hidden_size=16, num_layers=2, bidirectional=False,
                       n_heads=4, ff_size=32, dropout=0.0, out_activation="identity")


def _groups(net, l2: float):
    return [([p for p in net.parameters() if p.ndim > 1], 2 * l2), ([p for p in net.parameters() if p.ndim <= 1], 0.0)]


def _steps(net, opt, n=5):
    torch.manual_seed(1)
    for _ in range(n):
        x, mask = torch.randn(8, 5, 6), torch.rand(8, 5) > 0.2
        mask[:, 2] = True
        loss = net(x, mask)[mask].pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_flat_adam_and_sgd_equal_the_per_parameter_updates():
    for architecture in ("gru", "transformer"):
        ref, flat_net = _net(0, architecture), _net(0, architecture)
        _steps(ref, Adam(_groups(ref, 0.01), lr=1e-2))
        flat = FlatParameters(_groups(flat_net, 0.01))
        _steps(flat_net, FlatAdam(flat, lr=1e-2))
        grads_are_views = all(p.grad.data_ptr() >= flat.grad.data_ptr() and
                              p.grad.data_ptr() < flat.grad.data_ptr() + flat.grad.numel() * 4
                              for p, _ in flat.params)
        assert grads_are_views  # autograd accumulated into the flat gradient, not into new tensors
        flat.release()
        for (name, a), (_, b) in zip(ref.state_dict().items(), flat_net.state_dict().items()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        assert all(p.grad is None for p in flat_net.parameters())
        assert flat_net.out.weight.data_ptr() != flat.data.data_ptr()  # own storage again

    ref, flat_net = _net(3, "gru"), _net(3, "gru")
    momentum, lr, wd = 0.9, 1e-2, 0.02
    bufs = [torch.zeros_like(p) for p in ref.parameters()]

    class PerParameterSGD:
        def zero_grad(self):
            for p in ref.parameters():
                p.grad = None

        @torch.no_grad()
        def step(self):
            for p, b in zip(ref.parameters(), bufs):
                b.mul_(momentum).add_(p.grad.add(p, alpha=wd if p.ndim > 1 else 0.0))
                p.add_(b, alpha=-lr)

    _steps(ref, PerParameterSGD())
    flat = FlatParameters(_groups(flat_net, wd / 2))
    _steps(flat_net, FlatSGD(flat, lr=lr, momentum=momentum))
    flat.release()
    for (name, a), (_, b) in zip(ref.state_dict().items(), flat_net.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_training_threads_one_for_small_steps_unless_asked():
    from heads.torch_training import training_threads

    assert training_threads(None, [10, 2], 512) == 1  # paper's VA layer
    assert training_threads(None, [1290, 8], 512) == 1  # paper's EXPR layer
    assert training_threads(None, [1290, 128, 12], 512) is None  # paper's AU network: torch's setting
    assert training_threads(3, [10, 2], 512) == 3


def test_temporal_and_small_heads_train_on_one_thread(monkeypatch):
    """The thread count in force while a head's training loop runs (torch.get_num_threads inside train)."""
    import numpy as np

    import heads.mlp as mlp
    import heads.temporal as temporal
    from heads.registry import make_head

    seen = {}
    real_train, real_loop = mlp.train, temporal._TemporalHead._train

    def spy_train(*a, **k):
        seen["mlp"] = torch.get_num_threads()
        return real_train(*a, **k)

    def spy_loop(self, *a, **k):
        seen["temporal"] = torch.get_num_threads()
        return real_loop(self, *a, **k)

    monkeypatch.setattr(mlp, "train", spy_train)
    monkeypatch.setattr(temporal._TemporalHead, "_train", spy_loop)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    before = torch.get_num_threads()
    make_head("mlp", "regression", {"epochs": 1}, n_classes=None, seed=0).fit(X, rng.normal(size=(200, 2)))
    make_head("gru", "regression", {"epochs": 1, "hidden_size": 8}, n_classes=None, seed=0).fit(
        X, rng.normal(size=(200, 2)), groups=np.repeat([0, 1], 100), frames=np.tile(np.arange(100), 2))
    assert seen == {"mlp": 1, "temporal": 1}
    assert torch.get_num_threads() == before
