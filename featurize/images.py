"""Where images come from (a folder or a .zip archive) and how one is decoded for a backbone.

    root = open_image_root("faces.zip", subdir="fer2013/train")   # or a folder
    root.list_images()                    # ["angry/Training_1.jpg", ...] relative, sorted, "/"-separated
    px = decode_resized(root.read_bytes("angry/Training_1.jpg"), size=224)   # uint8 (224, 224, 3)

A `ZipImageRoot` opens its archive lazily, once per process, so that it can be handed to DataLoader
worker processes (each worker opens its own file handle; a zipfile handle must not be shared).

Decoding is the reference preprocessing up to the uint8 pixels: PIL decode, convert to RGB ("L" for
grayscale backbones), resize to (size, size) with the PIL filter of the spec. The division by 255 and
the mean/std normalisation happen later on the device, batched (`featurize.pipeline`).
"""
from __future__ import annotations

import io
import os
import posixpath
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from featheads.core.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# torchvision's InterpolationMode names -> PIL filters (Resize on a PIL image calls PIL's resize).
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# What PIL raises on unreadable, truncated, empty or non-image data.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, zipfile.BadZipFile)
_BUFFER_REPR = re.compile(r" ?<_io\.\w+ object at 0x[0-9a-fA-F]+>")


def error_text(e: BaseException) -> str:
    """str(e) without the `<_io.BytesIO object at 0x...>` PIL puts in its messages for in-memory files."""
    return _BUFFER_REPR.sub("", str(e))


class ImageRootError(UserError):
    """The --images root does not exist, is not a folder or a zip archive, or lacks --subdir."""


class ImageDecodeError(Exception):
    """One image could not be read or decoded (the message says why, not which: the caller knows);
    the row is recorded as invalid."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_relative(rel: str) -> str:
    rel = rel.replace("\\", "/")
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ImageDecodeError("image paths must be relative to the image root")
    return norm


def _leaves_the_root(name: str) -> bool:
    """A zip member named with '..' or an absolute path (zip-slip): never read."""
    name = name.replace("\\", "/")
    return name.startswith("/") or ".." in name.split("/") or (len(name) > 1 and name[1] == ":")


class DirImageRoot:
    """Images in a folder (recursively)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DirImageRoot({str(self.path)!r})"

    def describe(self, rel: str) -> str:
        return str(self.path / rel)

    def list_images(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, self.path)
            for f in filenames:
                if is_image_name(f) and not f.startswith("."):
                    out.append(f if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), f))
        return sorted(out)

    def read_bytes(self, rel: str) -> bytes:
        path = self.path / _check_relative(rel)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageDecodeError("no such file") from None
        except IsADirectoryError:
            raise ImageDecodeError("is a folder, not an image file") from None
        except OSError as e:
            raise ImageDecodeError(f"cannot read ({e.strerror or e})") from None


class ZipImageRoot:
    """Images inside a .zip archive (optionally below `subdir`), read without unpacking."""

    def __init__(self, path: Path, subdir: str = ""):
        self.path = Path(path)
        self.prefix = subdir.strip("/") + "/" if subdir.strip("/") else ""
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None
        self._names: set[str] | None = None

    def __repr__(self) -> str:
        return f"ZipImageRoot({str(self.path)!r}, subdir={self.prefix.rstrip('/')!r})"

    def __getstate__(self):  # a worker process opens its own handle
        return {"path": self.path, "prefix": self.prefix}

    def __setstate__(self, state):
        self.__init__(state["path"])
        self.prefix = state["prefix"]

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._zip

    def describe(self, rel: str) -> str:
        return f"{self.path}:{self.prefix}{rel}"

    def _all_names(self) -> set[str]:
        if self._names is None:
            self._names = {n for n in self._archive().namelist() if not n.endswith("/")}
        return self._names

    def has_prefix(self) -> bool:
        return not self.prefix or any(n.startswith(self.prefix) for n in self._all_names())

    def list_images(self) -> list[str]:
        n = len(self.prefix)
        names = [name for name in self._all_names() if name.startswith(self.prefix) and is_image_name(name)]
        unsafe = sorted(name for name in names if _leaves_the_root(name))
        if unsafe:  # said once, on stderr: these are never read (a zip may name files outside its folder)
            print(f"{self.path}: {len(unsafe)} member(s) with '..' or an absolute path skipped, e.g. "
                  f"{unsafe[0][:200]!r}", file=sys.stderr)
        return sorted(
            name[n:] for name in names
            if not _leaves_the_root(name)
            and not any(part.startswith(".") or part == "__MACOSX" for part in name[n:].split("/"))
        )

    def read_bytes(self, rel: str) -> bytes:
        name = self.prefix + _check_relative(rel)
        try:
            return self._archive().read(name)
        except KeyError:
            raise ImageDecodeError("no such file in the archive") from None
        except (zipfile.BadZipFile, OSError, NotImplementedError) as e:
            raise ImageDecodeError(f"cannot read from the archive ({e})") from None


def open_image_root(path, subdir: str | None = None) -> DirImageRoot | ZipImageRoot:
    """A folder or a .zip archive of images; `subdir` selects a folder inside it."""
    path = Path(path)
    if not path.exists():
        raise ImageRootError(f"{path}: no such folder or zip archive")
    if path.is_dir():
        root = path / subdir if subdir else path
        if not root.is_dir():
            raise ImageRootError(f"{path}: has no folder {subdir!r} (--subdir)")
        return DirImageRoot(root)
    if not zipfile.is_zipfile(path):
        raise ImageRootError(f"{path}: neither a folder nor a zip archive")
    root = ZipImageRoot(path, subdir or "")
    if not root.has_prefix():
        raise ImageRootError(f"{path}: the archive has no folder {subdir!r} (--subdir)")
    return root


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit grayscale (PNG mode "I;16", or "I" holding 16-bit values) -> "L" by scaling 0..65535 to
    0..255 (value / 257, rounded), not clipping: PIL's own convert("L") would clip them to white."""
    if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return img
    v = np.asarray(img).astype(np.float64)
    if img.mode == "I" and v.size and (v.min() < 0 or v.max() > 65535):
        raise ImageDecodeError(f"32-bit integer image with values {v.min():.0f}..{v.max():.0f}: not a picture "
                               "featurize can convert to 8 bits")
    if img.mode == "I" and (not v.size or v.max() <= 255):
        return Image.fromarray(v.astype(np.uint8), "L")
    return Image.fromarray(np.rint(v / 257.0).astype(np.uint8), "L")


def decode_resized(data: bytes, size: int, *, grayscale: bool = False, interpolation: str = "bilinear") -> np.ndarray:
    """Decode image bytes and resize them like the reference: uint8 (size, size, 3), or (size, size, 1)
    when `grayscale`.

    A grayscale ("L") picture for an RGB backbone is resized in one channel and then copied to three:
    PIL resizes each channel independently with the same weights, so this equals convert("RGB") then
    resize, at a third of the cost.
    """
    try:
        img = Image.open(io.BytesIO(data))
        img.load()  # decode fully now: truncated files fail here, not later
        img = _to_8bit(img)
        if grayscale:
            img = img.convert("L")
        elif img.mode != "L":
            img = img.convert("RGB")
        img = img.resize((size, size), PIL_FILTERS[interpolation])
        px = np.asarray(img, dtype=np.uint8)
    except DECODE_ERRORS as e:
        raise ImageDecodeError(f"cannot decode image ({type(e).__name__}: {error_text(e)})") from None
    if px.ndim == 2:
        px = px[:, :, None]
        if not grayscale:
            px = np.repeat(px, 3, axis=2)
    return px
