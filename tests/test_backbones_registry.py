"""The registry: specs of the official entries, timm:<name>, and the `featurize backbones` command."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from featurize.backbones import (
    RANDOM_INIT,
    UnknownBackboneError,
    get_spec,
    list_backbones,
    load_backbone,
)
from featurize.cli import main
from store.schema import AFFECTNET_CLASSES


def test_official_entries():
    assert list_backbones()[:5] == [
        "enet_b0_8_va_mtl", "enet_b0_8_best_vgaf", "enet_b0_8_best_afew", "enet_b2_8", "enet_b2_7",
    ]
    mtl = get_spec("enet_b0_8_va_mtl")
    assert (mtl.arch, mtl.input_size, mtl.embedding_dim) == ("tf_efficientnet_b0", 224, 1280)
    assert mtl.logit_names == AFFECTNET_CLASSES + ("valence", "arousal")
    assert mtl.mean == (0.485, 0.456, 0.406) and mtl.std == (0.229, 0.224, 0.225)
    assert mtl.interpolation == "bilinear" and not mtl.grayscale
    assert mtl.url == ("https://github.com/HSE-asavchenko/face-emotion-recognition/blob/main/models/"
                       "affectnet_emotions/enet_b0_8_va_mtl.pt?raw=true")
    b2 = get_spec("enet_b2_8")
    assert (b2.input_size, b2.embedding_dim, b2.num_logits) == (260, 1408, 8)
    assert get_spec("enet_b2_7").logit_names == tuple(c for c in AFFECTNET_CLASSES if c != "Contempt")
    assert get_spec("enet_b0_8_best_afew").num_logits == 8


def test_identity_holds_everything_that_makes_features_comparable():
    ident = get_spec("enet_b0_8_va_mtl").identity()
    for key in ("backbone", "arch", "input_size", "mean", "std", "interpolation", "grayscale", "embedding_layer"):
        assert key in ident
    assert ident != get_spec("enet_b0_8_best_afew").identity()


def test_unknown_names():
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'enet_b9'.*timm:<timm model name>"):
        get_spec("enet_b9")
    with pytest.raises(UnknownBackboneError, match="timm:not_a_model"):
        get_spec("timm:not_a_model")


def test_timm_random_init_is_reproducible_and_shaped():
    spec = get_spec("timm:resnet18")
    assert spec.interpolation == "bicubic" and spec.embedding_dim == 512 and spec.num_logits == 1000
    a = load_backbone("timm:resnet18")
    b = load_backbone("timm:resnet18")
    assert a.weights_sha256 == RANDOM_INIT and a.weights_path is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ea, la = a.model(x)
        eb, lb = b.model(x)
    assert ea.shape == (2, 512) and la.shape == (2, 1000)
    assert torch.equal(ea, eb) and torch.equal(la, lb)
    with torch.no_grad():
        assert torch.allclose(a.model.model(x), la, atol=1e-5)  # logits are the model's own output


def test_timm_weights_file_sets_logit_count(tmp_path):
    import timm

    torch.manual_seed(3)
    m = timm.create_model("resnet18", pretrained=False, num_classes=6).eval()
    path = tmp_path / "r18_6.pt"
    torch.save(m, path)
    bb = load_backbone("timm:resnet18", weights=path)
    assert bb.spec.logit_names == tuple("012345") and bb.weights_path == path
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb.model(x)[1], m(x), atol=1e-5)


def test_cli_lists_registry():
    r = CliRunner().invoke(main, ["backbones"])
    assert r.exit_code == 0, r.output
    for name in list_backbones():
        assert name in r.output
    assert "timm:<name>" in r.output and "cache folder" in r.output


def test_cli_shows_one_spec_and_cache_state(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path))
    r = CliRunner().invoke(main, ["backbones", "enet_b0_8_va_mtl"])
    assert r.exit_code == 0, r.output
    assert str(tmp_path / "enet_b0_8_va_mtl.pt") in r.output and "cached: no" in r.output
    (tmp_path / "enet_b0_8_va_mtl.pt").write_bytes(b"x")
    assert "cached: yes" in CliRunner().invoke(main, ["backbones", "enet_b0_8_va_mtl"]).output


def test_cli_unknown_name_is_one_line_error():
    r = CliRunner().invoke(main, ["backbones", "nope"])
    assert r.exit_code == 1 and r.output.startswith("Error: unknown backbone 'nope'")


def test_cli_help():
    assert CliRunner().invoke(main, ["backbones", "--help"]).exit_code == 0


def _imports(module_file):
    import ast

    tree = ast.parse(module_file.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.add(node.module)
    return names


def test_backbone_names_are_resolved_in_one_place():
    """No import cycle in the registry, and only `_names` parses the `timm:` prefix."""
    from pathlib import Path

    import featurize.backbones as pkg

    folder = Path(pkg.__file__).parent
    assert "_timm_generic" not in _imports(folder / "_registry.py")
    assert "_names" not in _imports(folder / "_timm_generic.py")
    users = {p.name for p in folder.glob("*.py") if "_timm_generic" in _imports(p)}
    assert users == {"_names.py"}
    roots = [folder.parent, folder.parent.parent / "featheads"]
    parsers = [p for root in roots for p in root.rglob("*.py")
               if 'startswith("timm:")' in p.read_text() or "TIMM_PREFIX)" in p.read_text()]
    assert parsers == [folder / "_names.py"]


def test_names_resolve_to_registered_or_timm_entries():
    from featurize.backbones import UnknownBackboneError, resolve_backbone, timm_model_name

    assert timm_model_name("timm:resnet18") == "resnet18" and timm_model_name("enet_b0_8_va_mtl") is None
    assert resolve_backbone("timm:resnet18").spec.name == "timm:resnet18"
    assert resolve_backbone("timm:resnet18").random_init and not resolve_backbone("enet_b2_8").random_init
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'nope'"):
        resolve_backbone("nope")
