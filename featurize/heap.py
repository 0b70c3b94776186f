"""Keep the memory that a backbone's forward pass frees in the process heap, for the next batch.

A CNN forward on a CPU allocates and frees one activation tensor per layer; at 224 px and a batch of
32 the large ones are 50-150 MB. glibc serves every block above its mmap threshold (at most 32 MiB, so
always for these) with a fresh mmap and unmaps it on free: every layer of every batch then faults its
output in page by page, zeroed by the kernel. On the 2-core machine of bench/featurize_cpu.py that
system time was as large as the compute (tf_efficientnet_b0 alone, batch 32: 38 images/s with 11 s of
system time per 512 images; 83 images/s and none inside this block; `featurize run` end to end: fp32
2.3x -> 4.7x the reference loop, bench/RESULTS.md 2026-12-03).

Inside `keep_freed_memory()` glibc takes every block from the heap (M_MMAP_MAX = 0) and keeps freed
memory there (M_TRIM_THRESHOLD = 2 GiB, the largest mallopt takes), so a batch reuses the pages of the
one before. On leaving, glibc's default limits are set (as fixed values: its adaptive mmap threshold
stays off) and malloc_trim(0) hands the free heap back to the kernel. Elsewhere than glibc it does
nothing. Memory inside the block is the peak of what is live plus what fragmentation leaves between
the blocks; for the same batch shapes again and again (a backbone's forward) that stays flat. MTCNN's
batches differ in shape, and there it grew with the video (featurize/faces.py keeps its own bound).
"""
from __future__ import annotations

import contextlib
import ctypes
import platform
import sys

__all__ = ["GLIBC", "keep_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def _glibc():
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


GLIBC = _glibc()  # the process's C library when it is glibc (mallopt, malloc_trim), else None


@contextlib.contextmanager
def keep_freed_memory():
    """Within the block, freed memory stays in the heap for reuse (glibc; elsewhere a no-op)."""
    if GLIBC is None:
        yield
        return
    GLIBC.mallopt(M_MMAP_MAX, 0)
    GLIBC.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield
    finally:
        GLIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        GLIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        GLIBC.malloc_trim(ctypes.c_size_t(0))
