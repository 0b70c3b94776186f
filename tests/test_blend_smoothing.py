"""Temporal smoothing against a naive per-row reference: gaps, video boundaries, NaN, unknown frames."""
import numpy as np
import pytest

from blend.smoothing import Smoothing, TemporalSmoother, smooth


def naive(values, videos, frames, kind, delta, sigma=None):
    values = np.asarray(values, dtype=np.float64).reshape(len(frames), -1)
    out = values.copy()
    ok = np.isfinite(values).all(axis=1)
    for i in range(len(frames)):
        if frames[i] < 0:
            continue
        if not ok[i]:
            out[i] = np.nan
            continue
        num, den = np.zeros(values.shape[1]), 0.0
        for j in range(len(frames)):
            d = frames[j] - frames[i]
            if videos[j] == videos[i] and frames[j] >= 0 and abs(d) <= delta and ok[j]:
                w = 1.0 if kind == "box" else np.exp(-(d * d) / sigma)
                num += w * values[j]
                den += w
        out[i] = num / den
    return out


def random_rows(rng, n_videos=4, max_frames=30, missing=0.3):
    videos, frames = [], []
    for v in range(n_videos):
        f = np.flatnonzero(rng.random(max_frames) > missing) + int(rng.integers(0, 5))  # gaps in frame numbers
        videos += [f"vid{v}"] * len(f)
        frames += list(f)
    perm = rng.permutation(len(frames))  # rows in no particular order
    return np.array(videos, dtype=object)[perm], np.array(frames)[perm]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kind", ["box", "gaussian"])
def test_matches_naive_reference(seed, kind):
    rng = np.random.default_rng(seed)
    videos, frames = random_rows(rng)
    frames[rng.random(len(frames)) < 0.05] = -1  # unknown frames stay as they are
    values = rng.random((len(frames), 3))
    values[rng.random(len(frames)) < 0.05, 1] = np.nan  # a NaN in one column drops the row
    delta = int(rng.integers(1, 8)) if seed % 2 else int(rng.integers(13, 20))  # FFT path above 12
    sigma = float(rng.uniform(0.5, 50))
    sm = TemporalSmoother(videos, frames, max_delta=20)
    got = sm(values, kind, delta, sigma)
    np.testing.assert_allclose(got, naive(values, videos, frames, kind, delta, sigma), rtol=1e-10, atol=1e-12)
    got32 = sm(values.astype(np.float32), kind, delta, sigma)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, naive(values, videos, frames, kind, delta, sigma), rtol=2e-5, atol=1e-6)


def test_neighbours_are_found_by_frame_number_not_position():
    videos = np.array(["a"] * 4)
    frames = np.array([1, 2, 10, 11])
    values = np.array([0.0, 1.0, 100.0, 200.0])
    out = smooth(values, videos, frames, "box", delta=1)
    np.testing.assert_allclose(out, [0.5, 0.5, 150.0, 150.0])  # frames 2 and 10 are 8 apart: not neighbours


def test_videos_do_not_leak_into_each_other():
    videos = np.array(["a", "a", "b", "b"])
    frames = np.array([1, 2, 3, 4])  # consecutive frame numbers across the video boundary
    out = smooth(np.array([0.0, 0.0, 1.0, 1.0]), videos, frames, "gaussian", delta=5, sigma=10.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 1.0, 1.0])


def test_gaussian_weights_use_unsquared_sigma():
    out = smooth(np.array([0.0, 1.0]), np.array(["v", "v"]), np.array([0, 1]), "gaussian", delta=1, sigma=2.0)
    w = np.exp(-1 / 2.0)  # exp(-(f_j - f_i)^2 / sigma)
    assert out[0] == pytest.approx(w / (1 + w))


def test_none_is_identity_and_shapes_are_kept():
    rng = np.random.default_rng(0)
    videos, frames = random_rows(rng)
    sm = TemporalSmoother(videos, frames, max_delta=3)
    v = rng.random(len(frames))
    assert np.array_equal(sm(v, "none"), v)
    assert sm(v, "box", 2).shape == v.shape


def test_duplicate_frames_and_bad_parameters_are_reported():
    with pytest.raises(ValueError, match="video 'a' has two rows with frame 3"):
        TemporalSmoother(np.array(["a", "a"]), np.array([3, 3]), max_delta=2)
    sm = TemporalSmoother(np.array(["a", "a"]), np.array([3, 4]), max_delta=2)
    with pytest.raises(ValueError, match="max_delta"):
        sm(np.zeros(2), "box", 5)
    with pytest.raises(ValueError, match="sigma"):
        Smoothing("gaussian", 2, None)
    with pytest.raises(ValueError, match="kind"):
        Smoothing("median", 2)


def test_smoothing_round_trips_through_a_dict():
    s = Smoothing("gaussian", 7, 12.5)
    assert Smoothing.from_dict(s.to_dict()) == s
    assert Smoothing.from_dict({"kind": "none"}) == Smoothing()


def test_rows_already_in_video_frame_order_take_the_same_path_to_the_same_result():
    rng = np.random.default_rng(5)
    videos, frames = random_rows(rng)
    order = np.lexsort((frames, videos.astype(str)))
    videos, frames = videos[order], frames[order]
    values = rng.random((len(frames), 2))
    for kind, delta in (("box", 3), ("gaussian", 4), ("gaussian", 15)):
        got = smooth(values, videos, frames, kind, delta, 6.0)
        np.testing.assert_allclose(got, naive(values, videos, frames, kind, delta, 6.0), rtol=1e-10, atol=1e-12)
