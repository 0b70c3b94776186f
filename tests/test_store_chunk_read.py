"""store.chunk_read: row ranges read from the file's bytes equal h5py's reading, or it steps aside."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from store.chunk_read import read_row_range
from store.feature_store import FeatureStore


@pytest.fixture
def h5(tmp_path):
    path = tmp_path / "a.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", shape=(1000, 7), maxshape=(None, 7), chunks=(64, 7), dtype="f4", fillvalue=np.nan)
        x[0:300] = rng.normal(size=(300, 7))
        x[700:1000] = rng.normal(size=(300, 7))  # chunks in between never written: fill value
        s = f.create_dataset("status", shape=(1000,), maxshape=(None,), chunks=(128,), dtype="i1", fillvalue=0)
        s[::3] = 1
        f.create_dataset("gz", data=rng.normal(size=(500, 7)).astype("f4"), chunks=(64, 7), compression="gzip")
        f.create_dataset("cols", data=rng.normal(size=(500, 8)).astype("f4"), chunks=(64, 4))
        f.create_dataset("be", data=rng.normal(size=(500, 3)).astype(">f4"), chunks=(64, 3))
    return path


@pytest.mark.parametrize("lo,hi", [(0, 1000), (0, 0), (5, 6), (63, 65), (10, 299), (250, 800), (640, 704),
                                   (999, 1000), (300, 700)])
def test_equals_h5py_on_any_range(h5, lo, hi):
    with h5py.File(h5, "r", locking=False) as f:
        for name in ("x", "status"):
            got = read_row_range(f[name], lo, hi)
            want = f[name][lo:hi]
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)  # NaN == NaN here: the fill value of unwritten chunks


@pytest.mark.parametrize("name", ["gz", "cols", "be"])
def test_steps_aside_for_layouts_it_does_not_read(h5, name):
    with h5py.File(h5, "r", locking=False) as f:
        assert read_row_range(f[name], 0, 100) is None


def test_reads_into_the_columns_of_a_wider_array(h5):
    with h5py.File(h5, "r", locking=False) as f:
        wide = np.full((400, 10), -1, np.float32)
        assert read_row_range(f["x"], 250, 650, out=wide[:, 2:9]) is not None
        np.testing.assert_array_equal(wide[:, 2:9], f["x"][250:650])
        assert (wide[:, :2] == -1).all() and (wide[:, 9:] == -1).all()
        with pytest.raises(ValueError, match="out: shape"):
            read_row_range(f["x"], 0, 10, out=wide[:5, :7])


def test_steps_aside_in_a_file_open_for_writing(h5):
    with h5py.File(h5, "a", locking=False) as f:
        f["x"][0:10] = 5.0  # may sit in HDF5's chunk cache, not yet on disk
        assert read_row_range(f["x"], 0, 10) is None


def test_an_open_reader_keeps_its_version_across_a_replace(h5, tmp_path):
    """Reads go through the descriptor HDF5 holds, not the path: a commit (os.replace) that puts a
    new file in place does not change what an open reader reads."""
    with h5py.File(h5, "r", locking=False) as f:
        before = f["x"][0:300]
        other = tmp_path / "other.h5"
        with h5py.File(other, "w") as g:
            g.create_dataset("x", data=np.zeros((1000, 7), "f4"), chunks=(64, 7))
        os.replace(other, h5)
        np.testing.assert_array_equal(read_row_range(f["x"], 0, 300), before)


def test_store_reads_use_it_and_match_h5py(tmp_path, monkeypatch):
    import store.feature_store as fs
    from heads_fixtures import make_mtl_store

    path = tmp_path / "s.h5"
    make_mtl_store(path)
    served = []

    def counting(ds, lo, hi, out=None):
        out = read_row_range(ds, lo, hi, out)
        served.append(out is not None)
        return out

    monkeypatch.setattr(fs, "read_row_range", counting)
    with FeatureStore.open(path) as st:
        rows = st.rows("train")
        source = st.sources()[0]
        arrays = list(st.source_info(source)["arrays"])
        spec = "+".join(f"{source}.{a}" for a in arrays)
        X, valid = st.read_features(spec, rows)
        picked = rows[::5][::-1]  # a gather, out of order
        Xp, vp = st.read_features(spec, picked)
    assert served and all(served)  # every read of this store went through the file's bytes
    with h5py.File(path, "r", locking=False) as f:
        g = f["features"][source]
        want = np.concatenate([g[a][()][rows] for a in arrays], axis=1)
        np.testing.assert_array_equal(X, want)
        np.testing.assert_array_equal(valid, g["status"][()][rows] == 1)
        np.testing.assert_array_equal(Xp, np.concatenate([g[a][()][picked] for a in arrays], axis=1))
        np.testing.assert_array_equal(vp, g["status"][()][picked] == 1)


@pytest.mark.parametrize("rows", [[], [0], [5, 6, 7, 200, 201, 999], list(range(60, 70)) + [640, 703, 704],
                                  [299, 300, 301, 699, 700]])
def test_sorted_rows_equal_h5py(h5, rows):
    from store.chunk_read import read_sorted_rows

    rows = np.asarray(rows, dtype=np.int64)
    with h5py.File(h5, "r", locking=False) as f:
        for name in ("x", "status"):
            got = read_sorted_rows(f[name], rows)
            want = f[name][()][rows]
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        assert read_sorted_rows(f["gz"], rows[rows < 500]) is None


def test_scattered_windows_read_only_their_rows(tmp_path, monkeypatch):
    """A few scattered windows of a long split are read run by run (not the whole span between them),
    in the order asked for, repeats kept; a dense gather reads the covering slice."""
    import store.feature_store as fs

    path = tmp_path / "w.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = rng.normal(size=(20000, 64)).astype("f4")
        f.create_dataset("e", data=data, chunks=(128, 64))
    spans = []
    real = fs.read_row_range

    def counting(ds, lo, hi, out=None):
        spans.append(hi - lo)
        return real(ds, lo, hi, out)

    monkeypatch.setattr(fs, "read_row_range", counting)
    centres = rng.integers(4, 19996, size=50)
    rows = (centres[:, None] + np.arange(-4, 5)).ravel()  # out of order, overlapping windows repeat rows
    with h5py.File(path, "r", locking=False) as f:
        np.testing.assert_array_equal(fs._read_rows(f["e"], rows), data[rows])
        assert spans == []  # no covering slice was read
        dense = np.arange(100, 19000, 2)
        np.testing.assert_array_equal(fs._read_rows(f["e"], dense[::-1]), data[dense[::-1]])
        assert spans == [dense[-1] + 1 - dense[0]]
