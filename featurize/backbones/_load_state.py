"""Load harvested tensors into a freshly built model, strictly: every key, every shape."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from featheads.core.errors import UserError

from ._limits import clip, short
from ._safe_pickle import Harvest


class WeightsMismatchError(UserError):
    """The weights file does not fit the network the backbone builds."""


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(clip(k, 80) for k in keys[:n]) + more


def normalize_keys(tensors: "OrderedDict[str, torch.Tensor]", classifier: str) -> "OrderedDict[str, torch.Tensor]":
    """Undo the usual wrappings: `module.` (DataParallel) and a `Sequential(Linear)` classifier."""
    out = OrderedDict()
    for k, v in tensors.items():
        if k.startswith("module."):
            k = k[len("module."):]
        for suffix in ("weight", "bias"):
            if k == f"{classifier}.0.{suffix}":
                k = f"{classifier}.{suffix}"
        out[k] = v
    return out


def load_strict(model: nn.Module, tensors, path) -> None:
    """Copy `tensors` into `model`; any missing/unexpected key or wrong shape is an error naming it.

    `num_batches_tracked` buffers may be absent (very old files); they do not affect eval outputs.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise WeightsMismatchError(f"{path}: does not fit the network built ({clip('; '.join(parts), 400)})")
    for k, t in tensors.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise WeightsMismatchError(
                f"{path}: {clip(k, 80)} has shape {tuple(t.shape)}, the network built expects {tuple(expected[k].shape)}"
            )
    with torch.no_grad():
        model.load_state_dict({k: tensors.get(k, v) for k, v in expected.items()}, strict=True)


def check_structure(model: nn.Module, harvest: Harvest, path) -> None:
    """Compare what the pickled modules recorded (BN eps, conv stride/groups, 'same' padding) with
    the freshly built modules of the same name, so a file built as another variant is caught."""
    built = dict(model.named_modules())
    for name, (qualname, attrs) in harvest.modules.items():
        mod = built.get(name)
        if mod is None:
            continue
        for attr in ("eps", "stride", "kernel_size", "groups", "dilation"):
            if attr in attrs and hasattr(mod, attr):
                ours, theirs = getattr(mod, attr), attrs[attr]
                ours = tuple(ours) if isinstance(ours, (list, tuple)) else ours
                theirs = tuple(theirs) if isinstance(theirs, (list, tuple)) else theirs
                if isinstance(ours, float) and isinstance(theirs, float):
                    same = abs(ours - theirs) <= 1e-12
                else:
                    same = ours == theirs
                if not same:
                    raise WeightsMismatchError(
                        f"{path}: module {name or '<root>'} ({qualname}) has {attr}={short(theirs)}, the network "
                        f"built has {attr}={ours!r}: the file was made for another architecture variant"
                    )
        if isinstance(mod, nn.Conv2d) and "padding" in attrs:
            theirs_same = qualname.endswith("Same")
            ours_same = type(mod).__name__.endswith("Same")
            if theirs_same != ours_same:
                raise WeightsMismatchError(
                    f"{path}: module {name} is {qualname} in the file but {type(mod).__name__} in the network "
                    f"built: the file was made for another architecture variant (tf_ vs. PyTorch padding)"
                )
