"""Test-only fault injection: named points inside every write window of the store.

    FEATHEADS_TEST_KILL_AT=commit-replace        # SIGKILL this process the 1st time it reaches that point
    FEATHEADS_TEST_KILL_AT=write-features:3      # ... the 3rd time
    FEATHEADS_TEST_PAUSE_AT=store-copied         # stop there (SIGSTOP) so a test can kill it from outside;
    FEATHEADS_TEST_PAUSE_FILE=/tmp/x             # ... after writing the point name into this file
    FEATHEADS_TEST_EIO_AT=write-features         # raise OSError(EIO) there, as a failing disk would

Unset (always, outside tests) `checkpoint` is one dict lookup. Points, in the order a write session
passes them: store-copied, add-samples, create-source, write-features, write-predictions, commit-closed,
commit-fsynced, commit-replaced; featurize adds journal-part and merge-removed. Listed in `POINTS`.
"""
from __future__ import annotations

import errno
import os
import signal

POINTS = (
    "store-copied", "add-samples", "create-source", "write-features", "write-predictions",
    "commit-closed", "commit-fsynced", "commit-replaced", "journal-part", "merge-removed",
)
_hits: dict[str, int] = {}


def _target(var: str, name: str) -> bool:
    spec = os.environ.get(var)
    if not spec:
        return False
    point, _, nth = spec.partition(":")
    if point != name:
        return False
    return _hits[name] == (int(nth) if nth else 1)


def checkpoint(name: str) -> None:
    """A named point of a write window; a no-op unless a FEATHEADS_TEST_* variable names it."""
    if not any(v in os.environ for v in ("FEATHEADS_TEST_KILL_AT", "FEATHEADS_TEST_PAUSE_AT", "FEATHEADS_TEST_EIO_AT")):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _target("FEATHEADS_TEST_KILL_AT", name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _target("FEATHEADS_TEST_EIO_AT", name):
        raise OSError(errno.EIO, f"Input/output error (injected at {name})")
    if _target("FEATHEADS_TEST_PAUSE_AT", name):
        marker = os.environ.get("FEATHEADS_TEST_PAUSE_FILE")
        if marker:
            with open(marker, "w") as f:
                f.write(name)
        os.kill(os.getpid(), signal.SIGSTOP)
