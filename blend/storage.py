"""Where Optuna studies live: `--storage` to an Optuna storage.

    None                 an Optuna journal file beside the spec (<spec stem>.optuna.log): the default
    path ending .log     an Optuna journal file (JournalStorage + JournalFileBackend): resumable,
                         several processes may share it
    any other path       a SQLite file at that path (x.db)
    a URL with "://"     any Optuna RDB URL: sqlite:///x.db, postgresql://user@host/db, mysql://...
    "memory"             in memory: nothing kept after the command (notebooks, benchmarks)

Why a journal file by default and not SQLite: through Optuna's RDB layer every trial costs several
SQLite transactions, which measured 10-25x slower per trial than the journal file on the
development machine (bench/RESULTS.md, "blend tune storage"); a study of a few hundred trials
then waits minutes on its storage instead of seconds. Both resume the same way.
"""
from __future__ import annotations

import os
from pathlib import Path

from store.errors import UserError

__all__ = ["resolve_storage", "describe_storage"]

JOURNAL_SUFFIXES = (".log", ".journal")


def default_storage_path(spec_path: str | os.PathLike) -> Path:
    p = Path(spec_path)
    return p.with_name(p.stem + ".optuna.log")


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
            import optuna

            return optuna.storages.RDBStorage(storage), storage
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
    import optuna

    try:
        return optuna.storages.RDBStorage(url), url
    except Exception as e:
        raise UserError(f"--storage {storage}: cannot open as a SQLite study file ({type(e).__name__}: {e})") from None
