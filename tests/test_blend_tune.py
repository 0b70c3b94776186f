"""blend.tune: studies, honest CV, resumable storage, and apply reproducing the tuned scores."""
import json

import numpy as np
import optuna
import pytest

from blend.apply import apply_spec, headline
from blend.data import BlendData
from blend.folds import grouped_folds
from blend.inputs import read_input
from blend.spec import read_spec, write_spec
from blend.tune import tune
from heads.metrics import au_metrics, binarize_au
from featheads.core.errors import UserError
from store.feature_store import FeatureStore
from store.schema import AFFECTNET_TO_LSD, AFFECTNET_TO_MTL

from blend_fixtures import LOGIT_SOURCE, write_lsd_store, write_mtl_store

INPUTS = ["mlp", "openface", f"logits:{LOGIT_SOURCE}"]


@pytest.fixture(scope="module")
def mtl_store(tmp_path_factory):
    return write_mtl_store(tmp_path_factory.mktemp("mtl") / "store.h5", n_videos=6, n_frames=50)


@pytest.fixture(scope="module")
def lsd_store(tmp_path_factory):
    return write_lsd_store(tmp_path_factory.mktemp("lsd") / "store.h5")


@pytest.fixture(scope="module")
def tuned(mtl_store):
    return tune(mtl_store, INPUTS, "mtl", "val", trials=12, cv=3, seed=1, progress=False)


def test_in_sample_score_is_the_study_best_and_cv_reports_out_of_fold(tuned):
    spec = tuned.spec
    ins = spec.scores["in_sample"]
    assert ins["P_MTL"] == pytest.approx(tuned.study.best_value, abs=1e-12)
    assert ins["P_MTL"] == pytest.approx(ins["P_VA"] + ins["P_EXPR"] + ins["P_AU"])
    oof = spec.scores["out_of_fold"]
    assert set(oof) >= {"P_MTL", "P_EXPR", "P_VA", "P_AU"}
    assert spec.cv["folds"] == 3 and spec.cv["group_by"] == "video" and len(spec.cv["fold_scores"]) == 3
    assert len(tuned.fold_studies) == 3 and all(len(s.trials) == 12 for s in tuned.fold_studies)
    for t, p in spec.tasks.items():
        assert sum(p.weights.values()) == pytest.approx(1.0)
    assert set(spec.tasks["va"].weights) == {"mlp", f"logits:{LOGIT_SOURCE}"}  # openface has no va


def test_apply_on_the_tuning_split_reproduces_the_tuned_scores_exactly(tuned, mtl_store, tmp_path):
    store = tmp_path / "copy.h5"
    store.write_bytes(mtl_store.read_bytes())
    path = write_spec(tuned.spec, tmp_path / "spec.json")
    spec = read_spec(path)  # through JSON and back
    metrics = apply_spec(spec, store, "val", name="final", spec_source=str(path))
    got = headline("mtl", metrics)
    for k in ("P_EXPR", "P_VA", "P_AU", "P_MTL"):
        assert got[k] == tuned.spec.scores["in_sample"][k], k
    with FeatureStore.open(store) as st:
        rows = st.rows("val")
        au = st.read_predictions("final", "au", rows)
        y = st.labels("au", rows)
        attrs = st.prediction_attrs("final", "au")
        keep = FeatureStore.label_mask("au", y)
        thr = np.array(json.loads(attrs["thresholds"]))
        # the stored thresholds, applied the usual way, give the tuned P_AU
        assert au_metrics(y[keep], binarize_au(au[keep], thr))["P_AU"] == tuned.spec.scores["in_sample"]["P_AU"]
        assert json.loads(st.prediction_attrs("final")["spec"])["task"] == "mtl"
        va = st.read_predictions("final", "va", rows)
        assert np.nanmax(np.abs(va)) <= 1.0


def test_same_seed_same_spec(mtl_store):
    a = tune(mtl_store, INPUTS, "expr", "val", trials=8, cv=0, seed=3, progress=False).spec
    b = tune(mtl_store, INPUTS, "expr", "val", trials=8, cv=0, seed=3, progress=False).spec
    assert a.tasks["expr"].weights == b.tasks["expr"].weights
    assert a.tasks["expr"].smoothing == b.tasks["expr"].smoothing
    assert a.scores == b.scores


def test_study_resumes_and_refuses_other_settings(mtl_store, tmp_path):
    storage = str(tmp_path / "studies.log")
    two = ["mlp", "openface"]
    tune(mtl_store, two, "au", "val", trials=4, cv=0, storage=storage, progress=False)
    r = tune(mtl_store, two, "au", "val", trials=7, cv=0, storage=storage, progress=False)
    assert len(r.study.trials) == 7  # continued: 4 kept + 3 new
    assert r.spec.study["trials"] == 7
    again = tune(mtl_store, two, "au", "val", trials=7, cv=0, storage=storage, progress=False)
    assert len(again.study.trials) == 7  # nothing left to do
    with pytest.raises(UserError, match="other settings.*inputs"):
        tune(mtl_store, ["openface", "mlp"], "au", "val", trials=7, cv=0, storage=storage, progress=False)
    sqlite = tmp_path / "studies.db"
    tune(mtl_store, ["mlp"], "va", "val", trials=2, cv=0, storage=str(sqlite), progress=False)
    loaded = optuna.load_study(study_name="blend-va-val", storage=f"sqlite:///{sqlite}")
    assert len(loaded.trials) == 2


