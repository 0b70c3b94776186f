"""Safe opening, locks, size, recovery and merging of stores (docs/STORE.md), each tried against a break."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from store import FeatureStore, StoreError, StoreLockedError
from store.cli import main as store_cli
from store.inspect import verify
from store.journal import Journal
from store.lock import WriterLock

TESTS = Path(__file__).resolve().parent


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def small_store(path, n=20, width=4):
    rng = np.random.default_rng(0)
    keys = [f"v{i // 5}/{i % 5:05d}.jpg" for i in range(n)]
    with FeatureStore.open(path, "a") as st:
        rows = st.add_samples(keys, split="train", labels={"expr": rng.integers(-1, 8, n)})
        st.create_source("src", identity={"backbone": "b"}, arrays={"embeddings": (width, None)})
        st.write_features("src", rows, {"embeddings": rng.random((n, width))}, np.ones(n, np.int8))
        st.write_predictions("run", "expr", rng.random((n, 8)))
    return path


def test_foreign_hdf5_is_refused_and_left_unchanged(tmp_path):
    p = tmp_path / "model.hdf5"
    with h5py.File(p, "w") as f:  # a Keras-style weights file
        f.create_dataset("model_weights/dense/kernel", data=np.ones((3, 3)))
        f.attrs["keras_version"] = "2.4"
    before = sha(p)
    with pytest.raises(StoreError, match=f"not a featheads store: {p}"):
        FeatureStore.open(p, "a")
    assert sha(p) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.hdf5", "model.hdf5.lock"]
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(StoreError, match="not a featheads store"):
        FeatureStore.open(tmp_path / "notes.h5", "a")


def test_store_in_a_missing_folder_is_one_line_before_any_model(tmp_path):
    from featurize.cli import main as featurize_cli

    missing = tmp_path / "nope" / "s.h5"
    with pytest.raises(StoreError, match="folder .*nope does not exist"):
        FeatureStore.open(missing, "a")
    (tmp_path / "img").mkdir()
    res = CliRunner().invoke(featurize_cli, ["run", "--source", "images", "--images", str(tmp_path / "img"),
                                             "--split", "x", "--store", str(missing), "--backbone", "no-such-model"])
    assert res.exit_code == 1 and "does not exist; create it first" in res.output, res.output
    assert "no-such-model" not in res.output and "Traceback" not in res.output
    assert not (tmp_path / "nope").exists()
    with h5py.File(tmp_path / "keras.hdf5", "w") as f:
        f.create_dataset("model_weights", data=np.ones(3))
    before = sha(tmp_path / "keras.hdf5")
    res = CliRunner().invoke(featurize_cli, ["run", "--source", "images", "--images", str(tmp_path / "img"),
                                             "--split", "x", "--store", str(tmp_path / "keras.hdf5"),
                                             "--backbone", "no-such-model"])
    assert res.exit_code == 1 and "not a featheads store" in res.output and "no-such-model" not in res.output
    assert sha(tmp_path / "keras.hdf5") == before


def test_aborted_session_leaves_the_committed_store(tmp_path):
    p = small_store(tmp_path / "s.h5")
    before = sha(p)
    with pytest.raises(RuntimeError):
        with FeatureStore.open(p, "a") as st:
            st.add_samples(["new/00001.jpg"], split="train")
            raise RuntimeError("boom")
    assert sha(p) == before
    assert [x.name for x in tmp_path.iterdir() if ".tmp-" in x.name] == []


def test_a_reader_sees_the_version_it_opened_and_never_blocks(tmp_path):
    p = small_store(tmp_path / "s.h5")
    reader = FeatureStore.open(p)
    with FeatureStore.open(p, "a", wait=0) as st:  # no HDF5 file-lock error while a reader is open
        st.add_samples([f"w/{i:05d}.jpg" for i in range(5)], split="val")
    assert reader.n_rows == 20 and reader.read_features("src.embeddings")[0].shape == (20, 4)
    reader.close()
    with FeatureStore.open(p) as st:
        assert st.n_rows == 25 and not verify(st)


def test_unwritten_rows_take_no_space_and_size_stays_near_the_arrays(tmp_path):
    p = tmp_path / "s.h5"
    rng = np.random.default_rng(1)
    for i in range(4):  # grow the store 4 times, as 4 runs adding splits do (B0 width: 1280)
        n = 2500
        keys = [f"video{i}_{j // 100}/{j % 100:05d}.jpg" for j in range(n)]
        with FeatureStore.open(p, "a") as st:
            rows = st.add_samples(keys, split=f"s{i}", labels={"va": rng.uniform(-1, 1, (n, 2))})
            st.create_source("src", identity={"b": 1}, arrays={"embeddings": (1280, None), "logits": (10, None)})
            st.write_features("src", rows, {"embeddings": rng.random((n, 1280)), "logits": rng.random((n, 10))},
                              np.ones(n, np.int8))
        with FeatureStore.open(p, "a") as st:
            st.write_predictions("run", "expr", rng.random((st.n_rows, 8)))
    arrays = 0
    with h5py.File(p, "r") as f:
        def add(_, obj):
            nonlocal arrays
            if isinstance(obj, h5py.Dataset):
                # a string array: its UTF-8 bytes and the 16-byte reference HDF5 keeps for each string
                strings = h5py.check_string_dtype(obj.dtype)
                arrays += sum(len(x) + 16 for x in obj[()]) if strings else obj.nbytes
        f.visititems(add)
    assert os.path.getsize(p) <= 1.05 * arrays, (os.path.getsize(p), arrays)
    with FeatureStore.open(p, "a") as st:  # adding rows and no features: the new rows take no feature chunks
        st.add_samples([f"extra/{j:05d}.jpg" for j in range(8192)], split="extra")
    with h5py.File(p, "r") as f:
        ds = f["features/src/embeddings"]
        assert ds.id.get_storage_size() <= (10000 + 204) * 1280 * 4
        assert np.isnan(ds[-5:]).all() and (f["features/src/status"][-5:] == 0).all()


def test_lock_failure_of_the_filesystem_and_the_lock_file_way_out(tmp_path, monkeypatch):
    import fcntl

    p = str(small_store(tmp_path / "s.h5"))

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    with monkeypatch.context() as m:
        m.setattr(fcntl, "flock", no_locks)
        with pytest.raises(StoreError, match="does not support file locks .*FEATHEADS_STORE_LOCK=file"):
            FeatureStore.open(p, "a")
    monkeypatch.setenv("FEATHEADS_STORE_LOCK", "file")
    holder = WriterLock(p)
    holder.acquire(0)
    with pytest.raises(StoreLockedError, match=r"another process is writing .*pid \d+ on "):
        FeatureStore.open(p, "a", wait=0.1)
    holder.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    Path(p + ".lock.excl").write_text(f"pid {dead.stdout.strip()} on {socket.gethostname()} since x: killed")
    with FeatureStore.open(p, "a", wait=0) as st:  # a lock file of a dead process of this host is stale
        st.add_samples(["x/00001.jpg"], split="train")
    assert not Path(p + ".lock.excl").exists()


def _corrupt_chunk(path, name):
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


def test_repair_saves_every_readable_part(tmp_path):
    p = small_store(tmp_path / "old.h5")
    with h5py.File(p, "a") as f:  # damage as an older version or a bad disk could: a compressed array with
        g = f["features"].create_group("broken")  # an unreadable chunk, and a prediction of the wrong length
        g.attrs["identity"] = "{}"
        g.create_dataset("embeddings", data=np.ones((20, 3), np.float32), chunks=(20, 3), compression="gzip")
        g.create_dataset("status", data=np.ones(20, np.int8))
        f["predictions/run"].create_dataset("au", data=np.zeros((7, 12), np.float32))
    _corrupt_chunk(p, "features/broken/embeddings")
    res = CliRunner().invoke(store_cli, ["verify", str(p)])
    assert res.exit_code != 0
    res = CliRunner().invoke(store_cli, ["verify", "--repair", str(p), "--out", str(tmp_path / "saved.h5")])
    assert res.exit_code == 0, res.output
    assert "features/broken/embeddings: lost" in res.output and "predictions/run/au: lost" in res.output
    with FeatureStore.open(tmp_path / "saved.h5") as new, FeatureStore.open(small_store(tmp_path / "ref.h5")) as ref:
        assert not verify(new)
        assert new.samples()["key"].tolist() == ref.samples()["key"].tolist()
        np.testing.assert_array_equal(new.labels("expr"), ref.labels("expr"))
        np.testing.assert_array_equal(new.read_features("src")[0], ref.read_features("src")[0])
        np.testing.assert_array_equal(new.read_predictions("run", "expr"), ref.read_predictions("run", "expr"))
        assert new.sources() == ["src"]


def test_store_merge_writes_the_parts_and_removes_them(tmp_path):
    p = small_store(tmp_path / "s.h5")
    with FeatureStore.open(p) as st:
        identity = st.source_info("src")["identity"]
        keys = st.samples()["key"].tolist()
    Journal(p, "src", identity).write_part(keys[:3], {"embeddings": np.full((3, 4), 7.0)}, np.ones(3, np.int8))
    res = CliRunner().invoke(store_cli, ["merge", str(p)])
    assert res.exit_code == 0 and "merged 3 rows of src" in res.output, res.output
    with FeatureStore.open(p) as st:
        assert (st.read_features("src")[0][:3] == 7).all()
    assert not (tmp_path / "s.h5.parts").exists()
    assert "no journal parts" in CliRunner().invoke(store_cli, ["merge", str(p)]).output


def test_a_damaged_store_says_what_to_do(tmp_path):
    p = small_store(tmp_path / "s.h5", n=20)
    _corrupt_chunk(p, "features/src/embeddings")
    res = CliRunner().invoke(store_cli, ["verify", str(p)])
    assert res.exit_code == 1 and "--repair" in res.output and "store verify --store" in res.output, res.output
    assert "Traceback" not in res.output


def test_dead_space_is_compacted_and_the_store_stays_appendable(tmp_path):
    p = tmp_path / "s.h5"
    n = 50000
    rng = np.random.default_rng(3)
    with FeatureStore.open(p, "a") as st:
        st.add_samples([f"v{i // 100}/{i % 100:05d}.jpg" for i in range(n)], split="train")
        st.write_predictions("run", "expr", rng.random((n, 8)))
        st.write_predictions("later", "expr", rng.random((n, 8)))  # after it in the file
    big = os.path.getsize(p)
    scores = rng.random(n).astype(np.float32)
    with FeatureStore.open(p, "a") as st:  # another shape: the old (n, 8) array is deleted, its space is dead
        st.write_predictions("run", "expr", scores)
    assert os.path.getsize(p) < big - n * 8 * 4 * 0.7
    with FeatureStore.open(p, "a") as st:
        st.add_samples(["extra/00001.jpg"], split="val")
    with FeatureStore.open(p) as st:
        assert not verify(st) and st.n_rows == n + 1
        np.testing.assert_array_equal(st.read_predictions("run", "expr")[:n], scores)
        assert np.isnan(st.read_predictions("run", "expr")[n])


def test_string_heap_is_counted_in_utf8_bytes(tmp_path):
    """The dead-space check counts a variable-length string by its stored UTF-8 bytes (a non-ASCII key
    takes more than one byte per character), and fixed-length strings by their storage alone."""
    import h5py

    from store.feature_store import _array_bytes

    sizes = {}
    for name, text in (("ascii", "e" * 10), ("accents", "é" * 10)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("s", data=[text] * 100, dtype=h5py.string_dtype())
            f.create_dataset("fixed", data=np.array([b"abcd"] * 100, dtype="S4"))
        with h5py.File(tmp_path / f"{name}.h5", "r") as f:
            storage = sum(f[k].id.get_storage_size() for k in ("s", "fixed"))
            sizes[name] = _array_bytes(f) - storage
    assert sizes == {"ascii": 100 * (16 + 16), "accents": 100 * (16 + 24)}  # 10 and 20 bytes, padded to 8
