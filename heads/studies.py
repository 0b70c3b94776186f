"""Optuna studies shared by many workers: where they live, opening one without racing, and a trial
budget that means N finished trials in the study across all workers. Used by `heads tune` and by
`blend tune` (blend.storage re-exports the storage helpers).

    storage, label = resolve_storage("tune.optuna.db")               # a SQLite file (WAL)
    storage, label = resolve_storage("postgresql://me@localhost/db")  # psycopg 3 or psycopg2
    study = open_study(storage, label, "heads-expr", sampler=TPESampler(seed=0))
    run_budget(study, objective, trials=60)                          # 60 finished trials, whoever ran them

`--storage`:

    any path             a SQLite file at that path (x.db) ...
    path ending .log     ... or an Optuna journal file (JournalStorage + JournalFileBackend)
    a URL with "://"     any Optuna RDB URL: sqlite:///x.db, postgresql://user@host/db, mysql://...
    "memory"             in memory: nothing kept after the command (notebooks, benchmarks)

A plain `postgresql://` URL uses psycopg 3 when it is installed (`pip install -e ".[postgres]"`),
else psycopg2; without either the error says what to install. Workers started at once on an empty
database race to create Optuna's tables and the study: both steps are retried until one worker has
made them and the others load them.

The budget (run_budget): before a trial does any work it counts the study's trials that were
created before it (smaller trial id) and are finished in a counted state or still running; when
that reaches N it is surplus: it is marked FAIL (user attribute "surplus") and its worker stops.
The same check runs again when the trial ends, before it is told COMPLETE, which closes the gap
between two workers creating trials at the same instant. So N workers stop at exactly N counted
trials. Each trial records the worker that ran it (user attribute "worker": host:pid). Database
storages get Optuna's heartbeat, so that the trials of a killed worker turn FAIL
after a grace period instead of counting as running forever.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import socket
import sqlite3
import time
from pathlib import Path

from featheads.core.errors import UserError

__all__ = ["resolve_storage", "describe_storage", "is_file_storage", "open_study", "run_budget",
           "count_trials", "other_settings_error", "SurplusTrial", "JOURNAL_SUFFIXES", "file_lock", "lock_file"]

JOURNAL_SUFFIXES = (".log", ".journal")
POSTGRES_EXTRA = 'pip install -e ".[postgres]" (or pip install "psycopg[binary]")'
# SQLAlchemy "dialect+driver" -> (module to import, what to pip install)
_DRIVERS = {
    "postgresql+psycopg": ("psycopg", '"psycopg[binary]" (or pip install -e ".[postgres]")'),
    "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient (or use mysql+pymysql:// with pip install PyMySQL)"),
    "mysql+pymysql": ("pymysql", "PyMySQL"),
    "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
}
HEARTBEAT_SECONDS = 20  # database storages: a killed worker's running trials turn FAIL after 3x this
CREATE_RETRIES = 20


def lock_file(storage_label: str) -> str | None:
    """The lock file beside a SQLite or journal file storage (None for memory and database servers)."""
    if not is_file_storage(storage_label):
        return None
    path = storage_label[len("sqlite:///"):] if storage_label.startswith("sqlite:///") else storage_label
    return path + ".featheads.lock"  # not ".lock": JournalFileBackend's own symlink lock lives there


@contextlib.contextmanager
def file_lock(path: str | None):
    """An exclusive lock between processes on one machine (fcntl), nothing for path None."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def is_file_storage(storage: str) -> bool:
    """A journal or SQLite file, not memory or a database server."""
    return storage != "memory" and ("://" not in storage or storage.startswith("sqlite:"))


def describe_storage(storage: str) -> str:
    """The storage as it may be printed and written to a file (a URL's password hidden)."""
    if "://" not in storage:
        return storage
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: print its scheme only
        return storage.split("://", 1)[0] + "://..."


def driver_url(url: str) -> str:
    """The SQLAlchemy URL to open: plain postgresql:// gets the installed driver (psycopg 3 first);
    a missing driver is a UserError that says what to install."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        if _has_module("psycopg"):
            return f"postgresql+psycopg://{rest}"
        if _has_module("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        raise UserError(f"--storage {describe_storage(url)}: no PostgreSQL driver is installed: {POSTGRES_EXTRA}")
    if scheme in _DRIVERS and not _has_module(_DRIVERS[scheme][0]):
        raise UserError(f"--storage {describe_storage(url)}: the driver of {scheme}:// is not installed: "
                        f"pip install {_DRIVERS[scheme][1]}")
    return url


def resolve_storage(storage: str | None, default_path=None) -> tuple[object, str]:
    """(object for optuna.create_study(storage=...), canonical string to print and record).

    storage None: a SQLite file at default_path (memory when that is None too)."""
    if storage is None:
        storage = "memory" if default_path is None else str(default_path)
    if storage == "memory":
        return None, "memory"
    if "://" in storage:
        url = driver_url(storage)
        try:
            return _with_retry(lambda: _rdb_storage(url)), storage
        except ImportError as e:
            raise UserError(f"--storage {describe_storage(storage)}: {e} (install the database driver)") from None
        except UserError:
            raise
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
        return _with_retry(lambda: _rdb_storage(url)), url
    except Exception as e:
        raise UserError(f"--storage {storage}: cannot open as a SQLite study file ({type(e).__name__}: {e})") from None


class _WalConnection(sqlite3.Connection):
    """A SQLite connection in WAL mode with synchronous=NORMAL from its first statement on: safe when
    a process dies (a power cut may lose the last commits, never the file), and no fsync per commit.
    Given to Optuna as the connection factory, so that it creates its tables in that mode too (a new
    study file took half a second of synced writes otherwise)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")


