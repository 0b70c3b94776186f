"""The HDF5 feature store: samples, labels, feature sources, predictions, provenance.

No other module of the toolkit touches h5py; everything goes through `FeatureStore`.
Layout and invariants: docs/STORE.md.

    with FeatureStore.open("s.h5", "a") as st:          # "a" creates the file, takes the writer lock
        rows = st.add_samples(keys, split="train", videos=v, frames=f, labels={"expr": e})
        st.create_source("enet_b0_8_va_mtl", identity={...}, arrays={"embeddings": (1280, None)})
        st.write_features("enet_b0_8_va_mtl", rows, {"embeddings": emb}, status=ok)
    with FeatureStore.open("s.h5") as st:                # read-only, many readers at once
        X, valid = st.read_features("enet_b0_8_va_mtl.embeddings", st.rows("train"))
"""
from __future__ import annotations

import datetime as _dt
import errno
import itertools
import json
import os
import sys
from contextlib import contextmanager
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from .chunk_read import read_row_range, read_sorted_rows
from .errors import FingerprintMismatchError, StoreError, identity_diff
from featheads.core.jsonfile import toolkit_version
from .faults import checkpoint
from .lock import WriterLock
from .schema import SCHEMA_VERSION, TASKS, get_task

# Per-row status of a feature source.
STATUS_MISSING = 0  # not computed (yet)
STATUS_OK = 1  # features present and finite
STATUS_INVALID = 2  # tried and failed: unreadable image, missing file, OpenFace success == 0 ...

_STR = h5py.string_dtype("utf-8")
_CHUNK_ROWS = 4096


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _missing_value(dtype) -> object:
    return np.nan if np.issubdtype(np.dtype(dtype), np.floating) else -1


def _contiguous_runs(rows: np.ndarray) -> Iterable[tuple[int, int, int, int]]:
    """Yield (row_start, row_stop, pos_start, pos_stop) for runs of consecutive sorted rows."""
    if len(rows) == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(rows)]])
    for a, b in zip(starts, stops):
        yield int(rows[a]), int(rows[b - 1]) + 1, int(a), int(b)


def _row_span(rows: np.ndarray | None, n: int) -> tuple[int, int, bool]:
    """(lo, hi, contiguous) of the rows to read: the slice lo:hi covering them, and whether they are
    exactly that slice in order (rows None: all n rows)."""
    if rows is None:
        return 0, n, True
    if len(rows) == 0:
        return 0, 0, True
    lo, hi = int(rows.min()), int(rows.max()) + 1
    return lo, hi, hi - lo == len(rows) and (len(rows) < 2 or bool(np.all(np.diff(rows) == 1)))


def _read_rows(ds: h5py.Dataset, rows: np.ndarray | None) -> np.ndarray:
    """Read `rows` of a dataset fast: one slice covering them, then a numpy gather (none when the rows are
    that slice already: a second copy of a split's features would double its memory and the time to fault
    its pages in)."""
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    lo, hi, contiguous = _row_span(rows, ds.shape[0])
    if not contiguous and 0 <= lo and hi <= ds.shape[0]:
        picked = _read_sparse(ds, rows, lo, hi)
        if picked is not None:
            return picked
    block = read_row_range(ds, lo, hi)
    if block is None:
        block = ds[lo:hi]
    return block if contiguous else block[rows - lo]


_SYSCALL_BYTES = 1 << 16  # what one more read call costs, in bytes not read: about 16 us of copying


