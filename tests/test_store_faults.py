"""Crash consistency, proved by breaking it: real processes SIGKILLed inside every write window of every
writer (featurize run on a new store and adding rows, its merge, heads' prediction writes, blend apply,
OpenFace ingest), a small full filesystem, readers held open across writes, queued writers and shards.

Each writer runs in a forked child (a real process, cheap to start because the imports are done). The
test-only hook FEATHEADS_TEST_KILL_AT=<point>[:n] (`store.faults`) makes it SIGKILL itself the n-th
time it reaches a named point; the parent checks that it really died of SIGKILL there. Then: the store
opens, `store verify` passes, what was committed before is intact, and the same call again gives a store
equal, dataset by dataset and value by value, to an uninterrupted run's.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest

from store import FeatureStore
from store.inspect import verify
from featurize_fixtures import tiny_backbone, write_mtl_dataset

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------- helpers
def fork(fn, *, kill_at: str | None = None, env: dict | None = None, error_file: Path | None = None):
    """Run fn() in a forked child; returns its pid. kill_at: FEATHEADS_TEST_KILL_AT for the child."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            import torch

            torch.set_num_threads(1)
            if kill_at:
                os.environ["FEATHEADS_TEST_KILL_AT"] = kill_at
            os.environ.update(env or {})
            import store.faults

            store.faults._hits.clear()
            fn()
        except BaseException as e:  # noqa: BLE001 - report and exit non-zero
            if error_file is not None:
                error_file.write_text(f"{type(e).__name__}: {e}")
            traceback.print_exc()
            code = 3
        os._exit(code)
    return pid


def wait(pid: int, timeout: float = 60) -> int:
    """Wait status of a child (killing it after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("child process hung")
        time.sleep(0.01)


def run_child(fn, **kw) -> int:
    return wait(fork(fn, **kw))


def assert_ok(status: int):
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: wait status {status}"


def assert_killed(status: int, point: str):
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the writer never reached {point} (wait status {status})")


def dump(path) -> dict:
    """Every dataset of the file, by name, as numpy values (strings decoded)."""
    out = {}
    with h5py.File(path, "r", locking=False) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) else obj[()]
        f.visititems(visit)
    return out


def same_values(x, y) -> bool:
    """The same shape and values (NaN equal to NaN)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    if x.dtype.kind == "f":
        return bool(np.array_equal(x, y, equal_nan=True))
    return x.tolist() == y.tolist()


def differing(a: dict, b: dict) -> list[str]:
    """Names of the datasets in which two dumps differ: in one of them only, or other shapes or values."""
    return sorted(set(a) ^ set(b)) + [k for k in sorted(set(a) & set(b)) if not same_values(a[k], b[k])]


def changed(after: dict, before: dict) -> list[str]:
    """Names of the datasets of `before` whose rows are not all still there, unchanged, in `after`."""
    return [k for k, v in before.items() if k not in after or not same_values(np.asarray(after[k])[: len(v)], v)]


def assert_same(a: dict, b: dict):
    bad = differing(a, b)
    assert not bad, f"datasets differ: {bad}"


def assert_sound(path):
    with FeatureStore.open(path) as st:
        errors = verify(st)
    assert not errors, errors


def assert_contains(after: dict, before: dict):
    """Everything committed before is still there: the old rows of every old dataset are unchanged."""
    bad = changed(after, before)
    assert not bad, f"datasets changed: {bad}"


