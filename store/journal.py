"""The featurize journal (used by `featurize run`, merged by it or by `store merge`): finished batches on disk next to the store, merged into it in one short write.

    <store>.parts/<source>/part-<pid>-<seq>.npz      keys (n,) str, status (n,) int8, one (n, D) float32
                                                     array per source array, identity (JSON str)

A part is written to a temporary name and renamed into place (os.replace), so a part file either is
complete or does not exist: killing the process at any moment loses at most the batches not yet in a
part. Parts name their rows by store key, not row index, and carry the source identity, so a merge
never puts features on the wrong rows or into a source made another way. Merging is idempotent
(the same key written twice gets the same values), which is what makes resuming simple:

    journal = Journal(store_path, "enet_b0_8_va_mtl", identity)
    with FeatureStore.open(store_path, "a") as st:
        merged = journal.merge_into(st)          # parts left by an interrupted run
        st.commit()                              # the merged rows are in the store file ...
        journal.remove(merged)                   # ... so delete the parts, still under the writer lock
    journal.write_part(keys, {"embeddings": E, "logits": L}, status)   # while computing, no lock held

Several processes may write parts for the same source at once (each names its parts by its pid and
a counter); any one of them, or a later run, gathers them all with one merge. That is the basis for
sharded featurizing: each shard computes its rows into parts, one merge step writes the store.
"""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import FingerprintMismatchError, StoreError, identity_diff
from .faults import checkpoint

PART_PATTERN = re.compile(r"^part-(?P<host>.+)-(?P<pid>\d+)-(?P<seq>\d+)\.npz$")
MERGE_ROWS = 32768  # rows per store write while merging (bounds memory: 32768 x 1290 float32 = 170 MB)


def parts_root(store_path) -> Path:
    """<store>.parts: where every source's journal parts wait to be merged."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.name + ".parts")


def parts_dir(store_path, source: str) -> Path:
    return parts_root(store_path) / source


def identity_json(identity: Mapping) -> str:
    return json.dumps(dict(identity), sort_keys=True, default=str)


class Journal:
    """Part files of one source of one store."""

    def __init__(self, store_path, source: str, identity: Mapping):
        self.store_path = Path(store_path)
        self.source = source
        self.identity = identity_json(identity)
        self.dir = parts_dir(store_path, source)
        self._host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
        self._seq = 0

    # ------------------------------------------------------------------ writing
    def write_part(self, keys: list[str], arrays: Mapping[str, np.ndarray], status: np.ndarray) -> Path:
        """Write one finished batch of rows atomically; returns the part's path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            self._seq += 1
            final = self.dir / f"part-{self._host}-{os.getpid()}-{self._seq:06d}.npz"
            if not final.exists():
                break
        tmp = final.with_name(final.name + ".tmp")
        payload = {f"array_{k}": np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.asarray(keys, dtype=str), status=np.asarray(status, dtype=np.int8),
                         identity=np.asarray(self.identity), **payload)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            need = sum(v.nbytes for v in payload.values()) + 64 * len(keys)
            raise StoreError(
                f"{self.store_path}: cannot write a journal part in {self.dir} ({e.strerror or e}; a part needs "
                f"about {need / 1e6:.1f} MB free); the store is unchanged; free some space and run the same "
                "command again"
            ) from None
        checkpoint("journal-part")
        os.replace(tmp, final)
        return final

    # ------------------------------------------------------------------ reading
    def parts(self) -> list[Path]:
        """Complete part files, in name order."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if PART_PATTERN.match(p.name))

    def read_part(self, path: Path) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                identity = str(z["identity"])
                keys = z["keys"].tolist()
                status = z["status"]
                arrays = {k[len("array_"):]: z[k] for k in z.files if k.startswith("array_")}
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{path}: unreadable journal part ({e}); delete it and run again") from None
        if identity != self.identity:
            raise FingerprintMismatchError(
                f"{path}: journal part made otherwise than source {self.source!r} "
                f"({identity_diff(_as_dict(identity), _as_dict(self.identity))}); delete {self.dir} "
                "(or use another --source-name) and run again"
            )
        return keys, arrays, status

    def merge_into(self, store) -> list[Path]:
        """Write every part into `store` (open for writing, source created). Returns the parts merged;
        remove them with `remove` once the store is committed (`store.commit()`), before its lock is released."""
        parts = self.parts()
        batch_keys: list[str] = []
        batch_arrays: dict[str, list[np.ndarray]] = {}
        batch_status: list[np.ndarray] = []

        def flush():
            if not batch_keys:
                return
            rows = store.find_rows(batch_keys, missing="ignore")
            known = rows >= 0
            arrays = {k: np.concatenate(v)[known] for k, v in batch_arrays.items()}
            store.write_features(self.source, rows[known], arrays, np.concatenate(batch_status)[known])
            batch_keys.clear()
            batch_arrays.clear()
            batch_status.clear()

        for path in parts:
            keys, arrays, status = self.read_part(path)
            batch_keys.extend(keys)
            for k, v in arrays.items():
                batch_arrays.setdefault(k, []).append(v)
            batch_status.append(status)
            if len(batch_keys) >= MERGE_ROWS:
                flush()
        flush()
        return parts

    def remove(self, parts: Iterable[Path]) -> None:
        """Delete merged parts, temporary files of dead writers, and the folder when empty."""
        for p in parts:
            p.unlink(missing_ok=True)
            checkpoint("merge-removed")
        if not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            m = PART_PATTERN.match(p.name[: -len(".tmp")]) if p.name.endswith(".tmp") else None
            if m and m["host"] == self._host and not _pid_alive(int(m["pid"])):
                p.unlink(missing_ok=True)
        for d in (self.dir, self.dir.parent):
            try:
                d.rmdir()
            except OSError:
                break  # not empty: other sources' or other writers' parts


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own temporary files are never left behind between parts
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_all(store_path, *, wait: float | None = None) -> dict[str, int]:
    """`store merge PATH`: merge the journal parts of every source into the store -> {source: rows merged}.
    A source that the parts name but the store lacks is an error (its first run creates it)."""
    from .feature_store import FeatureStore

    root = parts_root(store_path)
    sources = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    done: dict[str, int] = {}
    if not sources:
        return done
    with FeatureStore.open(store_path, "a", wait=wait) as st:
        for source in sources:
            if source not in st.sources():
                raise StoreError(f"{root / source}: journal parts of source {source!r}, which {store_path} does not "
                                 "have; run the featurize command that made them again")
            journal = Journal(store_path, source, st.source_info(source)["identity"])
            merged = journal.merge_into(st)
            done[source] = sum(len(journal.read_part(p)[0]) for p in merged)
            st.commit()
            journal.remove(merged)
    return done


def pending_rows(store_path) -> tuple[int, Path]:
    """Rows in journal parts not merged into the store yet (of every source), and the folder holding them."""
    root = parts_root(store_path)
    n = 0
    for part in root.glob("*/*.npz"):
        if not PART_PATTERN.match(part.name):
            continue
        try:
            with np.load(part, allow_pickle=False) as z:
                n += len(z["keys"])
        except (OSError, ValueError, KeyError):
            continue
    return n, root


__all__ = ["Journal", "identity_json", "merge_all", "parts_dir", "parts_root", "pending_rows"]


def _as_dict(identity: str) -> dict:
    """A JSON identity as a dict (a part written by something else: its text as one field)."""
    try:
        value = json.loads(identity)
    except ValueError:
        return {"identity": identity}
    return value if isinstance(value, dict) else {"identity": value}