def _read_sparse(ds: h5py.Dataset, rows: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
    """`rows` read run by run when that skips more bytes than its extra read calls cost (scattered
    temporal windows of a split), else None (the caller reads the covering slice and gathers)."""
    uniq = np.unique(rows)
    runs = 1 + int(np.count_nonzero(np.diff(uniq) != 1))
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    if (hi - lo - len(uniq)) * row_bytes <= runs * _SYSCALL_BYTES:
        return None
    block = read_sorted_rows(ds, uniq)
    if block is None:
        return None
    if len(uniq) == len(rows) and bool(np.all(rows[1:] > rows[:-1])):
        return block  # the rows were sorted and distinct already
    return block[np.searchsorted(uniq, rows)]


def _read_columns(arrays: list, rows: np.ndarray | None) -> np.ndarray:
    """Float32 arrays side by side for `rows`: a contiguous run of rows is read straight into each
    array's columns of one output (no per-array copy to concatenate), anything else per array."""
    rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    lo, hi, contiguous = _row_span(rows, arrays[0].shape[0])
    if contiguous and all(a.ndim == 2 and a.dtype == np.float32 for a in arrays):
        X = np.empty((hi - lo, sum(a.shape[1] for a in arrays)), dtype=np.float32)
        c = 0
        for a in arrays:
            if read_row_range(a, lo, hi, out=X[:, c:c + a.shape[1]]) is None:
                break
            c += a.shape[1]
        else:
            return X
    return np.concatenate([_read_rows(a, rows).astype(np.float32, copy=False) for a in arrays], axis=1)


def _write_rows(ds: h5py.Dataset, rows: np.ndarray, values: np.ndarray) -> None:
    order = np.argsort(rows, kind="stable")
    rows, values = rows[order], values[order]
    for r0, r1, p0, p1 in _contiguous_runs(rows):
        ds[r0:r1] = values[p0:p1]


def _check_unique(keys: list[str], split: str) -> None:
    if len(set(keys)) != len(keys):
        seen = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise StoreError(f"key {dup!r} appears twice in the rows being added to split {split!r}")


def _checked_labels(labels: Mapping[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    """Labels of n rows as arrays of their task's dtype; a shape other than the task's is an error."""
    labels = dict(labels or {})
    for task, arr in labels.items():
        t = get_task(task)
        arr = np.asarray(arr, dtype=t.dtype)
        if arr.shape != (n,) + t.shape_tail:
            raise StoreError(f"labels {task!r}: shape {arr.shape}, expected {(n,) + t.shape_tail}")
        labels[task] = arr
    return labels


class FeatureStore:
    """An open feature store. Use `FeatureStore.open(path, mode)` as a context manager."""

    def __init__(self, path: str, h5: h5py.File | None, lock: WriterLock | None):
        self.path = path
        self._h5 = h5
        self._lock = lock
        self._key_index: dict[str, int] | None = None
        self._tmp: str | None = None  # the next version of the file while a write session is open
        self._deferred: list[BaseException] = []  # HDF5 write errors raised in h5py destructors

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path, mode: str = "r", *, wait: float | None = None) -> "FeatureStore":
        """Open a store. mode "r": read only, no lock, sees the last committed version; "a": read/write,
        created if missing, writer lock held (waiting up to `wait` seconds, default FEATHEADS_STORE_WAIT
        or 300 s). Writes go to a new version of the file that `close()` / `commit()` puts in place
        atomically; leaving the `with` block on an exception discards them (docs/STORE.md)."""
        path = os.fspath(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if mode == "r":
            if not os.path.exists(path):
                raise StoreError(f"{path}: no such store")
            st = cls(path, _open_h5(path, "r"), None)
            st._check_version()
            return st
        check_store_folder(path)
        lock = WriterLock(path)
        lock.acquire(wait)
        try:
            _remove_stale_versions(path)
            if os.path.exists(path):
                st = cls(path, _open_h5(path, "r"), lock)
                st._check_version(writing=True)
            else:
                st = cls(path, None, lock)
                st._begin_write()
            return st
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        """Commit what was written (if anything), release the writer lock."""
        try:
            if self._tmp is not None:
                self.commit()
        finally:
            self._release()

    def _release(self) -> None:
        if self._tmp is not None:  # an abort: empty the uncommitted version first, so that closing it
            _truncate(self._tmp)   # cannot fail for want of space (its flush lands in a sparse file)
        if self._h5 is not None:
            try:
                _close_h5(self._h5)
            except Exception:
                pass  # an uncommitted version that could not be flushed (full disk): it is deleted below
            self._h5 = None
        if self._tmp is not None:
            _unlink(self._tmp)
            self._tmp = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def abort(self) -> None:
        """Discard everything written since the last commit, release the writer lock."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, StoreError):
            raise _io_error(self.path, exc) from None

    @property
    def writable(self) -> bool:
        return self._lock is not None

    def flush(self) -> None:
        if self._tmp is not None:
            self._h5.flush()

    def _require_writable(self):
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")
        self._begin_write()

    def _begin_write(self) -> None:
        """Start a write session: a complete copy of the committed file, written next to it."""
        if self._tmp is not None:
            return
        tmp = f"{self.path}.tmp-{os.getpid()}-{next(_VERSION_NUMBERS)}"
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        ensure_free_space(self.path, size + (1 << 20), what="a new version of the store")
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        try:
            if size or os.path.exists(self.path):
                _copy_file(self.path, tmp)
                h5 = _open_h5(tmp, "r+")
            else:
                h5 = _open_h5(tmp, "w")
        except BaseException as e:
            _unlink(tmp)
            self._h5 = _open_h5(self.path, "r") if os.path.exists(self.path) else None
            if isinstance(e, OSError) and not isinstance(e, StoreError):
                raise _io_error(self.path, e) from None
            raise
        self._h5, self._tmp = h5, tmp
        self._watch_destructors()
        if "schema_version" not in h5.attrs:
            self._init_layout()
        checkpoint("store-copied")

    def _watch_destructors(self) -> None:
        """h5py flushes a dataset's cached chunks when its object is freed and can only print a failure there
        ("Exception ignored in ... __dealloc__"). Collect those during a session: one means data did not
        reach the new version, so it must not be committed (commit raises instead)."""
        self._deferred = []
        _install_destructor_hook()
        _SESSIONS[os.path.basename(self._tmp)] = self._deferred

    def commit(self) -> None:
        """Put everything written so far in place atomically (fsync, rename over the store, fsync the folder).
        The store stays open and locked; later writes start a new version."""
        if self._tmp is None:
            return
        tmp = self._tmp
        h5 = None
        try:
            self._h5.attrs["updated"] = _now()
            h5, self._h5 = self._h5, None
            _close_h5(h5)
            if self._deferred:
                raise OSError(str(self._deferred[0]))
            checkpoint("commit-closed")
            _compact_if_wasteful(tmp)
            _fsync_path(tmp)
            checkpoint("commit-fsynced")
            os.replace(tmp, self.path)
            self._tmp = None
            checkpoint("commit-replaced")
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as e:
            self._h5 = None
            _truncate(tmp)
            if h5 is not None:
                try:
                    _close_h5(h5)  # objects a failed close left open, now that the space is free
                except Exception:
                    pass
            _unlink(tmp)
            self._tmp = None
            if os.path.exists(self.path):
                self._h5 = _open_h5(self.path, "r")
            if isinstance(e, StoreError):
                raise
            raise _io_error(self.path, e) from None
        self._h5 = _open_h5(self.path, "r")

    def _init_layout(self) -> None:
        h5 = self._h5
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["encoding"] = "featheads-store"
        h5.attrs["toolkit_version"] = toolkit_version()
        h5.attrs["created"] = _now()
        g = h5.require_group("samples")
        for name, dtype in (("key", _STR), ("video", _STR), ("split", _STR), ("frame", "int32")):
            if name not in g:
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_CHUNK_ROWS,))
        h5.require_group("labels")
        h5.require_group("features")
        h5.require_group("predictions")

    def _check_version(self, writing: bool = False) -> None:
        v = self._h5.attrs.get("schema_version")
        if v is None or "samples" not in self._h5 or self._h5.attrs.get("encoding") not in (None, "featheads-store"):
            raise StoreError(
                f"not a featheads store: {self.path} (no schema_version attribute)"
                + ("; nothing was changed in it, choose another --store" if writing else "")
            )
        try:  # a store damaged by an older version (in-place writes) fails here, not in the middle of a command
            for name in ("key", "split", "video", "frame"):
                self._h5["samples"][name].shape
            if writing:
                self._h5["samples/key"][-1:]
        except (OSError, KeyError, RuntimeError) as e:
            raise damaged(self.path, e) from None
        if int(v) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {int(v)} is newer than this toolkit reads ({SCHEMA_VERSION}); "
                "upgrade featheads"
            )

    # ------------------------------------------------------------------ samples
    @property
    def n_rows(self) -> int:
        return int(self._h5["samples/key"].shape[0])

    def _keys(self) -> np.ndarray:
        return self._h5["samples/key"].asstr()[()].astype(object)

    def key_index(self) -> dict[str, int]:
        if self._key_index is None:
            self._key_index = {k: i for i, k in enumerate(self._keys())}
        return self._key_index

    def find_rows(self, keys: Sequence[str], *, missing: str = "raise") -> np.ndarray:
        """Row indices of `keys`; missing="raise" errors on an unknown key, "ignore" gives -1."""
        idx = self.key_index()
        out = np.fromiter((idx.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        if missing == "raise" and (out < 0).any():
            bad = keys[int(np.flatnonzero(out < 0)[0])]
            raise StoreError(f"{self.path}: key {bad!r} is not in the store")
        return out

    def add_samples(
        self,
        keys: Sequence[str],
        *,
        split: str,
        videos: Sequence[str] | None = None,
        frames: Sequence[int] | None = None,
        labels: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Register rows of one split and their labels; returns their row indices in `keys` order.

        Keys already in the store must carry the same split and labels (re-running a command is a
        no-op); a key of another split or with other labels is an error that names it.
        """
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")
        keys = [str(k) for k in keys]
        n = len(keys)
        _check_unique(keys, split)
        videos = [str(v) for v in videos] if videos is not None else [os.path.dirname(k) for k in keys]
        frames = np.asarray(frames if frames is not None else [-1] * n, dtype=np.int32)
        labels = _checked_labels(labels, n)

        rows = self.find_rows(keys, missing="ignore")
        old = np.flatnonzero(rows >= 0)
        if len(old):
            self._check_same_split(keys, rows, old, split)
            self._check_same_labels(keys, rows, old, labels)
        fresh = np.flatnonzero(rows < 0)
        if len(fresh) == 0:
            return rows
        rows[fresh] = self._append_rows([keys[i] for i in fresh], [videos[i] for i in fresh], split, frames[fresh],
                                        {task: arr[fresh] for task, arr in labels.items()})
        return rows

    def _check_same_split(self, keys: list[str], rows: np.ndarray, old: np.ndarray, split: str) -> None:
        """Keys already in the store (positions `old`) must be of `split`."""
        old_split = self._h5["samples/split"].asstr()[()]
        bad = [i for i in old if old_split[rows[i]] != split]
        if bad:
            i = bad[0]
            raise StoreError(
                f"{self.path}: key {keys[i]!r} is already in split {old_split[rows[i]]!r}, not {split!r}"
            )

    def _check_same_labels(self, keys: list[str], rows: np.ndarray, old: np.ndarray,
                           labels: dict[str, np.ndarray]) -> None:
        """Keys already in the store (positions `old`) must carry the labels they are stored with (NaN == NaN)."""
        for task, arr in labels.items():
            cur = self.labels(task, rows[old])
            new = arr[old]
            same = (cur == new) | (np.isnan(cur) & np.isnan(new)) if cur.dtype.kind == "f" else cur == new
            same = same.reshape(len(old), -1).all(axis=1)
            if not same.all():
                i = old[int(np.flatnonzero(~same)[0])]
                raise StoreError(
                    f"{self.path}: key {keys[i]!r} is already stored with other {task!r} labels"
                )

    def _append_rows(self, keys: list[str], videos: list[str], split: str, frames: np.ndarray,
                     labels: dict[str, np.ndarray]) -> np.ndarray:
        """New rows at the end of every row-aligned dataset (keys first: the fault point "add-samples" follows
        them); returns their row indices."""
        self._begin_write()
        n = len(keys)
        start = self.n_rows
        stop = start + n
        ensure_free_space(self._tmp, self._row_bytes() * n + 200 * n + (1 << 20),
                          what=f"{n} new rows", store=self.path)
        self._resize_all(stop)
        s = self._h5["samples"]
        s["key"][start:stop] = keys
        checkpoint("add-samples")
        s["video"][start:stop] = videos
        s["split"][start:stop] = [split] * n
        s["frame"][start:stop] = frames
        for task, arr in labels.items():
            ds = self._require_label_dataset(task)
            ds[start:stop] = arr
        if self._key_index is not None:
            for key, r in zip(keys, range(start, stop)):
                self._key_index[key] = r
        return np.arange(start, stop)

    def _row_bytes(self) -> int:
        """Bytes one row takes in the row-aligned numeric datasets (for the free-space check)."""
        total = 0
        for _, ds in self._iter_row_datasets():
            total += int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
        return total

    def _resize_all(self, n: int) -> None:
        """Grow every row-aligned dataset to n rows. New rows read as the dataset's fill value (the missing
        code: NaN, -1, status 0) without being written, so unwritten chunks take no space."""

        def grow(ds: h5py.Dataset):
            ds.resize((n,) + ds.shape[1:])

        for name in ("key", "video", "split", "frame"):
            self._h5["samples"][name].resize((n,))
        for ds in self._h5["labels"].values():
            grow(ds)
        for grp in list(self._h5["features"].values()) + list(self._h5["predictions"].values()):
            for ds in grp.values():
                grow(ds)

    def _require_label_dataset(self, task: str) -> h5py.Dataset:
        t = get_task(task)
        g = self._h5["labels"]
        if task not in g:
            n = self.n_rows
            ds = g.create_dataset(
                task, shape=(n,) + t.shape_tail, maxshape=(None,) + t.shape_tail, dtype=t.dtype,
                chunks=(_CHUNK_ROWS,) + t.shape_tail, fillvalue=_missing_value(t.dtype),
            )
            ds.attrs["kind"] = t.kind
            ds.attrs["names"] = list(t.names)
            ds.attrs["missing"] = "NaN" if t.kind == "regression" else "-1"
        return g[task]

    SAMPLE_COLUMNS = ("key", "video", "split", "frame")

    def samples(self, rows: np.ndarray | None = None, columns: Sequence[str] = SAMPLE_COLUMNS) -> dict[str, np.ndarray]:
        """key, video, split (object arrays of str) and frame (int32) of the rows (all if None);
        `columns` reads only those (decoding a string column costs about 1 s per million rows)."""
        unknown = [c for c in columns if c not in self.SAMPLE_COLUMNS]
        if unknown:
            raise ValueError(f"unknown sample column {unknown[0]!r}; columns: {', '.join(self.SAMPLE_COLUMNS)}")
        s = self._h5["samples"]
        out = {}
        for name in columns:
            if name == "frame":
                out[name] = _read_rows(s["frame"], rows)
                continue
            col = np.asarray(s[name].asstr()[()], dtype=object)
            out[name] = col if rows is None else col[np.asarray(rows, dtype=np.int64)]
        return out

    def splits(self) -> list[str]:
        return sorted(set(self._h5["samples/split"].asstr()[()]))

    def rows(self, split: str | Sequence[str] | None = None) -> np.ndarray:
        """Sorted row indices of a split (or several, or all rows when None)."""
        if split is None:
            return np.arange(self.n_rows)
        names = [split] if isinstance(split, str) else list(split)
        s = np.asarray(self._h5["samples/split"].asstr()[()], dtype=object)
        known = set(s)
        for name in names:
            if name not in known:
                raise StoreError(
                    f"{self.path}: no split {name!r}; splits in the store: {', '.join(sorted(known)) or 'none'}"
                )
        return np.flatnonzero(np.isin(s, names))

    # ------------------------------------------------------------------ labels
    def tasks(self) -> list[str]:
        return [t for t in TASKS if t in self._h5["labels"]]

    def labels(self, task: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Labels of a task: class int8 (-1 missing), va float32 (N, 2) NaN missing, au int8 (N, 12) -1."""
        t = get_task(task)
        if task not in self._h5["labels"]:
            n = self.n_rows if rows is None else len(rows)
            return np.full((n,) + t.shape_tail, _missing_value(t.dtype), dtype=t.dtype)
        return _read_rows(self._h5["labels"][task], rows)

    @staticmethod
    def label_mask(task: str, y: np.ndarray) -> np.ndarray:
        """Boolean mask of rows whose `task` label exists."""
        t = get_task(task)
        if t.kind == "class":
            return y >= 0
        if t.kind == "regression":
            return np.isfinite(y).all(axis=1)
        return (y >= 0).all(axis=1)

    def label_classes(self, task: str) -> list[str]:
        return list(get_task(task).names)

    # ------------------------------------------------------------------ sources
    def sources(self) -> list[str]:
        return sorted(self._h5["features"].keys())

    def source_info(self, name: str) -> dict:
        g = self._source_group(name)
        info = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in g.attrs.items()}
        for key in ("identity", "provenance"):
            if key in info:
                info[key] = json.loads(info[key])
        info["arrays"] = {
            k: {"shape": tuple(ds.shape), "dtype": str(ds.dtype),
                "names": list(ds.attrs["names"]) if "names" in ds.attrs else None}
            for k, ds in g.items() if k != "status"
        }
        return info

    def _source_group(self, name: str) -> h5py.Group:
        if name not in self._h5["features"]:
            raise StoreError(
                f"{self.path}: no feature source {name!r}; sources: {', '.join(self.sources()) or 'none'}"
            )
        return self._h5["features"][name]

    def create_source(
        self,
        name: str,
        *,
        identity: Mapping,
        arrays: Mapping[str, tuple[int, Sequence[str] | None]],
        provenance: Mapping | None = None,
        dtype: str = "float32",
    ) -> None:
        """Create a feature source, or check that an existing one was made the same way.

        identity: what makes features comparable (backbone, weights sha256, preprocessing, precision);
        a source with another identity is an error naming both. arrays: name -> (width, column names).
        provenance: recorded, not compared (library versions, device, command).
        """
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")
        if "/" in name or not name:
            raise StoreError(f"invalid source name {name!r}")
        ident = json.dumps(dict(identity), sort_keys=True, default=str)
        g = self._h5["features"]
        if name in g:
            old = g[name].attrs.get("identity", "{}")
            if json.loads(old) != json.loads(ident):
                raise FingerprintMismatchError(
                    f"{self.path}: source {name!r} holds features made otherwise ({identity_diff(json.loads(old), json.loads(ident))}); "
                    "write them to another source (--source-name) or another store"
                )
            for arr, (width, _) in arrays.items():
                if arr not in g[name] or g[name][arr].shape[1] != width:
                    raise FingerprintMismatchError(
                        f"{self.path}: source {name!r} has no array {arr!r} of width {width}"
                    )
            prov = json.dumps(dict(provenance or {}), sort_keys=True, default=str)
            if provenance and g[name].attrs.get("provenance") != prov:
                self._begin_write()
                self._h5["features"][name].attrs["provenance"] = prov
            return
        self._begin_write()
        g = self._h5["features"]
        n = self.n_rows
        grp = g.create_group(name)
        grp.attrs["identity"] = ident
        grp.attrs["provenance"] = json.dumps(dict(provenance or {}), sort_keys=True, default=str)
        grp.attrs["created"] = _now()
        for k, v in identity.items():  # flat copies for h5dump/h5ls readers
            grp.attrs[k] = json.dumps(v, default=str) if not isinstance(v, (str, int, float)) else v
        for arr, (width, names) in arrays.items():
            chunk_rows = max(1, min(_CHUNK_ROWS, (1 << 20) // (4 * max(width, 1))))
            ds = grp.create_dataset(
                arr, shape=(n, width), maxshape=(None, width), dtype=dtype,
                chunks=(chunk_rows, width), fillvalue=np.nan,
            )
            if names is not None:
                if len(names) != width:
                    raise StoreError(f"source {name!r} array {arr!r}: {len(names)} names for width {width}")
                ds.attrs["names"] = [str(x) for x in names]
        st = grp.create_dataset("status", shape=(n,), maxshape=(None,), dtype="int8",
                                chunks=(_CHUNK_ROWS * 16,), fillvalue=STATUS_MISSING)
        st.attrs["codes"] = "0 missing, 1 ok, 2 invalid"
        checkpoint("create-source")

    def write_features(
        self, name: str, rows: np.ndarray, arrays: Mapping[str, np.ndarray], status: np.ndarray
    ) -> None:
        """Write features of `rows` (rows with status != OK get NaN)."""
        self._require_writable()
        g = self._source_group(name)
        rows = np.asarray(rows, dtype=np.int64)
        status = np.asarray(status, dtype=np.int8)
        if status.shape != rows.shape:
            raise StoreError(f"source {name!r}: status shape {status.shape} != rows {rows.shape}")
        for arr, values in arrays.items():
            if arr not in g:
                raise StoreError(f"source {name!r} has no array {arr!r}")
            values = np.array(values, dtype=g[arr].dtype, copy=True)
            if values.shape != (len(rows), g[arr].shape[1]):
                raise StoreError(
                    f"source {name!r} array {arr!r}: got shape {values.shape}, expected {(len(rows), g[arr].shape[1])}"
                )
            values[status != STATUS_OK] = np.nan
            ensure_free_space(self._tmp, values.nbytes + (1 << 20), what=f"{len(rows)} rows of {name!r}",
                              store=self.path)
            _write_rows(g[arr], rows, values)
            checkpoint("write-features")
        _write_rows(g["status"], rows, status)

    def source_status(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        return _read_rows(self._source_group(name)["status"], rows)

    def parse_feature_spec(self, spec: str) -> list[tuple[str, str]]:
        """"src.embeddings+src.logits" -> [(src, embeddings), (src, logits)]; "src" -> all arrays of src."""
        out = []
        for part in spec.split("+"):
            part = part.strip()
            src, _, arr = part.rpartition(".") if "." in part else (part, "", "")
            if src and src not in self._h5["features"] and part in self._h5["features"]:
                src, arr = part, ""
            g = self._source_group(src or part)
            if not arr:
                out.extend((src or part, a) for a in g.keys() if a != "status")
            elif arr not in g or arr == "status":
                names = ", ".join(a for a in g.keys() if a != "status")
                raise StoreError(f"{self.path}: source {src!r} has no array {arr!r} (it has: {names})")
            else:
                out.append((src, arr))
        return out

    def feature_names(self, spec: str) -> list[str]:
        names = []
        for src, arr in self.parse_feature_spec(spec):
            ds = self._h5["features"][src][arr]
            cols = list(ds.attrs["names"]) if "names" in ds.attrs else [str(i) for i in range(ds.shape[1])]
            names.extend(f"{src}.{arr}.{c}" for c in cols)
        return names

    def read_features(self, spec: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated features of a spec for `rows` -> (X float32 (n, D), valid bool (n,))."""
        parts, valid = self.parse_feature_spec(spec), None
        for src in dict.fromkeys(src for src, _ in parts):
            ok = _read_rows(self._h5["features"][src]["status"], rows) == STATUS_OK
            valid = ok if valid is None else valid & ok
        arrays = [self._h5["features"][src][arr] for src, arr in parts]
        if len(arrays) == 1:
            return _read_rows(arrays[0], rows).astype(np.float32, copy=False), valid
        return _read_columns(arrays, rows), valid

    # ------------------------------------------------------------------ predictions
    def write_predictions(
        self, run: str, task: str, values: np.ndarray, rows: np.ndarray | None = None,
        *, names: Sequence[str] | None = None, attrs: Mapping | None = None,
    ) -> None:
        """Write per-row scores of a run for one task (rows not written stay NaN).

        values: (n,) or (n, C) for `rows` (all rows when None). Replaces the task's earlier scores
        on those rows only.
        """
        self._require_writable()
        if not run or "/" in run:
            raise StoreError(f"invalid run name {run!r}")
        values = np.asarray(values, dtype=np.float32)
        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
        if values.shape[0] != len(rows):
            raise StoreError(f"predictions {run}/{task}: {values.shape[0]} values for {len(rows)} rows")
        g = self._h5["predictions"].require_group(run)
        tail = values.shape[1:]
        if task in g and g[task].shape[1:] != tail:
            del g[task]
        if task not in g:
            ds = g.create_dataset(task, shape=(self.n_rows,) + tail, maxshape=(None,) + tail,
                                  dtype="float32", chunks=(_CHUNK_ROWS,) + tail, fillvalue=np.nan)
        ds = g[task]
        if names is not None:
            ds.attrs["names"] = [str(x) for x in names]
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)
        g.attrs["updated"] = _now()
        ensure_free_space(self._tmp, values.nbytes + (1 << 20), what=f"predictions {run}/{task}", store=self.path)
        _write_rows(ds, rows, values)
        checkpoint("write-predictions")

    def set_run_attrs(self, run: str, **attrs) -> None:
        self._require_writable()
        g = self._h5["predictions"].require_group(run)
        for k, v in attrs.items():
            g.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)

    def runs(self) -> dict[str, list[str]]:
        return {r: sorted(g.keys()) for r, g in self._h5["predictions"].items()}

    def read_predictions(self, run: str, task: str, rows: np.ndarray | None = None) -> np.ndarray:
        g = self._h5["predictions"]
        if run not in g:
            raise StoreError(f"{self.path}: no predictions run {run!r}; runs: {', '.join(g.keys()) or 'none'}")
        if task not in g[run]:
            raise StoreError(f"{self.path}: run {run!r} has no {task!r} predictions (it has: {', '.join(g[run].keys())})")
        return _read_rows(g[run][task], rows)

    def prediction_attrs(self, run: str, task: str | None = None) -> dict:
        obj = self._h5["predictions"][run] if task is None else self._h5["predictions"][run][task]
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in obj.attrs.items()}

    def to_pandas(self, split=None, *, features: str | None = None, predictions: Sequence[str] = ()):
        """The rows of `split` (all if None) as a pandas DataFrame: key, video, frame, split, labels (missing
        as missing values), the `features` spec's columns and the `predictions` runs' (store/export.py)."""
        from .export import to_pandas

        return to_pandas(self, split, features=features, predictions=predictions)

    # ------------------------------------------------------------------ file-level
    def attrs(self) -> dict:
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in self._h5.attrs.items()}

    def _iter_row_datasets(self):
        """(name, dataset) of every row-aligned dataset, for verify."""
        for name in ("key", "video", "split", "frame"):
            yield f"samples/{name}", self._h5["samples"][name]
        for name, ds in self._h5["labels"].items():
            yield f"labels/{name}", ds
        for top in ("features", "predictions"):
            for gname, grp in self._h5[top].items():
                for name, ds in grp.items():
                    yield f"{top}/{gname}/{name}", ds