# ---------------------------------------------------------------------- featurize run
def featurize(ann, images, store, split, batch_size=2):
    from featurize.images import open_image_root
    from featurize.pipeline import FeaturizeConfig, featurize_samples
    from featurize.readers import read_abaw_mtl

    def fn(shard=None):
        featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=store, split=split,
                          backbone=tiny_backbone(), shard=shard,
                          config=FeaturizeConfig(batch_size=batch_size, workers=0, part_rows=2, progress=False))
    return fn


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two datasets (train, val), the store after train (the "before" of adding rows) and after both."""
    d = tmp_path_factory.mktemp("faults")
    a = write_mtl_dataset(d / "a", videos=2, frames=3, seed=1)
    b = write_mtl_dataset(d / "b", videos=2, frames=3, seed=2)
    b_ann = d / "b" / "val.txt"  # other keys than a's: video names with a prefix
    b_ann.write_text(b[0].read_text().replace("video", "val_video"))
    for p in (b[1]).iterdir():
        p.rename(p.with_name("val_" + p.name))
    after_a, after_ab = d / "after_a.h5", d / "after_ab.h5"
    assert_ok(run_child(featurize(a[0], a[1], after_a, "train")))
    shutil.copy(after_a, after_ab)
    assert_ok(run_child(featurize(b_ann, b[1], after_ab, "val")))
    return {"a": (a[0], a[1]), "b": (b_ann, b[1]), "after_a": after_a, "after_ab": after_ab}


NEW_STORE_POINTS = [
    "store-copied", "add-samples", "create-source", "commit-closed", "commit-fsynced", "commit-replaced",
    "journal-part", "journal-part:2", "store-copied:2", "write-features", "commit-closed:2",
    "commit-replaced:2", "merge-removed",
]
ADD_ROWS_POINTS = ["store-copied", "add-samples", "commit-fsynced", "commit-replaced", "write-features",
                   "commit-fsynced:2", "commit-replaced:2", "merge-removed"]


@pytest.mark.parametrize("point", NEW_STORE_POINTS)
def test_featurize_new_store_killed_at(tmp_path, data, point):
    store = tmp_path / "s.h5"
    fn = featurize(*data["a"], store, "train")
    assert_killed(run_child(fn, kill_at=point), point)
    if store.exists():
        assert_sound(store)
    assert_ok(run_child(fn))
    assert_sound(store)
    assert_same(dump(store), dump(data["after_a"]))


@pytest.mark.parametrize("point", ADD_ROWS_POINTS)
def test_featurize_adding_rows_killed_at(tmp_path, data, point):
    store = tmp_path / "s.h5"
    shutil.copy(data["after_a"], store)
    before = dump(store)
    fn = featurize(*data["b"], store, "val")
    assert_killed(run_child(fn, kill_at=point), point)
    assert_sound(store)
    assert_contains(dump(store), before)
    assert_ok(run_child(fn))
    assert_sound(store)
    assert_same(dump(store), dump(data["after_ab"]))


def test_featurize_random_kills(tmp_path, data):
    """SIGKILL from outside at random instants of a whole run (seeded), then the same call again."""
    rng = random.Random(9)
    t0 = time.monotonic()
    probe = tmp_path / "probe.h5"
    shutil.copy(data["after_a"], probe)
    assert_ok(run_child(featurize(*data["b"], probe, "val")))
    span = time.monotonic() - t0
    for i in range(4):
        store = tmp_path / f"s{i}.h5"
        shutil.copy(data["after_a"], store)
        before = dump(store)
        fn = featurize(*data["b"], store, "val")
        pid = fork(fn)
        time.sleep(rng.uniform(0.0, span))
        os.kill(pid, signal.SIGKILL)
        wait(pid)
        assert_sound(store)
        assert_contains(dump(store), before)
        assert_ok(run_child(fn))
        assert_same(dump(store), dump(data["after_ab"]))


# ---------------------------------------------------------------------- prediction writers
@pytest.fixture(scope="module")
def pred_store(tmp_path_factory):
    from blend_fixtures import write_mtl_store

    d = tmp_path_factory.mktemp("preds")
    return write_mtl_store(d / "s.h5", n_videos=3, n_frames=20)


def heads_write(store):
    def fn():
        from heads.predicting import write_predictions

        with FeatureStore.open(store) as st:
            rows = st.rows()
        rng = np.random.default_rng(0)
        n = len(rows)
        preds = {"expr": rng.random((n, 8)).astype(np.float32), "va": rng.random((n, 2)).astype(np.float32),
                 "au": rng.random((n, 12)).astype(np.float32)}
        write_predictions(store, "fitted", preds, rows, run_attrs={"train": "val"},
                          head_attrs={"expr": {"head": "linear", "features": "x"}})
    return fn


def blend_apply(store, spec_path):
    def fn():
        from blend.apply import apply_spec
        from blend.spec import read_spec

        apply_spec(read_spec(spec_path), store, "val", name="final")
    return fn


def _expr_spec(path: Path) -> Path:
    from blend.spec import FORMAT

    path.write_text(json.dumps({"format": FORMAT, "version": 1, "task": "expr", "tasks": {
        "expr": {"weights": {"mlp": 0.6, "openface": 0.4}, "smoothing": {"kind": "none"}}}}))
    return path


PREDICTION_POINTS = ["store-copied", "write-predictions", "write-predictions:2", "commit-closed", "commit-fsynced",
                     "commit-replaced"]


@pytest.mark.parametrize("writer,point", [("heads", p) for p in PREDICTION_POINTS]
                         + [("blend", p) for p in PREDICTION_POINTS if p != "write-predictions:2"])  # one array
def test_prediction_writers_killed_at(tmp_path, pred_store, writer, point):
    ref, store = tmp_path / "ref.h5", tmp_path / "s.h5"
    shutil.copy(pred_store, ref)
    shutil.copy(pred_store, store)
    make = heads_write if writer == "heads" else (lambda s: blend_apply(s, _expr_spec(tmp_path / "spec.json")))
    assert_ok(run_child(make(ref)))
    before = dump(store)
    assert_killed(run_child(make(store), kill_at=point), point)
    assert_sound(store)
    after = dump(store)
    assert_contains(after, before)
    assert sorted(after) in (sorted(before), sorted(dump(ref)))  # all or nothing
    assert_ok(run_child(make(store)))
    assert_same(dump(store), dump(ref))


def kill_then_rerun(make, ref: Path, store: Path, point: str) -> None:
    """make(path) -> a writer of `path`: uninterrupted into `ref`; into `store` killed at `point` (the store
    stays sound and keeps what it had), then again: equal to `ref`."""
    assert_ok(run_child(make(ref)))
    before = dump(store)
    assert_killed(run_child(make(store), kill_at=point), point)
    assert_sound(store)
    assert_contains(dump(store), before)
    assert_ok(run_child(make(store)))
    assert_same(dump(store), dump(ref))


@pytest.mark.parametrize("point", ["store-copied", "create-source", "write-features", "commit-replaced"])
def test_openface_ingest_killed_at(tmp_path, point):
    from openface_fixtures import make_frames, make_store, write_sequence_csv

    make_frames(tmp_path / "img" / "a", [f"{i:05d}.png" for i in range(1, 6)])
    write_sequence_csv(tmp_path / "csv" / "a.csv", 5, success=[1, 1, 0, 1, 1])
    keys = ["a/00001.png", "a/00003.png", "a/00005.png"]
    ref, store = make_store(tmp_path / "ref.h5", keys), make_store(tmp_path / "s.h5", keys)

    def ingest(path):
        def fn():
            from featurize.openface import ingest as run_ingest

            run_ingest(path, tmp_path / "csv", images=tmp_path / "img", progress=False)
        return fn

    kill_then_rerun(ingest, ref, store, point)


@pytest.mark.parametrize("point", ["store-copied", "create-source", "write-features", "commit-replaced"])
def test_faces_ingest_killed_at(tmp_path, point):
    """`featurize faces-ingest` (detections -> source `faces`), from a hand-written faces_index.jsonl."""
    import json

    from openface_fixtures import make_store

    crops = tmp_path / "crops"
    crops.mkdir()
    records = [{"file": "clip.mp4", "key": f"clip/{i:05d}.jpg", "found": i != 2, "box": [1, 2, 30, 40],
                "score": 0.99, "landmarks": [[i, 2 * i]] * 5} for i in range(1, 5)]
    (crops / "faces_index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records)
                                             + json.dumps({"file": "clip.mp4", "done": True}) + "\n")
    keys = [r["key"] for r in records]
    ref, store = make_store(tmp_path / "ref.h5", keys), make_store(tmp_path / "s.h5", keys)

    def ingest(path):
        def fn():
            from featurize.faces_ingest import ingest_faces

            ingest_faces(path, crops)
        return fn

    kill_then_rerun(ingest, ref, store, point)


# ---------------------------------------------------------------------- readers, queued writers, shards
READER = """
import sys, time
from store import FeatureStore
st = FeatureStore.open(sys.argv[1])           # held open across the whole run
n0 = st.n_rows
print("open", flush=True)
reads = 0
while sys.stdin.readline().strip() != "stop":
    pass
