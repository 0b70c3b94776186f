"""Fold inference-mode BatchNorm layers into the convolutions that feed them.

In eval mode BatchNorm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta,
so after a convolution it can be absorbed into the convolution's weight and bias. That removes one
memory-bound pass over every feature map (EfficientNet-B0 has 49 of them) and changes features only
by float rounding (~1e-6).

    model = fold_batchnorm(model, example)   # a folded copy; the original is untouched

Which BatchNorm follows which convolution is found by running `example` through the model with hooks
(a BatchNorm whose input is the very tensor a Conv2d just returned), so it works for any nn.Module
without knowing its attribute names. The folded copy is checked against the original on `example`;
if they disagree (a conv output that is also used elsewhere, a Conv2d subclass that transforms its
weight) the original is returned unchanged.
"""
from __future__ import annotations

import copy
import sys
import warnings

import torch
from torch import nn


def _foldable_bn(m: nn.Module) -> bool:
    if type(m) is nn.BatchNorm2d:
        return m.running_mean is not None
    timm_layers = sys.modules.get("timm.layers")  # a model with timm layers has imported it
    return (timm_layers is not None and type(m) is timm_layers.BatchNormAct2d
            and m.running_mean is not None)


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.Module]]:
    """(conv, bn) pairs where bn's input is the tensor conv just returned, each module called once."""
    last: dict[str, object] = {}
    calls: dict[int, int] = {}
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def after_conv(mod, inputs, output):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        last["conv"], last["out"] = mod, output

    def before_bn(mod, inputs):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        if last.get("out") is not None and inputs[0] is last["out"]:
            pairs.append((last["conv"], mod))
        last["out"] = None

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(after_conv))
        elif _foldable_bn(m):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [(c, b) for c, b in pairs if calls[id(c)] == 1 and calls[id(b)] == 1]


def _replacement(bn: nn.Module) -> nn.Module:
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(bn.drop, bn.act)  # timm BatchNormAct2d: norm -> drop -> act


def _max_abs_diff(a, b) -> float:
    if isinstance(a, torch.Tensor):
        return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    return max(_max_abs_diff(x, y) for x, y in zip(a, b))


def _max_abs(a) -> float:
    if isinstance(a, torch.Tensor):
        return float(a.float().abs().max()) if a.numel() else 0.0
    return max(_max_abs(x) for x in a)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, *, rtol: float = 1e-4) -> nn.Module:
    """A copy of `model` (eval mode) with Conv2d -> BatchNorm2d pairs folded; `model` if none fold safely.

    example: an input batch on the model's device, used to find the pairs and to check the result.
    """
    folded = copy.deepcopy(model).eval()
    pairs = _conv_bn_pairs(folded, example)
    if not pairs:
        return model
    parents = {child: (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    with torch.no_grad():
        for conv, bn in pairs:
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(
                bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale if bn.affine else -bn.running_mean * scale
            conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.ndim - 1))))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
            parent, name = parents[bn]
            setattr(parent, name, _replacement(bn))
        expected, got = model.eval()(example), folded(example)
    tol = rtol * (1.0 + _max_abs(expected))
    diff = _max_abs_diff(expected, got)
    if diff > tol:
        warnings.warn(f"BatchNorm folding changed the model's output by {diff:.3g}; running it unfolded")
        return model
    return folded