@contextmanager
def open_store(path, mode: str = "r", *, wait: float | None = None):
    with FeatureStore.open(path, mode, wait=wait) as st:
        yield st


# ---------------------------------------------------------------------- files
_COPY_BYTES = 16 << 20  # copy a store 16 MiB at a time (bounded memory, whatever its size)


_VERSION_NUMBERS = itertools.count(1)  # a new name per session: late errors of an aborted one stay apart
_SESSIONS: dict[str, list] = {}  # file name of an uncommitted version -> its destructor errors
_HOOKED = False


def _install_destructor_hook() -> None:
    """Route h5py destructor errors about uncommitted versions (`*.tmp-<pid>-<n>`) to their session; others
    go on to the previous hook unchanged."""
    global _HOOKED
    if _HOOKED:
        return
    prev = sys.unraisablehook

    prev_except = sys.excepthook

    def ours(exc) -> list | None:
        text = str(exc)
        return next((errors for name, errors in _SESSIONS.items() if name + "'" in text), None)  # filename = '...'


    def hook(u):
        errors = ours(u.exc_value)
        if errors is None:
            return prev(u)
        errors.append(u.exc_value)

    def excepthook(kind, value, tb):  # Cython prints a destructor's traceback through here first
        if ours(value) is None:
            prev_except(kind, value, tb)
    sys.unraisablehook = hook
    sys.excepthook = excepthook
    _HOOKED = True


