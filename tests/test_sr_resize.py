"""The Lanczos-4 resize of the x4 output: against the formula, and against OpenCV where installed."""
from __future__ import annotations

import numpy as np
import pytest

from featurize.sr_resize import lanczos4_weights, resize_lanczos4


def lanczos4_float_reference(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """float64 Lanczos-4 from the textbook kernel sinc(t) sinc(t/4), 8 taps, edge-clamped, normalised."""

    def axis(src, dst):
        pos = (np.arange(dst) + 0.5) * (src / dst) - 0.5
        base = np.floor(pos)
        taps = base[:, None] + np.arange(-3, 5)
        w = np.sinc(pos[:, None] - taps) * np.sinc((pos[:, None] - taps) / 4)
        w /= w.sum(axis=1, keepdims=True)
        m = np.zeros((dst, src))
        for j in range(8):
            np.add.at(m, (np.arange(dst), np.clip(taps[:, j].astype(int), 0, src - 1)), w[:, j])
        return m

    x = img.astype(np.float64)
    my, mx = axis(img.shape[0], out_h), axis(img.shape[1], out_w)
    out = np.einsum("ij,jkc,lk->ilc", my, x.reshape(x.shape[0], x.shape[1], -1), mx)
    return np.clip(np.round(out), 0, 255).reshape((out_h, out_w) + img.shape[2:])


CASES = [((64, 48, 3), (24, 32)), ((40, 40), (20, 20)), ((30, 50, 4), (53, 17)), ((9, 7, 3), (21, 30))]


@pytest.mark.parametrize("shape, size", CASES)
def test_matches_float_formula_within_one_level(shape, size):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = resize_lanczos4(img, size)
    assert out.shape == (size[1], size[0]) + shape[2:] and out.dtype == np.uint8
    ref = lanczos4_float_reference(img, *size)
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_weights_sum_to_one_and_interpolate():
    w = lanczos4_weights(np.array([0.0, 0.25, 0.5, 0.9]))
    np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(w[0], [0, 0, 0, 1, 0, 0, 0, 0], atol=1e-6)  # on a tap: that pixel
    np.testing.assert_allclose(w[2], w[2][::-1], atol=1e-6)  # halfway: symmetric


def test_same_size_is_identity_and_constant_stays_constant():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_lanczos4(img, (17, 13)), img)
    flat = np.full((32, 32), 200, dtype=np.uint8)
    np.testing.assert_array_equal(resize_lanczos4(flat, (16, 16)), 200)


@pytest.mark.parametrize("shape, size", CASES + [((448, 448, 3), (224, 224))])
def test_bit_exact_with_opencv(shape, size):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not a dependency; install opencv-python-headless to compare")
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(resize_lanczos4(img, size), cv2.resize(img, size, interpolation=cv2.INTER_LANCZOS4))


def test_rejects_non_uint8():
    with pytest.raises(TypeError):
        resize_lanczos4(np.zeros((4, 4), dtype=np.float32), (2, 2))
