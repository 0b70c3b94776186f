"""`heads fit mtl | expr | lsd` and `heads predict` end to end on stores with planted signal."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from heads import metrics as M
from heads.cli import main
from store.feature_store import STATUS_OK, FeatureStore

from heads_fixtures import SOURCE, make_lsd_store, make_mtl_store

# Small data needs smaller batches than the published heads: a user recipe (also tests the file path).
FAST = {"epochs": 20, "batch_size": 64, "learning_rate": 0.003, "n_threads": 1}
FAST_RECIPE = {
    "format": 1, "name": "fast", "description": "test recipe",
    "tasks": {
        "expr": {"features": "{backbone}.embeddings+{backbone}.logits", "head": "mlp",
                 "params": {"class_weight": "inverse_max", **FAST}},
        "va": {"features": "{backbone}.logits", "head": "mlp",
               "params": {"output_activation": "tanh", "loss": "ccc", **FAST}},
        "au": {"features": "{backbone}.embeddings", "head": "mlp",
               "params": {"hidden_layer_sizes": [32], **FAST}},
        "lsd": {"features": "{backbone}.embeddings", "head": "mlp",
                "params": {"label_smoothing": 0.1, "class_weight": "balanced", **FAST}},
    },
    "joint": {"features": "{backbone}.embeddings+{backbone}.logits", "head": "joint_mlp",
              "params": {"hidden_layer_sizes": [32], **FAST}},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("heads_cli")
    truth = make_mtl_store(d / "s.h5", seed=0)
    make_mtl_store(d / "other.h5", n_videos=(3, 2, 2), seed=5)
    (d / "fast.json").write_text(json.dumps(FAST_RECIPE))
    return d, truth


@pytest.fixture
def work(built, tmp_path):
    """A fresh copy of the store per test (fits write predictions into it)."""
    d, truth = built
    shutil.copy(d / "s.h5", tmp_path / "s.h5")
    return tmp_path, d / "fast.json", truth


@pytest.fixture
def one_thread():
    """The machine running the tests is shared: single-threaded torch keeps small fits fast."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _all_positive_f1(y):
    keep = (y >= 0).all(1)
    return float(np.mean([M.binary_f1(y[keep][:, j], np.ones(keep.sum())) for j in range(y.shape[1])]))


