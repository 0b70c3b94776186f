"""A backbone ready for fast batched inference: uint8 pixels in, float32 embeddings and logits out.

    runner = BatchRunner(backbone.model, backbone.spec, device=pick_device(gpu=False), precision="fp32")
    emb, logits = runner(pixels)      # pixels: uint8 (B, H, W, C) from featurize.images.decode_resized

What it does to be fast while giving the reference's features:
- the normalisation (x / 255 - mean) / std runs once per batch on the device, with the same
  operations as torchvision's ToTensor + Normalize, so the input tensor is bit-identical;
- (B, H, W, C) pixels viewed as (B, C, H, W) are already channels_last, the memory format in which
  oneDNN (CPU) and cuDNN (GPU) run depthwise and 1x1 convolutions fastest; the model is converted too;
- BatchNorm folded into the preceding convolutions (`featurize.bn_fold`);
- inner maps pooled to a small grid by forward hooks, on request (`featurize.pooled_maps`);
- torch.inference_mode; autocast to bf16 (CPU with AVX512-BF16/AMX, or GPU) or fp16 (GPU) on request.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from featheads.core.errors import UserError

from .bn_fold import fold_batchnorm
from .pooled_maps import MapHooks

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(UserError):
    """--gpu without a usable GPU, or a precision the device cannot run."""


def pick_device(gpu: bool) -> torch.device:
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise DeviceError(
            f"--gpu: no CUDA GPU is available (torch {torch.__version__}, {built}); run without --gpu to use the CPU"
        )
    return torch.device("cuda")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device.type == "cpu" and precision == "fp16":
        raise DeviceError("--precision fp16 needs --gpu; on the CPU use bf16 (or fp32)")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bf16; use fp16")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads"


class BatchRunner:
    """A frozen backbone prepared for inference on one device at one precision."""

    def __init__(self, model: torch.nn.Module, spec, *, device: torch.device, precision: str = "fp32",
                 fold_bn: bool = True, pooled_maps=()):
        check_precision(precision, device)
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.channels = 1 if spec.grayscale else 3
        size = spec.input_size
        model = model.eval()
        if pooled_maps:
            modules = dict(model.named_modules())
            if any(isinstance(modules.get(pm.module), torch.nn.Conv2d) for pm in pooled_maps):
                fold_bn = False  # a folded convolution returns its BatchNorm's output, not its own
        if fold_bn:
            example = torch.randn(2, self.channels, size, size, generator=torch.Generator().manual_seed(0))
            model = fold_batchnorm(model, example)
        self.model = model.to(device, memory_format=torch.channels_last)
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        self.hooks = MapHooks(self.model, tuple(pooled_maps)) if pooled_maps else None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) -> float32 (B, C, H, W) channels_last, as ToTensor + Normalize would give."""
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, C, H, W), NHWC in memory
        return x.float().div_(255).sub_(self.mean).div_(self.std)

    def __call__(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (B, D), logits (B, K)) as float32 numpy arrays."""
        out = self.arrays(pixels)
        return out["embeddings"], out["logits"]

    def arrays(self, pixels: torch.Tensor) -> dict[str, np.ndarray]:
        """{"embeddings": (B, D), "logits": (B, K), and each pooled map's array (B, C x G x G)}, float32."""
        autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
        with torch.inference_mode():
            x = self.normalize(pixels)
            with autocast:
                emb, logits = self.model(x)
            out = {"embeddings": emb, "logits": logits, **(self.hooks.take() if self.hooks else {})}
            return {k: v.float().cpu().numpy() for k, v in out.items()}
