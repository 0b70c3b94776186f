"""The feature store: its Python API, `store info`, `store verify`, the writer lock."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from store import (
    STATUS_INVALID,
    STATUS_MISSING,
    STATUS_OK,
    FeatureStore,
    FingerprintMismatchError,
    StoreError,
    StoreLockedError,
)
from store.cli import main as store_cli

KEYS = ["v1/00001.jpg", "v1/00002.jpg", "v2/00007.jpg"]
EXPR = np.array([0, -1, 7])
VA = np.array([[0.1, -0.2], [np.nan, np.nan], [0.5, 0.9]])
AU = np.array([[0] * 12, [1] * 12, [-1] * 12])


def make_store(path):
    with FeatureStore.open(path, "a") as st:
        st.add_samples(KEYS, split="train", frames=[1, 2, 7], labels={"expr": EXPR, "va": VA, "au": AU})
        st.create_source("bb", identity={"backbone": "bb", "sha256": "aa"},
                         arrays={"embeddings": (4, None), "logits": (2, ["x", "y"])})
        st.write_features("bb", np.array([0, 2]), {"embeddings": np.ones((2, 4)), "logits": np.zeros((2, 2))},
                          status=np.array([STATUS_OK, STATUS_INVALID]))
    return path


def test_round_trip(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with FeatureStore.open(p) as st:
        assert st.n_rows == 3
        assert st.splits() == ["train"]
        np.testing.assert_array_equal(st.labels("expr"), EXPR)
        np.testing.assert_array_equal(st.labels("au"), AU)
        np.testing.assert_allclose(st.labels("va"), VA.astype(np.float32))
        np.testing.assert_array_equal(st.label_mask("va", st.labels("va")), [True, False, True])
        np.testing.assert_array_equal(st.label_mask("au", st.labels("au")), [True, True, False])
        smp = st.samples()
        assert list(smp["video"]) == ["v1", "v1", "v2"] and list(smp["frame"]) == [1, 2, 7]
        assert list(smp) == ["key", "video", "split", "frame"]
        some = st.samples(np.array([2, 0]), columns=("frame", "video"))  # only those columns are read
        assert list(some) == ["frame", "video"] and list(some["video"]) == ["v2", "v1"]
        assert list(some["frame"]) == [7, 1]
        with pytest.raises(ValueError, match="unknown sample column 'label'"):
            st.samples(columns=("label",))
        X, valid = st.read_features("bb.embeddings+bb.logits")
        assert X.shape == (3, 6)
        np.testing.assert_array_equal(valid, [True, False, False])
        np.testing.assert_array_equal(X[0], [1, 1, 1, 1, 0, 0])
        assert np.isnan(X[1:]).all()  # not computed, and invalid: NaN
        np.testing.assert_array_equal(st.source_status("bb"), [STATUS_OK, STATUS_MISSING, STATUS_INVALID])
        assert st.feature_names("bb.logits") == ["bb.logits.x", "bb.logits.y"]
        assert st.parse_feature_spec("bb") == [("bb", "embeddings"), ("bb", "logits")]


def test_re_adding_same_rows_is_a_no_op_and_new_rows_grow_every_dataset(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with FeatureStore.open(p, "a") as st:
        rows = st.add_samples(KEYS, split="train", frames=[1, 2, 7], labels={"expr": EXPR, "va": VA, "au": AU})
        np.testing.assert_array_equal(rows, [0, 1, 2])
        st.write_predictions("run", "expr", np.full((3, 8), 0.125))
        rows = st.add_samples(["v3/00001.jpg"], split="val", labels={"expr": [4]})
        assert list(rows) == [3]
    with FeatureStore.open(p) as st:
        assert st.n_rows == 4
        assert st.source_status("bb")[3] == STATUS_MISSING
        assert np.isnan(st.read_predictions("run", "expr")[3]).all()
        assert st.labels("au")[3].tolist() == [-1] * 12 and np.isnan(st.labels("va")[3]).all()
        assert list(st.rows("val")) == [3]


def test_conflicting_rows_are_refused_with_the_key(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with FeatureStore.open(p, "a") as st:
        with pytest.raises(StoreError, match="v1/00001.jpg.*split 'train', not 'val'"):
            st.add_samples(["v1/00001.jpg"], split="val")
        with pytest.raises(StoreError, match="v2/00007.jpg.*other 'expr' labels"):
            st.add_samples(KEYS, split="train", labels={"expr": [0, -1, 3]})
        with pytest.raises(StoreError, match="appears twice"):
            st.add_samples(["a/1.jpg", "a/1.jpg"], split="train")
    with FeatureStore.open(p) as st:  # nothing was lost
        assert st.n_rows == 3 and st.labels("expr").tolist() == EXPR.tolist()


def test_features_of_another_model_never_land_in_a_source(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with FeatureStore.open(p, "a") as st:
        with pytest.raises(FingerprintMismatchError) as e:
            st.create_source("bb", identity={"backbone": "bb", "sha256": "bb"}, arrays={"embeddings": (4, None)})
    assert "sha256: 'aa' -> 'bb'" in str(e.value) and "backbone" not in str(e.value)  # only what differs
    with FeatureStore.open(p, "a") as st:  # the same identity is accepted again
        st.create_source("bb", identity={"sha256": "aa", "backbone": "bb"}, arrays={"embeddings": (4, None)})


def test_a_fingerprint_mismatch_names_only_the_fields_that_differ_and_stays_short():
    from store.errors import identity_diff

    names = [f"class_{i}" for i in range(1000)]
    old = {"backbone": "b", "logit_names": names, "precision": "fp32"}
    text = identity_diff(old, {**old, "precision": "bf16"})
    assert text == "precision: 'fp32' -> 'bf16'"
    text = identity_diff(old, {**old, "logit_names": names[:-1] + ["x"], "extra": 1})
    assert len(text) < 200 and text.startswith("extra: (none) -> 1; logit_names: ['class_0'")
    many = identity_diff({str(i): i for i in range(10)}, {str(i): -i for i in range(1, 11)})
    assert many.endswith("and 5 more field(s)")


def test_second_writer_gets_a_clear_error(tmp_path):
    p = make_store(tmp_path / "s.h5")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from store import FeatureStore; st = FeatureStore.open(sys.argv[1], 'a'); "
         "print('locked', flush=True); time.sleep(60)", str(p)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match="another process is writing"):
            FeatureStore.open(p, "a", wait=0)
    finally:
        holder.kill()
        holder.wait()
    with FeatureStore.open(p, "a") as st:  # the lock dies with its holder, even on kill -9
        assert st.n_rows == 3


def test_read_only_store_refuses_writes_and_unknown_names(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with FeatureStore.open(p) as st:
        with pytest.raises(StoreError, match="read-only"):
            st.add_samples(["x/1.jpg"], split="train")
        with pytest.raises(StoreError, match="no split 'test'; splits in the store: train"):
            st.rows("test")
        with pytest.raises(StoreError, match="no feature source 'nope'; sources: bb"):
            st.read_features("nope.embeddings")
        with pytest.raises(StoreError, match="has no array 'values'"):
            st.read_features("bb.values")
    with pytest.raises(StoreError, match="no such store"):
        FeatureStore.open(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="cannot open"):
        FeatureStore.open(tmp_path / "junk.h5")


def test_info_cli(tmp_path):
    p = make_store(tmp_path / "s.h5")
    res = CliRunner().invoke(store_cli, ["info", str(p)])
    assert res.exit_code == 0, res.output
    assert "3 rows" in res.output
    assert "labels expr" in res.output and "labels au" in res.output
    assert "bb: embeddings (4,) float32, logits (2,) float32; ok 1, invalid 1, missing 1" in res.output
    assert "sha256=aa" in res.output
    res = CliRunner().invoke(store_cli, ["info", "--json", str(p)])
    assert '"labels"' in res.output


def test_verify_passes_a_sound_store_and_lists_violations(tmp_path):
    p = make_store(tmp_path / "s.h5")
    res = CliRunner().invoke(store_cli, ["verify", str(p)])
    assert res.exit_code == 0 and "OK (3 rows)" in res.output
    with h5py.File(p, "a") as f:  # break invariants behind the API's back
        f["labels/expr"][1] = 9
        f["labels/au"][0, 3] = -1
        f["features/bb/embeddings"][0, 0] = np.inf
        f["samples/key"][2] = KEYS[0]
    res = CliRunner().invoke(store_cli, ["verify", str(p)])
    assert res.exit_code == 1
    out = res.output  # stdout and stderr together
    assert "'v1/00001.jpg' appears 2 times" in out
    assert "labels/expr: row 1" in out and "code 9" in out
    assert "labels/au: row 0" in out and "partly missing" in out
    assert "features/bb/embeddings: row 0" in out and "non-finite" in out


def test_verify_reports_misaligned_rows(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with h5py.File(p, "a") as f:
        f["labels/expr"].resize((2,))
    res = CliRunner().invoke(store_cli, ["verify", str(p)])
    assert res.exit_code == 1 and "labels/expr: 2 rows, expected 3" in res.output


def test_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(store_cli, ["info", str(tmp_path / "nope.h5")])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path / 'nope.h5'}: no such store"
