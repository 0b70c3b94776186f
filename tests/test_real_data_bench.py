"""bench/real_data.py: the real-data benchmark, run as a user runs it (a subprocess), on small subsets.

- FER2013 + CK+ from ../shared/data (skipped where absent): the tables come out, heads beat chance,
  the results section goes to the --results file given (bench/RESULTS.md is never touched);
- the s-Aff-Wild2 path on a tiny synthetic ABAW-layout dataset with a random-init timm backbone, then
  the same store again with --dataset store (no featurizing);
- errors a user can cause: one line, exit code 1.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from store.feature_store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "real_data.py"
QUICK = ["--inner-folds", "2", "--trials", "8", "--no-progress"]


def _run(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def test_help():
    proc = _run("--help")
    for option in ("--data-dir", "--weights", "--backbone", "--work-dir", "--limit", "--folds", "--seed",
                   "--store", "--annotations", "--results"):
        assert option in proc.stdout


@pytest.mark.realdata
@pytest.mark.slow
def test_fer2013_and_ckplus_subset(shared_data, shared_models, tmp_path):
    results = tmp_path / "RESULTS.md"
    proc = _run("--data-dir", shared_data, "--weights", shared_models / "fer_mini_xception.hdf5",
                "--work-dir", tmp_path / "work", "--limit", 200, "--folds", 3, "--results", results, *QUICK)
    repo_results = REPO / "bench" / "RESULTS.md"  # left alone: nothing of this run lands there
    assert not repo_results.exists() or str(tmp_path) not in repo_results.read_text()

    text = results.read_text()
    assert text.count("## Real data: `fer_mini_xception`") == 1
    assert "Runtime of the whole benchmark" in text and "### FER2013" in text and "### CK+" in text
    assert "| predictor | expr accuracy | expr macro F1 (7 classes) |" in proc.stdout
    assert "AU F1 tuned thr." in proc.stdout

    figures = json.loads((tmp_path / "work" / "real_data_results.json").read_text())
    fer, ck = figures["datasets"]
    assert fer["rows"] == {"train": 200, "test": 200}
    expr = fer["tasks"]["expr"]["predictors"]
    assert set(expr) == {"zero-shot", "paper (mlp)", "logistic (linear)", "lightgbm (lightgbm)", "blend"}
    # The FER2013-trained network itself (0.58 on the full test split) and the heads on its features
    # are far above chance (1/7 accuracy; the largest class, happy, is about a quarter of the rows).
    assert expr["zero-shot"]["accuracy"] > 0.45
    assert max(expr["logistic (linear)"]["accuracy"], expr["lightgbm (lightgbm)"]["accuracy"]) > 0.4
    assert expr["blend"]["macro_f1"] > 0.3
    assert abs(sum(fer["tasks"]["expr"]["blend_weights"].values()) - 1) < 1e-6

    assert ck["rows"] == {"train": 200, "test": None}
    assert ck["protocol"] == "3-fold cross-validation grouped by subject"
    ck_expr = ck["tasks"]["expr"]
    assert "Other" in ck_expr["classes"] and "Neutral" not in ck_expr["classes"]  # contempt; no neutral in CK+
    assert max(p["macro_f1"] for p in ck_expr["predictors"].values()) > 0.4  # chance: 1/7
    au = ck["tasks"]["au"]
    assert "zero-shot" not in au["predictors"]  # FER2013 logits name no action unit
    assert 0 < au["n"] < 200  # about a third of CK+ sequences have no FACS codes
    assert max(p["f1_tuned"] for p in au["predictors"].values()) > 0.3
    assert set(au["blend_thresholds"]) == {"AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23",
                                           "AU24", "AU25", "AU26"}


@pytest.mark.slow
def test_abaw_layout_then_existing_store(tmp_path):
    from featurize.synthetic import SplitSize, write_dataset

    paths = write_dataset(tmp_path / "data", seed=0, sizes={"train": SplitSize(6, 20), "val": SplitSize(2, 20)},
                          progress=False)
    work = tmp_path / "work"
    results = tmp_path / "RESULTS.md"
    common = ["--backbone", "timm:test_efficientnet", "--work-dir", work, "--recipes", "logistic,lightgbm",
              "--results", results, *QUICK]
    _run("--dataset", "abaw-mtl", "--annotations", paths["train"], "--eval-annotations", paths["val"],
         "--images", paths["images"], "--pooled-maps", "model.blocks.1:2", *common)
    figures = json.loads((work / "real_data_results.json").read_text())
    (res,) = figures["datasets"]
    assert res["protocol"] == "hold-out: fit on train, score test"
    assert set(res["tasks"]) == {"expr", "au", "va"}
    for t in res["tasks"].values():
        # random-init logits are named 0..999: no zero-shot predictor, the heads and their blend only
        assert set(t["predictors"]) == {"logistic (linear)", "lightgbm (lightgbm)", "blend"}
    assert sum(f["computed"] for f in res["featurize"]) > 0
    store = Path(res["store"])
    assert store.name.endswith("_map_model_blocks_1_2x2.h5")

    # The same store again, as a user with an existing s-Aff-Wild2 store would run it: no featurizing,
    # grouped cross-validation over the training split.
    # With a heads tune column: one study per outer fold, on that fold's training rows, choosing the
    # features too (with and without the pooled maps).
    _run("--dataset", "store", "--store", store, "--train-split", "train", "--folds", 2, "--tune", "logistic",
         "--tune-trials", 3, "--tune-cv", 2, "--tune-features", "{backbone}.embeddings",
         "--tune-features", "{backbone}.embeddings+{backbone}.map_model_blocks_1_2x2", *common)
    (res2,) = json.loads((work / "real_data_results.json").read_text())["datasets"]
    assert res2["featurize"] == []
    assert res2["protocol"] == "2-fold cross-validation grouped by video"
    assert "P_VA" in res2["tasks"]["va"]["predictors"]["blend"]
    assert "tuned logistic (linear)" in res2["tasks"]["expr"]["predictors"]
    studies = res2["tasks"]["expr"]["studies"]["tuned logistic (linear)"]
    assert len(studies) == 2 and all("C" in f["best_params"] for f in studies)
    assert all(f["best_params"]["features"] in ("timm:test_efficientnet.embeddings",
                                                "timm:test_efficientnet.embeddings+timm:test_efficientnet."
                                                "map_model_blocks_1_2x2") for f in studies)
    assert "heads tune best params per outer fold" in results.read_text()
    assert results.read_text().count("## Real data:") == 2


def test_user_errors_are_one_line(tmp_path):
    proc = _run("--dataset", "abaw-mtl", "--no-results", "--work-dir", tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: --dataset abaw-mtl needs --annotations FILE and --images DIR"

    path = tmp_path / "empty.h5"
    with FeatureStore.open(path, "a") as st:
        st.add_samples(["a/00001.jpg"], split="train")
    proc = _run("--dataset", "store", "--store", path, "--backbone", "nope", "--no-results", "--work-dir", tmp_path,
                check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"Error: {path}: no feature source 'nope' (--backbone); sources: none"
    assert "Traceback" not in proc.stderr
