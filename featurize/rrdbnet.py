"""RRDBNet, the generator of ESRGAN / Real-ESRGAN, and a safe loader for its official weight files.

Written here (about 100 lines) rather than taken from the `realesrgan` package, whose 0.3.0 release
imports `torchvision.transforms.functional_tensor`, gone since torchvision 0.17. The module names
(conv_first, body.N.rdb1.conv1, conv_body, conv_up1, conv_up2, conv_hr, conv_last) are those of the
official `RealESRGAN_x4plus.pth`, so its "params_ema" state dict loads with strict key checking.

    model = load_rrdbnet("RealESRGAN_x4plus.pth")      # config read from the tensor shapes
    out = model(x)                                     # (B, 3, H, W) in [0, 1] -> (B, 3, 4H, 4W)
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from featheads.core.errors import UserError

UPSCALE = 4  # two (nearest x2 -> conv) stages, the layout of RealESRGAN_x4plus


@dataclass(frozen=True)
class RRDBNetConfig:
    in_channels: int = 3  # RGB in [0, 1]
    out_channels: int = 3  # RGB, clamp to [0, 1] after
    num_feat: int = 64  # trunk width of RealESRGAN_x4plus
    num_block: int = 23  # RRDB blocks in the trunk (RealESRGAN_x4plus); tests use 1-2
    num_grow_ch: int = 32  # channels each dense conv adds


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x):  # (B, num_feat, H, W)
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))  # (B, num_grow_ch, H, W)
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """x4 super-resolution generator: trunk of RRDBs at input resolution, two nearest-x2 upsamplings."""

    def __init__(self, config: RRDBNetConfig = RRDBNetConfig()):
        super().__init__()
        c = self.config = config
        self.conv_first = nn.Conv2d(c.in_channels, c.num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(c.num_feat, c.num_grow_ch) for _ in range(c.num_block)))
        self.conv_body = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(c.num_feat, c.num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(c.num_feat, c.out_channels, 3, 1, 1)

    def forward(self, x):  # (B, in_channels, H, W)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))  # (B, num_feat, H, W)
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))  # (B, out_channels, 4H, 4W)


def config_from_state_dict(state: dict) -> RRDBNetConfig:
    """Read the architecture off the tensor shapes of an RRDBNet state dict."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    return RRDBNetConfig(
        in_channels=int(state["conv_first.weight"].shape[1]),
        out_channels=int(state["conv_last.weight"].shape[0]),
        num_feat=int(state["conv_first.weight"].shape[0]),
        num_block=max(blocks) + 1 if blocks else 0,
        num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]) if blocks else 32,
    )


def load_rrdbnet(path) -> RRDBNet:
    """An RRDBNet in eval mode from a Real-ESRGAN weights file (state dict under "params_ema",
    "params", or at the top level), or a safetensors file. Read under the loading contract of every weights
    file (docs/BACKBONES.md): no pickled code runs, declared sizes are checked before anything is allocated,
    a refusal is one line."""
    from .backbones._safe_pickle import read_torch_file
    from .backbones._safetensors import looks_like_safetensors, read_safetensors

    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    obj = read_safetensors(path) if looks_like_safetensors(head) else read_torch_file(path)
    state = obj
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):
            if key in obj and isinstance(obj[key], dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or "conv_first.weight" not in state or "conv_last.weight" not in state:
        keys = ", ".join(list(state)[:5]) if isinstance(state, dict) else type(state).__name__
        raise UserError(f"{path}: not an RRDBNet (Real-ESRGAN) state dict; its keys start with: {keys}")
    try:
        config = config_from_state_dict(state)
        model = RRDBNet(config)
        model.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path}: weights do not fit an RRDBNet x{UPSCALE} ({e})") from None
    return model.eval()


def describe(model: RRDBNet) -> dict:
    return {"architecture": "RRDBNet", "upscale": UPSCALE, **asdict(model.config)}