def _close_h5(h5: h5py.File) -> None:
    """Close a file; a failing flush (full disk) raises once here instead of also printing "Exception
    ignored" lines from h5py's object destructors, so a user sees one error line."""
    hook = sys.unraisablehook
    failed: list[BaseException] = []
    sys.unraisablehook = lambda u: failed.append(u.exc_value)
    try:
        h5.close()
    finally:
        sys.unraisablehook = hook
    if failed and isinstance(failed[0], OSError):
        raise failed[0]


def _open_h5(path: str, mode: str) -> h5py.File:
    """Open without HDF5's own file lock: readers never block writers (featheads' lock is for writers only,
    and a committed file is never modified, so a reader always sees one complete version)."""
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as e:
        if mode == "r" and os.path.exists(path) and not h5py.is_hdf5(path):
            raise StoreError(f"not a featheads store: {path} (cannot open it as HDF5: not an HDF5 file)") from None
        what = "for writing" if mode != "r" else ""
        raise StoreError(
            f"{path}: cannot open as an HDF5 feature store {what}({e}); `store verify --store {path} --repair` saves "
            "what can still be read into a new store"
        ) from None


def damaged(path, e) -> StoreError:
    return StoreError(
        f"{path}: the store is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
        f"`store verify --store {path} --repair` saves every readable sample, label, source and prediction into a new store"
    )


