"""Weight files: a cache folder, one download from the official URL, sha256 fingerprints.

The cache folder is $FEATHEADS_CACHE, else ~/.cache/featheads. Downloads go to a temporary file that
is renamed into place only when complete, so an interrupted download never leaves a half file that
looks finished. Offline, the error says what to download and where to put it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from featheads.core.errors import UserError

CACHE_ENV = "FEATHEADS_CACHE"


class WeightsUnavailableError(UserError):
    """The weights file is not given, not cached and cannot be downloaded."""


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "featheads")
    return Path(root)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `dest` atomically (temporary file + rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False)
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                if bar is not None:
                    bar.update(len(block))
            if bar is not None:
                bar.close()
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a weights file was found, and whether this call downloaded it (and how many bytes)."""

    path: Path
    downloaded_bytes: int = 0  # 0: given or already cached


def resolve_weights(
    name: str, url: str | None, filename: str, weights=None, *, allow_download: bool = True
) -> Path:
    """Path of a weights file: `weights` if given, else the cached copy, else downloaded once from `url`.

    name: what the weights are for (a backbone name), used in messages.
    """
    return find_weights(name, url, filename, weights, allow_download=allow_download).path


def find_weights(
    name: str, url: str | None, filename: str, weights=None, *, allow_download: bool = True
) -> ResolvedWeights:
    """`resolve_weights`, also saying whether (and how much) it downloaded."""
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise WeightsUnavailableError(f"{p}: weights file for {name} not found")
        return ResolvedWeights(p)
    dest = cache_dir() / filename
    if dest.is_file():
        return ResolvedWeights(dest)
    hint = (
        f"download {url} and put it at {dest} (or set ${CACHE_ENV} to the folder that holds {filename}, "
        f"or pass --weights PATH)"
    )
    if url is None:
        raise WeightsUnavailableError(f"no weights for {name}: {filename} has no official URL; pass --weights PATH")
    if not allow_download:
        raise WeightsUnavailableError(f"weights for {name} are not cached: {hint}")
    try:
        path = download(url, dest)
        return ResolvedWeights(path, path.stat().st_size)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsUnavailableError(f"cannot download weights for {name} ({e}): {hint}") from None

