"""Studies shared by many workers: a real PostgreSQL server (Debian's `postgresql` package, which
.ci/run installs), 4 workers of `blend tune` and of `heads tune` started at once on an empty
database, exactly --trials finished trials in one study; the driver's install hint; the same
budget on a SQLite file shared by workers."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from featheads.core.errors import UserError
from heads import studies

from blend_fixtures import write_mtl_store
from heads_fixtures import make_mtl_store

REPO = Path(__file__).resolve().parents[1]
INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str], user: str | None) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--"] + cmd


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1:<free port>, trust authentication; yields a
    function that creates an empty database and returns its postgresql:// URL."""
    if not INITDB:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                    "apt-get install -y postgresql")
    if not studies._has_module("psycopg") and not studies._has_module("psycopg2"):
        pytest.skip('no PostgreSQL driver: pip install -e ".[postgres]"')
    bindir = Path(INITDB[-1]).parent
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        user = "nobody"
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="featheads-pg-"))  # pytest's tmp folders are private to this user
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user:
        os.chmod(root, 0o777)
        shutil.chown(sock, user)
        data.mkdir()
        shutil.chown(data, user)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    r = subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                 "--no-sync"], user), capture_output=True, text=True, env=env, cwd=root)
    if r.returncode:
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
    r = subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                                 "-w", "-t", "60", "start"], user), capture_output=True, text=True, env=env, cwd=root)
    if r.returncode:
        pytest.skip(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {(root / 'log').read_text()[-300:]}")
    base = f"postgresql://postgres@127.0.0.1:{port}"
    counter = iter(range(1000))

    def new_database() -> str:
        import sqlalchemy

        name = f"studies{next(counter)}"
        engine = sqlalchemy.create_engine(studies.driver_url(f"{base}/postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return f"{base}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user),
                       capture_output=True, env=env, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


def _start_workers(cmds: list[list[str]], cwd) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEATHEADS_THREADS": "1"}
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]  # all at once, before any has created a table
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outs.append((p.pid, p.returncode, out))
    return outs


def _check_one_study(url: str, name: str, trials: int, pids, counted=("COMPLETE",)):
    assert optuna.get_all_study_names(storage=url) == [name]
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.trials if t.state.name in counted]
    assert len(done) == trials
    by_worker = {}
    for t in done:
        by_worker.setdefault(int(t.user_attrs["worker"].rsplit(":", 1)[1]), []).append(t.number)
    assert set(by_worker) <= set(pids)
    assert len(by_worker) >= 2, by_worker  # they shared the work
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    return by_worker


def test_four_blend_tune_workers_on_an_empty_database(postgres, tmp_path):
    url = postgres()
    store = write_mtl_store(tmp_path / "store.h5", n_videos=4, n_frames=40)
    exe = str(Path(sys.executable).with_name("blend"))
    cmds = [[exe, "tune", "--store", str(store), "--runs", "mlp,openface", "--task", "expr", "--split", "val",
             "--in-sample", "--max-delta", "0", "--trials", "40", "--storage", url, "--study", "shared",
             "--out", str(tmp_path / f"w{i}.json")] for i in range(4)]
    outs = _start_workers(cmds, tmp_path)
    for pid, rc, out in outs:
        assert rc == 0, out
    _check_one_study(url, "shared", 40, [pid for pid, _, _ in outs])


def test_four_heads_tune_workers_on_an_empty_database(postgres, tmp_path):
    url = postgres()
    make_mtl_store(tmp_path / "s.h5", n_videos=(12, 2, 1), frames=20, seed=0)
    exe = str(Path(sys.executable).with_name("heads"))
    cmds = [[exe, "tune", "--store", str(tmp_path / "s.h5"), "--recipe", "logistic", "--task", "expr", "--cv", "3",
             "--trials", "12", "--storage", url, "--study", "shared", "--quiet",
             "--out", str(tmp_path / f"w{i}.json")] for i in range(4)]
    outs = _start_workers(cmds, tmp_path)
    for pid, rc, out in outs:
        assert rc == 0, out
    _check_one_study(url, "shared-expr", 12, [pid for pid, _, _ in outs], counted=("COMPLETE", "PRUNED"))


def test_budget_is_exact_with_workers_sharing_a_sqlite_file(tmp_path):
    """blend tune writes file storages in batches: under the lock beside the file, cut to what the study lacks."""
    store = write_mtl_store(tmp_path / "store.h5", n_videos=4, n_frames=40)
    exe = str(Path(sys.executable).with_name("blend"))
    db = tmp_path / "shared.db"
    cmds = [[exe, "tune", "--store", str(store), "--runs", "mlp,openface", "--task", "expr", "--split", "val",
             "--in-sample", "--max-delta", "0", "--trials", "150", "--storage", str(db), "--study", "shared",
             "--out", str(tmp_path / f"w{i}.json")] for i in range(3)]
    outs = _start_workers(cmds, tmp_path)
    for _, rc, out in outs:
        assert rc == 0, out
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 150


def test_plain_postgresql_url_takes_the_installed_driver_or_says_what_to_install(monkeypatch):
    monkeypatch.setattr(studies, "_has_module", lambda name: name == "psycopg")
    assert studies.driver_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.setattr(studies, "_has_module", lambda name: name == "psycopg2")
    assert studies.driver_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    monkeypatch.setattr(studies, "_has_module", lambda name: False)
    with pytest.raises(UserError, match=r'pip install -e "\.\[postgres\]"') as e:
        studies.resolve_storage("postgresql://me:secret@localhost/db")
    assert "secret" not in str(e.value)
    with pytest.raises(UserError, match="pip install psycopg2-binary"):
        studies.resolve_storage("postgresql+psycopg2://me@localhost/db")


def test_the_postgres_extra_names_a_driver():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extra = cfg["options.extras_require"]["postgres"]
    assert "psycopg" in extra


def test_creation_race_is_retried(monkeypatch):
    from sqlalchemy import exc

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise exc.IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key value violates unique "
                                                                            "constraint pg_type_typname_nsp_index"))
        return "made"

    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert studies._with_retry(flaky) == "made" and len(calls) == 3
    with pytest.raises(ValueError):
        studies._with_retry(lambda: (_ for _ in ()).throw(ValueError("bad URL")))
