"""Where Optuna studies live: `--storage` to an Optuna storage.

    None                 a SQLite file beside the spec (<spec stem>.optuna.db): the default
    any path             a SQLite file at that path (x.db) ...
    path ending .log     ... or an Optuna journal file (JournalStorage + JournalFileBackend)
    a URL with "://"     any Optuna RDB URL: sqlite:///x.db, postgresql://user@host/db, mysql://...
    "memory"             in memory: nothing kept after the command (notebooks, benchmarks)

File storages (SQLite, journal) are written in batches by blend.tune: through Optuna's storage
layer every parameter and state change of a trial is one synced write, which made the study wait
on the disk (bench/RESULTS.md). SQLite files are also opened in WAL mode with synchronous=NORMAL
(safe when a process dies; a power cut may lose the last trials, never the file): use a journal
file (.log) on network file systems, where WAL does not work. Database servers are written
directly, trial by trial, so that several workers can share one study.
"""
from __future__ import annotations

import os
from pathlib import Path

from featheads.core.errors import UserError

__all__ = ["resolve_storage", "describe_storage", "is_file_storage"]

JOURNAL_SUFFIXES = (".log", ".journal")


def default_storage_path(spec_path: str | os.PathLike) -> Path:
    p = Path(spec_path)
    return p.with_name(p.stem + ".optuna.db")


def is_file_storage(storage: str) -> bool:
    """A journal or SQLite file (written in batches by blend.tune), not memory or a database server."""
    return storage != "memory" and ("://" not in storage or storage.startswith("sqlite:"))


def describe_storage(storage: str) -> str:
    """The storage as it may be printed and written to a spec (a URL's password hidden)."""
    if "://" not in storage:
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: print its scheme only
        return storage.split("://", 1)[0] + "://..."


def resolve_storage(storage: str | None, spec_path: str | os.PathLike) -> tuple[object, str]:
    """(object for optuna.create_study(storage=...), canonical string for the spec)."""
    if storage is None:
        storage = str(default_storage_path(spec_path))
    if storage == "memory":
        return None, "memory"
    if "://" in storage:
        try:
            return _rdb_storage(storage), storage
        except ImportError as e:
            raise UserError(f"--storage {describe_storage(storage)}: {e} (install the database driver)") from None
        except Exception as e:
            raise UserError(f"--storage {describe_storage(storage)}: cannot open ({type(e).__name__}: {e})") from None
    path = Path(storage).expanduser().resolve()
    if not path.parent.is_dir():
        raise UserError(f"--storage {storage}: folder {path.parent} does not exist")
    if path.suffix in JOURNAL_SUFFIXES:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(path))), str(path)
    url = f"sqlite:///{path}"
    try:
        return _rdb_storage(url), url
    except Exception as e:
        raise UserError(f"--storage {storage}: cannot open as a SQLite study file ({type(e).__name__}: {e})") from None


def _rdb_storage(url: str):
    import optuna

    storage = optuna.storages.RDBStorage(url)
    if url.startswith("sqlite:"):
        from sqlalchemy import event

        def pragmas(connection, record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        event.listen(storage.engine, "connect", pragmas)
        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage
