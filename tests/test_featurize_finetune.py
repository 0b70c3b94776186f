"""`featurize finetune` and `featurize run --weights <state dict | safetensors>` on a tiny mini-Xception.

The base model is a randomly initialised mini-Xception saved as a safetensors state dict (so the registered
`fer_mini_xception` architecture is built from an outside state dict); the data are a dozen synthetic LSD
faces from featurize.synthetic. Everything runs on the CPU.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from featurize.backbones import MiniXception, load_backbone
from featurize.cli import main
from featurize.finetune import epoch_batches, finetune, predict, read_finetune_data, _set_stage
from featurize.finetune_heads import head_parameters, replace_head
from featurize.finetune_loss import FinetuneLoss, class_weights
from featurize.finetune_sam import SAM
from featheads.core.errors import UserError
from store import FeatureStore
from store.schema import LSD_CLASSES

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "batch_size": 4, "checkpoint_steps": 0, "augment": {"hflip": 0.5, "erasing": 0.5},
        "stages": [{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2},
                   {"name": "all", "train": "all", "epochs": 1, "lr": 1e-3}]}


@pytest.fixture(scope="module")
def lsd(tmp_path_factory):
    from featurize.synthetic import write_lsd_dataset

    d = tmp_path_factory.mktemp("ft")
    paths = write_lsd_dataset(d / "data", train_counts=(2,) * 6, val_counts=(1,) * 6, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = MiniXception()
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(d / "base.safetensors"))
    return {"dir": d, "train": paths["train"], "val": paths["val"], "base": d / "base.safetensors"}


@pytest.fixture(scope="module")
def tiny_run(lsd):
    """The TINY recipe run once, uninterrupted: the reference of the resume tests."""
    return _run(lsd, lsd["dir"] / "tiny_ref")


def _data(lsd, which="train"):
    return read_finetune_data(source="folders", images=lsd[which], task="lsd", split=which, role=which)


def _run(lsd, out, recipe=TINY, **kw):
    return finetune(_data(lsd), task="lsd", backbone="fer_mini_xception", weights=lsd["base"], out=out,
                    recipe=recipe, progress=False, echo=lambda m: None, **kw)


# ------------------------------------------------------------------ pieces


def test_sam_step_equals_hand_computed():
    """L(w) = 0.5 * ||w - c||^2: g = w - c; e = rho g / ||g||; w1 = w - lr * grad(w + e) (SGD base)."""
    w0, c, rho, lr = torch.tensor([3.0, -1.0]), torch.tensor([1.0, 1.0]), 0.5, 0.1
    w = torch.nn.Parameter(w0.clone())
    sam = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    (0.5 * ((w - c) ** 2).sum()).backward()
    sam.first_step()
    sam.zero_grad()
    (0.5 * ((w - c) ** 2).sum()).backward()
    sam.second_step()
    g = w0 - c  # (2, -2), ||g|| = 2 sqrt 2
    e = rho * g / g.norm()
    expected = w0 - lr * ((w0 + e) - c)
    torch.testing.assert_close(w.detach(), expected)
    # Adam base, first step: the update is lr * g' / (|g'| + eps) with g' taken at w + e
    w = torch.nn.Parameter(w0.clone())
    sam = SAM([w], torch.optim.Adam, rho=rho, lr=lr)
    (0.5 * ((w - c) ** 2).sum()).backward()
    sam.first_step()
    sam.zero_grad()
    (0.5 * ((w - c) ** 2).sum()).backward()
    sam.second_step()
    g2 = (w0 + e) - c
    torch.testing.assert_close(w.detach(), w0 - lr * g2 / (g2.abs() + 1e-8))


def test_loss_masks_missing_labels_per_task():
    recipe_loss = {"class_weights": "mean_over_counts", "label_smoothing": 0.1, "au_pos_weight": True,
                   "mtl_weights": {"va": 1.0, "expr": 1.0, "au": 1.0}}
    train = {"expr": np.array([0, 1, 1, 2]), "va": np.zeros((4, 2), np.float32), "au": np.zeros((4, 12), int)}
    loss = FinetuneLoss("mtl", recipe_loss, train, 22, "cpu")
    torch.manual_seed(0)
    out = torch.randn(4, 22)
    labels = {"expr": torch.tensor([0, -1, 2, -1]), "va": torch.tensor([[0.1, 0.2], [0.3, -0.1], [np.nan, np.nan],
                                                                          [-0.5, 0.4]]),
              "au": torch.tensor([[0] * 12, [-1] * 12, [1] * 12, [-1] * 12])}
    t = loss.terms(out, labels)
    # a missing row changes nothing, whatever the network says there
    out2 = out.clone()
    out2[1, :8] += 100
    out2[3, 10:] -= 100
    out2[2, 8:10] += 7
    t2 = loss.terms(out2, labels)
    for k in t:
        torch.testing.assert_close(t[k], t2[k])
    # the expression term is the weighted CE of the two labelled rows, weights mean(counts)/counts
    w = class_weights(train["expr"], 8)
    np.testing.assert_allclose(w[:3].numpy(), [4 / 3 / 1, 4 / 3 / 2, 4 / 3 / 1], rtol=1e-6)
    ref = torch.nn.functional.cross_entropy(out[[0, 2], :8], torch.tensor([0, 2]), weight=w, label_smoothing=0.1)
    torch.testing.assert_close(t["expr"], ref)
    # no labelled row at all: 0, with a graph
    none = {"expr": torch.full((4,), -1), "va": torch.full((4, 2), float("nan")), "au": torch.full((4, 12), -1)}
    x = out.clone().requires_grad_(True)
    total = loss(x, none)
    assert float(total.detach()) == 0.0
    total.backward()


def test_stage_schedule_trains_head_then_all(lsd):
    bb = load_backbone("fer_mini_xception", lsd["base"])
    model = replace_head(bb.model, 6)
    head = {id(p) for p in head_parameters(model)}
    trained = _set_stage(model, {"train": "head"})
    assert {id(p) for p in trained} == head and len(head) == 2
    assert all(p.requires_grad == (id(p) in head) for p in model.parameters())
    trained = _set_stage(model, {"train": "all"})
    assert len(trained) == len(list(model.parameters()))


def test_head_only_stage_changes_only_the_head(lsd, tmp_path):
    recipe = {**TINY, "stages": [{"name": "head", "train": "head", "epochs": 1, "lr": 1e-2}]}
    res = _run(lsd, tmp_path / "h", recipe=recipe)
    after = load_file(str(res.weights))
    before = load_file(str(lsd["base"]))
    changed = sorted(k for k in after if k in before and before[k].shape == after[k].shape
                     and not torch.equal(before[k], after[k]))
    assert changed == []  # BatchNorm statistics too: the frozen part stays in eval mode
    assert after["head.weight"].shape == (6, 128, 3, 3)


def test_epoch_batches_depend_on_seed_and_epoch_only():
    a = epoch_batches(13, 4, seed=1, epoch=2)
    assert [len(b) for b in a] == [4, 4, 5]  # the lone last row joins the batch before it
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(epoch_batches(13, 4, seed=1, epoch=2)))
    assert sorted(np.concatenate(a)) == list(range(13))


# ------------------------------------------------------------------ the whole fine-tune


def test_finetune_lowers_loss_writes_safe_weights_and_report(lsd, tmp_path):
    recipe = {**TINY, "stages": [{"name": "all", "train": "all", "epochs": 2, "lr": 3e-3}],
              "optimizer": {"name": "adam"}, "augment": {}}
    res = _run(lsd, tmp_path / "ft", recipe=recipe, val=_data(lsd, "val"), keep_best=True)
    losses = [e["train_loss"] for e in res.report["epochs"]]
    assert losses[-1] < losses[0]
    assert all("F1" in e["val"] for e in res.report["epochs"])
    report = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    from featurize.weights import sha256_file

    assert report["weights_sha256"] == sha256_file(res.weights)
    assert report["base_weights_sha256"] == sha256_file(lsd["base"])
    assert report["logit_names"] == list(LSD_CLASSES)
    f1 = [e["val"]["F1"] for e in report["epochs"]]
    assert report["best"]["epoch"] == 1 + int(np.argmax(f1)) and "optimistic" in report["kept"]
    assert report["data"]["train"]["class_counts"] == [2] * 6
    assert not (tmp_path / "ft" / "checkpoint.pt").exists()
    # the same command again: already done, nothing retrained
    again = _run(lsd, tmp_path / "ft", recipe=recipe, val=_data(lsd, "val"), keep_best=True)
    assert again.already_done and again.weights_sha256 == res.weights_sha256


def test_saved_weights_are_the_same_bytes_every_time_and_any_reader_loads_them(tmp_path):
    """Equal weights, equal file, equal sha256 (the safetensors package's writer orders the metadata
    at random); the safetensors package and the toolkit's own checked reader both read it back."""
    from featurize.backbones._safetensors import read_safetensors
    from featurize.finetune import save_weights
    from safetensors import safe_open

    model = MiniXception(num_classes=6)
    shas = {save_weights(model, tmp_path / f"w{i}.safetensors", logit_names=LSD_CLASSES, backbone="fer_mini_xception",
                         task="lsd") for i in range(4)}
    assert len(shas) == 1
    state = model.state_dict()
    for loaded in (load_file(tmp_path / "w0.safetensors"), read_safetensors(tmp_path / "w0.safetensors")):
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    with safe_open(tmp_path / "w0.safetensors", "pt") as f:
        assert f.metadata()["featheads.task"] == "lsd"


