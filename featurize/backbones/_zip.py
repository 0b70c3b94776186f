"""Read members of an untrusted zip archive (a torch.save file, a wheel) with bounded memory.

Every member's declared uncompressed size is checked against the archive's own size (a ratio cap),
against the caller's limit, and against duplicates before a byte is inflated; zipfile itself never
returns more than the declared size, and a member whose CRC does not match is refused.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

from ._limits import MAX_ZIP_RATIO, ZIP_RATIO_FREE, clip, mb

# what a damaged or crafted archive can raise while it is opened or read
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
              RuntimeError, KeyError, OverflowError)


class SafeZip:
    """An open archive whose members are read only after their declared sizes pass the checks.

    error: the UserError subclass raised (message "PATH: reason").
    """

    def __init__(self, path, error: type[Exception]):
        self.path = Path(path)
        self.error = error
        try:
            self.zf = zipfile.ZipFile(self.path)
            infos = self.zf.infolist()
        except ZIP_ERRORS as e:
            raise self.refuse(f"not a readable zip archive ({type(e).__name__}: {e})") from None
        seen = set()
        for info in infos:
            if info.filename in seen:
                self.zf.close()
                raise self.refuse(f"the archive holds {info.filename!r:.80} twice; which one is meant is ambiguous")
            seen.add(info.filename)
        self.infos = {info.filename: info for info in infos}
        self.names = list(self.infos)

    def refuse(self, reason: str) -> Exception:
        return self.error(f"{self.path}: {clip(reason)}")

    def close(self) -> None:
        self.zf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def check(self, name: str, limit: int) -> zipfile.ZipInfo:
        """The member's entry, after its declared sizes pass: present, <= limit, ratio, not encrypted."""
        info = self.infos.get(name)
        if info is None:
            raise self.refuse(f"no {name} inside this archive")
        if info.flag_bits & 0x1:
            raise self.refuse(f"{name} is encrypted")
        if info.file_size > limit:
            raise self.refuse(f"{name} declares {mb(info.file_size)} uncompressed, more than the {mb(limit)} allowed")
        if info.file_size > max(ZIP_RATIO_FREE, MAX_ZIP_RATIO * info.compress_size):
            raise self.refuse(
                f"{name} declares {mb(info.file_size)} from {mb(info.compress_size)} compressed, more than "
                f"{MAX_ZIP_RATIO}x: refused as a zip bomb"
            )
        return info

    def open(self, name: str, limit: int) -> io.BufferedIOBase:
        info = self.check(name, limit)
        try:
            return self.zf.open(info)
        except ZIP_ERRORS as e:
            raise self.refuse(f"cannot read {name} ({type(e).__name__}: {e})") from None

    def read(self, name: str, limit: int, nbytes: int | None = None) -> bytearray:
        """The first `nbytes` (default: all) bytes of member `name`, into a fresh bytearray."""
        info = self.check(name, limit)
        want = info.file_size if nbytes is None else nbytes
        if want > info.file_size:
            raise self.refuse(f"{name} holds {info.file_size} bytes, expected {want}")
        buf = bytearray(want)
        view = memoryview(buf)
        try:
            with self.zf.open(info) as f:
                got = 0
                while got < want:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if nbytes is None or nbytes == info.file_size:
                    f.read(1)  # reach the end so that zipfile checks the CRC
        except ZIP_ERRORS as e:
            raise self.refuse(f"cannot read {name} ({type(e).__name__}: {e})") from None
        if got < want:
            raise self.refuse(f"{name} is truncated: {got} of {want} bytes")
        return buf
