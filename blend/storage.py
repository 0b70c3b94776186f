"""Where `blend tune` keeps its Optuna studies: `--storage` to an Optuna storage.

    None                 a SQLite file beside the spec (<spec stem>.optuna.db): the default
    any path             a SQLite file at that path (x.db) ...
    path ending .log     ... or an Optuna journal file (JournalStorage + JournalFileBackend)
    a URL with "://"     any Optuna RDB URL: sqlite:///x.db, postgresql://user@host/db, mysql://...
    "memory"             in memory: nothing kept after the command (notebooks, benchmarks)

The storage helpers are heads.studies' (shared with `heads tune`): a plain postgresql:// URL takes
the installed driver (`pip install -e ".[postgres]"`), workers started at once never race to
create the storage or the study, and a budget of N trials means N finished trials in the study.

File storages (SQLite, journal) are written in batches by blend.tune: through Optuna's storage
layer every parameter and state change of a trial is one synced write, which made the study wait
on the disk (bench/RESULTS.md). SQLite files are also opened in WAL mode with synchronous=NORMAL
(safe when a process dies; a power cut may lose the last trials, never the file): use a journal
file (.log) on network file systems, where WAL does not work. Database servers are written
directly, trial by trial, so that several workers share one study as it runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from heads.studies import JOURNAL_SUFFIXES, describe_storage, is_file_storage
from heads.studies import resolve_storage as _resolve

__all__ = ["resolve_storage", "describe_storage", "is_file_storage", "default_storage_path", "JOURNAL_SUFFIXES"]


def default_storage_path(spec_path: str | os.PathLike) -> Path:
    p = Path(spec_path)
    return p.with_name(p.stem + ".optuna.db")


def resolve_storage(storage: str | None, spec_path: str | os.PathLike) -> tuple[object, str]:
    """(object for optuna.create_study(storage=...), canonical string for the spec)."""
    return _resolve(str(default_storage_path(spec_path)) if storage is None else storage)
