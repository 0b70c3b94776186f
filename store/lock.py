"""One writer at a time: an advisory lock on a side file `<store>.lock`; a second writer waits.

flock locks die with the process that holds them, so a crashed or killed writer (kill -9) never
leaves a stale lock behind. The lock file records the holder (pid, host, command, since) for the
message a waiting writer prints once. Readers take no lock at all (docs/STORE.md).

Filesystems without working flock (some NFS/Lustre mounts answer ENOLCK or EOPNOTSUPP) get one clear
error; the documented way out is FEATHEADS_STORE_LOCK=file, an O_EXCL lock file `<store>.lock.excl`
that works on any shared filesystem (a holder killed on another host leaves it behind: delete it).
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import socket
import sys
import time

from .errors import StoreError, StoreLockedError

DEFAULT_WAIT = 300.0  # seconds a writer waits for the lock (--wait, FEATHEADS_STORE_WAIT)
_POLL = 0.1


def default_wait() -> float:
    env = os.environ.get("FEATHEADS_STORE_WAIT")
    try:
        return float(env) if env else DEFAULT_WAIT
    except ValueError:
        raise StoreError(f"FEATHEADS_STORE_WAIT={env!r}: not a number of seconds") from None


def _holder_line() -> str:
    since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}: {' '.join(sys.argv)[:300]}"


class WriterLock:
    def __init__(self, store_path: str):
        self.store = os.fspath(store_path)
        self.path = self.store + ".lock"
        self._fd = None
        self._excl = None

    def acquire(self, wait: float | None = None, *, say=None) -> None:
        """Take the lock, waiting up to `wait` seconds (None: FEATHEADS_STORE_WAIT or 300 s); `say` (a
        callable, default: print to stderr) hears once who holds it while waiting."""
        wait = default_wait() if wait is None else float(wait)
        say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if os.environ.get("FEATHEADS_STORE_LOCK", "flock") == "file":
            return self._acquire_excl(wait, say)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._read_holder(fd)
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreLockedError(
                        f"{self.store}: another process is writing to this store ({holder}); waited "
                        f"{wait:g} s for it (--wait SECONDS to wait longer; one writer at a time)"
                    ) from None
                if not told:
                    say(f"{self.store}: waiting up to {wait:g} s for the writer lock held by {holder}")
                    told = True
                time.sleep(_POLL)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise StoreError(
                        f"{self.store}: this filesystem does not support file locks ({e.strerror}); set "
                        "FEATHEADS_STORE_LOCK=file to use an exclusive lock file instead (docs/STORE.md)"
                    ) from None
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_line().encode(), 0)
        self._fd = fd

    @staticmethod
    def _read_holder(fd) -> str:
        try:
            return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
        except OSError:
            return "unknown process"

    def _acquire_excl(self, wait: float, say) -> None:
        path = self.path + ".excl"
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        holder = f.read().strip() or "unknown process"
                except OSError:
                    holder = "unknown process"
                if _stale(holder):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.store}: another process is writing to this store ({holder}); waited {wait:g} s "
                        f"(--wait SECONDS to wait longer; if that process is gone, delete {path})"
                    ) from None
                if not told:
                    say(f"{self.store}: waiting up to {wait:g} s for the writer lock held by {holder}")
                    told = True
                time.sleep(_POLL)
                continue
            os.write(fd, _holder_line().encode())
            os.fsync(fd)
            os.close(fd)
            self._excl = path
            return

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._excl is not None:
            try:
                os.unlink(self._excl)
            except FileNotFoundError:
                pass
            self._excl = None


def _stale(holder: str) -> bool:
    """An exclusive lock file left by a dead process of this host."""
    parts = holder.split()
    if len(parts) < 4 or parts[0] != "pid" or parts[2] != "on" or parts[3] != socket.gethostname():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False
