"""heads fit reads each feature spec from the store once (heads.feature_cache), and its predictions are
those of a fit that reads the store per head and per prediction chunk."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from heads.fitting import fit_mtl
from heads_fixtures import SOURCE, make_mtl_store
from store.feature_store import FeatureStore


def count_reads(monkeypatch) -> list:
    """The specs of every FeatureStore.read_features call from now on, in order."""
    reads = []
    real = FeatureStore.read_features

    def counting(self, spec, rows=None):
        reads.append(spec)
        return real(self, spec, rows)

    monkeypatch.setattr(FeatureStore, "read_features", counting)
    return reads


def test_each_spec_is_read_once_and_predictions_match_uncached_reads(tmp_path, monkeypatch):
    import heads.fitting as fitting

    store = tmp_path / "s.h5"
    make_mtl_store(store)
    reads = count_reads(monkeypatch)
    fit_mtl(store, "paper", out=tmp_path / "cached", progress=False)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 2  # embeddings+logits (expr, au), logits (va)

    class NoCache:  # the reads as before the cache: per head, then per prediction chunk
        def __init__(self, st):
            self.st = st

        def read(self, spec, rows=None):
            return self.st.read_features(spec, rows)

    monkeypatch.setattr(fitting, "FeatureCache", NoCache)
    fit_mtl(store, "paper", out=tmp_path / "direct", progress=False)
    with FeatureStore.open(store) as st:
        for task in ("expr", "va", "au"):
            np.testing.assert_array_equal(st.read_predictions("cached", task), st.read_predictions("direct", task))


def test_temporal_heads_read_through_the_cache_and_leave_it_as_it_was(tmp_path, monkeypatch):
    """A temporal fit reads its spec once for training and every prediction, and marking the invalid
    rows NaN for its windows happens in an array of its own, never in the shared cached one."""
    from heads.feature_cache import FeatureCache
    from heads.temporal_rows import _features

    store = tmp_path / "s.h5"
    make_mtl_store(store)
    spec = f"{SOURCE}.embeddings+{SOURCE}.logits"
    with FeatureStore.open(store) as st:
        cache = FeatureCache(st)
        before = cache.read(spec)[0].copy()
        rows = st.rows("train")
        X = _features(st, spec, rows, cache)
        valid = cache.read(spec, rows)[1]
        assert not valid.all() and np.isnan(X[~valid]).all()  # the fixture has invalid rows: NaN for windows
        assert not np.shares_memory(X, cache.read(spec)[0])  # marked in a copy of its own ...
        np.testing.assert_array_equal(cache.read(spec)[0], before)  # ... the cache is untouched

    reads = count_reads(monkeypatch)
    fit_mtl(store, "gru", out=tmp_path / "cached", progress=False)
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 2  # embeddings+logits (expr, au), logits (va)


# ---------------------------------------------------------------------------- training on X[rows], no copy


def _rows_cases():
    from heads.mlp import MLPClassifierHead, MLPMultilabelHead, MLPRegressorHead

    rng = np.random.default_rng(3)
    n, d = 900, 12
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[rng.random(n) < 0.1] = np.nan  # rows a fit never sees (invalid features)
    rows = np.sort(rng.choice(np.flatnonzero(np.isfinite(X).all(axis=1)), 500, replace=False))
    Z = np.nan_to_num(X[rows])
    expr = np.argmax(Z @ rng.normal(size=(d, 4)), axis=1)
    au = (Z @ rng.normal(size=(d, 3)) > 0).astype(int)
    va = np.tanh(Z[:, :2]).astype(np.float32)
    groups = rows // 30  # 30-row "videos"
    fast = dict(epochs=4, batch_size=64, n_threads=1)
    return X, rows, groups, [
        (MLPClassifierHead(n_classes=4, class_weight="balanced", early_stopping=True, **fast), expr),
        (MLPClassifierHead(n_classes=4, hidden_layer_sizes=(8,), mixup={"alpha": 0.3}, **fast), expr),
        (MLPMultilabelHead(hidden_layer_sizes=(8,), early_stopping=True, **fast), au),
        (MLPMultilabelHead(hidden_layer_sizes=(), mixup={"alpha": 0.2, "kind": "mixaugment"}, **fast), au),
        (MLPRegressorHead(output_activation="tanh", loss="ccc", early_stopping=True, **fast), va),
    ]


def test_mlp_fit_on_rows_of_x_is_the_fit_on_their_copy():
    """fit(X, y, rows=rows) trains on X[rows] without copying them: the same network, bit for bit,
    as fit(X[rows], y), with early stopping (held-out groups) and mixup; rows outside `rows` may be NaN."""
    from sklearn.base import clone

    X, rows, groups, cases = _rows_cases()
    for head, y in cases:
        on_rows = clone(head).fit(X, y, groups=groups, rows=rows)
        on_copy = clone(head).fit(X[rows], y, groups=groups)
        assert on_rows.n_features_in_ == on_copy.n_features_in_ == X.shape[1]
        assert on_rows.loss_curve_ == on_copy.loss_curve_ and on_rows.best_epoch_ == on_copy.best_epoch_
        for (k, a), (_, b) in zip(on_rows.network_.state_dict().items(), on_copy.network_.state_dict().items()):
            assert torch.equal(a, b), (type(head).__name__, k)
        Xv = X[rows]
        np.testing.assert_array_equal(on_rows._raw(Xv), on_copy._raw(Xv))


def test_mlp_fit_on_rows_refuses_bad_rows_and_nan_training_rows():
    from sklearn.base import clone

    X, rows, groups, cases = _rows_cases()
    head, y = cases[0]
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))[:1]
    with pytest.raises(ValueError, match="NaN or infinity in the training rows"):
        head.fit(X, y, groups=groups, rows=np.sort(np.concatenate([rows[1:], bad])))
    with pytest.raises(ValueError, match="one per label"):
        head.fit(X, y[:-1], groups=groups[:-1], rows=rows)
    with pytest.raises(ValueError, match="must lie in"):
        head.fit(X, y, groups=groups, rows=rows + X.shape[0])
    a = clone(head).fit(X.astype(np.float64), y, groups=groups, rows=rows)  # taken as float32, as without rows
    b = clone(head).fit(X[rows].astype(np.float64), y, groups=groups)
    np.testing.assert_array_equal(a._raw(X[rows]), b._raw(X[rows]))


def test_heads_fit_trains_mlp_heads_on_the_cached_rows_with_the_same_predictions(tmp_path, monkeypatch):
    """heads fit hands the MLP heads the cached feature matrix and their rows (no copy of the training
    rows); the predictions are those of fitting on copies, and the other heads still get copies."""
    import heads.fitting as fitting
    from heads.mlp import MLPClassifierHead

    store = tmp_path / "s.h5"
    make_mtl_store(store)
    seen = []
    real_fit = MLPClassifierHead.fit

    def spy(self, X, y, groups=None, rows=None):
        seen.append((X.shape[0], None if rows is None else len(rows)))
        return real_fit(self, X, y, groups=groups, rows=rows)

    monkeypatch.setattr(MLPClassifierHead, "fit", spy)
    fit_mtl(store, "paper", out=tmp_path / "rows", progress=False)
    with FeatureStore.open(store) as st:
        n_rows = st.n_rows
    assert seen[0][0] == n_rows and seen[0][1] < n_rows  # the whole cached matrix, and the training rows
    monkeypatch.setattr(fitting, "fit_takes_rows", lambda head: False)
    fit_mtl(store, "paper", out=tmp_path / "copies", progress=False)
    assert seen[1][1] is None and seen[1][0] == seen[0][1]
    with FeatureStore.open(store) as st:
        for task in ("expr", "va", "au"):
            np.testing.assert_array_equal(st.read_predictions("rows", task), st.read_predictions("copies", task))
    run = json.loads((tmp_path / "rows" / "run.json").read_text())
    assert run["heads"]["expr"]["n_train_rows"] == seen[0][1]
    assert not fitting.fit_takes_rows(fitting.make_head("linear", "multiclass", {}, n_classes=8, seed=0))
