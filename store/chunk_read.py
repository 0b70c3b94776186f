"""Row ranges of a feature array read straight from the file's bytes into the output array.

h5py reads a chunked dataset chunk by chunk through HDF5's chunk cache: each chunk lands in a
buffer of its own and is copied to the output, which costs a page fault per 4 KiB of every chunk
buffer on top of the copy; a split's features (hundreds of MB) then read at a fraction of the disk
or page-cache speed. The store's feature arrays are chunked by whole rows, unfiltered and in native
byte order, so a run of rows inside a chunk is one contiguous byte range of the file: `os.preadv`
puts it into the output array directly, one system call per chunk, no buffer between.

The bytes are read from the file descriptor HDF5 already holds open, never by path: a writer that
commits a new version of the store (os.replace) does not change what an open reader reads.
Anything else (filters, a chunk that spans part of a row, another file driver, a file open for
writing) returns None and the caller reads through h5py as before.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

__all__ = ["read_row_range", "read_sorted_rows"]


def _fast_layout(ds: h5py.Dataset) -> bool:
    """Chunked by whole rows, no filters, native byte order, a plain dtype, in a file open read-only
    (a writer's chunk cache may hold rows not yet on disk)."""
    return (ds.file.mode == "r" and ds.chunks is not None and ds.ndim >= 1 and tuple(ds.chunks[1:]) == tuple(ds.shape[1:])
            and ds.id.get_create_plist().get_nfilters() == 0 and ds.dtype.isnative and ds.dtype.kind in "fiub" and hasattr(os, "preadv"))


def _file_descriptor(ds: h5py.Dataset) -> int | None:
    try:
        fd = ds.file.id.get_vfd_handle()
    except Exception:  # a driver without a POSIX descriptor (core, family, ...)
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _pread_into(fd: int, view: memoryview, offset: int) -> bool:
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            return False  # the file is shorter than HDF5 says: let h5py report it
        view, offset = view[n:], offset + n
    return True


def _read_span(ds: h5py.Dataset, fd: int, lo: int, hi: int, target: np.ndarray) -> bool:
    """Rows lo:hi of `ds` into `target`, a C-contiguous array of exactly those rows: one preadv per chunk
    the rows touch, the fill value for chunks never written. False: a chunk this does not read."""
    row_bytes = target.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    buf = memoryview(target.reshape(-1).view(np.uint8))
    chunk_rows, zeros = ds.chunks[0], (0,) * (ds.ndim - 1)
    for first in range(lo - lo % chunk_rows, hi, chunk_rows):
        r0, r1 = max(lo, first), min(hi, first + chunk_rows)
        info = ds.id.get_chunk_info_by_coord((first,) + zeros)
        if info.byte_offset is None:  # never written: HDF5 reads the fill value
            target[r0 - lo:r1 - lo] = ds.fillvalue
            continue
        if info.filter_mask or info.size < (r1 - first) * row_bytes:
            return False
        view = buf[(r0 - lo) * row_bytes:(r1 - lo) * row_bytes]
        if not _pread_into(fd, view, info.byte_offset + (r0 - first) * row_bytes):
            return False
    return True


def _open_for_bytes(ds: h5py.Dataset) -> int | None:
    return _file_descriptor(ds) if _fast_layout(ds) else None


def read_row_range(ds: h5py.Dataset, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray | None:
    """Rows lo:hi of `ds` (0 <= lo <= hi <= len(ds)) into `out` (a new array when None; it may be a
    view such as the columns of a wider array), or None when the dataset's layout is not one this
    reads (the caller then uses ds[lo:hi]; `out` may hold part of the rows by then)."""
    fd = _open_for_bytes(ds)
    if fd is None:
        return None
    if out is None:
        out = np.empty((hi - lo,) + ds.shape[1:], dtype=ds.dtype)
    elif out.shape != (hi - lo,) + ds.shape[1:] or out.dtype != ds.dtype:
        raise ValueError(f"out: shape {out.shape} {out.dtype}, expected {(hi - lo,) + ds.shape[1:]} {ds.dtype}")
    if out.flags.c_contiguous:
        return out if _read_span(ds, fd, lo, hi, out) else None
    chunk_rows = ds.chunks[0]
    block = np.empty((chunk_rows,) + ds.shape[1:], dtype=ds.dtype)  # one chunk's rows, reused
    for first in range(lo - lo % chunk_rows, hi, chunk_rows):
        r0, r1 = max(lo, first), min(hi, first + chunk_rows)
        if not _read_span(ds, fd, r0, r1, block[:r1 - r0]):
            return None
        out[r0 - lo:r1 - lo] = block[:r1 - r0]
    return out


def read_sorted_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray | None:
    """Rows `rows` of `ds` (strictly increasing, in range) reading only their bytes: one preadv per run
    of consecutive rows and chunk, so a few thousand scattered windows do not read the span between
    them. None when the layout is not one this reads."""
    fd = _open_for_bytes(ds)
    if fd is None:
        return None
    out = np.empty((len(rows),) + ds.shape[1:], dtype=ds.dtype)
    if len(rows) == 0:
        return out
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
        if not _read_span(ds, fd, int(rows[a]), int(rows[b - 1]) + 1, out[a:b]):
            return None
    return out
