"""Fault injection at volume: random SIGKILLs across every store writer, plus full-disk cases.

    python bench/faults.py                 # 120 kills + 4 disk-full cases, appends to bench/RESULTS.md
    python bench/faults.py --kills 20 --no-append

Writers (each a forked child: a real process, cheap to start): featurize run on a new store, featurize
run adding rows (both with their merges), heads' prediction writes, blend apply, OpenFace ingest. Each
kill is either at a random named point of the writer's write windows (FEATHEADS_TEST_KILL_AT, biased
into the windows by construction) or at a random instant of the run (SIGKILL from outside). After each:
the store must open and verify, hold what it held before, and the same call again must give a store
identical, dataset by dataset and value by value, to an uninterrupted run's. Disk-full cases fill a
small tmpfs (needs root to mount; skipped with a reason otherwise). Prints k/N identical stores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from store import FeatureStore  # noqa: E402
from store.inspect import verify  # noqa: E402
from test_store_faults import changed, differing, dump  # noqa: E402  the fault tests' dataset comparison

POINTS = {
    "featurize-new": ["store-copied", "add-samples", "create-source", "commit-closed", "commit-fsynced",
                      "commit-replaced", "journal-part", "journal-part:2", "store-copied:2", "write-features",
                      "commit-closed:2", "commit-fsynced:2", "commit-replaced:2", "merge-removed"],
    "featurize-add": ["store-copied", "add-samples", "commit-fsynced", "commit-replaced", "journal-part",
                      "write-features", "commit-closed:2", "commit-replaced:2", "merge-removed"],
    "heads-predict": ["store-copied", "write-predictions", "write-predictions:2", "write-predictions:3",
                      "commit-closed", "commit-fsynced", "commit-replaced"],
    "blend-apply": ["store-copied", "write-predictions", "commit-closed", "commit-fsynced", "commit-replaced"],
    "openface-ingest": ["store-copied", "create-source", "write-features", "commit-closed", "commit-replaced"],
    "faces-ingest": ["store-copied", "create-source", "write-features", "commit-closed", "commit-replaced"],
}


def fork(fn, env=None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            import torch

            torch.set_num_threads(1)
            os.environ.update(env or {})
            import store.faults

            store.faults._hits.clear()
            fn()
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    return pid


def wait(pid, timeout=120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]
        time.sleep(0.005)


def sound(path) -> bool:
    try:
        with FeatureStore.open(path) as st:
            return not verify(st)
    except Exception:  # noqa: BLE001
        return False


class Writers:
    """Inputs, a "before" store and an uninterrupted result for each writer."""

    def __init__(self, work: Path):
        from blend_fixtures import write_mtl_store
        from featurize_fixtures import write_mtl_dataset
        from openface_fixtures import make_frames, make_store, write_sequence_csv

        self.work = work
        a = write_mtl_dataset(work / "a", videos=3, frames=4, seed=1)
        b = write_mtl_dataset(work / "b", videos=3, frames=4, seed=2)
        b_ann = work / "b" / "val.txt"
        b_ann.write_text(b[0].read_text().replace("video", "val_video"))
        for p in b[1].iterdir():
            p.rename(p.with_name("val_" + p.name))
        self.a, self.b = (a[0], a[1]), (b_ann, b[1])
        preds = write_mtl_store(work / "preds.h5", n_videos=3, n_frames=30)
        make_frames(work / "img" / "a", [f"{i:05d}.png" for i in range(1, 9)])
        write_sequence_csv(work / "csv" / "a.csv", 8, success=[1, 1, 0, 1, 1, 1, 0, 1])
        of = make_store(work / "of.h5", [f"a/{i:05d}.png" for i in range(1, 9)])
        self.crops = work / "crops"  # a faces_index.jsonl as `featurize faces` writes it
        self.crops.mkdir()
        records = [{"file": "clip.mp4", "key": f"clip/{i:05d}.jpg", "found": i % 3 != 0, "box": [1, 2, 30, 40],
                    "score": 0.99, "landmarks": [[i, 2 * i]] * 5} for i in range(1, 9)]
        (self.crops / "faces_index.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records) + json.dumps({"file": "clip.mp4", "done": True}) + "\n")
        faces = make_store(work / "faces.h5", [r["key"] for r in records])
        spec = work / "spec.json"
        from blend.spec import FORMAT

        spec.write_text(json.dumps({"format": FORMAT, "version": 1, "task": "expr", "tasks": {
            "expr": {"weights": {"mlp": 0.6, "openface": 0.4}, "smoothing": {"kind": "none"}}}}))
        self.spec = spec
        after_a = work / "after_a.h5"
        self.run(self.call("featurize-new", after_a))
        self.before = {"featurize-new": None, "featurize-add": after_a, "heads-predict": preds,
                       "blend-apply": preds, "openface-ingest": of, "faces-ingest": faces}
        self.reference, self.seconds = {}, {}
        for name, before in self.before.items():
            ref = work / f"ref-{name}.h5"
            if before is not None:
                shutil.copy(before, ref)
            t0 = time.monotonic()
            self.run(self.call(name, ref))
            self.seconds[name] = time.monotonic() - t0
            self.reference[name] = dump(ref)

    @staticmethod
    def run(fn):
        status = wait(fork(fn))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status

    def call(self, name: str, store: Path):
        work = self.work

        def featurize(ann, images, split):
            def fn():
                from featurize.images import open_image_root
                from featurize.pipeline import FeaturizeConfig, featurize_samples
                from featurize.readers import read_abaw_mtl
                from featurize_fixtures import tiny_backbone

                featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=store, split=split,
                                  backbone=tiny_backbone(),
                                  config=FeaturizeConfig(batch_size=2, workers=0, part_rows=2, progress=False))
            return fn

        if name == "featurize-new":
            return featurize(*self.a, "train")
        if name == "featurize-add":
            return featurize(*self.b, "val")
        if name == "heads-predict":
            def fn():
                from heads.predicting import write_predictions

                with FeatureStore.open(store) as st:
                    rows = st.rows()
                rng = np.random.default_rng(0)
                n = len(rows)
                preds = {t: rng.random((n, w)).astype(np.float32) for t, w in (("expr", 8), ("va", 2), ("au", 12))}
                write_predictions(store, "fitted", preds, rows, run_attrs={"train": "val"}, head_attrs={})
            return fn
        if name == "blend-apply":
            def fn():
                from blend.apply import apply_spec
                from blend.spec import read_spec

                apply_spec(read_spec(self.spec), store, "val", name="final")
            return fn

        if name == "faces-ingest":
            def fn():
                from featurize.faces_ingest import ingest_faces

                ingest_faces(store, self.crops)
            return fn

        def fn():
            from featurize.openface import ingest

            ingest(store, work / "csv", images=work / "img", progress=False)
        return fn


def kill_trial(w: Writers, rng: random.Random, i: int) -> tuple[str, str, bool, bool]:
    """One kill -> (writer, how, killed, identical after rerun)."""
    name = rng.choice(sorted(POINTS))
    store = w.work / f"trial-{i}.h5"
    if w.before[name] is not None:
        shutil.copy(w.before[name], store)
    before = dump(store) if store.exists() else {}
    fn = w.call(name, store)
    if rng.random() < 0.6:
        how = rng.choice(POINTS[name])
        pid = fork(fn, env={"FEATHEADS_TEST_KILL_AT": how})
    else:
        delay = rng.uniform(0, w.seconds[name])
        how = f"after {delay:.2f} s"
        pid = fork(fn)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    status = wait(pid)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    ok = (not store.exists() and not before) or (sound(store) and not changed(dump(store), before))
    w.run(fn)
    ok = ok and sound(store) and not differing(dump(store), w.reference[name])
    store.unlink(missing_ok=True)
    return name, how, killed, ok


def disk_full_trials(w: Writers) -> list[tuple[str, bool, str]]:
    """Each writer that adds data, on a nearly full tmpfs: one clean error, store kept, rerun completes."""
    mnt = Path(tempfile.mkdtemp(prefix="featheads-faults-disk-"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        return [("disk-full", False, f"skipped: cannot mount a tmpfs ({res.stderr.strip() or 'not root'})")]
    out = []
    try:
        for name in ("featurize-add", "heads-predict", "blend-apply", "openface-ingest", "faces-ingest"):
            for variant in ("free-space check", "ENOSPC inside HDF5"):
                store = mnt / "s.h5"
                shutil.copy(w.before[name], store)
                before = dump(store)
                fn = w.call(name, store)

                def run(fn=fn, variant=variant):
                    if variant != "free-space check":
                        import store.feature_store as fs

                        fs.ensure_free_space = lambda *a, **k: None
                    fn()
                st = os.statvfs(mnt)
                leave = os.path.getsize(store) + 16384 if variant != "free-space check" else 200_000
                with open(mnt / "filler", "wb") as f:
                    f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
                status = wait(fork(run))
                clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) in (0, 3)  # an error, never a crash
                kept = sound(store) and not changed(dump(store), before)
                (mnt / "filler").unlink()
                w.run(fn)
                ok = clean and kept and sound(store) and not differing(dump(store), w.reference[name])
                how = "failed cleanly" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3 else (
                    "fitted" if os.WIFEXITED(status) else f"crashed ({status})")
                out.append((f"{name}, {variant}", ok, how))
                store.unlink()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-append", action="store_true", help="Do not append to bench/RESULTS.md.")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.time()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="featheads-faults-") as tmp:
        w = Writers(Path(tmp))
        trials = [kill_trial(w, rng, i) for i in range(args.kills)]
        disk = disk_full_trials(w)
    seconds = time.time() - t0
    per = {}
    for name, how, killed, ok in trials:
        s = per.setdefault(name, [0, 0, 0])
        s[0] += 1
        s[1] += killed
        s[2] += ok
    lines = ["| writer | runs | killed by SIGKILL | identical stores |", "|---|---:|---:|---:|"]
    for name, (n, k, ok) in sorted(per.items()):
        lines.append(f"| {name} | {n} | {k} | {ok}/{n} |")
    n_ok = sum(t[3] for t in trials)
    lines.append(f"| **all** | {len(trials)} | {sum(t[2] for t in trials)} | **{n_ok}/{len(trials)}** |")
    bad = [t for t in trials if not t[3]]
    disk_lines = [f"- disk full, {name}: {'identical store' if ok else 'NOT identical'} ({how})" for name, ok, how in disk]
    d_ok = sum(ok for _, ok, _ in disk)
    summary = (f"{n_ok}/{len(trials)} identical stores after random SIGKILLs; disk full: {d_ok}/{len(disk)}")
    print("\n".join(lines))
    print("\n".join(disk_lines))
    for t in bad:
        print(f"NOT identical: {t[0]} killed {t[1]}")
    print(summary)
    if not args.no_append:
        when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        text = [f"\n## faults: random SIGKILLs and full disks across every store writer ({when})", "",
                f"`python bench/faults.py --kills {args.kills} --seed {args.seed}`", "", *lines, "", *disk_lines,
                f"- {summary}",
                "- kills: 60% at a random named point of the writer's write windows (FEATHEADS_TEST_KILL_AT), 40% "
                "from outside at a random instant of the run; each followed by `store verify`, a check that the "
                "rows committed before are intact, the same call again, and a dataset-by-dataset comparison with "
                "an uninterrupted run (a kill point the run never reaches leaves the process alive: counted in "
                "runs, not in killed)",
                f"- {seconds:.0f} s in all; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                f"{platform.platform()}; load average (1 min) at start {load0:.1f}, at end {os.getloadavg()[0]:.1f} "
                "(the machine was shared with other processes)"]
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write("\n".join(text) + "\n")
    return 0 if n_ok == len(trials) and d_ok == len(disk) else 1


if __name__ == "__main__":
    sys.exit(main())
