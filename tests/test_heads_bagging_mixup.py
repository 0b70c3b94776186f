"""Bagging with soft voting (heads.bagging) and Mix-up / Mix-augment (heads.mixup)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from heads.bagging import BaggedHead, member_videos
from heads.cli import main
from heads.joint import JointMLPHead
from heads.mixup import check_mixup, mixed_targets
from heads.mlp import MLPClassifierHead, MLPMultilabelHead, MLPRegressorHead
from heads.persist import load_head, save_head
from heads.recipe import RecipeError, load_recipe
from heads.registry import make_head
from store.feature_store import FeatureStore

from heads_fixtures import make_mtl_store

FAST = {"epochs": 3, "batch_size": 64, "n_threads": 1}


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(n_videos=25, frames=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_videos * frames, 5)).astype(np.float32)
    g = np.repeat([f"v{i:02d}" for i in range(n_videos)], frames)
    y = np.argmax(X[:, :3], axis=1)
    return X, y, g


# ---------------------------------------------------------------------------- bagging


def test_members_see_disjoint_video_samples_of_a_fifth_each():
    X, y, g = _data()
    bag = BaggedHead(head="mlp", kind="multiclass", params=dict(FAST), n_classes=3,
                     bagging={"estimators": 5, "fraction": 0.2, "seed": 0}).fit(X, y, groups=g)
    sets = [set(v) for v in bag.member_videos_]
    assert len(sets) == 5
    for i in range(5):
        for j in range(i + 1, 5):
            assert not sets[i] & sets[j]  # disjoint by video
    for s, n in zip(sets, bag.member_rows_):
        assert n == np.isin(g, sorted(s)).sum()  # whole videos: every frame of a chosen video
        assert abs(n - 0.2 * len(X)) <= 10  # 20% within half a video (20 frames)
    # what each member was fitted on: its own rows only (member m refitted on them gives the same model)
    m0 = make_head("mlp", "multiclass", dict(FAST), n_classes=3, seed=0)
    rows = np.isin(g, sorted(sets[0]))
    m0.fit(X[rows], y[rows], groups=g[rows])
    np.testing.assert_array_equal(m0.predict_proba(X), bag.members_[0].predict_proba(X))
    # soft voting: the bag's probabilities are the members' mean
    mean = np.mean([m.predict_proba(X) for m in bag.members_], axis=0)
    np.testing.assert_allclose(bag.predict_proba(X), mean, rtol=1e-12)
    np.testing.assert_array_equal(bag.predict(X), np.argmax(mean, axis=1))


def test_member_sampling_counts_labelled_rows_and_overlaps_when_it_must():
    g = np.repeat(["a", "b", "c", "d"], 10)
    labelled = np.repeat([True, False, True, True], 10)
    members = member_videos(g, labelled, estimators=3, fraction=0.3, seed=1)
    for m in members:
        assert "b" not in m  # a video without labels is never a member's sample
        assert len(m) == 1
    members = member_videos(g, np.ones(40, bool), estimators=4, fraction=0.5, seed=0)  # 4 x 50% > 100%
    assert all(len(m) == 2 for m in members)


def test_bag_of_regressors_and_joint_average_and_reload(tmp_path):
    X, y, g = _data()
    va = np.tanh(X[:, :2])
    bag = make_head("mlp", "regression", {**FAST, "loss": "ccc", "bagging": {"estimators": 3}}, seed=4)
    assert isinstance(bag, BaggedHead)
    bag.fit(X, va, groups=g)
    np.testing.assert_allclose(bag.predict(X), np.mean([m.predict(X) for m in bag.members_], axis=0))
    save_head(bag, tmp_path / "b")
    np.testing.assert_allclose(load_head(tmp_path / "b").predict(X), bag.predict(X), rtol=1e-6)
    Y = {"expr": y, "va": va, "au": (np.tile(X, 3)[:, :12] > 0).astype(np.int64)}
    joint = make_head("joint_mlp", "joint", {**FAST, "bagging": {"estimators": 2, "fraction": 0.5}})
    joint.fit(X, Y, groups=g)
    out = joint.predict_tasks(X)
    np.testing.assert_allclose(out["va"], np.mean([m.predict_tasks(X)["va"] for m in joint.members_], axis=0))
    save_head(joint, tmp_path / "j")
    np.testing.assert_allclose(load_head(tmp_path / "j").predict_tasks(X)["expr"], out["expr"], rtol=1e-6)


def test_bad_bagging_options_name_the_key():
    doc, _ = load_recipe("paper")
    doc["tasks"]["expr"]["params"]["bagging"] = {"estimators": 0}
    with pytest.raises(RecipeError, match="tasks.expr.params.bagging"):
        load_recipe(doc)
    doc["tasks"]["expr"]["params"]["bagging"] = {"members": 3}
    with pytest.raises(RecipeError, match="unknown key 'members'"):
        load_recipe(doc)


def test_bagging_recipe_with_kept_members_end_to_end(tmp_path):
    s = tmp_path / "s.h5"
    make_mtl_store(s, n_videos=(15, 4, 2), seed=2)
    doc, _ = load_recipe("bagging")
    for e in doc["tasks"].values():
        e["params"].update(epochs=2, n_threads=1)
    (tmp_path / "bag.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["fit", "mtl", "--store", str(s), "--recipe", str(tmp_path / "bag.json"),
                                  "--out", str(tmp_path / "bag"), "--quiet", "--keep-members"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with FeatureStore.open(s) as st:
        runs = st.runs()
        assert sorted(runs) == ["bag"] + [f"bag.m{i}" for i in range(5)]
        rows = st.rows()
        members = [st.read_predictions(f"bag.m{i}", "expr", rows) for i in range(5)]
        bag = st.read_predictions("bag", "expr", rows)
        assert st.prediction_attrs("bag.m0")["bag_of"] == "bag"
    np.testing.assert_allclose(bag, np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    resolved = json.loads((tmp_path / "bag" / "recipe.json").read_text())
    assert resolved["tasks"]["va"]["params"]["bagging"] == {"estimators": 5, "fraction": 0.2, "seed": 0}
    # the resolved recipe fits the same bag again
    load_recipe(resolved)
    # without bagged heads, --keep-members is a user error
    r = CliRunner().invoke(main, ["fit", "expr", "--store", str(s), "--recipe", "logistic", "--out",
                                  str(tmp_path / "lin"), "--quiet", "--keep-members"])
    assert r.exit_code != 0 and "bagged" in r.output


# ---------------------------------------------------------------------------- mixup


def test_mixed_targets_by_hand():
    expr = torch.tensor([0, 2, 1])
    t = mixed_targets("multiclass", expr, torch.tensor([0, 1]), torch.tensor([2, 2]), 0.3, 3)
    np.testing.assert_allclose(t.numpy(), [[0.3, 0.7, 0.0], [0.0, 0.7, 0.3]], rtol=1e-6)
    au = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    t = mixed_targets("multilabel", au, torch.tensor([0]), torch.tensor([2]), 0.25, 2)
    np.testing.assert_allclose(t.numpy(), [[1.0, 0.75]], rtol=1e-6)
    va = torch.tensor([[0.5, -0.5], [-1.0, 1.0]])
    t = mixed_targets("regression", va, torch.tensor([0]), torch.tensor([1]), 0.9, 2)
    np.testing.assert_allclose(t.numpy(), [[0.9 * 0.5 - 0.1, -0.9 * 0.5 + 0.1]], rtol=1e-6)


@pytest.mark.parametrize("kind", ["mixup", "mixaugment"])
def test_mixup_training_loss_matches_hand_computed_value(monkeypatch, kind):
    """Two rows, one batch, lambda 0.3 (patched): the first recorded loss (initial weights) is the soft
    cross-entropy against lam * onehot + (1 - lam) * onehot, plus the real rows' loss for Mix-augment."""
    X = np.array([[1.0, -2.0], [0.5, 1.0]], np.float32)
    y = np.array([0, 2])
    lam = 0.3
    monkeypatch.setattr("heads.mixup.mix_pairs", lambda n, alpha: (lam, torch.tensor([1, 0])))
    head = MLPClassifierHead(n_classes=3, epochs=1, batch_size=2, learning_rate=1e-12,
                             mixup={"alpha": 0.1, "kind": kind}).fit(X, y)
    net = head.network_
    eye = np.eye(3)
    hand = 0.0
    for a, b in ((0, 1), (1, 0)):  # the mean over both pairings does not depend on the batch order
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.from_numpy(lam * X[[a]] + (1 - lam) * X[[b]])), 1).numpy()[0]
        hand += -np.sum((lam * eye[y[a]] + (1 - lam) * eye[y[b]]) * logp) / 2
    if kind == "mixaugment":
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.from_numpy(X)), 1).numpy()
        hand += -np.mean(logp[[0, 1], y])
    assert head.loss_curve_[0] == pytest.approx(hand, rel=1e-5)


