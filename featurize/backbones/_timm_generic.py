"""`timm:<model name>`: any timm model, ImageNet-style preprocessing from its pretrained config.

Without --weights the model is randomly initialised with seed 0 (weights_sha256 "random-init"); with
--weights the file (whole pickled model or state dict, read safely) sets the number of logits.
"""
from __future__ import annotations

import functools

import torch

from ._load_state import WeightsMismatchError, check_structure, load_strict, normalize_keys
from ._registry import UnknownBackboneError, _Entry
from ._tensor_files import load_tensors
from ._spec import BackboneSpec
from ._timm_embedder import TimmEmbedder

RANDOM_INIT_SEED = 0  # timm:<name> without weights: reproducible random features


def _spec_from_model(backbone: str, name: str, model, num_classes: int) -> BackboneSpec:
    cfg = model.pretrained_cfg or {}
    c, h, w = cfg.get("input_size", (3, 224, 224))
    if h != w:
        raise UnknownBackboneError(f"{backbone} expects {h}x{w} input; only square inputs are supported")
    try:  # the width of what forward_head(pre_logits=True) returns, without allocating anything
        with torch.no_grad():
            dim = TimmEmbedder(model)(torch.empty(1, c, h, w, device="meta"))[0].shape[-1]
    except (RuntimeError, NotImplementedError, TypeError):  # an op without a meta kernel
        dim = getattr(model, "head_hidden_size", None) or model.num_features
    return BackboneSpec(
        name=backbone, arch=name, input_size=int(h),
        mean=tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=cfg.get("interpolation", "bilinear"), grayscale=(c == 1), embedding_dim=int(dim),
        logit_names=tuple(str(i) for i in range(num_classes)), url=None, filename=None,
        embedding_layer="timm pre-logits (input of the classifier)",
        description=f"timm model {name} (random init unless --weights)",
    )


def _create(name: str, backbone: str, **kwargs):
    import timm

    if not timm.is_model(name):
        raise UnknownBackboneError(f"{backbone}: timm {timm.__version__} has no model named {name!r}")
    return timm.create_model(name, pretrained=False, **kwargs)


@functools.lru_cache(maxsize=64)
def timm_entry(name: str, backbone: str) -> _Entry:
    """The entry of timm model `name`, registered as backbone `backbone` (`timm:<name>`)."""
    with torch.device("meta"):
        model = _create(name, backbone)
    return _Entry(_spec_from_model(backbone, name, model, model.num_classes), _build_timm,
                  random_init=True, built_spec=spec_for_model)


def _classes_in_file(model, tensors, clf: str, path) -> int | None:
    """The logit count the file's classifier has, checked against the network before any resize."""
    weight, bias = tensors.get(f"{clf}.weight"), tensors.get(f"{clf}.bias")
    if weight is None or weight.ndim != 2:
        return None
    head = model.get_classifier()
    width = getattr(head, "in_features", None) or getattr(model, "num_features", None)
    if width is not None and weight.shape[1] != width:
        raise WeightsMismatchError(f"{path}: {clf}.weight has shape {tuple(weight.shape)}, the network built "
                                   f"feeds its classifier {width} features")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise WeightsMismatchError(f"{path}: {clf}.bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)")
    if weight.shape[0] < 1:
        raise WeightsMismatchError(f"{path}: {clf}.weight has no rows")
    return int(weight.shape[0])


def _build_timm(spec: BackboneSpec, weights_path) -> TimmEmbedder:
    if weights_path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = _create(spec.arch, spec.name)
        return TimmEmbedder(model).eval()
    harvest = load_tensors(weights_path)
    model = _create(spec.arch, spec.name)
    clf = model.pretrained_cfg.get("classifier", "classifier")
    tensors = normalize_keys(harvest.tensors, clf)
    classes = _classes_in_file(model, tensors, clf, weights_path)
    if classes is not None and classes != model.num_classes:
        model.reset_classifier(classes)
    load_strict(model, tensors, weights_path)
    check_structure(model, harvest, weights_path)
    return TimmEmbedder(model).eval()


def spec_for_model(spec: BackboneSpec, model: TimmEmbedder) -> BackboneSpec:
    """The spec with the logit count of the built model (a --weights file may change it)."""
    from dataclasses import replace

    k = model.model.num_classes
    if k == spec.num_logits:
        return spec
    return replace(spec, logit_names=tuple(str(i) for i in range(k)))
