"""The new head a fine-tune trains: its outputs per task, and where it sits in each kind of backbone.

    names = task_logit_names("mtl")         # 8 expressions, valence, arousal, 12 AUs (22 outputs)
    net = replace_head(loaded.model, 22)    # a freshly initialised classifier of 22 outputs
    head_parameters(loaded.model)           # what stage 1 ("head") trains

Backbones are `TimmEmbedder`s (timm classifiers: the Linear `get_classifier()`) or the mini-Xception
(its final 3x3 convolution `head`). The state dict that is saved is that of the network itself
(`network_of`), the layout `featurize run --backbone <base> --weights FILE` reads back.
"""
from __future__ import annotations

import torch
from torch import nn

from featheads.core.errors import UserError
from store.schema import AU_NAMES, LSD_CLASSES, MTL_EXPR_CLASSES, VA_NAMES

FINETUNE_TASKS = ("lsd", "expr", "mtl")
# output slices of the mtl head: expression logits, valence/arousal, AU logits
MTL_SLICES = {"expr": slice(0, 8), "va": slice(8, 10), "au": slice(10, 22)}


def task_logit_names(task: str) -> tuple[str, ...]:
    if task == "lsd":
        return tuple(LSD_CLASSES)
    if task == "expr":
        return tuple(MTL_EXPR_CLASSES)
    if task == "mtl":
        return tuple(MTL_EXPR_CLASSES) + tuple(VA_NAMES) + tuple(AU_NAMES)
    raise UserError(f"--task {task!r}: choose one of {', '.join(FINETUNE_TASKS)}")


def parse_logit_names(text: str | None) -> tuple[str, ...] | None:
    """"a,b,c" (--logit-names) -> ("a", "b", "c"); None stays None."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise UserError(f"--logit-names {text!r}: write comma-separated non-empty names, e.g. Anger,Disgust,Fear")
    return names


def network_of(model: nn.Module) -> nn.Module:
    """The network whose state dict is saved: the timm model inside a TimmEmbedder, else the model."""
    from .backbones._timm_embedder import TimmEmbedder

    return model.model if isinstance(model, TimmEmbedder) else model


def _head_slot(model: nn.Module) -> tuple[nn.Module, str]:
    from .backbones import MiniXception
    from .backbones._timm_embedder import TimmEmbedder

    if isinstance(model, TimmEmbedder):
        net = model.model
        clf = net.pretrained_cfg.get("classifier", "classifier")
        parent = net
        *path, last = clf.split(".")
        for p in path:
            parent = getattr(parent, p)
        return parent, last
    if isinstance(model, MiniXception):
        return model, "head"
    raise UserError(f"cannot fine-tune a {type(model).__name__}: only timm backbones and the mini-Xception have "
                    "a known classifier layer")


def head_module(model: nn.Module) -> nn.Module:
    parent, name = _head_slot(model)
    return getattr(parent, name)


def replace_head(model: nn.Module, outputs: int, *, seed: int = 0) -> nn.Module:
    """Replace the classifier by a fresh one of `outputs` outputs (initialised from `seed`)."""
    from .backbones._timm_embedder import TimmEmbedder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(model, TimmEmbedder):
            model.model.reset_classifier(outputs)
        else:
            parent, name = _head_slot(model)
            old = getattr(parent, name)
            new = nn.Conv2d(old.in_channels, outputs, old.kernel_size, padding=old.padding, bias=True)
            setattr(parent, name, new)
    return model


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(head_module(model).parameters())