def test_joint_mixup_leaves_out_pairs_missing_a_label(monkeypatch):
    """A pair takes part in a task's mixed loss only if both rows have that task's label."""
    import heads.losses

    calls = []
    real = heads.losses.ccc_loss

    def spy(pred, target):
        calls.append(len(pred))
        return real(pred, target)

    monkeypatch.setattr("heads.losses.ccc_loss", spy)
    X, y, g = _data(n_videos=2, frames=4)
    va = np.tanh(X[:, :2]).astype(np.float32)
    va[1::2] = np.nan  # odd rows have no VA
    au = np.full((8, 12), -1)

    def fit(perm):
        # the pairing is by batch position; make every pair (even row, odd row) whatever the batch order
        def pairs(n, alpha):
            return 0.5, perm

        monkeypatch.setattr("heads.mixup.mix_pairs", pairs)
        monkeypatch.setattr("torch.randperm", lambda n, **kw: torch.arange(n))
        JointMLPHead(epochs=1, batch_size=8, hidden_layer_sizes=[4], mixup={"alpha": 0.1, "kind": "mixup"},
                     n_threads=1).fit(X, {"expr": y, "va": va, "au": au})

    fit(torch.tensor([1, 0, 3, 2, 5, 4, 7, 6]))  # even with odd: no pair has both VA labels
    assert calls == []
    fit(torch.tensor([2, 3, 0, 1, 6, 7, 4, 5]))  # even with even, odd with odd: the 4 even rows' pairs
    assert calls == [4]


