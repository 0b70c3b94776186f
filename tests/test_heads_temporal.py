"""Temporal heads (heads.temporal, heads.temporal_windows): windows, alignment, masking, a planted
temporal rule, the `gru` / `transformer` recipes end to end, save/load without pickle."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from heads.cli import main
from heads.mlp import MLPClassifierHead
from heads.persist import load_head, save_head
from heads.temporal import (
    GRUClassifierHead, GRUMultilabelHead, GRURegressorHead, TransformerClassifierHead, TransformerRegressorHead,
)
from heads.temporal_rows import video_chunks
from heads.temporal_windows import WindowIndex
from store.feature_store import STATUS_OK, FeatureStore

from heads_fixtures import SOURCE, make_mtl_store

SMALL = {"hidden_size": 16, "ff_size": 32, "n_threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------- windows


def test_windows_never_cross_videos_and_follow_frame_numbers():
    # rows in scrambled order: video a frames 1..5, video b frames 1..4
    videos = np.array(["b", "a", "a", "b", "a", "b", "a", "b", "a"])
    frames = np.array([3, 5, 1, 1, 3, 2, 2, 4, 4])
    idx = WindowIndex(videos, frames, window=3)
    row = {(v, f): i for i, (v, f) in enumerate(zip(videos, frames))}
    expected = {
        ("a", 1): [-1, row["a", 1], row["a", 2]],
        ("a", 3): [row["a", 2], row["a", 3], row["a", 4]],
        ("a", 5): [row["a", 4], row["a", 5], -1],  # never b's frames
        ("b", 1): [-1, row["b", 1], row["b", 2]],
        ("b", 4): [row["b", 3], row["b", 4], -1],
    }
    win = idx.centred()
    for (v, f), want in expected.items():
        assert win[row[v, f]].tolist() == want, (v, f)
    # every window: one video only, consecutive frame numbers around the centre
    for i, w in enumerate(win):
        for k, j in enumerate(w):
            if j >= 0:
                assert videos[j] == videos[i] and frames[j] == frames[i] - 1 + k
    # a window of 5 at a's frame 2 pads frame 0 and reaches frame 4, not b
    w5 = WindowIndex(videos, frames, window=5).centred([row["a", 2]])[0]
    assert w5.tolist() == [-1, row["a", 1], row["a", 2], row["a", 3], row["a", 4]]


def test_gaps_and_invalid_frames_are_padded():
    videos = np.array(["v"] * 5)
    frames = np.array([1, 2, 4, 5, 6])  # frame 3 missing
    valid = np.array([True, True, True, True, False])  # frame 6 invalid features
    win = WindowIndex(videos, frames, valid, window=3).centred()
    assert win.tolist() == [[-1, 0, 1], [0, 1, -1], [-1, 2, 3], [2, 3, -1], [3, -1, -1]]


def test_tiling_puts_every_frame_in_exactly_one_training_window():
    rng = np.random.default_rng(0)
    videos = np.repeat(["x", "y", "z"], [23, 9, 1])
    frames = np.concatenate([rng.permutation(23) + 10, np.arange(9), [7]])
    idx = WindowIndex(videos, frames, window=9)
    for offset in range(9):
        t = idx.tiling(offset)
        used = t[t >= 0]
        assert sorted(used.tolist()) == list(range(len(videos)))
        for w in t:
            real = w[w >= 0]
            assert len(set(videos[real])) == 1
            assert np.all(np.diff(frames[real]) > 0)


def test_duplicate_frame_numbers_and_even_window_are_refused():
    with pytest.raises(ValueError, match="distinct frame numbers"):
        WindowIndex(["v", "v"], [3, 3])
    with pytest.raises(ValueError, match="odd"):
        WindowIndex(["v"], [1], window=4)


def test_video_chunks_keep_videos_whole():
    videos = np.array(list("abcabcddd"))
    chunks = video_chunks(videos, chunk_rows=3)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(9))
    for c in chunks:
        for v in set(videos[c]):
            assert set(np.flatnonzero(videos == v)) <= set(c.tolist())


# ---------------------------------------------------------------------------- planted temporal rule


def _planted(n_videos=30, T=40, shift=1, seed=0):
    """Label of frame t = argmax of the first 3 features of frame t - shift (shift < 0: a later frame);
    features independent across frames, so no per-frame head can beat chance. Rows are shuffled."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_videos * T, 6)).astype(np.float32)
    g = np.repeat(np.arange(n_videos), T)
    f = np.tile(np.arange(T) + 100, n_videos)
    y = np.argmax(np.roll(X[:, :3].reshape(n_videos, T, 3), shift, axis=1), axis=2).reshape(-1)
    edge = (f - 100 < shift) if shift > 0 else (f - 100 >= T + shift)
    y[edge] = -1
    p = rng.permutation(len(X))
    return X[p], y[p], g[p], f[p]


