"""Landmark regression as an auxiliary task of the joint head (heads.landmarks, `--joint --aux landmarks`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from heads.cli import main
from heads.joint import JointMLPHead
from heads.landmarks import COLUMNS, normalise_landmarks
from heads.persist import load_head, save_head
from store.feature_store import STATUS_INVALID, STATUS_OK, FeatureStore

from heads_fixtures import make_mtl_store

FAST = {"hidden_layer_sizes": [16], "epochs": 3, "batch_size": 64, "n_threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_landmarks_are_normalised_per_face_by_hand():
    x = np.r_[np.full(34, 1.0), np.full(34, -1.0)] * 3 + 5  # half the points at (8, 5), half at (2, 5)
    y = np.full(68, 5.0)
    out = normalise_landmarks(np.r_[x, y][None])
    np.testing.assert_allclose(out[0, :68], np.r_[np.full(34, 1.0), np.full(34, -1.0)], atol=1e-6)
    np.testing.assert_allclose(out[0, 68:], 0.0, atol=1e-6)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 136))
    moved = a * 7.5 + np.r_[np.full(68, 100.0), np.full(68, -40.0)]  # shifted and scaled faces
    np.testing.assert_allclose(normalise_landmarks(moved), normalise_landmarks(a), rtol=1e-5, atol=1e-6)
    b = a.copy()
    b[1, 5] = np.nan
    assert np.isnan(normalise_landmarks(b)[1]).all() and np.isfinite(normalise_landmarks(b)[[0, 2]]).all()


def _joint_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    Y = {"expr": np.argmax(X[:, :3], 1), "va": np.tanh(X[:, :2]).astype(np.float32),
         "au": (np.tile(X, 2)[:, :12] > 0).astype(np.int64)}
    lmk = (X @ rng.normal(size=(6, 136))).astype(np.float32)
    lmk[::3] = np.nan  # every third row has no landmarks
    return X, Y, lmk


def test_aux_weight_zero_is_the_plain_joint_head_and_aux_changes_it(tmp_path):
    X, Y, lmk = _joint_data()
    plain = JointMLPHead(**FAST).fit(X, Y).predict_tasks(X)
    zero = JointMLPHead(aux_weight=0.0, **FAST).fit(X, {**Y, "landmarks": lmk})
    for t in plain:
        np.testing.assert_array_equal(zero.predict_tasks(X)[t], plain[t])
    one = JointMLPHead(aux_weight=1.0, **FAST).fit(X, {**Y, "landmarks": lmk})
    assert not np.allclose(one.predict_tasks(X)["expr"], plain["expr"])
    assert one.n_aux_ == 136
    save_head(one, tmp_path / "j")
    np.testing.assert_allclose(load_head(tmp_path / "j").predict_tasks(X)["va"], one.predict_tasks(X)["va"],
                               rtol=1e-6)


def test_rows_without_landmarks_are_masked(monkeypatch):
    import heads.losses

    seen = []
    real = heads.losses.mse
    monkeypatch.setattr("heads.losses.mse", lambda p, t: seen.append(len(p)) or real(p, t))
    X, Y, lmk = _joint_data(n=90)
    JointMLPHead(hidden_layer_sizes=[8], epochs=1, batch_size=90, n_threads=1).fit(X, {**Y, "landmarks": lmk})
    assert seen == [60]  # one batch of 90 rows, 30 without landmarks


def _store_with_landmarks(path, with_landmarks=True):
    truth = make_mtl_store(path, n_videos=(10, 3, 1), seed=4)
    if not with_landmarks:
        return
    rng = np.random.default_rng(5)
    with FeatureStore.open(path, "a") as st:
        n = st.n_rows
        st.create_source("openface", identity={"tool": "OpenFace 2", "groups": ["landmarks"]},
                         arrays={"values": (136, COLUMNS)})
        E, _ = st.read_features("tinynet.embeddings", np.arange(n))
        E = np.nan_to_num(E)
        xy = 200 + 30 * np.tanh(E @ rng.normal(size=(E.shape[1], 136)) / 5)
        status = np.where(rng.random(n) < 0.25, STATUS_INVALID, STATUS_OK).astype(np.int8)
        st.write_features("openface", np.arange(n), {"values": xy.astype(np.float32)}, status)
    return truth


def test_cli_joint_with_landmark_aux(tmp_path):
    s = tmp_path / "s.h5"
    _store_with_landmarks(s)
    recipe = {"format": 1, "name": "j", "joint": {"features": "{backbone}.embeddings+{backbone}.logits",
                                                  "head": "joint_mlp", "params": {**FAST, "aux_weight": 0.5}}}
    (tmp_path / "j.json").write_text(json.dumps(recipe))
    args = ["fit", "mtl", "--store", str(s), "--recipe", str(tmp_path / "j.json"), "--quiet"]
    r = CliRunner().invoke(main, args + ["--joint", "--aux", "landmarks", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["aux"] == "landmarks"
    head = json.loads((tmp_path / "a" / "joint" / "head.json").read_text())
    assert head["state"]["n_aux_"] == 136 and head["params"]["aux_weight"] == 0.5
    with FeatureStore.open(s) as st:
        assert st.runs()["a"] == ["au", "expr", "va"]  # landmarks are a training aid, not predicted
    r = CliRunner().invoke(main, args + ["--aux", "landmarks", "--out", str(tmp_path / "b")])
    assert r.exit_code != 0 and "--joint" in r.output
    s2 = tmp_path / "none.h5"
    _store_with_landmarks(s2, with_landmarks=False)
    r = CliRunner().invoke(main, ["fit", "mtl", "--store", str(s2), "--recipe", str(tmp_path / "j.json"), "--quiet",
                                  "--joint", "--aux", "landmarks", "--out", str(tmp_path / "c")])
    assert r.exit_code != 0 and "featurize openface" in r.output
