"""Training-time augmentation on batches, seeded per step so that a resumed run draws the same.

Order (as torchvision pipelines do it): on 0..1 pixels, horizontal flip, RandomAffine (rotation,
translation, scale; bilinear, zero fill), ColorJitter (brightness, contrast, saturation, each a factor
drawn from [1 - s, 1 + s]); after the mean/std normalisation, RandomErasing (one rectangle of 2%-33%
of the image, aspect 0.3-3.3, set to 0) with its probability. Image-level Mix-up is `mix_batch`: lambda
~ Beta(alpha, alpha), x = lambda x + (1 - lambda) x[perm]; Mix-augment (Jeong et al.) adds the loss on
the two real images to the Mix-up loss (see `featurize.finetune`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _hflip(x, p, rng):
    flip = torch.from_numpy(rng.random(len(x)) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _affine(x, cfg, rng):
    n = len(x)
    angle = np.deg2rad(rng.uniform(-cfg["degrees"], cfg["degrees"], n))
    scale = rng.uniform(cfg["scale"][0], cfg["scale"][1], n)
    tx, ty = (rng.uniform(-cfg["translate"], cfg["translate"], n) * 2 for _ in range(2))  # grid units: 2 = image
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, tx], 1), np.stack([sin, cos, ty], 1)], 1)  # (n, 2, 3)
    theta = torch.from_numpy(theta).to(x.device, torch.float32)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(x):
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _jitter(x, cfg, rng):
    n = len(x)

    def factors(s):
        return torch.from_numpy(rng.uniform(1 - s, 1 + s, n)).to(x.device, torch.float32)[:, None, None, None]

    if cfg.get("brightness"):
        x = (x * factors(cfg["brightness"])).clamp(0, 1)
    if cfg.get("contrast"):
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * factors(cfg["contrast"]) + mean).clamp(0, 1)
    if cfg.get("saturation") and x.shape[1] == 3:
        g = _gray(x)
        x = ((x - g) * factors(cfg["saturation"]) + g).clamp(0, 1)
    return x


def _erase(x, p, rng):
    n, _, h, w = x.shape
    x = x.clone()
    for i in np.flatnonzero(rng.random(n) < p):
        for _ in range(10):  # torchvision's RandomErasing: up to 10 tries to fit a rectangle
            area = h * w * rng.uniform(0.02, 0.33)
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                x[i, :, top:top + eh, left:left + ew] = 0
                break
    return x


def augment_pixels(x01: torch.Tensor, cfg: dict, rng: np.random.Generator) -> torch.Tensor:
    """Flip, affine and colour jitter of a (B, C, H, W) batch in 0..1."""
    if cfg.get("hflip"):
        x01 = _hflip(x01, cfg["hflip"], rng)
    if cfg.get("affine"):
        x01 = _affine(x01, cfg["affine"], rng)
    if cfg.get("color_jitter"):
        x01 = _jitter(x01, cfg["color_jitter"], rng)
    return x01


def erase(x: torch.Tensor, cfg: dict, rng: np.random.Generator) -> torch.Tensor:
    """RandomErasing of a normalised batch."""
    return _erase(x, cfg["erasing"], rng) if cfg.get("erasing") else x


def mix_batch(x: torch.Tensor, alpha: float, rng: np.random.Generator):
    """(mixed x, lambda, permutation): lambda ~ Beta(alpha, alpha), one per batch."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam, perm