@pytest.mark.parametrize("cls,shift,n_videos,params", [
    # GRU: the previous frame; odd frames unlabelled, so the head must use them as context only
    (GRUClassifierHead, 1, 30, {"hidden_size": 32, "epochs": 25}),
    # Transformer: the NEXT frame (attention looks both ways); it needs more data than the GRU
    (TransformerClassifierHead, -1, 60, {"hidden_size": 32, "ff_size": 64, "num_layers": 1, "dropout": 0.0,
                                         "epochs": 30}),
])
def test_temporal_head_learns_a_rule_no_per_frame_head_can(cls, shift, n_videos, params):
    X, y, g, f = _planted(n_videos=n_videos, shift=shift)
    tr, te = g < n_videos - 8, g >= n_videos - 8
    y_tr = y[tr].copy()
    if cls is GRUClassifierHead:
        y_tr[f[tr] % 2 == 1] = -1
    head = cls(n_classes=3, learning_rate=3e-3, n_threads=1, **params).fit(X[tr], y_tr, groups=g[tr], frames=f[tr])
    pred = head.predict(X[te], groups=g[te], frames=f[te])
    lab = y[te] >= 0
    acc = np.mean(pred[lab] == y[te][lab])
    mlp = MLPClassifierHead(n_classes=3, hidden_layer_sizes=(32,), epochs=30, batch_size=64).fit(X[tr][y[tr] >= 0],
                                                                                               y[tr][y[tr] >= 0])
    acc_mlp = np.mean(mlp.predict(X[te][lab]) == y[te][lab])
    assert acc > 0.85, acc  # middle-frame alignment: a misaligned output would be at chance
    assert acc_mlp < 0.45, acc_mlp


def test_predictions_mask_gaps_like_invalid_frames():
    X, y, g, f = _planted(n_videos=6, T=20)
    head = GRUClassifierHead(n_classes=3, epochs=2, **SMALL).fit(X, y, groups=g, frames=f)
    v0 = np.flatnonzero(g == 0)
    v0 = v0[np.argsort(f[v0])]
    hole = v0[7]
    keep = np.setdiff1d(np.arange(len(X)), [hole])
    p_gap = head.predict_proba(X[keep], groups=g[keep], frames=f[keep])
    Xn = X.copy()
    Xn[hole] = np.nan
    p_nan = head.predict_proba(Xn, groups=g, frames=f)
    assert np.isnan(p_nan[hole]).all()
    np.testing.assert_allclose(p_gap, p_nan[keep], rtol=1e-5, atol=1e-6)
    Xc = X.copy()
    Xc[hole] += 3.0  # the neighbour's features do matter when it is there
    p_changed = head.predict_proba(Xc, groups=g, frames=f)
    assert not np.allclose(p_changed[v0[8]], p_nan[v0[8]], atol=1e-4)
    # rows of other videos are not affected at all
    other = g != 0
    np.testing.assert_allclose(p_changed[other], p_nan[other], rtol=1e-5, atol=1e-6)


def test_missing_labels_are_masked_whatever_else_the_row_holds():
    X, _, g, f = _planted(n_videos=6, T=20)
    rng = np.random.default_rng(1)
    au = (X[:, :4] > 0).astype(np.int64)
    missing = rng.random(len(X)) < 0.4
    a1, a2 = au.copy(), 1 - au
    a1[missing, 1] = -1  # one -1 makes the whole AU vector missing: the other entries must not count
    a2[missing, 1] = -1
    a2[~missing] = au[~missing]
    h1 = GRUMultilabelHead(epochs=2, loss="bce", **SMALL).fit(X, a1, groups=g, frames=f)
    h2 = GRUMultilabelHead(epochs=2, loss="bce", **SMALL).fit(X, a2, groups=g, frames=f)
    np.testing.assert_array_equal(h1.predict_proba(X, groups=g, frames=f), h2.predict_proba(X, groups=g, frames=f))
    va = np.tanh(X[:, :2])
    v1, v2 = va.copy(), -va
    v1[missing, 0] = np.nan
    v2[missing, 0] = np.nan
    v2[~missing] = va[~missing]
    r1 = GRURegressorHead(epochs=2, loss="ccc", **SMALL).fit(X, v1, groups=g, frames=f)
    r2 = GRURegressorHead(epochs=2, loss="ccc", **SMALL).fit(X, v2, groups=g, frames=f)
    np.testing.assert_array_equal(r1.predict(X, groups=g, frames=f), r2.predict(X, groups=g, frames=f))