def check_store_folder(path) -> None:
    """One clear line when the store's folder does not exist (before any model is loaded)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise StoreError(f"{os.fspath(path)}: folder {folder} does not exist; create it first (mkdir -p {folder})")


def _truncate(path: str) -> None:
    try:
        os.truncate(path, 0)
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_stale_versions(path: str) -> None:
    """Uncommitted versions left by killed writers (only the lock holder writes one, and we hold the lock)."""
    folder, name = os.path.split(os.path.abspath(path))
    for entry in os.listdir(folder):
        if entry.startswith(name + ".tmp-"):
            _unlink(os.path.join(folder, entry))


def _copy_file(src: str, dst: str) -> None:
    """Copy src to dst: in the kernel (os.copy_file_range: no user-space buffers, a reflink where the file
    system offers one), else (another OS, a file system that refuses it) 16 MiB at a time."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        if _copy_in_kernel(fi.fileno(), fo.fileno()):
            return
        fi.seek(0)
        fo.seek(0)
        fo.truncate()
        while True:
            block = fi.read(_COPY_BYTES)
            if not block:
                break
            fo.write(block)


# errors with which copy_file_range says "not here" (the caller copies in user space instead)
_NO_KERNEL_COPY = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}


def _copy_in_kernel(fd_in: int, fd_out: int) -> bool:
    """The whole of fd_in into fd_out by os.copy_file_range; False where it is not available."""
    if not hasattr(os, "copy_file_range"):
        return False
    size = os.fstat(fd_in).st_size
    copied = 0
    while copied < size:
        try:
            n = os.copy_file_range(fd_in, fd_out, min(size - copied, 1 << 30))
        except OSError as e:
            if e.errno in _NO_KERNEL_COPY and copied == 0:
                return False
            raise  # ENOSPC and the like: the caller's write fails as any write would
        if n == 0:  # the file shrank under us: the caller starts over in user space
            return False
        copied += n
    return True


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def free_bytes(path) -> int:
    st = os.statvfs(os.path.dirname(os.path.abspath(os.fspath(path))))
    return st.f_bavail * st.f_frsize


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def ensure_free_space(path, need: int, *, what: str, store=None) -> None:
    """Refuse (one line naming the store) before a write that would not fit on the disk."""
    if path is None:
        return
    free = free_bytes(path)
    if free < need:
        raise StoreError(
            f"{os.fspath(store or path)}: disk full: writing {what} needs about {_mb(need)} free in "
            f"{os.path.dirname(os.path.abspath(os.fspath(path)))}, {_mb(free)} free; nothing was changed, free "
            "some space and run the same command again"
        )


