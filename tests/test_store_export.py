"""`store export` and FeatureStore.to_pandas: the store's rows as a DataFrame, Parquet or CSV."""
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from blend_fixtures import LOGIT_SOURCE, write_mtl_store
from store import FeatureStore
from store.cli import main

pd = pytest.importorskip("pandas", reason="pandas is in the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return write_mtl_store(tmp_path_factory.mktemp("export") / "s.h5")


def test_to_pandas_holds_samples_labels_features_and_predictions_of_the_split(store_path):
    with FeatureStore.open(store_path) as st:
        rows = st.rows("val")
        df = st.to_pandas("val", features=f"{LOGIT_SOURCE}.logits", predictions=["mlp"])
        expr, va, au = st.labels("expr", rows), st.labels("va", rows), st.labels("au", rows)
        logits, valid = st.read_features(f"{LOGIT_SOURCE}.logits", rows)
        mlp_va = st.read_predictions("mlp", "va", rows)
        keys = st.samples(rows)["key"]
    assert len(df) == len(rows) and df.index.tolist() == rows.tolist()
    assert df["key"].tolist() == list(keys) and set(df["split"]) == {"val"}
    # missing labels are missing values, present ones are the stored codes
    assert df["expr"].isna().tolist() == (expr < 0).tolist()
    assert df["expr"].dropna().astype(int).tolist() == expr[expr >= 0].tolist()
    assert np.array_equal(df["valence"].isna(), np.isnan(va[:, 0]))
    assert df["AU12"].isna().sum() == int((au[:, 6] < 0).sum())
    assert df["features_valid"].tolist() == valid.tolist()
    assert np.allclose(df[f"{LOGIT_SOURCE}.logits.Anger"].to_numpy(), logits[:, 0], equal_nan=True)
    assert np.allclose(df["mlp/va/arousal"], mlp_va[:, 1])


def test_store_export_writes_csv_and_parquet_that_read_back_the_same(store_path, tmp_path):
    runner = CliRunner()
    for name in ("val.csv", "val.parquet"):
        out = tmp_path / name
        res = runner.invoke(main, ["export", "--store", str(store_path), "--split", "val", "--runs",
                                   "mlp,openface", "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.is_file() and "rows" in res.output
    a = pd.read_csv(tmp_path / "val.csv", index_col="row")
    b = pd.read_parquet(tmp_path / "val.parquet")
    assert len(a) == len(b) and list(a.columns) == list(b.columns)
    assert np.allclose(a["openface/expr/Happiness"], b["openface/expr/Happiness"], equal_nan=True)
    assert b["expr"].dtype == "Int8"


def test_store_export_refuses_to_replace_a_file_unknown_runs_and_missing_pyarrow(store_path, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "x.csv"
    out.write_text("keep me")
    res = runner.invoke(main, ["export", "--store", str(store_path), "--out", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.output and out.read_text() == "keep me"
    res = runner.invoke(main, ["export", "--store", str(store_path), "--predictions", "nope", "--out",
                               str(tmp_path / "y.csv")])
    assert res.exit_code == 1 and "no predictions run 'nope'" in res.output and not (tmp_path / "y.csv").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    res = runner.invoke(main, ["export", "--store", str(store_path), "--out", str(tmp_path / "z.parquet")])
    assert res.exit_code == 1 and ".[export]" in res.output and "Traceback" not in res.output