def test_sgd_multistep_schedule_of_the_paper():
    head = GRUClassifierHead(optimizer="sgd", learning_rate=5e-4)
    got = [head.learning_rate_at(e) for e in range(10)]
    want = [5e-4, 5e-4, 5e-5, 5e-5, 5e-6, 5e-6, 5e-6, 5e-6, 5e-7, 5e-7]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert GRUClassifierHead().learning_rate_at(9) == 1e-3
    X, y, g, f = _planted(n_videos=4, T=20)
    head.set_params(n_classes=3, epochs=3, **SMALL).fit(X, y, groups=g, frames=f)
    assert np.isfinite(head.loss_curve_).all()


def test_temporal_heads_save_and_load_without_pickle(tmp_path):
    X, y, g, f = _planted(n_videos=4, T=20)
    va = np.tanh(X[:, :2])
    for name, head, target in (("c", GRUClassifierHead(n_classes=3, epochs=1, bidirectional=True, **SMALL), y),
                               ("r", TransformerRegressorHead(epochs=1, output_activation="tanh", **SMALL), va)):
        head.fit(X, target, groups=g, frames=f)
        save_head(head, tmp_path / name)
        with np.load(tmp_path / name / "arrays.npz", allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
        back = load_head(tmp_path / name)
        method = "predict_proba" if name == "c" else "predict"
        np.testing.assert_allclose(getattr(back, method)(X, groups=g, frames=f),
                                   getattr(head, method)(X, groups=g, frames=f), rtol=1e-6, atol=1e-7)


def test_bad_parameters_and_missing_groups_raise():
    X, y, g, f = _planted(n_videos=2, T=10)
    with pytest.raises(ValueError, match="groups"):
        GRUClassifierHead(n_classes=3).fit(X, y)
    with pytest.raises(ValueError, match="odd"):
        GRUClassifierHead(window=8).fit(X, y, groups=g, frames=f)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        TransformerClassifierHead(hidden_size=10, n_heads=4).fit(X, y, groups=g, frames=f)


# ---------------------------------------------------------------------------- recipes end to end


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("temporal_cli")
    make_mtl_store(d / "s.h5", n_videos=(12, 4, 2), seed=3)
    return d / "s.h5"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("recipe,command", [("gru", "mtl"), ("transformer", "expr")])
def test_builtin_temporal_recipes_end_to_end(store, tmp_path, recipe, command):
    s = tmp_path / "s.h5"
    shutil.copy(store, s)
    r = _run("fit", command, "--store", s, "--recipe", recipe, "--out", tmp_path / recipe, "--quiet")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / recipe / "metrics.json").read_text())
    assert "abaw2_expr" in m and "ABAW2" in r.output
    tasks = ["au", "expr", "va"] if command == "mtl" else ["expr"]
    with FeatureStore.open(s) as st:
        valid = st.source_status(SOURCE) == STATUS_OK
        assert st.runs()[recipe] == tasks
        for t in tasks:
            p = st.read_predictions(recipe, t)
            np.testing.assert_array_equal(np.isfinite(p).all(1), valid)
        first = st.read_predictions(recipe, "expr")
    head = json.loads((tmp_path / recipe / "expr" / "head.json").read_text())
    assert head["class"] == ("GRUClassifierHead" if recipe == "gru" else "TransformerClassifierHead")
    # the saved run predicts the same numbers again
    r = _run("predict", "--heads", tmp_path / recipe, "--store", s, "--name", "again")
    assert r.exit_code == 0, r.output
    with FeatureStore.open(s) as st:
        np.testing.assert_allclose(st.read_predictions("again", "expr"), first, rtol=1e-5, atol=1e-6)


