"""heads fit reads each feature spec from the store once (heads.feature_cache), and its predictions are
those of a fit that reads the store per head and per prediction chunk."""
from __future__ import annotations

import numpy as np

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
