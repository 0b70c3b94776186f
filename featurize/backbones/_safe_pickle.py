"""Read tensors out of a `torch.save` file without running code from it.

The official MT-EmotiEffNet files are whole pickled timm models (`torch.save(model)`) whose classes
live at module paths that current timm no longer has. Plain `torch.load(weights_only=False)` would
import those classes and run whatever the pickle asks for. Instead `read_torch_file`:

- opens the zip archive that `torch.save` writes (data.pkl plus one raw file per storage);
- unpickles data.pkl with an `Unpickler` whose `find_class` never imports anything: the tensor
  rebuilders and a few inert containers (OrderedDict, set, torch.Size) map to our own functions,
  storage classes to a dtype marker, and every other global to an inert placeholder class;
- placeholders accept being created and filled (`NEWOBJ` + `BUILD`, how modules are pickled) but
  refuse being *called* (`REDUCE`, `INST`, `OBJ`): a pickle that wants to call `os.system`,
  `builtins.eval`, `subprocess.Popen`, ... is rejected with `UnsafePickleError` naming the global;
- `harvest_tensors` then walks the placeholder module tree (`_parameters`, `_buffers`, `_modules`)
  into a flat state dict with dotted keys, plus each module's class and plain attributes (eps,
  stride, ...) so the caller can check that the file describes the network it builds.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from featheads.core.errors import UserError


class UnsafePickleError(UserError):
    """The weights file asks to run code (or is not a torch.save file we can read safely)."""


class _Refused(Exception):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _Stub:
    """Inert stand-in for a class or function named in the pickle. Never runs any code."""

    _stub_qualname = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ: how protocol-2 pickles create objects
        obj = object.__new__(cls)
        obj._stub_args = args
        obj._stub_state = None
        return obj

    def __init__(self, *args, **kwargs):  # only reached when the pickle *calls* the global
        raise _Refused(self._stub_qualname)

    def __setstate__(self, state):  # BUILD
        self._stub_state = state

    def __repr__(self):
        return f"<placeholder {self._stub_qualname}>"


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _as_ints(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or not all(isinstance(v, int) for v in value):
        raise _Malformed(f"tensor {what} is {value!r}, expected a tuple of ints")
    return tuple(value)


class _Malformed(Exception):
    pass


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, torch.Tensor) or not isinstance(storage_offset, int):
        raise _Malformed("tensor record without a storage")
    size, stride = _as_ints(size, "size"), _as_ints(stride, "stride")
    try:
        return storage.as_strided(size, stride, storage_offset)
    except RuntimeError as e:
        raise _Malformed(f"tensor of size {size} does not fit its storage ({e})") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise _Malformed("parameter record without a tensor")
    return data


def _reconstructor(cls, base, state=None):
    """copyreg._reconstructor (protocol 0/1 objects): create a placeholder, never call `base`."""
    if isinstance(cls, type) and issubclass(cls, _Stub) and base is object:
        return cls.__new__(cls)
    raise _Refused(f"copyreg._reconstructor({cls!r}, {base!r})")


# The only callables a pickle may invoke. None of them runs code named by the file.
_CALLABLE = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    ("copyreg", "_reconstructor"): _reconstructor,
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        # protocol-2 pickles name Python 2 modules (__builtin__, commands, ...): use the Python 3 names
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _CALLABLE:
            return _CALLABLE[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if key not in self._stubs:
            qualname = f"{module}.{name}"
            self._stubs[key] = type(name, (_Stub,), {"_stub_qualname": qualname, "__module__": "placeholder"})
        return self._stubs[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _Malformed(f"unknown persistent record {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int):
            raise _Malformed(f"storage record of unknown type {storage_type!r:.80}")
        return self._load_storage(str(key), storage_type.dtype, numel)


def read_torch_file(path) -> object:
    """Unpickle a `torch.save` zip file safely; returns the root object (placeholders for modules)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path}: not a torch.save zip archive (files saved by torch >= 1.6 are zip archives; "
            f"re-save an old-format file with torch.save(torch.load(f), f2) in a trusted environment)"
        )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UnsafePickleError(f"{path}: no single <archive>/data.pkl inside; not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and zf.read(order).strip() != b"little":
            raise UnsafePickleError(f"{path}: big-endian tensors are not supported")
        cache: dict[str, torch.Tensor] = {}

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in cache:
                member = f"{prefix}data/{key}"
                try:
                    raw = zf.read(member)
                except KeyError:
                    raise _Malformed(f"storage {member} is missing") from None
                itemsize = torch.empty(0, dtype=dtype).element_size()
                if len(raw) < numel * itemsize:
                    raise _Malformed(f"storage {member} holds {len(raw)} bytes, expected {numel * itemsize}")
                flat = torch.frombuffer(bytearray(raw[: numel * itemsize]), dtype=dtype) if numel else \
                    torch.empty(0, dtype=dtype)
                cache[key] = flat
            return cache[key]

        try:
            with zf.open(pkl[0]) as f:
                return _SafeUnpickler(f, load_storage).load()
        except _Refused as e:
            raise UnsafePickleError(
                f"{path}: refused to load: the file asks to call {e.qualname}, which is not a tensor "
                f"rebuilder. A weights file has no reason to do that; do not load it with torch.load."
            ) from None
        except _Malformed as e:
            raise UnsafePickleError(f"{path}: malformed torch.save file: {e}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as e:
            raise UnsafePickleError(f"{path}: cannot read the pickle safely ({type(e).__name__}: {e})") from None


@dataclass
class Harvest:
    """Tensors of a file as a flat state dict, and what each pickled module said about itself."""

    tensors: "OrderedDict[str, torch.Tensor]" = field(default_factory=OrderedDict)
    modules: dict[str, tuple[str, dict]] = field(default_factory=dict)  # path -> (class, plain attrs)


_PLAIN = (int, float, bool, str, tuple, type(None))


def _module_state(obj) -> dict | None:
    if not isinstance(obj, _Stub):
        return None
    state = obj._stub_state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], Mapping):
        state = state[0]  # (dict, slotstate)
    if isinstance(state, Mapping) and ("_parameters" in state or "_modules" in state):
        return dict(state)
    return None