def test_abaw2_objective_tunes_the_expression_blend(store, tmp_path):
    """`blend tune --objective abaw2` on a temporal run: the study maximises 0.67 macro F1 + 0.33 accuracy."""
    from blend.cli import main as blend_main
    from heads import metrics as M

    s = tmp_path / "s.h5"
    shutil.copy(store, s)
    r = _run("fit", "expr", "--store", s, "--recipe", "gru", "--out", tmp_path / "g", "--quiet")
    assert r.exit_code == 0, r.output
    out = tmp_path / "abaw2.json"
    r = CliRunner().invoke(blend_main, ["tune", "--store", str(s), "--runs", "g", "--task", "expr", "--split", "val",
                                        "--trials", "4", "--in-sample", "--max-delta", "3", "--objective", "abaw2",
                                        "--storage", "memory", "--out", str(out)])
    assert r.exit_code == 0, r.output
    spec = json.loads(out.read_text())
    ins = spec["scores"]["in_sample"]
    assert ins["abaw2_expr"] == pytest.approx(0.67 * ins["P_EXPR"] + 0.33 * ins["accuracy"])
    assert spec["study"]["best_value"] == pytest.approx(ins["abaw2_expr"])
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    with FeatureStore.open(s) as st:
        rows = st.rows("val")
        y, p = st.labels("expr", rows), st.read_predictions("g", "expr", rows)
    ok = (y >= 0) & np.isfinite(p).all(1)
    assert m["abaw2_expr"] == pytest.approx(M.abaw2_expr_score(y[ok], p[ok], n_classes=8))
    r = CliRunner().invoke(blend_main, ["tune", "--store", str(s), "--runs", "g", "--task", "va", "--objective",
                                        "abaw2", "--storage", "memory", "--out", str(tmp_path / "x.json")])
    assert r.exit_code != 0 and "--task expr" in r.output


@pytest.mark.parametrize("kind", ["mixup", "mixaugment"])
def test_temporal_heads_train_with_mixup(kind):
    X, y, g, f = _planted(n_videos=8, T=20)
    plain = GRUClassifierHead(n_classes=3, epochs=2, **SMALL).fit(X, y, groups=g, frames=f)
    mixed = GRUClassifierHead(n_classes=3, epochs=2, mixup={"alpha": 0.4, "kind": kind}, **SMALL).fit(
        X, y, groups=g, frames=f)
    assert np.isfinite(mixed.loss_curve_).all() and mixed.loss_curve_ != plain.loss_curve_
    va = np.tanh(X[:, :2])
    va[::3] = np.nan
    r = TransformerRegressorHead(epochs=2, loss="ccc", mixup={"alpha": 0.4, "kind": kind}, **SMALL).fit(
        X, va, groups=g, frames=f)
    assert np.isfinite(r.predict(X, groups=g, frames=f)).all()


def test_features_are_gathered_per_batch_never_as_a_whole_window_copy(monkeypatch):
    """Every gather from the feature matrix is at most one batch of windows (batch_size x W rows) in
    training, at most one projection chunk at prediction; nothing (n, W, D) is ever built."""
    import heads.temporal as T

    sizes = []

    class Spy(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.Tensor.index_select and type(args[0]) is cls:
                sizes.append(len(args[2]))
            out = super().__torch_function__(func, types, args, kwargs or {})
            return out.as_subclass(torch.Tensor) if isinstance(out, cls) and func is not torch.Tensor.index_select \
                else out

    real = T.as_feature_tensor
    monkeypatch.setattr(T, "as_feature_tensor", lambda X: real(X).as_subclass(Spy))
    monkeypatch.setattr(T, "_PROJECT_CHUNK", 50)
    X, y, g, f = _planted(n_videos=10, T=30)
    head = GRUClassifierHead(n_classes=3, epochs=2, batch_size=4, window=9, **SMALL).fit(X, y, groups=g, frames=f)
    assert sizes and max(sizes) <= 4 * 9
    sizes.clear()
    head.predict_proba(X, groups=g, frames=f)
    assert sizes and max(sizes) <= 50 and sum(sizes) == len(X)


@pytest.mark.parametrize("architecture", ["transformer", "gru"])
@pytest.mark.parametrize("out_activation", ["identity", "tanh"])
def test_middle_output_equals_the_full_forward_at_the_middle_slot(architecture, out_activation):
    """Prediction runs the Transformer's last layer for the middle slot only: the same outputs as the
    whole network's middle slot, windows with padded slots included."""
    from heads.temporal import TemporalNet

    torch.manual_seed(0)
    net = TemporalNet(6, 3, architecture=architecture, window=9, hidden_size=16, num_layers=3,
                      bidirectional=False, n_heads=4, ff_size=32, dropout=0.1, out_activation=out_activation).eval()
    z = torch.randn(40, 9, 16)
    mask = torch.rand(40, 9) > 0.3
    mask[:, 4] = True  # the middle slot is the row being predicted: always there
    mask[:5, :4] = False  # the start of a video
    mask[5:10, 5:] = False  # its end
    with torch.no_grad():
        full = net.forward_projected(z, mask)[:, 4]
        mid = net.middle_output(z, mask)
    assert mid.shape == full.shape
    torch.testing.assert_close(mid, full, atol=1e-5, rtol=1e-5)
