"""`heads tune` (grouped CV on the training split only, pruning, resumable studies, tuned recipes)
and the `auto` recipe, on stores with planted signal (tests/heads_fixtures.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from heads import tune as T
from heads.cli import main
from heads.registry import HEADS, make_head, param_names, head_class
from heads.search_spaces import SPACES, suggest_params
from store.feature_store import STATUS_OK, FeatureStore

from heads_fixtures import EMB, N_LOGITS, SOURCE, make_mtl_store

KINDS = ("multiclass", "multilabel", "regression")


@pytest.fixture(autouse=True)
def one_thread():
    """The machine running the tests is shared: single-threaded torch keeps small fits fast."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A store, and a copy whose val and test rows (features AND labels) are garbage."""
    d = tmp_path_factory.mktemp("heads_tune")
    make_mtl_store(d / "s.h5", n_videos=(12, 4, 2), frames=30, seed=0)
    _poisoned_copy(d / "s.h5", d / "poisoned.h5")
    return d


def _poisoned_copy(src, dst):
    rng = np.random.default_rng(99)
    with FeatureStore.open(src) as a, FeatureStore.open(dst, "a") as b:
        b.create_source(SOURCE, identity={"backbone": SOURCE, "sha256": "planted"},
                        arrays={"embeddings": (EMB, None), "logits": (N_LOGITS, [f"l{i}" for i in range(10)])})
        for split in ("train", "val", "test"):
            rows = a.rows(split)
            s = a.samples(rows)
            labels = {t: a.labels(t, rows) for t in ("expr", "va", "au")}
            E, _ = a.read_features(f"{SOURCE}.embeddings", rows)
            L, _ = a.read_features(f"{SOURCE}.logits", rows)
            if split != "train":
                n = len(rows)
                labels = {"expr": rng.integers(0, 8, n).astype(np.int8),
                          "va": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
                          "au": rng.integers(0, 2, (n, 12)).astype(np.int8)}
                E, L = rng.normal(size=E.shape) * 100, rng.normal(size=L.shape) * 100
            new = b.add_samples(list(s["key"]), split=split, videos=list(s["video"]), frames=s["frame"],
                                labels=labels)
            status = np.where(np.isfinite(E).all(1), STATUS_OK, 2).astype(np.int8)
            b.write_features(SOURCE, new, {"embeddings": np.nan_to_num(E).astype(np.float32),
                                           "logits": np.nan_to_num(L).astype(np.float32)}, status)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _trial_values(doc, storage, task):
    study = optuna.load_study(study_name=doc["tuning"]["tasks"][task]["study"], storage=storage)
    return [(t.number, t.state.name, t.value, t.params) for t in study.trials]


def test_help():
    r = run("tune", "--help")
    assert r.exit_code == 0 and "--trials" in r.output and "--groups" in r.output


# ---------------------------------------------------------------------------- search spaces


