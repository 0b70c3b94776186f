"""RRDBNet: the official RealESRGAN_x4plus key layout loads, safely; the upscaler's sizes, range, tiles."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from featurize.rrdbnet import RRDBNet, RRDBNetConfig, load_rrdbnet
from featurize.sr import Upscaler
from featurize.sr_resize import resize_lanczos4
from featheads.core.errors import UserError

SMALL = RRDBNetConfig(num_feat=8, num_block=1, num_grow_ch=4)


def small_model(seed=0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(SMALL).eval()


def test_full_size_official_layout_loads(tmp_path):
    """Saved like the official file ({"params_ema": state_dict}); architecture read back from shapes."""
    torch.manual_seed(0)
    full = RRDBNet()
    sd = full.state_dict()
    assert len(sd) == 702 and sum(v.numel() for v in sd.values()) == 16_697_987  # RealESRGAN_x4plus
    for key in ("conv_first.weight", "body.0.rdb1.conv1.weight", "body.22.rdb3.conv5.bias", "conv_body.weight",
                "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"):
        assert key in sd
    torch.save({"params_ema": sd}, tmp_path / "RealESRGAN_x4plus.pth")
    loaded = load_rrdbnet(tmp_path / "RealESRGAN_x4plus.pth")
    assert loaded.config == RRDBNetConfig()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k])


@pytest.mark.parametrize("wrap", [lambda sd: {"params": sd}, lambda sd: sd])
def test_other_state_dict_wrappings(tmp_path, wrap):
    m = small_model()
    torch.save(wrap(m.state_dict()), tmp_path / "w.pth")
    assert load_rrdbnet(tmp_path / "w.pth").config == SMALL


class Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"params_ema": Payload()}, f, protocol=2)
    with pytest.raises(UserError, match="not a torch.save zip archive"):
        load_rrdbnet(tmp_path / "evil.pth")
    torch.save({"params_ema": Payload()}, tmp_path / "evil_zip.pth")  # the same call inside torch.save's format
    with pytest.raises(UserError, match="evil_zip.pth: .*refused"):
        load_rrdbnet(tmp_path / "evil_zip.pth")
    assert "pickled code ran" not in capsys.readouterr().out


def test_not_an_rrdbnet(tmp_path):
    torch.save({"params_ema": {"conv.weight": torch.zeros(1)}}, tmp_path / "w.pth")
    with pytest.raises(UserError, match="not an RRDBNet"):
        load_rrdbnet(tmp_path / "w.pth")
    sd = small_model().state_dict()
    del sd["conv_hr.bias"]
    torch.save(sd, tmp_path / "w2.pth")
    with pytest.raises(UserError, match="do not fit"):
        load_rrdbnet(tmp_path / "w2.pth")
    (tmp_path / "w3.pth").write_text("not a torch file")
    with pytest.raises(UserError, match="w3.pth"):
        load_rrdbnet(tmp_path / "w3.pth")


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_upscale_sizes_range_and_reference_steps():
    up = Upscaler(small_model())
    img = Image.fromarray(rgb(15, 22))
    x4 = up.upscale(img, 4)
    assert x4.size == (88, 60) and x4.mode == "RGB"
    # the reference's steps, written out: [0,1] float -> net -> clamp -> *255 round -> uint8
    with torch.no_grad():
        y = small_model()(torch.from_numpy(rgb(15, 22).transpose(2, 0, 1)).float()[None] / 255)
    ref = np.round(y.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(x4), ref)
    x2 = up.upscale(img, 2)
    assert x2.size == (44, 30)
    np.testing.assert_array_equal(np.asarray(x2), resize_lanczos4(ref, (44, 30)))
    assert up.upscale(img, 3.5).size == (77, 52)  # int(W * scale), int(H * scale)
    out = np.asarray(x2)
    assert out.dtype == np.uint8 and out.min() >= 0 and out.max() <= 255


def test_grayscale_and_alpha_modes():
    up = Upscaler(small_model())
    gray = np.random.default_rng(3).integers(0, 256, (10, 12), dtype=np.uint8)
    g = up.upscale(Image.fromarray(gray), 4)
    assert g.mode == "L" and g.size == (48, 40)
    y = up.network(np.repeat(gray[:, :, None], 3, axis=2))
    expected = np.round((y[:, :, 2] * 0.114 + y[:, :, 1] * 0.587 + y[:, :, 0] * 0.299) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(g), expected)
    rgba = np.concatenate([rgb(10, 12), gray[:, :, None]], axis=2)
    a = up.upscale(Image.fromarray(rgba), 2)
    assert a.mode == "RGBA" and a.size == (24, 20)
    assert up.upscale(Image.fromarray(gray).convert("1"), 2).mode == "L"
    assert up.upscale(Image.fromarray(rgb(10, 12)).convert("P"), 2).mode == "RGB"
    with pytest.raises(UserError, match="16-bit"):
        up.upscale(Image.fromarray(gray.astype(np.uint16) * 100), 2)


def test_deterministic():
    img = Image.fromarray(rgb(20, 20, seed=4))
    a = np.asarray(Upscaler(small_model()).upscale(img, 2))
    b = np.asarray(Upscaler(small_model()).upscale(img, 2))
    np.testing.assert_array_equal(a, b)


def test_tiles_equal_whole_image_with_enough_padding():
    """The small net sees about 19 input pixels around each output pixel: a pad of 24 hides the seams."""
    img = rgb(37, 45, seed=5)  # tiles do not divide the image
    whole = Upscaler(small_model()).network(img)
    tiled = Upscaler(small_model(), tile=16, tile_pad=24).network(img)
    assert tiled.shape == whole.shape == (148, 180, 3)
    assert np.abs(tiled - whole).max() < 1e-5
    seams = Upscaler(small_model(), tile=16, tile_pad=0).network(img)
    assert np.abs(seams - whole).max() > 1e-3  # without context the tile borders differ