@pytest.mark.parametrize("args", [[], ["fit"], ["fit", "mtl"], ["fit", "expr"], ["fit", "lsd"], ["predict"]])
def test_help(args):
    r = run(*args, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_fit_mtl_end_to_end(work):
    tmp, recipe, truth = work
    r = run("fit", "mtl", "--store", tmp / "s.h5", "--recipe", recipe, "--out", tmp / "runs" / "fast", "--quiet")
    assert r.exit_code == 0, r.output
    assert "P_MTL" in r.output and "F1 per AU" in r.output
    run_dir = tmp / "runs" / "fast"
    assert sorted(p.name for p in run_dir.iterdir()) == ["au", "expr", "metrics.json", "recipe.json", "run.json", "va"]
    m = json.loads((run_dir / "metrics.json").read_text())
    with FeatureStore.open(tmp / "s.h5") as st:
        n = st.n_rows
        expr = st.read_predictions("fast", "expr")
        va = st.read_predictions("fast", "va")
        au = st.read_predictions("fast", "au")
        valid = st.source_status(SOURCE) == STATUS_OK
        rows = st.rows("val")
        y = {t: st.labels(t, rows) for t in ("expr", "va", "au")}
        assert st.prediction_attrs("fast", "expr")["names"][0] == "Neutral"
        assert st.prediction_attrs("fast", "au")["names"][-1] == "AU26"
        attrs = st.prediction_attrs("fast")
        assert attrs["train"] == "train" and attrs["eval"] == "val"
        assert json.loads(attrs["recipe"])["tasks"]["va"]["features"] == f"{SOURCE}.logits"
    # every row of every split predicted, NaN exactly where the features are invalid
    assert expr.shape == (n, 8) and va.shape == (n, 2) and au.shape == (n, 12)
    for p in (expr, va, au):
        np.testing.assert_array_equal(np.isfinite(p).all(1), valid)
    np.testing.assert_allclose(expr[valid].sum(1), 1.0, atol=1e-5)
    assert np.abs(va[valid]).max() <= 1.0 and au[valid].min() >= 0 and au[valid].max() <= 1
    # metrics.json agrees with an independent recomputation from the stored predictions
    ok = valid[rows]
    ref = M.mtl_metrics(y["va"][ok], va[rows][ok], y["expr"][ok], expr[rows][ok], y["au"][ok], au[rows][ok])
    for k in ("P_VA", "P_EXPR", "P_AU", "P_MTL"):
        assert m[k] == pytest.approx(ref[k], abs=1e-6)
    # planted signal: clear margins over chance (macro F1 ~0.12, CCC 0, AU all-positive F1)
    assert m["P_EXPR"] > 0.4
    assert m["P_VA"] > 0.5
    assert m["P_AU"] > _all_positive_f1(y["au"]) + 0.1
    assert m["n_without_features"]["expr"] == int(np.sum((y["expr"] >= 0) & ~ok))


def test_same_seed_same_predictions_other_seed_differs(work):
    tmp, recipe, _ = work
    s = tmp / "s.h5"
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        r = run("fit", "expr", "--store", s, "--recipe", recipe, "--out", tmp / name, "--seed", seed, "--quiet")
        assert r.exit_code == 0, r.output
    with FeatureStore.open(s) as st:
        a, b, c = (st.read_predictions(k, "expr") for k in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c, equal_nan=True)
    assert json.loads((tmp / "a" / "metrics.json").read_text()) == json.loads((tmp / "b" / "metrics.json").read_text())


def test_joint_network_learns_all_tasks(work):
    tmp, recipe, truth = work
    r = run("fit", "mtl", "--joint", "--store", tmp / "s.h5", "--recipe", recipe, "--out", tmp / "joint", "--quiet")
    assert r.exit_code == 0, r.output
    assert (tmp / "joint" / "joint" / "head.json").is_file()
    m = json.loads((tmp / "joint" / "metrics.json").read_text())
    with FeatureStore.open(tmp / "s.h5") as st:
        assert st.runs()["joint"] == ["au", "expr", "va"]
        y_au = st.labels("au", st.rows("val"))
    assert m["P_EXPR"] > 0.3 and m["P_VA"] > 0.4 and m["P_AU"] > _all_positive_f1(y_au) + 0.05


def test_paper_recipe_learns_planted_signal(tmp_path, one_thread):
    make_mtl_store(tmp_path / "mid.h5", n_videos=(250, 30, 4), seed=2)
    r = run("fit", "mtl", "--store", tmp_path / "mid.h5", "--recipe", "paper", "--out", tmp_path / "paper", "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "paper" / "metrics.json").read_text())
    resolved = json.loads((tmp_path / "paper" / "recipe.json").read_text())
    assert resolved["tasks"]["expr"]["params"]["l2"] == pytest.approx(1 / 512)
    assert resolved["tasks"]["au"]["params"]["hidden_layer_sizes"] == [128]
    with FeatureStore.open(tmp_path / "mid.h5") as st:
        y_au = st.labels("au", st.rows("val"))
    assert m["P_EXPR"] > 0.35 and m["P_VA"] > 0.25 and m["P_AU"] > _all_positive_f1(y_au) + 0.1


@pytest.mark.parametrize("recipe_name", ["logistic", "lightgbm"])
def test_builtin_linear_and_lightgbm_recipes(work, recipe_name, tmp_path):
    tmp, _, _ = work
    doc = json.loads((__import__("heads.recipe").recipe.BUILTIN_DIR / f"{recipe_name}.json").read_text())
    for e in doc["tasks"].values():  # keep the test quick: fewer trees
        if e["head"] == "lightgbm":
            e["params"].update(n_estimators=40, n_threads=1)
    (tmp_path / "r.json").write_text(json.dumps(doc))
    r = run("fit", "mtl", "--store", tmp / "s.h5", "--recipe", tmp_path / "r.json", "--out", tmp / recipe_name,
            "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp / recipe_name / "metrics.json").read_text())
    assert m["P_EXPR"] > 0.35 and m["P_VA"] > 0.5 and m["P_AU"] > 0.6


def test_fit_lsd(tmp_path, built):
    _, _ = built
    make_lsd_store(tmp_path / "lsd.h5")
    (tmp_path / "fast.json").write_text(json.dumps(FAST_RECIPE))
    r = run("fit", "lsd", "--store", tmp_path / "lsd.h5", "--recipe", tmp_path / "fast.json", "--out",
            tmp_path / "lsd", "--quiet")
    assert r.exit_code == 0, r.output
    assert "P_LSD" in r.output
    m = json.loads((tmp_path / "lsd" / "metrics.json").read_text())
    assert m["P_LSD"] > 0.45 and list(m["per_class_f1"]) == ["Anger", "Disgust", "Fear", "Happiness", "Sadness",
                                                                "Surprise"]
    with FeatureStore.open(tmp_path / "lsd.h5") as st:
        assert st.read_predictions("lsd", "lsd").shape == (1600, 6)


def test_predict_applies_a_run_to_another_store(work, built):
    tmp, recipe, _ = work
    d, _ = built
    other = tmp / "other.h5"
    shutil.copy(d / "other.h5", other)
    assert run("fit", "mtl", "--store", tmp / "s.h5", "--recipe", recipe, "--out", tmp / "r1", "--quiet").exit_code == 0
    r = run("predict", "--heads", tmp / "r1", "--store", other, "--quiet")
    assert r.exit_code == 0, r.output
    assert "expr:" in r.output
    with FeatureStore.open(other) as st:
        p = st.read_predictions("r1", "va")
        X, valid = st.read_features(f"{SOURCE}.logits")
        n = st.n_rows
    assert p.shape == (n, 2)
    # identical to applying the saved head directly
    from heads.persist import load_head

    head = load_head(tmp / "r1" / "va")
    np.testing.assert_allclose(p[valid], head.predict(X[valid]), rtol=1e-5, atol=1e-6)
    r = run("predict", "--heads", tmp / "r1", "--store", other, "--quiet")
    assert r.exit_code == 1 and "exist" in r.output


def _one_line_error(r, *words):
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for w in words:
        assert w in lines[0], lines[0]


def test_user_errors_are_one_line_and_leave_nothing_behind(work):
    tmp, recipe, _ = work
    s = tmp / "s.h5"
    base = ["fit", "mtl", "--store", s, "--quiet"]
    bad_json = tmp / "bad.json"
    bad_json.write_text('{"tasks": {\n  "expr": {"features": "x", }\n}}')
    _one_line_error(run(*base, "--recipe", bad_json, "--out", tmp / "o"), "bad.json:2")
    doc = json.loads(recipe.read_text())
    doc["tasks"]["expr"]["params"]["hiden"] = 3
    (tmp / "typo.json").write_text(json.dumps(doc))
    _one_line_error(run(*base, "--recipe", tmp / "typo.json", "--out", tmp / "o"), "tasks.expr.params.hiden")
    doc = json.loads(recipe.read_text())
    doc["tasks"]["va"]["features"] = "nosuchnet.logits"
    (tmp / "spec.json").write_text(json.dumps(doc))
    _one_line_error(run(*base, "--recipe", tmp / "spec.json", "--out", tmp / "o"), "nosuchnet")
    doc = json.loads(recipe.read_text())
    doc["tasks"]["au"]["head"] = "svm"
    (tmp / "head.json").write_text(json.dumps(doc))
    _one_line_error(run(*base, "--recipe", tmp / "head.json", "--out", tmp / "o"), "tasks.au.head", "svm")
    doc = json.loads(recipe.read_text())
    doc["tasks"]["expr"]["params"]["loss"] = "hinge"
    (tmp / "loss.json").write_text(json.dumps(doc))
    _one_line_error(run(*base, "--recipe", tmp / "loss.json", "--out", tmp / "o"), "expr", "hinge")
    _one_line_error(run(*base, "--recipe", "nosuchrecipe", "--out", tmp / "o"), "nosuchrecipe", "paper")
    _one_line_error(run(*base, "--recipe", recipe, "--train", "training", "--out", tmp / "o"), "training")
    _one_line_error(run(*base, "--recipe", "logistic", "--joint", "--out", tmp / "o"), "joint")
    _one_line_error(run(*base, "--recipe", recipe, "--backbone", "nope", "--out", tmp / "o"), "nope")
    assert not (tmp / "o").exists()
    with FeatureStore.open(s) as st:
        assert st.runs() == {}
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("keep me")
    _one_line_error(run(*base, "--recipe", recipe, "--out", tmp / "full"), "--overwrite")
    assert (tmp / "full" / "x").read_text() == "keep me"


def test_predict_errors_name_the_problem(work, tmp_path):
    tmp, recipe, _ = work
    assert run("fit", "expr", "--store", tmp / "s.h5", "--recipe", recipe, "--out", tmp / "r", "--quiet").exit_code == 0
    with FeatureStore.open(tmp_path / "nosrc.h5", "a") as st:
        st.add_samples(["v/00001.jpg"], split="test")
    _one_line_error(run("predict", "--heads", tmp / "r", "--store", tmp_path / "nosrc.h5"), SOURCE)
    make_mtl_store(tmp_path / "diff.h5", n_videos=(1, 1, 1), frames=5)
    with FeatureStore.open(tmp_path / "diff2.h5", "a") as st:
        st.create_source(SOURCE, identity={"backbone": SOURCE, "sha256": "other weights"},
                         arrays={"embeddings": (24, None), "logits": (10, None)})
    _one_line_error(run("predict", "--heads", tmp / "r", "--store", tmp_path / "diff2.h5"), "other weights")
    _one_line_error(run("predict", "--heads", tmp_path, "--store", tmp_path / "diff.h5"), "run.json")


def test_heads_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from heads.cli import main; "
            "r = CliRunner().invoke(main, ['fit', 'mtl', '--help']); assert r.exit_code == 0, r.output; "
            "print('torch' in sys.modules, 'lightgbm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_openface_recipe_runs_on_an_openface_source(work):
    tmp, _, truth = work
    rng = np.random.default_rng(3)
    with FeatureStore.open(tmp / "s.h5", "a") as st:
        n = st.n_rows
        X, _ = st.read_features(f"{SOURCE}.embeddings+{SOURCE}.logits")
        values = np.nan_to_num(np.concatenate([X, rng.normal(size=(n, 1))], axis=1)).astype(np.float32)
        status = np.where(rng.random(n) < 0.05, 2, STATUS_OK).astype(np.int8)  # OpenFace failures
        st.create_source("openface", identity={"tool": "OpenFace 2"},
                         arrays={"values": (35, [f"AU{i}" for i in range(35)])})
        st.write_features("openface", np.arange(n), {"values": values}, status)
    r = run("fit", "mtl", "--store", tmp / "s.h5", "--recipe", "openface", "--out", tmp / "of", "--quiet")
    assert r.exit_code == 0, r.output
    with FeatureStore.open(tmp / "s.h5") as st:
        expr = st.read_predictions("of", "expr")
    np.testing.assert_array_equal(np.isfinite(expr).all(1), status == STATUS_OK)
