"""Real-ESRGAN super-resolution of face images, the way the reference `RealESRGANer` does it.

One image: RGB in [0, 1] -> RRDBNet x4 (optionally in tiles) -> clamp -> round to uint8 -> if the
requested scale is not 4, Lanczos-4 resize to (int(W * scale), int(H * scale)) with OpenCV's arithmetic
(featurize/sr_resize.py). Grayscale images go through the network as three equal channels and come
back grey (0.299 R + 0.587 G + 0.114 B, as cv2.COLOR_BGR2GRAY); an alpha channel goes through the
network on its own, as the reference's default alpha upsampler does.

A folder (or .zip archive, read as `featurize run` reads it, featurize/images.py): every image is
written to the same relative path under --out (same name, same format), so `featurize run` on the
output finds the same keys; outputs already present are skipped; each is written to a hidden part file and renamed, so
an interrupted run resumes where it stopped. `featheads_sr.json` in the output folder records what
made the images; a rerun with other weights or another scale is refused.
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featheads.core.errors import UserError

from .heap import keep_freed_memory
from .images import DECODE_ERRORS, ImageDecodeError, error_text, open_image_root
from .rrdbnet import UPSCALE, RRDBNet
from .sr_resize import resize_lanczos4

MODEL_NAME = "RealESRGAN_x4plus"
WEIGHTS_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"
WEIGHTS_FILE = "RealESRGAN_x4plus.pth"
SETTINGS_FILE = "featheads_sr.json"
JPEG_QUALITY = 95  # cv2.imwrite's default, which the reference used
_GRAY = (0.299, 0.587, 0.114)  # cv2.COLOR_BGR2GRAY weights of R, G, B


class Upscaler:
    """Runs an RRDBNet on uint8 images: whole, or in tiles of `tile` input pixels with `tile_pad`
    pixels of context on each side (0 = whole image), on `device`, in float32 or float16 (`half`)."""

    def __init__(self, model: RRDBNet, *, device: str = "cpu", half: bool = False, tile: int = 0,
                 tile_pad: int = 10):
        if tile < 0 or tile_pad < 0:
            raise UserError(f"--tile and --tile-pad must be >= 0, got {tile} and {tile_pad}")
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.eval().to(self.device, self.dtype)
        self.tile = tile
        self.tile_pad = tile_pad

    @torch.inference_mode()
    def network(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (4H, 4W, 3) float32 in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)
        x = x.unsqueeze(0).to(self.device, self.dtype)  # (1, 3, H, W)
        y = self._tiled(x) if self.tile and max(x.shape[2:]) > self.tile else self.model(x)
        return y.float().clamp_(0, 1)[0].permute(1, 2, 0).cpu().numpy()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model tile by tile; each tile sees `tile_pad` extra input pixels on every side
        (fewer at the image border) and only its own part of the output is kept."""
        _, c, h, w = x.shape
        t, p, s = self.tile, self.tile_pad, UPSCALE
        out = x.new_zeros((1, c, h * s, w * s))
        for ty in range(math.ceil(h / t)):
            for tx in range(math.ceil(w / t)):
                y0, y1 = ty * t, min((ty + 1) * t, h)
                x0, x1 = tx * t, min((tx + 1) * t, w)
                py0, py1 = max(y0 - p, 0), min(y1 + p, h)
                px0, px1 = max(x0 - p, 0), min(x1 + p, w)
                y = self.model(x[:, :, py0:py1, px0:px1])  # (1, c, s*(py1-py0), s*(px1-px0))
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = y[:, :, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
        return out

    def upscale(self, image: Image.Image, scale: float = 2.0) -> Image.Image:
        """Super-resolve one PIL image; the result is int(W * scale) x int(H * scale), same mode family
        (L stays L, images with transparency come back RGBA, everything else RGB)."""
        image = _normalise_mode(image)
        arr = np.asarray(image)
        w, h = image.size
        if image.mode == "L":
            out = _to_uint8(self._gray_network(arr))
        else:
            out = _to_uint8(self.network(arr[:, :, :3]))
            if image.mode == "RGBA":
                alpha = _to_uint8(self._gray_network(arr[:, :, 3]))
                out = np.concatenate([out, alpha[:, :, None]], axis=2)
        if scale != UPSCALE:
            out = resize_lanczos4(out, (int(w * scale), int(h * scale)))
        return Image.fromarray(out)  # (h, w) -> L, (h, w, 3) -> RGB, (h, w, 4) -> RGBA

    def _gray_network(self, gray: np.ndarray) -> np.ndarray:
        y = self.network(np.repeat(gray[:, :, None], 3, axis=2))  # (4H, 4W, 3)
        # float32, summed B, G, R like cv2.cvtColor(BGR2GRAY) on the reference's BGR output
        return y[:, :, 2] * _GRAY[2] + y[:, :, 1] * _GRAY[1] + y[:, :, 0] * _GRAY[0]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255.0).astype(np.uint8)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """L, RGB or RGBA: bilevel becomes L, anything with transparency RGBA, the rest RGB."""
    if image.mode in ("L", "RGB", "RGBA"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise UserError(f"{image.mode} images (16-bit or float) are not supported; convert them to 8-bit")
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def save_image(image: Image.Image, dest: Path) -> None:
    """Write `image` to `dest` atomically, in the format its extension names."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    fmt = Image.registered_extensions().get(dest.suffix.lower())
    params = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    if fmt == "JPEG" and image.mode == "RGBA":  # JPEG has no alpha
        image = image.convert("RGB")
    image.save(part, format=fmt, **params)
    os.replace(part, dest)


@dataclass
class FolderResult:
    written: int
    skipped: int
    failed: list[tuple[str, str]]  # (where, reason)


def check_settings(out: Path, settings: dict) -> None:
    """Record `settings` in out/featheads_sr.json, or check that they match the recorded ones."""
    path = out / SETTINGS_FILE
    compared = ("model", "weights_sha256", "scale", "resize")
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: unreadable ({e}); remove it if the folder holds no earlier output") from None
        if {k: old.get(k) for k in compared} != {k: settings[k] for k in compared}:
            raise UserError(
                f"{path}: the images in {out} were made with {json.dumps({k: old.get(k) for k in compared})}; "
                f"this run would use {json.dumps({k: settings[k] for k in compared})}. Use another --out folder."
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    os.replace(part, path)


def super_resolve_folder(images, out: Path, upscaler: Upscaler, *, scale: float, settings: dict,
                         subdir: str | None = None, progress: bool = True) -> FolderResult:
    """Super-resolve every image of `images` (a folder or .zip, optionally its `subdir`) into `out`,
    at the same relative paths; resumable."""
    out = Path(out)
    root = open_image_root(images, subdir)
    if Path(images).is_dir() and out.resolve() == Path(root.describe("")).resolve():
        raise UserError(f"--out {out} is the --images folder; choose another folder")
    rels = root.list_images()
    if not rels:
        raise UserError(f"{root.describe('')}: no images found")
    check_settings(out, settings)
    todo = [r for r in rels if not (out / r).is_file()]
    result = FolderResult(written=0, skipped=len(rels) - len(todo), failed=[])
    from tqdm import tqdm

    bar = tqdm(total=len(rels), initial=result.skipped, unit="img", desc="sr", disable=not progress,
               dynamic_ncols=True)
    with keep_freed_memory():  # each image's activations reuse the last one's pages (featurize.heap)
        for rel in todo:
            try:
                with Image.open(io.BytesIO(root.read_bytes(rel))) as im:
                    im.load()
                    image = im.copy()
                sr = upscaler.upscale(image, scale)
            except torch.OutOfMemoryError:
                bar.close()
                w, h = image.size
                raise UserError(
                    f"{root.describe(rel)}: out of {upscaler.device.type.upper()} memory at {w}x{h}; "
                    "rerun with --tile 256 (or smaller): finished images are kept"
                ) from None
            except (ImageDecodeError, UserError, *DECODE_ERRORS) as e:  # unreadable or unsupported: report, go on
                result.failed.append((root.describe(rel), error_text(e)))
                bar.update(1)
                continue
            save_image(sr, out / rel)
            result.written += 1
            bar.update(1)
    bar.close()
    return result
