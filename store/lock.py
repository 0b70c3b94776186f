"""One writer at a time: an advisory lock on a side file `<store>.lock`.

flock locks die with the process that holds them, so a crashed or killed writer (kill -9) never
leaves a stale lock behind. The lock file records the holder's pid and command for the message.
"""
from __future__ import annotations

import fcntl
import os
import sys

from .errors import StoreLockedError


class WriterLock:
    def __init__(self, store_path: str):
        self.path = os.fspath(store_path) + ".lock"
        self._fd = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"{self.path[:-5]}: another process is writing to this store ({holder}); "
                "wait for it to finish (one writer at a time)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
