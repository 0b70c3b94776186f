"""Fixtures of the featurize tests: a tiny deterministic backbone, face-like JPEGs, an ABAW-layout dataset,
and the reference preprocessing (PIL + torchvision transforms) that featurize must reproduce.

Also imported by the subprocesses of the resume tests (tests/ on PYTHONPATH).
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torch import nn

from featurize.backbones import BackboneSpec
from store.schema import AU_NAMES

HEADER = "image,valence,arousal,expression," + ",".join(AU_NAMES)


class TinyNet(nn.Module):
    """conv-BN-SiLU, depthwise conv-BN-ReLU, pool -> 16-d embeddings, Linear -> 5 logits."""

    def __init__(self, channels: int = 3, sleep: float = 0.0):
        super().__init__()
        self.stem = nn.Conv2d(channels, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)
        self.sleep = sleep

    def forward(self, x):  # (B, C, H, W) -> (B, 16), (B, 5)
        if self.sleep:
            time.sleep(self.sleep)
        x = nn.functional.silu(self.bn1(self.stem(x)))
        x = torch.relu(self.bn2(self.dw(x)))
        emb = x.mean(dim=(2, 3))
        return emb, self.head(emb)


def tiny_backbone(*, grayscale: bool = False, size: int = 48, sleep: float = 0.0, seed: int = 0,
                  interpolation: str = "bilinear"):
    """A LoadedBackbone-like object around TinyNet with non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyNet(1 if grayscale else 3, sleep=sleep)
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.copy_(torch.rand(16, generator=gen) - 0.5)
            bn.running_var.copy_(torch.rand(16, generator=gen) + 0.5)
            bn.weight.copy_(torch.rand(16, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(16, generator=gen) - 0.5)
    model.eval()
    spec = BackboneSpec(
        name="tiny", arch="tinynet", input_size=size,
        mean=(0.5,) if grayscale else (0.485, 0.456, 0.406), std=(0.25,) if grayscale else (0.229, 0.224, 0.225),
        interpolation=interpolation, grayscale=grayscale, embedding_dim=16,
        logit_names=tuple(f"c{i}" for i in range(5)),
    )
    return SimpleNamespace(model=model, spec=spec, weights_sha256=f"tiny-seed{seed}", weights_path=None)


def face_image(rng: np.random.Generator, size: int = 112, mode: str = "RGB") -> Image.Image:
    """A smooth random picture (blobs, gradients): like a face crop for a codec and a resizer."""
    low = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 13, (size, size, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    return img.convert(mode)


def write_faces(folder: Path, names: list[str], *, seed: int = 0, size: int = 112, mode: str = "RGB") -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        p = Path(folder) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        face_image(rng, size, mode).save(p, quality=90)
        paths.append(p)
    return paths


def write_mtl_dataset(root: Path, *, videos: int = 3, frames: int = 6, seed: int = 0) -> tuple[Path, Path, list[str]]:
    """cropped_aligned/<video>/<00001>.jpg + an annotation file with every missing-label pattern.

    Returns (annotation file, image root, keys in file order).
    """
    images = Path(root) / "cropped_aligned"
    rng = np.random.default_rng(seed)
    keys, lines = [], [HEADER]
    for v in range(videos):
        for f in range(1, frames + 1):
            key = f"video{v}_{'left' if v % 2 else 'x'}/{f:05d}.jpg"
            keys.append(key)
            i = len(keys)
            va = "-5,-5" if i % 4 == 0 else f"{rng.uniform(-1, 1):.3f},{rng.uniform(-1, 1):.3f}"
            expr = -1 if i % 3 == 0 else int(rng.integers(0, 8))
            au = ["-1"] * 12 if i % 5 == 0 else [str(int(x)) for x in rng.integers(0, 2, 12)]
            lines.append(",".join([key, va, str(expr), *au]))
    write_faces(images, keys, seed=seed)
    ann = Path(root) / "training_set_annotations.txt"
    ann.write_text("\n".join(lines) + "\n")
    return ann, images, keys


def reference_features(model: nn.Module, spec, paths: list, *, batch_size: int = 4):
    """The hsemotion-style loop: PIL open, convert, torchvision Resize + ToTensor + Normalize,
    torch.stack into batches, fp32 forward under no_grad. -> (embeddings, logits) float32."""
    from torchvision import transforms as T

    tf = T.Compose([
        T.Resize((spec.input_size, spec.input_size), interpolation=T.InterpolationMode(spec.interpolation)),
        T.ToTensor(),
        T.Normalize(mean=spec.mean, std=spec.std),
    ])
    embs, logits = [], []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([
                tf(Image.open(p).convert("L" if spec.grayscale else "RGB")) for p in paths[i:i + batch_size]
            ])
            e, lg = model(batch)
            embs.append(e.numpy())
            logits.append(lg.numpy())
    return np.concatenate(embs), np.concatenate(logits)
