"""`BackboneSpec`: what a backbone is and the preprocessing its features depend on."""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build a backbone and how its input must be prepared.

    The preprocessing is: decode with PIL, convert to RGB (or "L" when `grayscale`), resize to
    (input_size, input_size) with `interpolation`, ToTensor (0..1), then (x - mean) / std per channel.
    """

    name: str  # registry name, e.g. "enet_b0_8_va_mtl"
    arch: str  # what is built: a timm model name, or "mini_xception"
    input_size: int  # square side in pixels the images are resized to
    mean: tuple[float, ...]  # per channel, after ToTensor; one value when grayscale
    std: tuple[float, ...]
    interpolation: str = "bilinear"  # PIL resize filter name
    grayscale: bool = False  # one input channel ("L" images)
    embedding_dim: int = 0  # width of the embeddings the model returns
    logit_names: tuple[str, ...] = ()  # names of the logit columns, in order
    url: str | None = None  # official weights URL (None: no download, --weights or random init)
    filename: str | None = None  # file name of the weights in the cache folder
    embedding_layer: str = "global average pool (input of the classifier)"  # where embeddings come from
    description: str = ""

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def num_logits(self) -> int:
        return len(self.logit_names)

    def identity(self) -> dict:
        """Everything that makes features of this backbone comparable (the store's source identity)."""
        return {
            "backbone": self.name,
            "arch": self.arch,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "grayscale": self.grayscale,
            "embedding_layer": self.embedding_layer,
            "embedding_dim": self.embedding_dim,
            "logit_names": list(self.logit_names),
        }