def test_grouped_folds_keep_videos_together_and_are_balanced():
    rng = np.random.default_rng(0)
    videos = np.repeat([f"v{i}" for i in range(20)], rng.integers(10, 60, 20))
    fold = grouped_folds(videos, 5, seed=0)
    for v in np.unique(videos):
        assert len(np.unique(fold[videos == v])) == 1
    sizes = np.bincount(fold)
    assert len(sizes) == 5 and sizes.max() - sizes.min() <= 60
    assert np.array_equal(fold, grouped_folds(videos, 5, seed=0))
    with pytest.raises(UserError, match="only 3 videos"):
        grouped_folds(np.array(["a", "b", "c"]), 5, seed=0)


def test_logits_are_softmaxed_and_mapped(mtl_store, lsd_store):
    with FeatureStore.open(mtl_store) as st:
        rows = st.rows("val")
        logits, valid = st.read_features(f"{LOGIT_SOURCE}.logits", rows)
        expr = read_input(st, f"logits:{LOGIT_SOURCE}", "expr", rows)
        va = read_input(st, f"logits:{LOGIT_SOURCE}", "va", rows)
    e = np.exp(logits[:, :8] - logits[:, :8].max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(expr[valid], p[valid][:, list(AFFECTNET_TO_MTL)], rtol=1e-5)
    assert np.isnan(expr[~valid]).all()
    np.testing.assert_array_equal(va[valid], logits[valid, 8:])
    with FeatureStore.open(lsd_store) as st:
        rows = st.rows("val")
        logits, _ = st.read_features(f"{LOGIT_SOURCE}.logits", rows)
        lsd = read_input(st, f"logits:{LOGIT_SOURCE}", "lsd", rows)
    six = np.exp(logits[:, list(AFFECTNET_TO_LSD)])
    np.testing.assert_allclose(lsd, six / six.sum(axis=1, keepdims=True), rtol=1e-5)
    with FeatureStore.open(lsd_store) as st, pytest.raises(UserError, match="no 'au' predictions"):
        read_input(st, f"logits:{LOGIT_SOURCE}", "au", st.rows("val"))


def test_missing_inputs_renormalise_weights_row_by_row(mtl_store):
    from blend.smoothing import Smoothing

    with FeatureStore.open(mtl_store) as st:
        data = BlendData.load(st, ["mlp", "openface"], "expr", "val", max_delta=0)
        rows = st.rows("val")
        mlp = st.read_predictions("mlp", "expr", rows)
        of = st.read_predictions("openface", "expr", rows)
    s = data.blends["expr"].scores({"mlp": 0.25, "openface": 0.75}, Smoothing()).T
    gone = np.isnan(of).any(axis=1)
    assert gone.any()
    np.testing.assert_allclose(s[gone], mlp[gone], rtol=1e-6)  # openface missing: mlp alone
    np.testing.assert_allclose(s[~gone], 0.25 * mlp[~gone] + 0.75 * of[~gone], rtol=1e-5)


def test_lsd_blend_with_pretrained_logits_and_row_folds(lsd_store):
    r = tune(lsd_store, ["finetuned", f"logits:{LOGIT_SOURCE}"], "lsd", "val", trials=10, cv=3, progress=False)
    spec = r.spec
    assert spec.cv["group_by"] == "row"  # no frame numbers: no temporal structure to keep together
    assert spec.tasks["lsd"].smoothing.kind == "none" and spec.max_delta == 0
    assert 0 < spec.scores["out_of_fold"]["P_LSD"] <= 1
    assert "accuracy" in spec.scores["in_sample"]


def test_user_errors_name_what_is_wrong(mtl_store):
    with pytest.raises(UserError, match="no predictions run 'nope'"):
        tune(mtl_store, ["mlp", "nope"], "expr", "val", trials=1, cv=0, progress=False)
    with pytest.raises(UserError, match="'openface' has no 'va' predictions"):
        tune(mtl_store, ["mlp", "openface"], "va", "val", trials=1, cv=0, progress=False)
    with pytest.raises(UserError, match="no split 'dev'"):
        tune(mtl_store, ["mlp"], "expr", "dev", trials=1, cv=0, progress=False)
    with pytest.raises(UserError, match="no row with both a 'expr' label"):
        tune(mtl_store, ["mlp"], "expr", "test", trials=1, cv=0, progress=False)


def test_an_interrupted_study_keeps_its_finished_trials_and_continues(mtl_store, tmp_path, monkeypatch):
    import blend.tune as bt

    storage = str(tmp_path / "s.db")
    real = bt.study_objective
    calls = {"n": 0}

    def interrupting(data, positions):
        objective = real(data, positions)

        def wrapped(trial):
            calls["n"] += 1
            if calls["n"] == 6:
                raise KeyboardInterrupt
            return objective(trial)

        return wrapped

    monkeypatch.setattr(bt, "study_objective", interrupting)
    with pytest.raises(KeyboardInterrupt):
        tune(mtl_store, ["mlp", "openface"], "expr", "val", trials=10, cv=0, storage=storage, progress=False)
    kept = optuna.load_study(study_name="blend-expr-val", storage=f"sqlite:///{storage}")
    assert sum(t.state.name == "COMPLETE" for t in kept.trials) == 5
    monkeypatch.setattr(bt, "study_objective", real)
    r = tune(mtl_store, ["mlp", "openface"], "expr", "val", trials=10, cv=0, storage=storage, progress=False)
    assert r.spec.study["trials"] == 10
