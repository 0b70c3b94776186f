"""Decoding and resizing: identical to PIL convert + resize; bad files raise ImageDecodeError; zip roots
work in DataLoader worker processes; BatchNorm folding keeps outputs."""
from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from featurize.bn_fold import fold_batchnorm
from featurize.images import ImageDecodeError, decode_resized, open_image_root
from featurize.pipeline import PixelDataset, collate_pixels
from featurize_fixtures import face_image, tiny_backbone, write_faces


def _png_bytes(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "CMYK"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_decode_equals_pil_convert_then_resize(mode, interpolation):
    img = face_image(np.random.default_rng(1), 112, "RGB").convert(mode)
    data = _png_bytes(img, "JPEG" if mode == "CMYK" else "PNG")
    filt = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    ref = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), filt)
    got = decode_resized(data, 224, interpolation=interpolation)
    assert got.shape == (224, 224, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.asarray(ref))
    gray = decode_resized(data, 64, grayscale=True, interpolation=interpolation)
    ref_gray = Image.open(io.BytesIO(data)).convert("L").resize((64, 64), filt)
    np.testing.assert_array_equal(gray[:, :, 0], np.asarray(ref_gray))


def test_bad_images_raise_decode_error(tmp_path):
    good = _png_bytes(face_image(np.random.default_rng(0)), "JPEG")
    for data in (b"", b"plain text, not an image", good[: len(good) // 2]):
        with pytest.raises(ImageDecodeError, match="cannot decode image"):
            decode_resized(data, 32)
    root = open_image_root(tmp_path)
    with pytest.raises(ImageDecodeError, match="no such file"):
        root.read_bytes("missing.jpg")


def test_zip_root_decodes_in_worker_processes(tmp_path):
    names = [f"inner/c{i % 2}/{i}.jpg" for i in range(12)]
    paths = write_faces(tmp_path / "src", names)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p, n in zip(paths, names):
            z.write(p, n)
    root = open_image_root(archive, "inner")
    root.list_images()  # opens the archive in this process: workers must open their own
    clone = pickle.loads(pickle.dumps(root))
    assert clone.read_bytes("c0/0.jpg") == paths[0].read_bytes()
    ds = PixelDataset(root, [n[len("inner/"):] for n in names] + ["c0/missing.jpg"], size=40, grayscale=False,
                      interpolation="bilinear")
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_pixels)
    out = list(loader)
    index = np.concatenate([b[0] for b in out])
    pixels = torch.cat([b[1] for b in out]).numpy()
    errors = [e for b in out for e in b[2]]
    assert index.tolist() == list(range(13))
    for i in range(12):
        expected = Image.open(paths[i]).convert("RGB").resize((40, 40), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(pixels[i], np.asarray(expected))
    assert errors[:12] == [""] * 12 and errors[12] == "no such file in the archive"


def test_zip_members_outside_the_root_are_skipped_with_a_word(tmp_path, capsys):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("ok/a.jpg", "../evil.jpg", "ok/../../x.jpg", "/abs.jpg"):
            z.writestr(name, buf.getvalue())
    assert open_image_root(archive).list_images() == ["ok/a.jpg"]
    err = capsys.readouterr().err
    assert f"{archive}: 3 member(s) with '..' or an absolute path skipped" in err and err.count("\n") == 1
    with pytest.raises(ImageDecodeError, match="relative"):
        open_image_root(archive).read_bytes("../evil.jpg")


def test_bn_fold_keeps_outputs_and_removes_batchnorm():
    bb = tiny_backbone()
    x = torch.randn(4, 3, 48, 48)
    folded = fold_batchnorm(bb.model, x[:2])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in bb.model.modules())  # original untouched
    with torch.no_grad():
        for a, b in zip(bb.model(x), folded(x)):
            assert (a - b).abs().max() < 1e-5


def test_bn_fold_refuses_a_conv_output_used_twice():
    class Residual(nn.Module):  # the conv output also feeds the residual: folding would change it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = Residual().eval()
    with pytest.warns(UserWarning, match="running it unfolded"):
        assert fold_batchnorm(model, torch.randn(2, 3, 8, 8)) is model
