"""The one blend-weight rule: weights are relative, normalised over the inputs present on each row,
the same in tune, apply and hand-written specs; specs with unusable weights are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from blend.apply import apply_spec
from blend.combine import TaskBlend
from blend.smoothing import Smoothing
from blend.spec import parse_spec, read_spec, write_spec
from blend.tune import tune
from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from blend_fixtures import write_mtl_store


def _blend(a, b):
    return TaskBlend("expr", ["a", "b"], np.stack([a, b]), None)


def test_two_to_one_gives_the_same_scale_with_or_without_a_missing_input():
    a = np.full((4, 3), 1.0, np.float32)
    b = np.full((4, 3), 1.0, np.float32)
    full = _blend(a, b).scores({"a": 2.0, "b": 1.0}, Smoothing())
    b_missing = b.copy()
    b_missing[1] = np.nan
    part = _blend(a, b_missing).scores({"a": 2.0, "b": 1.0}, Smoothing())
    np.testing.assert_allclose(full, 1.0, rtol=1e-6)
    np.testing.assert_allclose(part, 1.0, rtol=1e-6)


def test_weights_are_relative_and_normalised_per_row():
    rng = np.random.default_rng(0)
    a, b = rng.random((50, 4)).astype(np.float32), rng.random((50, 4)).astype(np.float32)
    b[::3] = np.nan
    x = _blend(a, b)
    s21 = x.scores({"a": 2.0, "b": 1.0}, Smoothing())
    s_norm = x.scores({"a": 2 / 3, "b": 1 / 3}, Smoothing())
    s_scaled = x.scores({"a": 20.0, "b": 10.0}, Smoothing())
    np.testing.assert_allclose(s21, s_norm, rtol=1e-6)
    np.testing.assert_allclose(s21, s_scaled, rtol=1e-6)
    both = np.isfinite(b).all(1)
    np.testing.assert_allclose(s21[:, both], (2 * a[both] + b[both]).T / 3, rtol=1e-5)
    np.testing.assert_allclose(s21[:, ~both], a[~both].T, rtol=1e-6)  # a alone, at its own scale
    with pytest.raises(ValueError):
        x.scores({"a": 0.0, "b": 0.0}, Smoothing())
    with pytest.raises(ValueError):
        x.scores({"a": -1.0, "b": 2.0}, Smoothing())


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    store = write_mtl_store(d / "store.h5", n_videos=4, n_frames=40)  # "openface" misses ~10% of rows
    res = tune(store, ["mlp", "openface"], "expr", "val", trials=20, cv=0, storage="memory", max_delta=0,
               progress=False)
    write_spec(res.spec, d / "spec.json")
    return d, store, res


def test_tuned_weights_sum_to_one_and_apply_replays_them(tuned):
    d, store, res = tuned
    w = res.spec.tasks["expr"].weights
    assert sum(w.values()) == pytest.approx(1.0)
    m = apply_spec(read_spec(d / "spec.json"), store, "val", name="final")
    assert m["expr"]["P_EXPR"] == pytest.approx(res.spec.scores["in_sample"]["P_EXPR"], abs=1e-12)


def test_a_hand_written_spec_with_scaled_weights_blends_the_same(tuned):
    d, store, res = tuned
    doc = json.loads((d / "spec.json").read_text())
    doc["tasks"]["expr"]["weights"] = {k: 7.0 * v for k, v in doc["tasks"]["expr"]["weights"].items()}
    (d / "scaled.json").write_text(json.dumps(doc))
    apply_spec(read_spec(d / "spec.json"), store, "val", name="tuned_w")
    apply_spec(read_spec(d / "scaled.json"), store, "val", name="scaled_w")
    with FeatureStore.open(store) as st:
        rows = st.rows("val")
        a, b = st.read_predictions("tuned_w", "expr", rows), st.read_predictions("scaled_w", "expr", rows)
        openface = st.read_predictions("openface", "expr", rows)
    assert np.isnan(openface).any(axis=1).any()  # rows with an input missing are part of the comparison
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weights, message", [
    ({"mlp": 0, "openface": 0}, "sum to 0"),
    ({"mlp": -0.5, "openface": 1}, ">= 0"),
    ({"mlp": True, "openface": 1}, ">= 0"),
    ({"mlp": "0.5", "openface": 1}, ">= 0"),
    ({"mlp": 1, "nosuchrun": 1}, "nosuchrun"),
])
def test_specs_with_unusable_weights_are_refused(tuned, weights, message):
    d, _, _ = tuned
    doc = json.loads((d / "spec.json").read_text())
    doc["tasks"]["expr"]["weights"] = weights
    doc["tasks"]["expr"].pop("inputs", None)
    with pytest.raises(UserError, match=message):
        parse_spec(doc, "hand.json")


def test_inputs_that_disagree_with_the_weights_are_refused(tuned):
    d, _, _ = tuned
    doc = json.loads((d / "spec.json").read_text())
    doc["tasks"]["expr"]["inputs"] = ["mlp"]
    with pytest.raises(UserError, match="does not match"):
        parse_spec(doc, "hand.json")