def _rdb_storage(url: str):
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"factory": _WalConnection}})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeat_interval is "experimental"
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=3 * HEARTBEAT_SECONDS,
                                          engine_kwargs={"pool_pre_ping": True})


def _is_creation_race(e: Exception) -> bool:
    """Errors of two workers creating the same tables/rows at once (retried), not of a bad URL."""
    try:
        from sqlalchemy import exc
    except ImportError:  # pragma: no cover
        return False
    if isinstance(e, (exc.IntegrityError, exc.ProgrammingError, exc.InternalError)):
        return True
    if isinstance(e, exc.OperationalError):  # SQLite "database is locked", "table ... already exists"
        text = str(e).lower()
        return any(w in text for w in ("locked", "already exists", "deadlock", "could not serialize"))
    return False


def _with_retry(make):
    """make() retried on the creation race, with a random back-off so the workers drift apart."""
    for attempt in range(CREATE_RETRIES):
        try:
            return make()
        except Exception as e:
            if attempt == CREATE_RETRIES - 1 or not _is_creation_race(e):
                raise
            time.sleep(random.uniform(0.05, 0.2) * (1 + attempt))


def open_study(storage, storage_label: str, name: str, *, sampler=None, pruner=None, direction="maximize"):
    """Create the study or load it (several workers at once: one creates, the others load)."""
    import optuna

    def make():
        return optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                   pruner=pruner, load_if_exists=True)

    try:
        return _with_retry(make)
    except Exception as e:  # a broken file, an unreachable database ...
        raise UserError(f"--storage {describe_storage(storage_label)}: cannot open study {name!r} "
                        f"({type(e).__name__}: {e})") from None


def _states(counted):
    import optuna

    S = optuna.trial.TrialState
    return tuple(S[s] if isinstance(s, str) else s for s in (counted or ("COMPLETE",))), S


def count_trials(study, counted=("COMPLETE",)) -> int:
    """Trials of the study in the counted states (as seen now, all workers)."""
    states, _ = _states(counted)
    return len(study.get_trials(deepcopy=False, states=states))


class SurplusTrial(Exception):
    """Raised inside an objective whose trial is beyond the budget: the trial is marked FAIL."""


def _ahead(study, trial_id: int, states, running) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t._trial_id < trial_id and (t.state in states or t.state == running))


def run_budget(study, objective, trials: int, *, counted=("COMPLETE",), callbacks=(), catch=()) -> int:
    """Run trials until the study holds `trials` trials in the `counted` states, counting every
    worker's; returns how many this call ran. objective(trial) as for study.optimize."""
    import optuna

    states, S = _states(counted)
    if count_trials(study, counted) >= trials:
        return 0
    ran = 0

    worker = f"{socket.gethostname()}:{os.getpid()}"

    def guard(trial):
        trial.set_user_attr("worker", worker)  # which process ran it (host:pid)
        if _ahead(study, trial._trial_id, states, S.RUNNING) >= trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {trials}")
        value = objective(trial)
        if _ahead(study, trial._trial_id, states, S.RUNNING) >= trials:  # a worker created one at the same instant
            trial.set_user_attr("surplus", True)
            study.stop()
            raise SurplusTrial(f"trial {trial.number} is beyond the budget of {trials}")
        return value

    def stop_at_budget(s, t):
        nonlocal ran
        ran += t.state in states
        if count_trials(s, counted) >= trials:
            s.stop()

    logger = optuna.logging.get_logger("optuna")
    level = logger.level
    logger.setLevel(max(level, 40))  # a surplus trial is not an error worth a warning
    try:
        study.optimize(guard, n_trials=None, callbacks=[*callbacks, stop_at_budget],
                       catch=(SurplusTrial, *catch))
    finally:
        logger.setLevel(level)
    return ran


def other_settings_error(name: str, storage_label: str, old: dict, config: dict) -> UserError:
    """The one-line refusal to continue a study made for other settings, naming the fields that differ."""
    diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    return UserError(
        f"study {name!r} in {describe_storage(storage_label)} was made for other settings "
        f"({', '.join(f'{k}: {old.get(k)!r} there, {config.get(k)!r} now' for k in diff)}); "
        "use another --study or --storage to start afresh"
    )