X, valid = st.read_features("tiny.embeddings")
assert st.n_rows == n0 and len(X) == n0, "a reader must keep seeing the version it opened"
with FeatureStore.open(sys.argv[1]) as again:   # a new reader sees the last commit
    print("rows", n0, again.n_rows, flush=True)
st.close()
"""


def test_reader_held_open_across_a_whole_run(tmp_path, data):
    store = tmp_path / "s.h5"
    shutil.copy(data["after_a"], store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert reader.stdout.readline().strip() == "open"
        assert_ok(run_child(featurize(*data["b"], store, "val")))
        out, _ = reader.communicate("stop\n", timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0
    n_a, n_ab = len(dump(data["after_a"])["samples/key"]), len(dump(data["after_ab"])["samples/key"])
    assert out.split() == ["rows", str(n_a), str(n_ab)]
    assert_same(dump(store), dump(data["after_ab"]))


def test_second_writer_waits_then_finishes(tmp_path, data):
    """Two featurize runs on one store at once (other splits): both finish, the store holds both."""
    store = tmp_path / "s.h5"
    one = fork(featurize(*data["a"], store, "train"))
    two = fork(featurize(*data["b"], store, "val"))
    assert_ok(wait(one))
    assert_ok(wait(two))
    assert_sound(store)
    with FeatureStore.open(store) as st:
        assert st.splits() == ["train", "val"]
        assert (st.source_status("tiny") == 1).all() or set(st.source_status("tiny").tolist()) <= {1, 2}
        assert 0 not in st.source_status("tiny")
    assert not (tmp_path / "s.h5.parts").exists()  # every part merged and removed under the lock


def test_waiting_writer_says_who_holds_the_lock(tmp_path):
    from store.errors import StoreLockedError

    store = tmp_path / "s.h5"
    FeatureStore.open(store, "a").close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from store import FeatureStore; st = FeatureStore.open(sys.argv[1], 'a');"
         " print('locked', flush=True); time.sleep(float(sys.argv[2])); st.close()", str(store), "1.5"],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        heard = []
        with pytest.raises(StoreLockedError, match=r"another process is writing .*pid \d+ on .* since .*waited 0.2 s"):
            FeatureStore.open(store, "a", wait=0.2)
        from store.lock import WriterLock

        lock = WriterLock(str(store))
        lock.acquire(30, say=heard.append)  # waits for the holder to finish
        lock.release()
        assert len(heard) == 1 and f"pid {holder.pid} on " in heard[0] and "waiting up to 30 s" in heard[0]
    finally:
        holder.kill()
        holder.wait()


def test_four_concurrent_shards_equal_one_run(tmp_path):
    """Batch size 1: a batch of other images may change features in the last float bit (docs/SCALE.md)."""
    ann, images, _ = write_mtl_dataset(tmp_path / "d", videos=5, frames=3, seed=4)
    one, sharded = tmp_path / "one.h5", tmp_path / "sharded.h5"
    assert_ok(run_child(featurize(ann, images, one, "train", batch_size=1)))
    fn = featurize(ann, images, sharded, "train", batch_size=1)
    pids = [fork(lambda i=i: fn(shard=(i, 4))) for i in range(4)]
    for pid in pids:
        assert_ok(wait(pid))
    assert_sound(sharded)
    assert_same(dump(sharded), dump(one))


def test_shards_keep_videos_whole_and_cover_every_row():
    from featurize.pipeline import shard_from_env, shard_rows
    from featurize.readers import Sample

    samples = [Sample(key=f"v{v}/{f:05d}.jpg", video=f"v{v}", frame=f, image=f"v{v}/{f:05d}.jpg")
               for v in range(7) for f in range(1 + v % 3)]
    parts = [shard_rows(samples, i, 3) for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(samples)))
    for p in parts:
        videos = {samples[i].key.split("/")[0] for i in p}
        for q in parts:
            if q is not p:
                assert not videos & {samples[i].key.split("/")[0] for i in q}
    assert [len(p) for p in parts] == [len(p) for p in (shard_rows(samples, i, 3) for i in range(3))]
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}) == (1, 3)
    assert shard_from_env({}) is None


# ---------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or 'not root'})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    filler = folder / ("filler" if not (folder / "filler").exists() else "filler2")
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("checked", [True, False], ids=["free-space-check", "hdf5-enospc"])
def test_full_disk_keeps_the_store_and_the_rerun_completes(small_disk, tmp_path, data, checked):
    store = small_disk / "s.h5"
    shutil.copy(data["after_a"], store)
    before = dump(store)
    filler = _fill(small_disk, leave=os.path.getsize(store) + (300 << 10))
    err = tmp_path / "err.txt"

    def fn():
        if not checked:  # let the write itself hit ENOSPC inside HDF5 (as when another process fills the disk)
            import store.feature_store as fs

            fs.ensure_free_space = lambda *a, **k: None
        featurize(*data["b"], store, "val")()

    if checked:
        status = run_child(fn, error_file=err)
    else:  # fill the disk to the last byte once the new version of the store is written, then go on
        marker = tmp_path / "paused"
        pid = fork(fn, error_file=err, env={"FEATHEADS_TEST_PAUSE_AT": "store-copied",
                                             "FEATHEADS_TEST_PAUSE_FILE": str(marker)})
        _, stopped = os.waitpid(pid, os.WUNTRACED)  # returns once the child has stopped itself there
        assert os.WIFSTOPPED(stopped) and marker.read_text() == "store-copied", stopped
        filler2 = _fill(small_disk, leave=0)
        os.kill(pid, signal.SIGCONT)
        status = wait(pid)
        filler2.rename(small_disk / "filler2")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, f"no clean error (wait status {status})"
    message = err.read_text()
    assert "\n" not in message and str(store) in message and "MB free" in message, message
    assert "disk full" in message or "No space left" in message, message
    assert_sound(store)
    assert_contains(dump(store), before)
    for p in small_disk.glob("filler*"):
        p.unlink()
    assert_ok(run_child(featurize(*data["b"], store, "val")))
    assert_same(dump(store), dump(data["after_ab"]))


@pytest.mark.parametrize("point", ["store-copied", "write-features", "commit-closed"])
def test_io_error_is_one_line_and_keeps_the_store(tmp_path, data, point):
    store = tmp_path / "s.h5"
    shutil.copy(data["after_a"], store)
    before = dump(store)
    err = tmp_path / "err.txt"
    status = run_child(featurize(*data["b"], store, "val"), env={"FEATHEADS_TEST_EIO_AT": point}, error_file=err)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, status
    message = err.read_text()
    assert message.startswith(f"StoreError: {store}: I/O error while writing the store") and "\n" not in message
    assert_sound(store)
    assert_contains(dump(store), before)  # the failed session left what was committed before it
    assert_ok(run_child(featurize(*data["b"], store, "val")))
    assert_same(dump(store), dump(data["after_ab"]))
