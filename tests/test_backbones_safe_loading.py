"""Official-style weight files (whole pickled timm models under old module paths) load without
running code from the file; malicious pickles are refused before anything runs."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess

import pytest
import torch
from torch import nn

from featurize.backbones import (
    UnsafePickleError,
    WeightsMismatchError,
    load_backbone,
    load_tensors,
)

from backbones_fixtures import random_enet, reference_outputs, save_old_style


@pytest.fixture(scope="module")
def enet():
    return random_enet("tf_efficientnet_b0", num_classes=10, seed=1)


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sequential_classifier", [False, True])
def test_old_style_pickle_loads_and_matches_original(tmp_path, enet, images, sequential_classifier):
    path = tmp_path / "enet_b0_8_va_mtl.pt"
    save_old_style(enet, path, sequential_classifier=sequential_classifier)
    with pytest.raises((ModuleNotFoundError, AttributeError)):  # really the old paths: torch.load cannot
        torch.load(path, weights_only=False)

    bb = load_backbone("enet_b0_8_va_mtl", weights=path)
    assert not bb.model.training
    with torch.no_grad():
        emb, logits = bb.model(images)
    ref_emb, ref_logits = reference_outputs(enet, images)
    assert emb.shape == (3, 1280) and logits.shape == (3, 10)
    assert (emb - ref_emb).abs().max().item() < 1e-5
    assert (logits - ref_logits).abs().max().item() < 1e-5
    import hashlib

    assert bb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert bb.identity()["weights_sha256"] == bb.weights_sha256
    assert bb.spec.logit_names[-2:] == ("valence", "arousal")


def test_plain_state_dict_file_loads(tmp_path, enet, images):
    path = tmp_path / "sd.pt"
    torch.save(enet.state_dict(), path)
    bb = load_backbone("enet_b0_8_va_mtl", weights=path)
    with torch.no_grad():
        emb, logits = bb.model(images)
    ref_emb, ref_logits = reference_outputs(enet, images)
    assert (logits - ref_logits).abs().max().item() < 1e-5
    # the same tensors as torch's own weights_only loader reads
    theirs = torch.load(path, weights_only=True)
    ours = load_tensors(path).tensors
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_wrong_architecture_is_named(tmp_path, enet):
    path = tmp_path / "b0.pt"
    save_old_style(enet, path)
    with pytest.raises(WeightsMismatchError, match=r"b0\.pt.*(missing|unexpected|shape|variant)"):
        load_backbone("enet_b2_8", weights=path)


def test_wrong_logit_count_names_the_key(tmp_path):
    path = tmp_path / "seven.pt"
    save_old_style(random_enet(num_classes=7), path)
    with pytest.raises(WeightsMismatchError, match=r"classifier\.weight has shape \(7, 1280\)"):
        load_backbone("enet_b0_8_va_mtl", weights=path)


def test_pytorch_padding_variant_is_caught(tmp_path):
    path = tmp_path / "pt_variant.pt"
    save_old_style(random_enet("efficientnet_b0", num_classes=10), path)
    with pytest.raises(WeightsMismatchError, match="another architecture variant"):
        load_backbone("enet_b0_8_va_mtl", weights=path)


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_command(marker):
    return f"touch {marker}"


@pytest.mark.parametrize(
    "make",
    [
        lambda m: (os.system, (_marker_command(m),)),
        lambda m: (builtins.exec, (f"open({str(m)!r}, 'w').close()",)),
        lambda m: (builtins.eval, (f"open({str(m)!r}, 'w')",)),
        lambda m: (subprocess.call, (["touch", str(m)],)),
    ],
    ids=["os.system", "builtins.exec", "builtins.eval", "subprocess.call"],
)
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, make):
    marker = tmp_path / "pwned"
    func, args = make(marker)
    evil_model = nn.Sequential(nn.Linear(2, 2))
    evil_model.payload = _Evil(func, args)  # hidden inside an otherwise ordinary module
    path = tmp_path / "evil.pt"
    torch.save(evil_model, path)
    with pytest.raises(UnsafePickleError) as err:
        load_backbone("enet_b0_8_va_mtl", weights=path)
    assert not marker.exists()
    assert str(path) in str(err.value)
    assert f"asks to call {func.__module__}.{func.__name__}" in str(err.value)


def test_refusal_names_the_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "x": _Evil(os.system, (f"touch {marker}",))}, path)
    with pytest.raises(UnsafePickleError, match=r"evil\.pt: refused to load: the file asks to call (posix|os)\.system"):
        load_tensors(path)
    assert not marker.exists()


def test_legacy_non_zip_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps(_Evil(os.system, (f"touch {marker}",))))
    with pytest.raises(UnsafePickleError, match="not a torch.save zip archive"):
        load_backbone("enet_b0_8_va_mtl", weights=path)
    assert not marker.exists()


def test_corrupt_storage_is_a_clear_error(tmp_path):
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(10.0)}, good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if "/data/" in item.filename:
                data = data[:8]
            zout.writestr(item, data)
    with pytest.raises(UnsafePickleError, match=r"bad\.pt: malformed torch.save file: storage .* holds 8 bytes"):
        load_tensors(bad)
