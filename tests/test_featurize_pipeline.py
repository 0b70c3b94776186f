"""`featurize run` / featurize_samples: features equal the reference pipeline (PIL + torchvision, fp32),
invalid images are recorded and counted, --strict, --gpu without a GPU, identities, re-runs."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featurize.backbones import load_backbone
from featurize.cli import main
from featurize.images import open_image_root
from featurize.pipeline import FeaturizeConfig, featurize_samples
from featurize.readers import read_abaw_mtl, read_class_folders
from featurize_fixtures import reference_features, tiny_backbone, write_faces, write_mtl_dataset
from store import STATUS_INVALID, STATUS_OK, FeatureStore, FingerprintMismatchError

pytest.importorskip("torchvision", reason="the reference preprocessing uses torchvision transforms")

QUIET = FeaturizeConfig(workers=0, progress=False, batch_size=8)


def _features(store, source, rows=None):
    with FeatureStore.open(store) as st:
        emb, valid = st.read_features(f"{source}.embeddings", rows)
        logits, _ = st.read_features(f"{source}.logits", rows)
        return emb, logits, st.source_status(source, rows)


def test_features_equal_reference_fp32_and_labels_are_stored(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path)
    bb = tiny_backbone()
    summary = featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=tmp_path / "s.h5",
                                split="train", backbone=bb, config=QUIET)
    assert (summary.rows, summary.ok, summary.invalid, summary.skipped) == (18, 18, 0, 0)
    emb, logits, status = _features(tmp_path / "s.h5", "tiny")
    ref_emb, ref_logits = reference_features(bb.model, bb.spec, [images / k for k in keys])
    assert (status == STATUS_OK).all()
    assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(logits - ref_logits).max() <= 1e-4
    with FeatureStore.open(tmp_path / "s.h5") as st:
        assert st.samples()["key"].tolist() == keys
        assert st.samples()["video"][0] == "video0_x" and st.samples()["frame"][:3].tolist() == [1, 2, 3]
        assert (st.labels("expr")[2::3] == -1).all()  # every third row: expression missing
        assert np.isnan(st.labels("va")[3::4]).all()
        assert st.source_info("tiny")["arrays"]["logits"]["names"] == ["c0", "c1", "c2", "c3", "c4"]
        identity = st.source_info("tiny")["identity"]
        assert identity["weights_sha256"] == "tiny-seed0" and identity["precision"] == "fp32"


def test_cli_timm_backbone_with_workers_equals_reference(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=2, frames=5)
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, [
        "run", "--source", "abaw-mtl", "--annotations", str(ann), "--images", str(images), "--split", "train",
        "--store", str(store), "--backbone", "timm:test_efficientnet", "--batch-size", "4", "--workers", "2",
    ])
    assert r.exit_code == 0, r.output
    assert "10 rows, 10 ok, 0 invalid, 0 skipped as done" in r.output and "images/s" in r.output
    bb = load_backbone("timm:test_efficientnet")  # BatchNormAct2d layers (folded), bicubic 160 px
    emb, logits, status = _features(store, "timm:test_efficientnet")
    ref_emb, ref_logits = reference_features(bb.model, bb.spec, [images / k for k in keys])
    assert (status == STATUS_OK).all()
    assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(logits - ref_logits).max() <= 1e-4

    again = CliRunner().invoke(main, [
        "run", "--annotations", str(ann), "--images", str(images), "--split", "train", "--store", str(store),
        "--backbone", "timm:test_efficientnet", "--no-progress",
    ])
    assert again.exit_code == 0 and "10 skipped as done; computed 0" in again.output
    np.testing.assert_array_equal(_features(store, "timm:test_efficientnet")[0], emb)


def test_grayscale_images_in_zip_equal_reference(tmp_path):
    names = [f"fer/{c}/{i}.jpg" for c in ("happy", "sad") for i in range(5)]
    paths = write_faces(tmp_path / "src", names, size=48, mode="L")
    archive = tmp_path / "fer.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p, n in zip(paths, names):
            z.write(p, n)
    root = open_image_root(archive, "fer")
    samples = read_class_folders(root, "expr")
    for grayscale in (False, True):  # an RGB backbone (channels copied) and a grayscale one
        bb = tiny_backbone(grayscale=grayscale, size=64)
        store = tmp_path / f"s{grayscale}.h5"
        featurize_samples(samples, root=root, store=store, split="fer", backbone=bb, config=QUIET)
        emb, logits, _ = _features(store, "tiny")
        ref_emb, ref_logits = reference_features(bb.model, bb.spec, paths)
        assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(logits - ref_logits).max() <= 1e-4


@pytest.mark.realdata
def test_real_fer2013_zip_equals_reference(shared_data):
    root = open_image_root(shared_data / "fer2013.zip", "fer2013/test")
    samples = read_class_folders(root, "expr")[::300]
    bb = tiny_backbone(size=224)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        featurize_samples(samples, root=root, store=f"{d}/s.h5", split="fer_test", backbone=bb,
                          config=FeaturizeConfig(workers=1, progress=False))
        emb, logits, status = _features(f"{d}/s.h5", "tiny")
    files = [io.BytesIO(root.read_bytes(s.image)) for s in samples]
    ref_emb, ref_logits = reference_features(bb.model, bb.spec, files)
    assert (status == STATUS_OK).all()
    assert np.abs(emb - ref_emb).max() <= 1e-4 and np.abs(logits - ref_logits).max() <= 1e-4


def _dataset_with_bad_images(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=2, frames=4)
    (images / keys[1]).write_bytes(b"")  # empty
    data = (images / keys[2]).read_bytes()
    (images / keys[2]).write_bytes(data[: len(data) // 3])  # truncated
    (images / keys[5]).write_text("not an image")  # text named .jpg
    (images / keys[6]).unlink()  # listed, missing
    return ann, images, keys


def test_invalid_images_are_recorded_and_the_run_goes_on(tmp_path):
    ann, images, keys = _dataset_with_bad_images(tmp_path)
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(store), "--backbone", "timm:test_efficientnet", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "8 rows, 4 ok, 4 invalid" in r.output
    assert f"invalid: {keys[6]}: no such file" in r.output and "cannot decode image" in r.output
    emb, _, status = _features(store, "timm:test_efficientnet")
    bad = [1, 2, 5, 6]
    assert (status[bad] == STATUS_INVALID).all() and (np.delete(status, bad) == STATUS_OK).all()
    assert np.isnan(emb[bad]).all() and np.isfinite(np.delete(emb, bad, axis=0)).all()


def test_strict_stops_at_the_first_bad_image(tmp_path):
    ann, images, keys = _dataset_with_bad_images(tmp_path)
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(tmp_path / "s.h5"), "--backbone", "timm:test_efficientnet",
                                  "--workers", "0", "--batch-size", "1", "--strict", "--no-progress"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith(f"Error: {images / keys[1]}: cannot decode image")
    emb, _, status = _features(tmp_path / "s.h5", "timm:test_efficientnet")  # the first row is kept
    assert status.tolist()[:2] == [STATUS_OK, 0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_without_gpu_is_a_clear_error(tmp_path):
    ann, images, _ = write_mtl_dataset(tmp_path, videos=1, frames=2)
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(tmp_path / "s.h5"), "--backbone", "timm:test_efficientnet", "--gpu"])
    assert r.exit_code == 1 and "Error: --gpu: no CUDA GPU is available" in r.output
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
                                  "--store", str(tmp_path / "s.h5"), "--backbone", "timm:test_efficientnet",
                                  "--precision", "fp16"])
    assert r.exit_code == 1 and "--precision fp16 needs --gpu" in r.output


def test_other_precision_never_lands_in_the_same_source(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=1, frames=6)
    samples, root, store = read_abaw_mtl(ann), open_image_root(images), tmp_path / "s.h5"
    bb = tiny_backbone()
    featurize_samples(samples, root=root, store=store, split="train", backbone=bb, config=QUIET)
    bf16 = FeaturizeConfig(workers=0, progress=False, precision="bf16")
    with pytest.raises(FingerprintMismatchError) as e:
        featurize_samples(samples, root=root, store=store, split="train", backbone=bb, config=bf16)
    assert "precision: 'fp32' -> 'bf16'" in str(e.value)
    with pytest.raises(FingerprintMismatchError, match="tiny-seed1"):  # other weights
        featurize_samples(samples, root=root, store=store, split="train", backbone=tiny_backbone(seed=1),
                          config=QUIET)
    featurize_samples(samples, root=root, store=store, split="train", backbone=bb, source_name="tiny_bf16",
                      config=bf16)
    emb32, _, _ = _features(store, "tiny")
    emb16, _, status = _features(store, "tiny_bf16")
    assert (status == STATUS_OK).all()
    assert np.abs(emb16 - emb32).max() <= 0.05 * np.abs(emb32).max()


def test_run_help_and_limit(tmp_path):
    r = CliRunner().invoke(main, ["run", "--help"])
    assert r.exit_code == 0 and "--source [abaw-mtl|folders|images]" in r.output and "--strict" in r.output
    ann, images, keys = write_mtl_dataset(tmp_path, videos=1, frames=6)
    args = ["run", "--annotations", str(ann), "--images", str(images), "--split", "train",
            "--store", str(tmp_path / "s.h5"), "--backbone", "timm:test_efficientnet", "--workers", "0",
            "--no-progress"]
    r = CliRunner().invoke(main, args + ["--limit", "2"])
    assert r.exit_code == 0 and "2 rows, 2 ok" in r.output
    r = CliRunner().invoke(main, args)  # the rest, later
    assert r.exit_code == 0 and "6 rows, 6 ok, 0 invalid, 2 skipped as done; computed 4" in r.output
    with FeatureStore.open(tmp_path / "s.h5") as st:
        assert st.samples()["key"].tolist() == keys


def test_wrong_images_root_exits_non_zero_and_retry_invalid_recomputes(tmp_path, monkeypatch):
    """All rows invalid (wrong --images): exit 1 with a hint; after fixing the path a plain rerun skips
    the invalid rows as done, --retry-invalid recomputes them."""
    import featurize.backbones as backbones

    ann, images, keys = write_mtl_dataset(tmp_path, videos=2, frames=3)
    def load(*a, **k):
        bb = tiny_backbone()
        bb.weights_report = lambda: "weights: tiny test backbone"
        return bb

    monkeypatch.setattr(backbones, "load_backbone", load)
    (tmp_path / "wrong").mkdir()
    store = tmp_path / "s.h5"
    args = ["run", "--annotations", str(ann), "--split", "train", "--store", str(store), "--no-progress",
            "--workers", "0"]
    res = CliRunner().invoke(main, args + ["--images", str(tmp_path / "wrong")])
    assert res.exit_code == 1 and "0 ok, 6 invalid" in res.output, res.output
    assert "every one of the 6 rows is invalid: check --images (and --subdir)" in res.output
    res = CliRunner().invoke(main, args + ["--images", str(images)])
    assert "6 skipped as done" in res.output and res.exit_code == 1
    res = CliRunner().invoke(main, args + ["--images", str(images), "--retry-invalid"])
    assert res.exit_code == 0 and "6 ok, 0 invalid" in res.output, res.output
    ref = tmp_path / "ref.h5"
    featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=ref, split="train",
                      backbone=tiny_backbone(), config=QUIET)
    for a, b in zip(_features(store, "tiny"), _features(ref, "tiny")):
        np.testing.assert_array_equal(a, b)


def test_16_bit_png_is_scaled_to_8_bits_not_clipped():
    from PIL import Image

    from featurize.images import decode_resized

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    px = decode_resized(buf.getvalue(), 32)
    assert px.shape == (32, 32, 3) and px.dtype == np.uint8
    np.testing.assert_array_equal(px[:, :, 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert px.min() == 0 and px.max() == 255 and len(np.unique(px)) > 200  # not all white


def test_ctrl_c_says_how_many_rows_are_saved_and_the_same_command_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    ann, images, keys = write_mtl_dataset(tmp_path, videos=8, frames=100)
    store = tmp_path / "s.h5"
    cmd = [sys.executable, "-m", "featurize.cli", "run", "--annotations", str(ann), "--images", str(images),
           "--split", "train", "--store", str(store), "--backbone", "timm:test_efficientnet", "--batch-size", "2",
           "--workers", "0", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts = Path(str(store) + ".parts")
    deadline = time.monotonic() + 120
    while not list(parts.glob("*/part-*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130, err[-2000:]
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    assert line and "rows are saved" in line[0] and "run the same command" in line[0] and "Traceback" not in err
    saved = int(line[0].split()[1])
    assert 0 < saved <= len(keys)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    with FeatureStore.open(store) as st:
        assert (st.source_status("timm:test_efficientnet") == STATUS_OK).all() and st.n_rows == len(keys)