@pytest.mark.parametrize("cls,target", [
    (MLPClassifierHead, lambda X: np.argmax(X[:, :3], 1)),
    (MLPMultilabelHead, lambda X: (X[:, :4] > 0).astype(np.int64)),
    (MLPRegressorHead, lambda X: np.tanh(X[:, :2])),
])
@pytest.mark.parametrize("kind", ["mixup", "mixaugment"])
def test_every_mlp_head_trains_with_mixup(cls, target, kind):
    X, _, g = _data()
    kw = {"epochs": 15, "batch_size": 64, "learning_rate": 0.01, "n_threads": 1}
    head = cls(mixup={"alpha": 0.4, "kind": kind}, **kw).fit(X, target(X))
    assert np.isfinite(head.loss_curve_).all()
    plain = cls(**kw).fit(X, target(X))
    assert head.loss_curve_ != plain.loss_curve_
    if cls is MLPClassifierHead:  # mixing linear-separable classes still learns them
        assert np.mean(head.predict(X) == target(X)) > 0.85


def test_bad_mixup_options_raise():
    for bad in ({"alpha": 0}, {"kind": "cutmix"}, {"beta": 1}, 0.1):
        with pytest.raises(ValueError, match="mixup"):
            check_mixup(bad)


# ---------------------------------------------------------------------------- single + multi-task fusion


def test_chang_fusion_from_a_hand_written_spec(tmp_path):
    """docs/HEADS.md: a `paper`-style run and a `--joint` run blended with the paper's fixed weights."""
    from blend.cli import main as blend_main
    from store.schema import AU_NAMES

    s = tmp_path / "s.h5"
    make_mtl_store(s, n_videos=(8, 3, 1), seed=6)
    fast = {"epochs": 2, "batch_size": 64, "n_threads": 1}
    recipe = {"format": 1, "name": "small",
              "tasks": {"expr": {"features": "{backbone}.embeddings+{backbone}.logits", "head": "mlp", "params": fast},
                        "va": {"features": "{backbone}.logits", "head": "mlp",
                               "params": {**fast, "output_activation": "tanh", "loss": "ccc"}},
                        "au": {"features": "{backbone}.embeddings", "head": "mlp", "params": fast}},
              "joint": {"features": "{backbone}.embeddings+{backbone}.logits", "head": "joint_mlp", "params": fast}}
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    for extra, out in (([], "single"), (["--joint"], "multi")):
        r = CliRunner().invoke(main, ["fit", "mtl", "--store", str(s), "--recipe", str(tmp_path / "r.json"),
                                      "--out", str(tmp_path / out), "--quiet", *extra])
        assert r.exit_code == 0, r.output
    lam = {"va": 0.4, "expr": 0.6, "au": 0.6}
    spec = {"format": "featheads-blend-spec", "version": 1, "task": "mtl", "split": "val",
            "inputs": ["single", "multi"],
            "tasks": {t: {"weights": {"single": w, "multi": 1 - w}, "smoothing": {"kind": "none"}}
                      for t, w in lam.items()}}
    spec["tasks"]["au"]["thresholds"] = {a: 0.5 for a in AU_NAMES}
    (tmp_path / "fusion.json").write_text(json.dumps(spec))
    r = CliRunner().invoke(blend_main, ["apply", "--spec", str(tmp_path / "fusion.json"), "--store", str(s),
                                        "--split", "val", "--name", "fusion"])
    assert r.exit_code == 0, r.output
    assert "P_MTL" in r.output
    with FeatureStore.open(s) as st:
        rows = st.rows("val")
        for t, w in lam.items():
            a, b = st.read_predictions("single", t, rows), st.read_predictions("multi", t, rows)
            fused = st.read_predictions("fusion", t, rows)
            ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
            np.testing.assert_allclose(fused[ok], w * a[ok] + (1 - w) * b[ok], rtol=1e-5, atol=1e-6)
