"""`featurize sr`: a folder in, the same tree out at x2/x4, resumable, weights from the cache or --weights."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featurize.cli import main as featurize_cli
from featurize.rrdbnet import RRDBNet, RRDBNetConfig
from featurize.sr import SETTINGS_FILE, WEIGHTS_FILE
from featurize.weights import cache_dir


@pytest.fixture
def weights(tmp_path):
    """A small randomly initialised RRDBNet saved the way the official file is."""
    torch.manual_seed(0)
    path = tmp_path / "w" / WEIGHTS_FILE
    path.parent.mkdir()
    torch.save({"params_ema": RRDBNet(RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=4)).state_dict()}, path)
    return path


@pytest.fixture
def images(tmp_path):
    """An LSD-like tree: class folders, RGB JPEGs, a grayscale PNG, an RGBA PNG."""
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    (root / "HAPPINESS").mkdir(parents=True)
    (root / "FEAR").mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "HAPPINESS" / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "HAPPINESS" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(root / "FEAR" / "g.png")
    Image.fromarray(rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)).save(root / "FEAR" / "t.png")
    (root / "FEAR" / "readme.txt").write_text("not an image")
    return root


def sr(*args):
    return CliRunner().invoke(featurize_cli, ["sr", "--no-progress", *map(str, args)])


def tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_help():
    res = CliRunner().invoke(featurize_cli, ["sr", "--help"])
    assert res.exit_code == 0 and "--tile-pad" in res.output and "--scale" in res.output


@pytest.mark.parametrize("scale", [2, 4])
def test_same_tree_scaled(tmp_path, images, weights, scale):
    out = tmp_path / "out"
    res = sr("--images", images, "--out", out, "--weights", weights, "--scale", scale)
    assert res.exit_code == 0, res.output
    assert "4 written, 0 already there, 0 failed" in res.output
    assert tree(out) == sorted(["FEAR/g.png", "FEAR/t.png", "HAPPINESS/a.jpg", "HAPPINESS/b.jpg", SETTINGS_FILE])
    for rel, size, mode in [("HAPPINESS/a.jpg", (16, 12), "RGB"), ("FEAR/g.png", (10, 10), "L"),
                            ("FEAR/t.png", (9, 8), "RGBA")]:
        with Image.open(out / rel) as im:
            assert im.size == (size[0] * scale, size[1] * scale) and im.mode == mode
            assert np.asarray(im).dtype == np.uint8
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["scale"] == scale and settings["model"] == "RealESRGAN_x4plus"
    assert settings["network"]["num_block"] == 1


def test_zip_archive_with_subdir(tmp_path, images, weights):
    """Read like `featurize run` reads a zip: --subdir picks the root, keys are paths below it."""
    with zipfile.ZipFile(tmp_path / "lsd.zip", "w") as z:
        for p in images.rglob("*"):
            if p.is_file():
                z.write(p, "train/" + str(p.relative_to(images)))
    res = sr("--images", tmp_path / "lsd.zip", "--subdir", "train", "--out", tmp_path / "out", "--weights", weights)
    assert res.exit_code == 0, res.output
    assert tree(tmp_path / "out") == sorted(["FEAR/g.png", "FEAR/t.png", "HAPPINESS/a.jpg", "HAPPINESS/b.jpg",
                                             SETTINGS_FILE])


def test_deterministic_and_tiles(tmp_path, images, weights):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert sr("--images", images, "--out", a, "--weights", weights).exit_code == 0
    assert sr("--images", images, "--out", b, "--weights", weights).exit_code == 0
    for rel in ("FEAR/g.png", "FEAR/t.png", "HAPPINESS/a.jpg"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    res = sr("--images", images, "--out", c, "--weights", weights, "--tile", "4", "--tile-pad", "24")
    assert res.exit_code == 0, res.output
    for rel in ("FEAR/g.png", "FEAR/t.png"):  # lossless files: tiled pixels within rounding of whole
        diff = np.abs(np.asarray(Image.open(a / rel), dtype=int) - np.asarray(Image.open(c / rel), dtype=int))
        assert diff.max() <= 1


def test_resumes_and_skips_finished_images(tmp_path, images, weights):
    out = tmp_path / "out"
    assert sr("--images", images, "--out", out, "--weights", weights).exit_code == 0
    kept = (out / "HAPPINESS" / "a.jpg").stat().st_mtime_ns
    (out / "FEAR" / "g.png").unlink()
    (out / "FEAR" / ".g.png.part").write_bytes(b"half a file from a killed run")
    res = sr("--images", images, "--out", out, "--weights", weights)
    assert res.exit_code == 0, res.output
    assert "1 written, 3 already there" in res.output
    assert (out / "HAPPINESS" / "a.jpg").stat().st_mtime_ns == kept
    assert not (out / "FEAR" / ".g.png.part").exists()
    with Image.open(out / "FEAR" / "g.png") as im:
        assert im.size == (20, 20)


def test_other_scale_into_the_same_folder_is_refused(tmp_path, images, weights):
    out = tmp_path / "out"
    assert sr("--images", images, "--out", out, "--weights", weights).exit_code == 0
    res = sr("--images", images, "--out", out, "--weights", weights, "--scale", 4)
    assert res.exit_code == 1 and "Use another --out folder" in res.output and '"scale": 2.0' in res.output


def test_unreadable_image_is_reported_and_the_rest_written(tmp_path, images, weights):
    (images / "FEAR" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    res = sr("--images", images, "--out", out, "--weights", weights)
    assert res.exit_code == 1
    assert "4 written, 0 already there, 1 failed" in res.output
    assert "broken.jpg" in res.output and "Error: 1 image(s)" in res.output
    assert (out / "HAPPINESS" / "b.jpg").is_file()


def test_weights_from_cache_and_offline_message(tmp_path, images, weights, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    res = sr("--images", images, "--out", tmp_path / "o1")
    assert res.exit_code == 1
    assert "RealESRGAN_x4plus.pth" in res.output and str(cache_dir()) in res.output
    assert "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth" in res.output
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / WEIGHTS_FILE).write_bytes(weights.read_bytes())
    res = sr("--images", images, "--out", tmp_path / "o2")
    assert res.exit_code == 0, res.output


def test_bad_options(tmp_path, images, weights):
    res = sr("--images", images, "--out", tmp_path / "o", "--weights", weights, "--half")  # the old spelling
    assert res.exit_code == 1 and "--precision fp16 needs --gpu" in res.output
    res = sr("--images", images, "--out", tmp_path / "o", "--weights", weights, "--precision", "fp16")
    assert res.exit_code == 1 and "--precision fp16 needs --gpu" in res.output
    res = sr("--images", images, "--out", images, "--weights", weights)
    assert res.exit_code == 1 and "is the --images folder" in res.output
    res = sr("--images", tmp_path / "none", "--out", tmp_path / "o", "--weights", weights)
    assert res.exit_code == 1 and "no such folder" in res.output
    res = sr("--images", images, "--out", tmp_path / "o", "--weights", weights, "--scale", 0)
    assert res.exit_code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_without_cuda_is_a_clear_error(tmp_path, images, weights):
    res = sr("--images", images, "--out", tmp_path / "o", "--weights", weights, "--gpu")
    assert res.exit_code == 1 and "--gpu: no CUDA device" in res.output
    assert not (tmp_path / "o").exists()
