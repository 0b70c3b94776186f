"""heads.torch_training.feature_stats: the column mean and 1/std of X[rows] that the MLP heads fold into
their input layer, against numpy in float64, for every way the rows can come (scattered over several
chunks, one contiguous run, none)."""
import numpy as np
import pytest
import torch

from heads.torch_training import feature_stats


def _reference(X: np.ndarray, rows: np.ndarray):
    sub = X[rows].astype(np.float64)
    std = sub.std(axis=0)
    return sub.mean(axis=0), np.where(std > 1e-12, 1.0 / np.where(std > 0, std, 1.0), 1.0)


@pytest.mark.parametrize("layout", ["scattered", "contiguous", "one row"])
def test_matches_numpy_over_several_chunks(layout):
    rng = np.random.default_rng(0)
    X = (rng.normal(3.0, 2.0, size=(2_500, 7)) * np.arange(1, 8)).astype(np.float32)
    X[:, 4] = 5.0  # a constant column: 1/std is 1
    rows = {"scattered": np.sort(rng.choice(len(X), 1_700, replace=False)),
            "contiguous": np.arange(300, 2_100),
            "one row": np.array([17])}[layout]
    mean, inv = feature_stats(torch.from_numpy(X), torch.from_numpy(rows), chunk=256)  # 7 chunks, the last partial
    ref_mean, ref_inv = _reference(X, rows)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(inv.numpy(), ref_inv, rtol=1e-4)
    assert inv[4] == 1.0


def test_chunk_size_does_not_change_the_result_beyond_float_rounding():
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(5_000, 5)).astype(np.float32))
    rows = torch.from_numpy(np.sort(rng.choice(5_000, 3_333, replace=False)))
    a = feature_stats(X, rows, chunk=100)
    b = feature_stats(X, rows, chunk=10_000)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def test_no_rows_gives_zero_mean_and_unit_scale():
    X = torch.ones((10, 3))
    mean, inv = feature_stats(X, torch.zeros(0, dtype=torch.int64))
    assert mean.tolist() == [0.0, 0.0, 0.0] and inv.tolist() == [1.0, 1.0, 1.0]
