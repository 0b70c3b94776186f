"""`featurize run --pooled-maps`: inner maps averaged over a grid, checked against a reference computed
by hand from the unfolded model; part of the source identity; bad module names are one clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featheads.core.errors import UserError
from featurize.cli import main
from featurize.images import open_image_root
from featurize.pipeline import FeaturizeConfig, featurize_samples
from featurize.pooled_maps import PooledMap, map_widths, parse_pooled_maps
from featurize.readers import read_abaw_mtl
from featurize_fixtures import tiny_backbone, write_mtl_dataset
from store import STATUS_OK, FeatureStore, FingerprintMismatchError

pytest.importorskip("torchvision", reason="the reference preprocessing uses torchvision transforms")


def _reference_maps(model, spec, paths, module_name: str, grid: int) -> np.ndarray:
    """The module's output (unfolded fp32 model, torchvision preprocessing) averaged cell by cell with
    numpy over a grid x grid partition of the map (the map side divides by the grid here)."""
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize((spec.input_size, spec.input_size)), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    seen = []
    handle = dict(model.named_modules())[module_name].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]))
    handle.remove()
    out = seen[0].numpy()  # (B, C, H, W)
    b, c, h, w = out.shape
    cells = out.reshape(b, c, grid, h // grid, grid, w // grid).mean(axis=(3, 5))  # (B, C, G, G)
    return cells.reshape(b, -1)


def test_parse_pooled_maps():
    assert parse_pooled_maps("blocks.2:2, blocks.3:4") == (PooledMap("blocks.2", 2), PooledMap("blocks.3", 4))
    assert parse_pooled_maps("") == () and parse_pooled_maps(None) == ()
    assert PooledMap("blocks.3", 2).array == "map_blocks_3_2x2"
    for bad, msg in (("blocks.3", "write MODULE:G"), ("blocks.3:0", "between 1 and 8"), ("a:2,a:2", "twice"),
                     ("x y:2", "write MODULE:G")):
        with pytest.raises(UserError, match=msg):
            parse_pooled_maps(bad)


@pytest.mark.parametrize("module", ["bn2", "dw"])  # a folded BatchNorm, and the convolution it folds into
def test_pooled_maps_equal_a_hand_pooled_reference(tmp_path, module):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=2, frames=4)
    bb = tiny_backbone(size=48)  # bn2 / dw: 16 x 24 x 24
    maps = parse_pooled_maps(f"{module}:2,stem:3")
    config = FeaturizeConfig(workers=0, progress=False, batch_size=3, pooled_maps=maps)
    summary = featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=tmp_path / "s.h5",
                                split="train", backbone=bb, config=config)
    assert summary.ok == 8
    with FeatureStore.open(tmp_path / "s.h5") as st:
        info = st.source_info("tiny")
        assert set(info["arrays"]) == {"embeddings", "logits", f"map_{module}_2x2", "map_stem_3x3"}
        assert info["identity"]["pooled_maps"] == [f"{module}:2", "stem:3"]
        got, valid = st.read_features(f"tiny.map_{module}_2x2")
        stem, _ = st.read_features("tiny.map_stem_3x3")
        both, _ = st.read_features(f"tiny.embeddings+tiny.map_{module}_2x2")
        assert valid.all() and (st.source_status("tiny") == STATUS_OK).all()
    assert got.shape == (8, 16 * 4) and stem.shape == (8, 16 * 9) and both.shape == (8, 16 + 64)
    paths = [images / k for k in keys]
    np.testing.assert_allclose(got, _reference_maps(bb.model, bb.spec, paths, module, 2), atol=1e-4)
    np.testing.assert_allclose(stem, _reference_maps(bb.model, bb.spec, paths, "stem", 3), atol=1e-4)


def test_other_pooled_maps_never_land_in_the_same_source(tmp_path):
    ann, images, _ = write_mtl_dataset(tmp_path, videos=1, frames=3)
    samples, root, store = read_abaw_mtl(ann), open_image_root(images), tmp_path / "s.h5"
    plain = FeaturizeConfig(workers=0, progress=False)
    featurize_samples(samples, root=root, store=store, split="train", backbone=tiny_backbone(), config=plain)
    with_maps = FeaturizeConfig(workers=0, progress=False, pooled_maps=parse_pooled_maps("bn2:2"))
    with pytest.raises(FingerprintMismatchError, match="pooled_maps"):
        featurize_samples(samples, root=root, store=store, split="train", backbone=tiny_backbone(), config=with_maps)
    featurize_samples(samples, root=root, store=store, split="train", backbone=tiny_backbone(), config=with_maps,
                      source_name="tiny_maps")
    with FeatureStore.open(store) as st:
        a, _ = st.read_features("tiny.embeddings")
        b, _ = st.read_features("tiny_maps.embeddings")
    np.testing.assert_allclose(a, b, atol=1e-5)  # the maps change nothing else


def test_unknown_module_lists_the_modules_and_writes_nothing(tmp_path):
    bb = tiny_backbone()
    with pytest.raises(UserError) as e:
        map_widths(bb.model, bb.spec, parse_pooled_maps("block9:2"))
    assert "tiny has no such module" in str(e.value) and "stem (16x24x24)" in str(e.value)
    with pytest.raises(UserError, match="at least 8 x 8"):  # the map is 24 x 24; fine. head is not spatial
        map_widths(bb.model, bb.spec, parse_pooled_maps("head:8"))
    ann, images, _ = write_mtl_dataset(tmp_path, videos=1, frames=2)
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(tmp_path / "s.h5"), "--backbone", "timm:test_efficientnet",
                                  "--workers", "0", "--pooled-maps", "blocks.9:2", "--no-progress"])
    assert r.exit_code == 1 and "Error: --pooled-maps blocks.9:2: timm:test_efficientnet has no such module" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "s.h5").exists()


def test_cli_pooled_maps_on_a_timm_backbone(tmp_path):
    ann, images, _ = write_mtl_dataset(tmp_path, videos=1, frames=4)
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(store), "--backbone", "timm:test_efficientnet", "--workers", "0",
                                  "--pooled-maps", "model.blocks.1:2", "--no-progress"])
    assert r.exit_code == 0, r.output
    with FeatureStore.open(store) as st:
        X, valid = st.read_features("timm:test_efficientnet.map_model_blocks_1_2x2")
    assert valid.all() and X.shape[0] == 4 and X.shape[1] % 4 == 0 and np.isfinite(X).all()
