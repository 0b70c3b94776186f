"""Trials per second of one Optuna study shared by 1, 2 and 4 workers, by storage: PostgreSQL (a
throw-away local server from Debian's `postgresql` package), a SQLite file and a journal file.

Each worker is a `blend tune` process (an EXPR blend of 3 runs on a small store, weights only,
--in-sample) or, with --kind heads, a `heads tune` process (logistic EXPR head, 3-fold CV), all
started at once on an empty storage with the same --trials: the study must end with exactly
--trials complete trials. Reported: trials/s of the study (trials over the span from the first
trial's start to the last one's end, process start-up excluded) and the wall time of the whole
run, start-up included.

    python bench/tune_workers.py [--kind blend|heads] [--trials 200] [--workers 1,2,4] [--no-append]
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the data generators the tests use


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; 1-min load average at start {load:.2f} "
            "(shared machine)")


class Postgres:
    """initdb + pg_ctl on a temporary folder, 127.0.0.1:<free port>, trust auth (as `nobody` when root)."""

    def __init__(self):
        initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not initdb:
            raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: apt-get install -y postgresql")
        self.bin = Path(initdb[-1]).parent
        self.user = "nobody" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="featheads-pg-bench-"))
        os.chmod(self.root, 0o777)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.n = 0

    def _run(self, *cmd):
        cmd = [str(c) for c in cmd]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root, env={**os.environ, "LC_ALL": "C"})

    def start(self):
        data = self.root / "data"
        self._run(self.bin / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._run(self.bin / "pg_ctl", "-D", data, "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60",
                  "-l", self.root / "log", "-w", "start")
        return self

    def new_database(self) -> str:
        import sqlalchemy

        from heads.studies import driver_url

        self.n += 1
        base = f"postgresql://postgres@127.0.0.1:{self.port}"
        engine = sqlalchemy.create_engine(driver_url(f"{base}/postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sqlalchemy.text(f"CREATE DATABASE bench{self.n}"))
        engine.dispose()
        return f"{base}/bench{self.n}"

    def stop(self):
        try:
            self._run(self.bin / "pg_ctl", "-D", self.root / "data", "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def worker_command(kind: str, store: Path, storage: str, trials: int, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name(kind)
    if kind == "blend":
        return [str(exe), "tune", "--store", str(store), "--runs", "mlp,openface,logits:enet_b0_8_va_mtl",
                "--task", "expr", "--split", "val", "--in-sample", "--max-delta", "0", "--trials", str(trials),
                "--storage", storage, "--study", "bench", "--out", str(out)]
    return [str(exe), "tune", "--store", str(store), "--recipe", "logistic", "--task", "expr", "--cv", "3",
            "--trials", str(trials), "--storage", storage, "--study", "bench", "--no-progress", "--out", str(out)]


def run_once(kind, store, storage, url_for_optuna, workers, trials, work) -> dict:
    import optuna

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(worker_command(kind, store, storage, trials, work / f"w{i}.json"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"worker failed: {err[-800:]}")
    wall = time.perf_counter() - t0
    name = "bench" if kind == "blend" else "bench-expr"
    study = optuna.load_study(study_name=name, storage=url_for_optuna)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"trials": len(done), "surplus": sum(bool(t.user_attrs.get("surplus")) for t in study.trials),
            "workers_used": len({t.user_attrs.get("worker") for t in done}), "span": span, "wall": wall,
            "rate": len(done) / span if span > 0 else float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("blend", "heads"), default="blend")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--storages", default="postgresql,sqlite,journal")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="featheads-tune-workers-"))
    if args.kind == "blend":
        from blend_fixtures import write_mtl_store

        store = write_mtl_store(work / "store.h5", n_videos=8, n_frames=60)
    else:
        from heads_fixtures import make_mtl_store

        store = work / "store.h5"
        make_mtl_store(store, n_videos=(12, 2, 1), frames=20)
    pg = None
    rows = []
    start = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        for kind in args.storages.split(","):
            if kind == "postgresql":
                try:
                    pg = pg or Postgres().start()
                except Exception as e:  # no server binaries: say so, measure the rest
                    print(f"postgresql skipped: {e}")
                    continue
            for w in workers:
                if kind == "postgresql":
                    storage = url = pg.new_database()
                elif kind == "sqlite":
                    storage = str(work / f"s{w}.db")
                    url = f"sqlite:///{storage}"
                else:
                    storage = str(work / f"j{w}.log")
                    from optuna.storages import JournalStorage
                    from optuna.storages.journal import JournalFileBackend

                    url = None
                r = run_once(args.kind, store, storage,
                             url if url is not None else JournalStorage(JournalFileBackend(storage)),
                             w, args.trials, work)
                rows.append((kind, w, r))
                print(f"{kind:<10} {w} workers: {r['trials']} trials ({r['surplus']} surplus marked FAIL, "
                      f"{r['workers_used']} workers ran some), {r['rate']:.1f} trials/s, wall {r['wall']:.1f} s")
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    cmd = "python bench/tune_workers.py " + " ".join(sys.argv[1:])
    lines = [f"## tune_workers ({start})", "", f"Machine: {machine()}.", f"Command: `{cmd.strip()}`",
             f"One `{args.kind} tune` study, {args.trials} trials, workers started at once on an empty storage "
             "(blend: EXPR blend of 3 inputs, weights only, 480 rows; heads: logistic EXPR head, 3-fold CV, "
             "240 rows). trials/s = trials / (last trial end - first trial start); wall includes process start-up.",
             "", "| storage | workers | finished trials | workers that ran trials | trials/s | wall (s) |",
             "|---|---|---|---|---|---|"]
    for kind, w, r in rows:
        lines.append(f"| {kind} | {w} | {r['trials']} | {r['workers_used']} | {r['rate']:.1f} | {r['wall']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