def _io_error(path: str, e: OSError) -> StoreError:
    """An OSError of a write session as one line; the committed store is untouched."""
    text = str(e)
    full = getattr(e, "errno", None) == errno.ENOSPC or "errno = 28" in text or "No space left" in text
    if full:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        return StoreError(
            f"{path}: disk full while writing the store (needs about {_mb(size + (1 << 20))} free in "
            f"{os.path.dirname(os.path.abspath(path))}, {_mb(free_bytes(path))} free); the store still holds "
            "everything committed before; free some space and run the same command again"
        )
    return StoreError(f"{path}: I/O error while writing the store ({text}); the store still holds everything "
                      "committed before; run the same command again")


def _array_bytes(h5: h5py.File) -> int:
    """Bytes the datasets need: their allocated storage, plus, for strings, their objects in HDF5's global
    heap (16-byte header + the UTF-8 bytes, padded to 8)."""
    total = 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += obj.id.get_storage_size()
            info = h5py.check_string_dtype(obj.dtype)
            if info is not None and info.length is None and obj.size:  # variable-length: bytes, not decoded
                raw = obj[()]
                lengths = np.fromiter(map(len, raw.flat), dtype=np.int64, count=raw.size)
                total += int((16 + (lengths + 7) // 8 * 8).sum())
    h5.visititems(visit)
    return total


def _compact_if_wasteful(tmp: str) -> None:
    """Rewrite the new version object by object when more than 5% (and 1 MiB) of it is dead space left by
    resized or replaced datasets; chunks are copied as they are (H5Ocopy), so memory stays bounded."""
    size = os.path.getsize(tmp)
    with h5py.File(tmp, "r", locking=False) as f:
        used = _array_bytes(f)
    slack = size - used
    if slack <= max(0.05 * size, 1 << 20):
        return
    ensure_free_space(tmp, used + (1 << 20), what="a compacted copy of the store")
    dst = tmp + ".compact"
    try:
        with h5py.File(tmp, "r", locking=False) as fi, h5py.File(dst, "w", locking=False) as fo:
            for k, v in fi.attrs.items():
                fo.attrs[k] = v
            for name in fi:
                fi.copy(fi[name], fo, name)
        os.replace(dst, tmp)
    finally:
        _unlink(dst)
