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
on the disk (bench/RESULTS.md). A batch goes to a SQLite file in one transaction (append_trials:
a few multi-row inserts into Optuna's own tables, instead of Optuna's `add_trials`, which opens a
transaction and a dozen queries per trial); a journal file takes it through `add_trials`.
SQLite files are also opened in WAL mode with synchronous=NORMAL
(safe when a process dies; a power cut may lose the last trials, never the file): use a journal
file (.log) on network file systems, where WAL does not work. Database servers are written
directly, trial by trial, so that several workers share one study as it runs.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path

from heads.studies import JOURNAL_SUFFIXES, describe_storage, is_file_storage
from heads.studies import resolve_storage as _resolve

__all__ = ["resolve_storage", "describe_storage", "is_file_storage", "default_storage_path", "JOURNAL_SUFFIXES",
           "append_trials", "finished_trials"]

_log = logging.getLogger(__name__)


def default_storage_path(spec_path: str | os.PathLike) -> Path:
    p = Path(spec_path)
    return p.with_name(p.stem + ".optuna.db")


def resolve_storage(storage: str | None, spec_path: str | os.PathLike) -> tuple[object, str]:
    """(object for optuna.create_study(storage=...), canonical string for the spec)."""
    return _resolve(str(default_storage_path(spec_path)) if storage is None else storage)


def append_trials(study, trials: list, budget: int) -> int:
    """Add finished trials (FrozenTrial) to a study's storage, no more than it lacks to hold `budget`
    COMPLETE trials; returns what it lacks afterwards (<= 0: the budget is reached).

    A SQLite storage takes them in one transaction (`_sqlite_append`); any other storage, or a
    trial that transaction does not handle, goes through Optuna's `study.add_trials`. Either way
    Optuna reads back the same trials (tests/test_blend_tune.py)."""
    backend = _sqlite_backend(study)
    if backend is not None and trials and all(_plain(t) for t in trials):
        try:
            return _sqlite_append(backend, study._study_id, trials, budget)
        except Exception as e:  # an Optuna whose tables differ: its own (slower) path still works
            _log.debug("bulk SQLite insert failed (%s: %s); adding trials one by one", type(e).__name__, e)
    lacking = budget - finished_trials(study)
    if lacking > 0 and trials:
        study.add_trials(trials[:lacking])
    return lacking - len(trials)


def finished_trials(study) -> int:
    """COMPLETE trials of a study, every worker's: a SQL count for a SQLite file (instead of reading
    every trial back through Optuna's ORM to count them), heads.studies.count_trials otherwise."""
    from heads.studies import count_trials

    backend = _sqlite_backend(study)
    if backend is not None:
        try:
            from optuna.storages._rdb import models
            from optuna.trial import TrialState
            from sqlalchemy import func

            T = models.TrialModel.__table__
            with backend.engine.connect() as conn:
                return int(conn.execute(T.select().with_only_columns(func.count()).where(
                    (T.c.study_id == study._study_id) & (T.c.state == TrialState.COMPLETE))).scalar_one())
        except Exception as e:  # pragma: no cover - an Optuna whose tables differ
            _log.debug("SQL count failed (%s: %s); counting through Optuna", type(e).__name__, e)
    return count_trials(study, ("COMPLETE",))


def _sqlite_backend(study):
    """The RDBStorage of a study kept in a SQLite file, else None."""
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    if isinstance(backend, RDBStorage) and backend.engine.dialect.name == "sqlite":
        return backend
    return None


def _plain(trial) -> bool:
    """A finished single-objective trial without intermediate values: what the bulk insert writes."""
    return (trial.state.is_finished() and trial.values is not None and len(trial.values) == 1
            and not trial.intermediate_values)


def _utc(t: _dt.datetime | None) -> _dt.datetime | None:
    """A FrozenTrial time (naive local) as Optuna's RDB storage keeps it (naive UTC)."""
    return None if t is None else t.astimezone(_dt.timezone.utc).replace(tzinfo=None)


class _Enough(Exception):
    """The study already holds its budget: the transaction is rolled back."""


def _sqlite_append(backend, study_id: int, trials: list, budget: int) -> int:
    """The rows Optuna's RDBStorage writes for each trial (trials, trial_values, trial_params,
    trial_user_attributes, trial_system_attributes), for the whole batch in one transaction.

    The first insert takes SQLite's write lock, so the counts read after it (finished trials, trial
    numbers) stay true until the commit, whoever else writes to the file."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import func

    for t in trials:
        t._validate()
    T = models.TrialModel.__table__
    first = trials[0]
    lacking = 0
    try:
        with backend.engine.begin() as conn:
            first_id = conn.execute(T.insert().values(
                number=None, study_id=study_id, state=first.state,
                datetime_start=_utc(first.datetime_start), datetime_complete=_utc(first.datetime_complete),
            )).inserted_primary_key[0]
            before = conn.execute(
                T.select().with_only_columns(func.count()).where(
                    (T.c.study_id == study_id) & (T.c.trial_id < first_id))).scalar_one()
            done = conn.execute(
                T.select().with_only_columns(func.count()).where(
                    (T.c.study_id == study_id) & (T.c.trial_id < first_id)
                    & (T.c.state == TrialState.COMPLETE))).scalar_one()
            lacking = budget - done
            if lacking <= 0:
                raise _Enough
            batch = trials[:lacking]
            conn.execute(T.update().where(T.c.trial_id == first_id).values(number=before))
            ids = [first_id]
            if len(batch) > 1:
                rows = [{"trial_id": first_id + i, "number": before + i, "study_id": study_id, "state": t.state,
                         "datetime_start": _utc(t.datetime_start), "datetime_complete": _utc(t.datetime_complete)}
                        for i, t in enumerate(batch[1:], start=1)]
                conn.execute(T.insert(), rows)
                ids += [r["trial_id"] for r in rows]
            values, params, user, system = [], [], [], []
            for trial_id, t in zip(ids, batch):
                stored, kind = models.TrialValueModel.value_to_stored_repr(t.values[0])
                values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
                for name, value in t.params.items():
                    dist = t.distributions[name]
                    params.append({"trial_id": trial_id, "param_name": name,
                                   "param_value": dist.to_internal_repr(value),
                                   "distribution_json": distribution_to_json(dist)})
                user += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
                system += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                           for k, v in t.system_attrs.items()]
            for model, rows in ((models.TrialValueModel, values), (models.TrialParamModel, params),
                                (models.TrialUserAttributeModel, user), (models.TrialSystemAttributeModel, system)):
                if rows:
                    conn.execute(model.__table__.insert(), rows)
    except _Enough:  # rolled back: nothing written
        pass
    return lacking - len(trials)