def test_resume_after_kill_9_gives_the_uninterrupted_weights(lsd, tiny_run, tmp_path):
    common = ["finetune", "--source", "folders", "--task", "lsd", "--images", str(lsd["train"]),
              "--backbone", "fer_mini_xception", "--weights", str(lsd["base"]), "--batch-size", "4",
              "--recipe", str(tmp_path / "tiny.json"), "--checkpoint-steps", "1", "--no-progress"]
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    reference = tiny_run  # same recipe (checkpoint_steps changes nothing but when checkpoints are written)
    out = tmp_path / "killed"
    # the same thread count as this process (earlier tests may have changed it): the same sums
    n = str(torch.get_num_threads())  # every pool (OpenMP, MKL, OpenBLAS), or MKL's own count could differ
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
           "OPENBLAS_NUM_THREADS": n}
    proc = subprocess.Popen([sys.executable, "-m", "featurize.cli", *common, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = out / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:]
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"]) < (2, 0)  # killed before the end
    r = CliRunner().invoke(main, [*common, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "resumed from epoch" in r.output
    a, b = load_file(str(reference.weights)), load_file(str(out / "model.safetensors"))
    diff = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert a.keys() == b.keys() and not diff, (state["epoch"], state["step"], torch.get_num_threads(), diff)


def test_ctrl_c_checkpoint_then_resume_equals_uninterrupted(lsd, tiny_run, tmp_path):
    full = tiny_run
    with pytest.raises(KeyboardInterrupt):
        _run(lsd, tmp_path / "b", stop_after_steps=2)  # as Ctrl-C: checkpoint at the end of the step
    with pytest.raises(UserError, match="another configuration"):
        _run(lsd, tmp_path / "b", seed=1)  # a checkpoint is only continued by the same configuration
    resumed = _run(lsd, tmp_path / "b")
    assert resumed.resumed_from == "epoch 1 step 2"
    a, b = load_file(str(full.weights)), load_file(str(resumed.weights))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["train_loss"] for e in full.report["epochs"]] == [e["train_loss"] for e in resumed.report["epochs"]]


# ------------------------------------------------------------------ featurize run --weights


def test_run_with_finetuned_weights_is_a_new_source_with_its_logit_names(lsd, tiny_run, tmp_path):
    res = tiny_run
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["run", "--source", "folders", "--task", "lsd", "--images", str(lsd["val"]),
                                  "--split", "val", "--store", str(store), "--backbone", "fer_mini_xception",
                                  "--weights", str(res.weights), "--source-name", "mx_ft", "--no-progress"])
    assert r.exit_code == 0, r.output
    with FeatureStore.open(store) as st:
        info = st.source_info("mx_ft")
        logits, valid = st.read_features("mx_ft.logits")
    assert info["arrays"]["logits"]["names"] == list(LSD_CLASSES)
    assert info["identity"]["weights_sha256"] == res.weights_sha256 and valid.all()
    bb = load_backbone("fer_mini_xception", res.weights)
    own = predict(bb.model, _data(lsd, "val"), bb.spec, device=torch.device("cpu"))
    np.testing.assert_allclose(logits, own, atol=1e-4)  # featurize folds BatchNorm: equal up to rounding


def test_outside_state_dict_with_another_class_count_and_logit_names(lsd, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = MiniXception(num_classes=3)
    path = tmp_path / "mine.pt"
    torch.save(net.state_dict(), path)  # a plain torch state dict
    bb = load_backbone("fer_mini_xception", path, logit_names=("a", "b", "c"))
    assert bb.spec.logit_names == ("a", "b", "c")
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(bb.model(x)[1], net.eval()(x)[1])
    assert load_backbone("fer_mini_xception", path).spec.logit_names == ("0", "1", "2")
    with pytest.raises(UserError, match="--logit-names gives 2 names, the network built has 3"):
        load_backbone("fer_mini_xception", path, logit_names=("a", "b"))


def test_an_outside_six_class_state_dict_takes_the_task_class_names_of_the_folders_it_featurizes(lsd, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        net = MiniXception(num_classes=6)
    path = tmp_path / "mine6.pt"
    torch.save(net.state_dict(), path)  # no metadata, no --logit-names
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["run", "--source", "folders", "--task", "lsd", "--images", str(lsd["val"]),
                                  "--split", "val", "--store", str(store), "--backbone", "fer_mini_xception",
                                  "--weights", str(path), "--source-name", "mine", "--no-progress"])
    assert r.exit_code == 0, r.output
    with FeatureStore.open(store) as st:
        assert tuple(st.feature_names("mine.logits")) == tuple(f"mine.logits.{c}" for c in LSD_CLASSES)


def test_safetensors_round_trip_and_lying_headers_refused(lsd, tmp_path):
    bb = load_backbone("fer_mini_xception", lsd["base"])
    base = load_file(str(lsd["base"]))
    got = bb.model.state_dict()
    assert all(torch.equal(got[k], base[k]) for k in base)
    good = lsd["base"].read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    cases = {
        "huge_header.safetensors": struct.pack("<Q", 1 << 40) + good[8:],
        "header_past_end.safetensors": struct.pack("<Q", len(good)) + good[8:],
        "truncated.safetensors": good[: 8 + n + 100],
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        r = CliRunner().invoke(main, ["run", "--source", "folders", "--task", "lsd", "--images", str(lsd["val"]),
                                      "--split", "val", "--store", str(tmp_path / "x.h5"), "--backbone",
                                      "fer_mini_xception", "--weights", str(p), "--no-progress"])
        assert r.exit_code == 1, (name, r.output)
        lines = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1 and str(p) in lines[0] and "Traceback" not in r.output, (name, r.output)


# ------------------------------------------------------------------ errors


def _cli(args):
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output


def test_cli_errors_are_one_line(lsd, tmp_path):
    one = tmp_path / "one" / "HAPPINESS"
    one.mkdir(parents=True)
    for f in sorted(Path(lsd["train"], "HAPPINESS").iterdir()):
        (one / f.name).write_bytes(f.read_bytes())
    base = ["finetune", "--backbone", "fer_mini_xception", "--weights", str(lsd["base"]), "--no-progress"]
    code, out = _cli(base + ["--task", "lsd", "--images", str(tmp_path / "one"), "--out", str(tmp_path / "o1")])
    assert code == 1 and out.count("Error:") == 1 and "1 class(es)" in out and "Traceback" not in out
    code, out = _cli(base + ["--task", "valence", "--images", str(lsd["train"]), "--out", str(tmp_path / "o2")])
    assert code == 2 and "Invalid value for '--task'" in out
    code, out = _cli(base + ["--task", "mtl", "--images", str(lsd["train"]), "--out", str(tmp_path / "o3")])
    assert code == 1 and "--task mtl needs --source abaw-mtl" in out
    other = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(5, 4)}, str(other))
    code, out = _cli(["finetune", "--backbone", "fer_mini_xception", "--weights", str(other), "--task", "lsd",
                      "--images", str(lsd["train"]), "--out", str(tmp_path / "o4"), "--no-progress"])
    assert code == 1 and out.count("Error:") == 1 and str(other) in out and "Traceback" not in out
    code, out = _cli(base + ["--task", "lsd", "--images", str(lsd["train"]), "--out", str(tmp_path / "o5"),
                             "--head-epochs", "0", "--all-epochs", "0"])
    assert code == 1 and "no epochs at all" in out


def test_registered_efficientnet_state_dict_with_six_classes(tmp_path):
    """A user's own 6-class fine-tune of tf_efficientnet_b0 featurizes as enet_b0_8_va_mtl with 6 logits."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=6).eval()
    path = tmp_path / "b0_lsd.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    bb = load_backbone("enet_b0_8_va_mtl", path, logit_names=LSD_CLASSES)
    assert bb.spec.logit_names == LSD_CLASSES and bb.spec.embedding_dim == 1280
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x)[1], net(x))
    # weights of another architecture: one line naming the file
    with pytest.raises(UserError, match=str(path).replace(".", r"\.") + ".*(another architecture|does not fit)"):
        load_backbone("enet_b2_8", path)
