"""The MT-EmotiEffNet / HSEmotion family: timm EfficientNets fine-tuned on AffectNet.

Files are whole pickled timm models (see `_safe_pickle`); we build the same network with current
timm and copy the harvested tensors in, checking keys, shapes and the modules' recorded settings.
"""
from __future__ import annotations

from store.schema import AFFECTNET_CLASSES, VA_NAMES

from ._load_state import check_structure, load_strict, normalize_keys
from ._registry import register_backbone
from ._tensor_files import load_tensors
from ._spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from ._timm_embedder import TimmEmbedder

HSEMOTION_URL = (
    "https://github.com/HSE-asavchenko/face-emotion-recognition/blob/main/models/affectnet_emotions/{}.pt?raw=true"
)
AFFECTNET_7 = tuple(c for c in AFFECTNET_CLASSES if c != "Contempt")


def _hsemotion(name: str, arch: str, size: int, dim: int, logits: tuple[str, ...], description: str):
    return BackboneSpec(
        name=name, arch=arch, input_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        interpolation="bilinear", grayscale=False, embedding_dim=dim, logit_names=logits,
        url=HSEMOTION_URL.format(name), filename=f"{name}.pt", description=description,
    )


@register_backbone(
    _hsemotion("enet_b0_8_va_mtl", "tf_efficientnet_b0", 224, 1280, AFFECTNET_CLASSES + VA_NAMES,
               "MT-EmotiEffNet: 8 AffectNet expressions + valence/arousal (the ABAW default)"),
    _hsemotion("enet_b0_8_best_vgaf", "tf_efficientnet_b0", 224, 1280, AFFECTNET_CLASSES,
               "EfficientNet-B0, 8 AffectNet expressions (best on VGAF)"),
    _hsemotion("enet_b0_8_best_afew", "tf_efficientnet_b0", 224, 1280, AFFECTNET_CLASSES,
               "EfficientNet-B0, 8 AffectNet expressions (best on AFEW)"),
    _hsemotion("enet_b2_8", "tf_efficientnet_b2", 260, 1408, AFFECTNET_CLASSES,
               "EfficientNet-B2, 8 AffectNet expressions"),
    _hsemotion("enet_b2_7", "tf_efficientnet_b2", 260, 1408, AFFECTNET_7,
               "EfficientNet-B2, 7 AffectNet expressions (no Contempt)"),
)
def build_hsemotion(spec: BackboneSpec, weights_path) -> TimmEmbedder:
    import timm

    harvest = load_tensors(weights_path)  # refused before anything is built when the file is unsafe
    model = timm.create_model(spec.arch, pretrained=False, num_classes=spec.num_logits)
    load_strict(model, normalize_keys(harvest.tensors, "classifier"), weights_path)
    check_structure(model, harvest, weights_path)
    return TimmEmbedder(model).eval()
