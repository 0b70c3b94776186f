"""Backbone registry: frozen emotion CNNs by name, their preprocessing specs, and safe weight loading.

    >>> from featurize.backbones import get_spec, load_backbone
    >>> spec = get_spec("enet_b0_8_va_mtl")          # input size, mean/std, logit names, URL
    >>> bb = load_backbone("timm:resnet18")          # random init, seed 0
    >>> emb, logits = bb.model(x)                    # x: (B, 3, 224, 224) normalized
"""
from ._efficientnet import build_hsemotion  # noqa: F401  (registers the HSEmotion entries)
from ._mini_xception import FER2013_CLASSES, MiniXception  # registers fer_mini_xception
from ._loader import RANDOM_INIT, LoadedBackbone, load_backbone
from ._load_state import WeightsMismatchError
from ._registry import UnknownBackboneError, list_backbones, register_backbone
from ._names import TIMM_PREFIX, get_spec, resolve_backbone, timm_model_name
from ._keras_hdf5 import KerasFileError
from ._limits import WeightsFileError
from ._safe_pickle import UnsafePickleError
from ._tensor_files import load_tensors
from ._spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

__all__ = [
    "BackboneSpec",
    "FER2013_CLASSES",
    "KerasFileError",
    "MiniXception",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedBackbone",
    "RANDOM_INIT",
    "TIMM_PREFIX",
    "UnknownBackboneError",
    "UnsafePickleError",
    "WeightsFileError",
    "WeightsMismatchError",
    "get_spec",
    "list_backbones",
    "load_backbone",
    "load_tensors",
    "register_backbone",
    "resolve_backbone",
    "timm_model_name",
]