def _walk(obj, prefix: str, out: Harvest, depth: int = 0) -> None:
    if depth > 200:
        raise _Malformed("module tree deeper than 200 levels")
    state = _module_state(obj)
    if state is None:
        raise _Malformed(f"module {prefix.rstrip('.') or '<root>'} is {obj!r:.80}, not a torch module")
    attrs = {k: v for k, v in state.items() if not k.startswith("_") and isinstance(v, _PLAIN)}
    out.modules[prefix.rstrip(".")] = (type(obj)._stub_qualname, attrs)
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is None or name in skip:
                continue
            if not isinstance(t, torch.Tensor):
                raise _Malformed(f"{prefix}{name} is {t!r:.80}, not a tensor")
            out.tensors[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out, depth + 1)


def harvest_tensors(root, path) -> Harvest:
    """State dict (dotted keys) of a pickled module tree, or of a pickled state dict."""
    out = Harvest()
    try:
        if _module_state(root) is not None:
            _walk(root, "", out)
            return out
        if isinstance(root, Mapping):
            if root and all(isinstance(v, torch.Tensor) for v in root.values()):
                out.tensors.update((str(k), v) for k, v in root.items())
                return out
            for key in ("state_dict", "model_state_dict", "model"):
                if key in root:
                    return harvest_tensors(root[key], path)
    except _Malformed as e:
        raise UnsafePickleError(f"{path}: malformed model file: {e}") from None
    raise UnsafePickleError(
        f"{path}: holds {type(root).__name__ if not isinstance(root, _Stub) else root!r:.80}, "
        f"neither a pickled model nor a state dict of tensors"
    )


def load_tensors(path) -> Harvest:
    """`read_torch_file` + `harvest_tensors`: the tensors of a model or state-dict file, safely."""
    return harvest_tensors(read_torch_file(path), path)
