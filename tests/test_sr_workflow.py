"""docs/SR.md and docs/OPENFACE.md workflow: original, super-resolved and OpenFace sources over the same rows."""
from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner
from openface_fixtures import AU_COLUMNS, write_image_csv
from PIL import Image

from featurize.cli import main as featurize_cli
from featurize.rrdbnet import RRDBNet, RRDBNetConfig
from store import FeatureStore


def invoke(*args):
    res = CliRunner().invoke(featurize_cli, [*map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def test_original_sr_and_openface_sources_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "lsd"
    for cls in ("HAPPINESS", "SADNESS"):
        (images / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / cls / f"{i}.jpg")
    torch.manual_seed(0)
    weights = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": RRDBNet(RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=4)).state_dict()},
               weights)
    store = tmp_path / "lsd.h5"
    common = ["--source", "folders", "--task", "lsd", "--split", "lsd_train", "--store", store,
              "--backbone", "timm:test_efficientnet", "--workers", "0", "--no-progress"]

    invoke("run", "--images", images, *common)
    invoke("sr", "--images", images, "--out", tmp_path / "lsd_sr", "--weights", weights, "--no-progress")
    invoke("run", "--images", tmp_path / "lsd_sr", *common, "--source-name", "test_efficientnet_sr")
    for cls in ("HAPPINESS", "SADNESS"):
        for i in range(2):
            au = np.full(35, 0.5 + i)
            write_image_csv(tmp_path / "of" / cls / f"{i}.csv", [(0.9, au)])
    invoke("openface", "--store", store, "--csv-dir", tmp_path / "of", "--no-progress")

    with FeatureStore.open(store) as st:
        assert st.n_rows == 4  # the SR run and the OpenFace ingest added no rows
        assert set(st.sources()) == {"timm:test_efficientnet", "test_efficientnet_sr", "openface"}
        orig, v1 = st.read_features("timm:test_efficientnet.embeddings")
        sr, v2 = st.read_features("test_efficientnet_sr.embeddings")
        X, valid = st.read_features("test_efficientnet_sr.embeddings+openface.values")
        assert v1.all() and v2.all() and valid.all()
        assert not np.allclose(orig, sr)  # other pixels, other features
        assert X.shape == (4, orig.shape[1] + 35)
        assert st.feature_names("openface.values")[-1] == f"openface.values.{AU_COLUMNS[-1]}"