@pytest.mark.parametrize("head", sorted(SPACES))
@pytest.mark.parametrize("kind", KINDS)
def test_every_sampled_point_is_a_valid_head(head, kind):
    names = set(param_names(head_class(head, kind)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        params = suggest_params(trial, head, kind, n_rows=1000, base={})
        assert set(params) <= names
        make_head(head, kind, params, n_classes=8 if kind == "multiclass" else None)  # accepted
        study.tell(trial, 0.0)
    space = set(study.trials[0].distributions) | {p for t in study.trials for p in t.params}
    if head == "mlp":
        assert {"depth", "learning_rate", "l2", "epochs"} <= space
        assert ("label_smoothing" in space) == (kind == "multiclass")
        assert ("mixup" in space) == ("mixup" in names)
    elif head == "lightgbm":
        assert space == {"num_leaves", "learning_rate", "n_estimators", "colsample", "subsample", "min_child_samples",
                         "reg_lambda"}
    else:
        assert space == ({"alpha"} if kind == "regression" else {"C"})


def test_heads_without_a_space_are_refused(stores, tmp_path):
    doc = {"format": 1, "tasks": {"expr": {"features": "{backbone}.embeddings", "head": "auto"}}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    r = run("tune", "--store", stores / "s.h5", "--recipe", tmp_path / "r.json", "--task", "expr",
            "--trials", "1", "--out", tmp_path / "t.json")
    assert r.exit_code != 0 and "no search space" in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------------------- folds


def test_folds_keep_groups_together():
    videos = np.repeat([f"S{i // 3}_{i:03d}" for i in range(30)], 7)
    for grouping in ("video", "subject"):
        g = T._groups(videos, grouping)
        fold = T.grouped_folds(g, 5, seed=1)
        for name in np.unique(g.astype(str)):
            assert len(set(fold[g.astype(str) == name])) == 1
        assert sorted(set(fold)) == [0, 1, 2, 3, 4]
    assert len(np.unique(T._groups(videos, "subject").astype(str))) == 10
    with pytest.raises(Exception, match="only 10 groups"):
        T.grouped_folds(T._groups(videos, "subject"), 11, seed=0)


def test_heads_are_fitted_on_whole_videos_only(stores, monkeypatch):
    """Every head a trial fits sees either all training rows of a video or none of them."""
    seen = []
    real = T.make_head

    def spying(*a, **kw):
        head = real(*a, **kw)
        fit = head.fit

        def recording_fit(X, y, groups=None):
            seen.append(np.asarray(groups).astype(str))
            return fit(X, y, groups=groups)

        head.fit = recording_fit
        return head

    monkeypatch.setattr(T, "make_head", spying)
    T.tune_heads(stores / "s.h5", "logistic", "expr", cv=3, trials=2, storage="memory")  # heads.studies: memory
    with FeatureStore.open(stores / "s.h5") as st:
        rows = st.rows("train")
        y = st.labels("expr", rows)
        _, valid = st.read_features(f"{SOURCE}.embeddings+{SOURCE}.logits", rows)
        videos = st.samples(rows)["video"][(y >= 0) & valid].astype(str)
    total = {v: int(np.sum(videos == v)) for v in np.unique(videos)}
    assert len(seen) == 2 * 3
    for groups in seen:
        names, counts = np.unique(groups, return_counts=True)
        assert 0 < len(names) < len(total)
        assert all(total[n] == c for n, c in zip(names, counts))


# ---------------------------------------------------------------------------- the study


def test_eval_split_is_never_read(stores, tmp_path):
    """Garbage features and labels in val/test change nothing: same trials, same values, same recipe."""
    docs = []
    for name in ("s.h5", "poisoned.h5"):
        storage = f"sqlite:///{tmp_path / (name + '.db')}"
        doc = T.tune_heads(stores / name, "logistic", "mtl", cv=3, trials=3, storage=storage, seed=3)
        docs.append((doc, storage))
    (a, sa), (b, sb) = docs
    assert a["tasks"] == b["tasks"]
    for t in ("expr", "va", "au"):
        assert _trial_values(a, sa, t) == _trial_values(b, sb, t)
        assert a["tuning"]["tasks"][t]["out_of_fold"] == b["tuning"]["tasks"][t]["out_of_fold"]


def test_tuned_recipe_refits_to_the_best_params_and_records_the_study(stores, tmp_path):
    shutil.copy(stores / "s.h5", tmp_path / "s.h5")
    out = tmp_path / "tuned.json"
    r = run("tune", "--store", tmp_path / "s.h5", "--recipe", "lightgbm", "--task", "expr", "--cv", "3",
            "--trials", "3", "--quiet", "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    info = doc["tuning"]["tasks"]["expr"]
    storage = f"sqlite:///{tmp_path / 'tuned.optuna.db'}"
    study = optuna.load_study(study_name=info["study"], storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    assert info["best_value"] == best.value and info["best_trial"] == best.number
    assert info["best_params"] == best.params
    assert info["out_of_fold"]["P_EXPR"] == pytest.approx(best.value)
    assert len(info["out_of_fold"]["fold_scores"]) == 3
    # the recipe holds the study's best params on top of the base recipe's others
    params = doc["tasks"]["expr"]["params"]
    for k, v in best.params.items():
        assert params[k] == v
    assert params["class_weight"] == "balanced"  # from the `lightgbm` recipe, not searched
    r = run("fit", "expr", "--store", tmp_path / "s.h5", "--recipe", out, "--out", tmp_path / "run", "--quiet")
    assert r.exit_code == 0, r.output
    resolved = json.loads((tmp_path / "run" / "recipe.json").read_text())["tasks"]["expr"]["params"]
    for k, v in params.items():
        assert resolved[k] == v, k
    # the refitted head is the head these params make
    head = make_head("lightgbm", "multiclass", params, n_classes=8, seed=0)
    assert {k: resolved[k] for k in head.get_params() if k in resolved} == \
           {k: v for k, v in head.get_params().items() if k in resolved}


def test_cli_resumes_refuses_other_settings_and_fits(stores, tmp_path):
    shutil.copy(stores / "s.h5", tmp_path / "s.h5")
    base = ["tune", "--store", tmp_path / "s.h5", "--recipe", "logistic", "--task", "mtl", "--cv", "3", "--quiet",
            "--out", tmp_path / "tuned.json"]
    r = run(*base, "--trials", "2")
    assert r.exit_code == 0, r.output
    assert "P_EXPR" in r.output and (tmp_path / "tuned.optuna.db").exists()
    r = run(*base, "--trials", "4")  # continues the same studies up to 4 finished trials each
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "tuned.json").read_text())
    for t in ("expr", "va", "au"):
        tr = doc["tuning"]["tasks"][t]["trials"]
        assert tr["complete"] + tr["pruned"] == 4 and tr["failed"] == 0
    r = run(*[a if a != "3" else "4" for a in base], "--trials", "4")
    assert r.exit_code != 0 and "other settings" in r.output and "cv" in r.output and "Traceback" not in r.output
    r = run("fit", "mtl", "--store", tmp_path / "s.h5", "--recipe", tmp_path / "tuned.json", "--out",
            tmp_path / "run", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["P_EXPR"] > 0.3 and m["P_VA"] > 0.4


def test_trials_are_pruned_across_folds(stores):
    """A trial far behind the median after a fold is stopped there (Optuna's median pruner)."""
    with FeatureStore.open(stores / "s.h5") as st:
        plan = T.Plan("expr", f"{SOURCE}.embeddings+{SOURCE}.logits", "linear", {})
        data = T._load(st, plan, st.rows("train"), "video", 4, 0)
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    for C in (1.0, 0.5):
        study.enqueue_trial({"C": C})
    study.enqueue_trial({"C": 1e-6})  # learns nothing: below the median after the first fold

    def objective(trial):
        return T.cross_validate(data, {"C": trial.suggest_float("C", 1e-6, 10, log=True)}, 0, trial)[0]

    study.optimize(objective, n_trials=3)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert len(study.trials[2].intermediate_values) < 4


# ---------------------------------------------------------------------------- auto


def _metrics(path):
    return json.loads((path / "metrics.json").read_text())


@pytest.mark.parametrize("n_videos", [(12, 12, 2), (60, 16, 2)], ids=["tiny", "larger"])
def test_auto_is_the_default_and_not_worse_than_logistic(tmp_path, n_videos):
    """Within noise of logistic (the best head on linear planted signal): 0.04, about two standard
    errors of a score on the ~300 labelled validation rows."""
    make_mtl_store(tmp_path / "s.h5", n_videos=n_videos, frames=30, seed=4)
    r = run("fit", "mtl", "--store", tmp_path / "s.h5", "--out", tmp_path / "auto", "--quiet")
    assert r.exit_code == 0, r.output
    r = run("fit", "mtl", "--store", tmp_path / "s.h5", "--recipe", "logistic", "--out", tmp_path / "lin", "--quiet")
    assert r.exit_code == 0, r.output
    auto, lin = _metrics(tmp_path / "auto"), _metrics(tmp_path / "lin")
    for k in ("P_EXPR", "P_VA", "P_AU"):
        assert auto[k] >= lin[k] - 0.04, (k, auto[k], lin[k])
    for t in ("expr", "va", "au"):
        saved = json.loads((tmp_path / "auto" / t / "head.json").read_text())
        assert saved["class"].startswith("Auto")
        scores = saved["state"]["inner_scores_"]
        assert saved["state"]["chosen_"] == max(scores, key=lambda n: scores[n])
    # the saved run predicts again exactly
    r = CliRunner().invoke(main, ["predict", "--heads", str(tmp_path / "auto"), "--store", str(tmp_path / "s.h5"),
                                  "--name", "again"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with FeatureStore.open(tmp_path / "s.h5") as st:
        for t in ("expr", "va", "au"):
            np.testing.assert_array_equal(st.read_predictions("auto", t), st.read_predictions("again", t))


def test_auto_chooses_on_training_rows_only_and_refits_on_all(monkeypatch):
    from heads.auto import AutoClassifierHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    groups = np.repeat(np.arange(60), 10)
    cands = [{"name": "weak", "head": "linear", "params": {"C": 1e-6}},
             {"name": "good", "head": "linear", "params": {"C": 1.0}}]
    h = AutoClassifierHead(candidates=cands, n_classes=2).fit(X, y, groups=groups)
    assert h.chosen_ == "good" and h.inner_scores_["good"] > h.inner_scores_["weak"]
    ref = make_head("linear", "multiclass", {"C": 1.0}, n_classes=2, seed=0).fit(X, y)
    np.testing.assert_allclose(h.predict_proba(X), ref.predict_proba(X))
    assert "auto" in HEADS


def test_tune_arrays_folds_by_the_given_groups_and_matches_its_own_cross_validation():
    """The in-memory study (benchmarks tune inside each outer fold): grouped folds over the given
    rows only, the same best params for the same seed, and a best value that a fresh
    cross-validation of those params reproduces."""
    from heads.plan import Plan

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(12), 20)
    y = rng.integers(0, 3, len(groups))
    X = (rng.normal(size=(len(groups), 6)) + 1.5 * np.eye(3, 6)[y]).astype(np.float32)
    plan = Plan("expr", "x", "linear", {})
    seen = []
    real_fit = T.make_head

    def spying_make_head(*a, **k):
        head = real_fit(*a, **k)
        fit = head.fit

        def fit_and_record(Xf, yf, groups=None):
            seen.append(set(groups.tolist()))
            return fit(Xf, yf, groups=groups)

        head.fit = fit_and_record
        return head

    T.make_head, saved = spying_make_head, T.make_head
    try:
        params, record = T.tune_arrays(plan, X, y, groups, cv=3, trials=4, seed=1)
    finally:
        T.make_head = saved
    assert all(len(s) == 8 for s in seen)  # 2 of 3 folds of 12 groups: whole groups only
    again, record2 = T.tune_arrays(plan, X, y, groups, cv=3, trials=4, seed=1)
    assert again == params and record2["best_params"] == record["best_params"]
    data = T._TaskData(plan, X, y, groups, T.grouped_folds(groups, 3, 1), y)
    value, _, _ = T.cross_validate(data, params, 1)
    assert value == pytest.approx(record["best_value"])
    assert 0.25 < record["best_value"] <= 3 / 8  # P_EXPR averages the 8 MTL classes; 3 are present


def test_features_choice_is_a_study_parameter_on_the_same_rows(stores, tmp_path):
    """--features A --features B: each trial samples one spec; every spec is scored on the rows valid in
    all of them (one fold assignment), and the tuned recipe keeps the chosen spec as written."""
    shutil.copy(stores / "s.h5", tmp_path / "s.h5")
    rng = np.random.default_rng(5)
    with FeatureStore.open(tmp_path / "s.h5", "a") as st:
        st.create_source("noise", identity={"what": "noise"}, arrays={"x": (8, None)})
        n = st.n_rows
        status = np.where(rng.random(n) < 0.1, 2, STATUS_OK).astype(np.int8)  # 10% invalid in this source only
        st.write_features("noise", np.arange(n), {"x": rng.normal(size=(n, 8)).astype(np.float32)}, status)
        train = st.rows("train")
        labelled = FeatureStore.label_mask("expr", st.labels("expr", train))
        both = labelled & (status[train] == STATUS_OK) & (st.source_status(SOURCE, train) == STATUS_OK)
    good = "{backbone}.embeddings+{backbone}.logits"
    out = tmp_path / "tuned.json"
    r = run("tune", "--store", tmp_path / "s.h5", "--recipe", "logistic", "--task", "expr", "--cv", "3",
            "--trials", "8", "--quiet", "--features", "noise.x", "--features", good, "--source-name", SOURCE,
            "--out", out)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    info = doc["tuning"]["tasks"]["expr"]
    assert info["n_rows"] == int(both.sum())
    assert info["feature_choices"] == ["noise.x", f"{SOURCE}.embeddings+{SOURCE}.logits"]
    study = optuna.load_study(study_name=info["study"], storage=f"sqlite:///{tmp_path / 'tuned.optuna.db'}")
    values = {}
    for t in study.trials:
        if t.state.name == "COMPLETE":
            values.setdefault(t.params["features"], []).append(t.value)
    assert len(values) == 2  # both were tried
    assert max(values["noise.x"]) < min(values[f"{SOURCE}.embeddings+{SOURCE}.logits"])
    assert doc["tasks"]["expr"]["features"] == good and info["features"] == f"{SOURCE}.embeddings+{SOURCE}.logits"
    assert "features" not in doc["tasks"]["expr"]["params"]
    r = run("fit", "expr", "--store", tmp_path / "s.h5", "--recipe", out, "--source-name", SOURCE,
            "--out", tmp_path / "run", "--quiet")
    assert r.exit_code == 0, r.output
    bad = run("tune", "--store", tmp_path / "s.h5", "--recipe", "logistic", "--task", "expr", "--trials", "1",
              "--quiet", "--features", "noise.y", "--out", tmp_path / "t2.json")
    assert bad.exit_code != 0 and "--features: choice 1 'noise.y'" in bad.output and "Traceback" not in bad.output


def test_tune_arrays_chooses_among_feature_sets():
    from heads.plan import Plan

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(12), 20)
    y = rng.integers(0, 3, len(groups))
    signal = (rng.normal(size=(len(groups), 6)) + 2.0 * np.eye(3, 6)[y]).astype(np.float32)
    noise = rng.normal(size=(len(groups), 6)).astype(np.float32)
    plan = Plan("expr", "noise", "linear", {})
    params, record = T.tune_arrays(plan, {"noise": noise, "signal": signal}, y, groups, cv=3, trials=8, seed=0)
    assert record["features"] == "signal" and record["feature_choices"] == ["noise", "signal"]
    assert "features" not in params
