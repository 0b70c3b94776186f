"""Read tensors out of a `torch.save` file without running code from it, in bounded memory.

The official MT-EmotiEffNet files are whole pickled timm models (`torch.save(model)`) whose classes
live at module paths that current timm no longer has. Plain `torch.load(weights_only=False)` would
import those classes and run whatever the pickle asks for. Instead `read_torch_file`:

- opens the zip archive that `torch.save` writes (data.pkl plus one raw file per storage) with
  `SafeZip`: duplicate members, zip bombs and oversized members are refused before inflating;
- runs data.pkl through `_SafeUnpickler`, the pure-Python unpickler with its dangerous opcodes
  replaced: `find_class` never imports anything (the tensor rebuilders and a few inert containers
  map to our own functions, storage classes to a dtype marker, every other global to an inert
  placeholder class); REDUCE may call only those functions, so a pickle that wants to call
  `os.system`, `builtins.eval`, `subprocess.Popen`, ... is rejected naming the global; NEWOBJ may only
  create placeholders; BUILD only fills placeholders (and an OrderedDict's attributes), so it never
  reaches a real `Tensor.__setstate__`; APPEND/SETITEM only touch lists/dicts; the number of opcodes
  and the nesting of what they build are capped;
- reads every storage only after its declared size passed the checks (`_limits`): at most what the
  member holds, at most `MAX_TENSOR_BYTES` in all, and a tensor never larger than its storage.

`harvest_tensors` then walks the placeholder module tree (`_parameters`, `_buffers`, `_modules`)
into a flat state dict with dotted keys, plus each module's class and plain attributes (eps,
stride, ...) so the caller can check that the file describes the network it builds.
"""
from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from featheads.core.errors import UserError

from ._limits import (
    MAX_NDIM,
    MAX_NESTING,
    MAX_PICKLE_BYTES,
    MAX_PICKLE_OPS,
    MAX_TENSOR_BYTES,
    WeightsFileError,
    clip,
    mb,
    short,
)
from ._zip import SafeZip


class UnsafePickleError(WeightsFileError):
    """The weights file asks to run code, or is not a torch.save file we can read safely."""


class _Refused(Exception):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _Malformed(Exception):
    pass


class _Stub:
    """Inert stand-in for a class or function named in the pickle. Never runs any code."""

    _stub_qualname = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ: how protocol-2 pickles create objects
        obj = object.__new__(cls)
        obj._stub_args = args
        obj._stub_state = None
        return obj

    def __init__(self, *args, **kwargs):  # never reached: calling a placeholder is refused earlier
        raise _Refused(self._stub_qualname)

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
    if not isinstance(value, (tuple, list, torch.Size)):
        raise _Malformed(f"tensor {what} is {short(value)}, expected a tuple of ints")
    if len(value) > MAX_NDIM:
        raise _Malformed(f"tensor {what} has {len(value)} dimensions, more than {MAX_NDIM}")
    if not all(type(v) is int and 0 <= v < 1 << 48 for v in value):
        raise _Malformed(f"tensor {what} is {short(tuple(value))}, expected non-negative ints below 2**48")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, torch.Tensor) or type(storage_offset) is not int or not 0 <= storage_offset < 1 << 48:
        raise _Malformed("tensor record without a storage")
    size, stride = _as_ints(size, "size"), _as_ints(stride, "stride")
    if len(size) != len(stride):
        raise _Malformed(f"tensor size {size} and stride {stride} differ in length")
    if math.prod(size) > storage.numel():  # a stride-0 view would make a tiny file a huge tensor later
        raise _Malformed(f"tensor of size {size} is larger than its storage ({storage.numel()} elements)")
    try:
        return storage.as_strided(size, stride, storage_offset)
    except RuntimeError as e:
        raise _Malformed(f"tensor of size {size} does not fit its storage ({e})") from None


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise _Malformed("parameter record without a tensor")
    return data  # `state` (Python attributes of the parameter) is ignored, never applied


# The only callables a pickle may invoke (REDUCE). None of them runs code named by the file.
_CALLABLE = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
}
_CALLABLE_IDS = {id(f) for f in _CALLABLE.values()}

_OP = {name: op[0] for name, op in
       ((n, getattr(pickle, n)) for n in ("REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "APPEND",
                                           "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"))}


class _SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every opcode is ours to check
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage
        self._stubs: dict[tuple[str, str], type] = {}

    def load(self):
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch = self.read, self.dispatch
        try:
            for _ in range(MAX_PICKLE_OPS):
                key = read(1)
                if not key:
                    raise EOFError
                dispatch[key[0]](self)
        except pickle._Stop as stop:
            return stop.value
        raise _Malformed(f"the pickle runs more than {MAX_PICKLE_OPS} opcodes")

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Malformed("a global named by a non-string")
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
            qualname = clip(f"{module}.{name}", 120)
            self._stubs[key] = type("placeholder", (_Stub,), {"_stub_qualname": qualname, "__module__": "placeholder"})
        return self._stubs[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _Malformed(f"unknown persistent record {short(pid)}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or type(numel) is not int or not 0 <= numel < 1 << 48:
            raise _Malformed(f"storage record of unknown type {short(storage_type)}")
        if not isinstance(key, str) or not key.isalnum():
            raise _Malformed(f"storage key {short(key)} is not a plain name")
        return self._load_storage(key, storage_type.dtype, numel)

    # --- the opcodes that could call or mutate something, restricted to inert effects ------------

    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if isinstance(func, type) and issubclass(func, _Stub):
            raise _Refused(func._stub_qualname)
        if id(func) not in _CALLABLE_IDS or not isinstance(args, tuple):
            raise _Malformed(f"REDUCE asks to call {short(func)}, which is not a tensor rebuilder")
        self.stack[-1] = func(*args)

    def _newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._placeholder(cls, args))

    def _newobj_ex(self):
        self.stack.pop()  # kwargs: a placeholder keeps none
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._placeholder(cls, args))

    def _placeholder(self, cls, args):
        if not (isinstance(cls, type) and issubclass(cls, _Stub)):
            raise _Malformed(f"NEWOBJ of {short(cls)}, not a placeholder class")
        if not isinstance(args, tuple):
            raise _Malformed("NEWOBJ arguments are not a tuple")
        return cls.__new__(cls, *args)

    def _instantiate(self, klass, args):  # INST and OBJ (protocols 0 and 1)
        if isinstance(klass, type) and issubclass(klass, _Stub) and not args:
            self.append(klass.__new__(klass))
            return
        raise _Refused(klass._stub_qualname if isinstance(klass, type) and issubclass(klass, _Stub)
                       else short(klass))

    def _build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _Stub):
            inst._stub_state = state
        elif type(inst) is OrderedDict:  # torch state dicts carry `_metadata`: keep plain names only
            if not isinstance(state, dict):
                raise _Malformed(f"BUILD of an OrderedDict with {short(state)}")
            for k, v in state.items():
                if isinstance(k, str) and k.isidentifier() and not k.startswith("__"):
                    inst.__dict__[k] = v
        elif isinstance(inst, torch.Tensor):
            raise _Malformed("BUILD on a tensor (it would set the tensor's state): refused")
        else:
            raise _Malformed(f"BUILD on {short(inst)}")

    def _append(self):
        value = self.stack.pop()
        self._target(list).append(value)

    def _appends(self):
        items = self.pop_mark()
        self._target(list).extend(items)

    def _setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._target(dict)[key] = value

    def _setitems(self):
        items = self.pop_mark()
        target = self._target(dict)
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _additems(self):
        items = self.pop_mark()
        self._target(set).update(items)

    def _target(self, kind):
        target = self.stack[-1]
        if type(target) is not kind and not (kind is dict and type(target) is OrderedDict):
            raise _Malformed(f"the pickle adds items to {short(target)}, not to a {kind.__name__}")
        return target

    dispatch[_OP["REDUCE"]] = _reduce
    dispatch[_OP["NEWOBJ"]] = _newobj
    dispatch[_OP["NEWOBJ_EX"]] = _newobj_ex
    dispatch[_OP["BUILD"]] = _build
    dispatch[_OP["APPEND"]] = _append
    dispatch[_OP["APPENDS"]] = _appends
    dispatch[_OP["SETITEM"]] = _setitem
    dispatch[_OP["SETITEMS"]] = _setitems
    dispatch[_OP["ADDITEMS"]] = _additems


def _check_nesting(root) -> None:
    """Refuse objects nested deeper than MAX_NESTING (iteratively: no RecursionError, cycles are fine)."""
    todo, seen = [(root, 0)], set()
    while todo:
        obj, depth = todo.pop()
        if isinstance(obj, (list, tuple, set, frozenset)):
            children = obj
        elif isinstance(obj, dict):
            children = [*obj.keys(), *obj.values(), *getattr(obj, "__dict__", {}).values()]
        elif isinstance(obj, _Stub):
            children = (obj._stub_args, obj._stub_state)
        else:
            continue
        if depth > MAX_NESTING:
            raise _Malformed(f"objects nested deeper than {MAX_NESTING} levels")
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        todo.extend((child, depth + 1) for child in children)


def read_torch_file(path) -> object:
    """Unpickle a `torch.save` zip file safely; returns the root object (placeholders for modules)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafePickleError(
            f"{path}: not a torch.save zip archive (files saved by torch >= 1.6 are zip archives; "
            f"re-save an old-format file with torch.save(torch.load(f), f2) in a trusted environment)"
        )
    with SafeZip(path, UnsafePickleError) as zf:
        pkl = [n for n in zf.names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise zf.refuse("no single <archive>/data.pkl inside; not a torch.save file")
        prefix = pkl[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in zf.infos and bytes(zf.read(order, 64)).strip() != b"little":
            raise zf.refuse("big-endian tensors are not supported")
        cache: dict[str, torch.Tensor] = {}
        budget = [MAX_TENSOR_BYTES]

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key in cache:
                if cache[key].dtype != dtype:
                    raise _Malformed(f"storage {key} is read as {cache[key].dtype} and as {dtype}")
                return cache[key]
            member = f"{prefix}data/{key}"
            if member not in zf.infos:
                raise _Malformed(f"storage {member} is missing")
            nbytes = numel * torch.empty(0, dtype=dtype).element_size()
            if nbytes > zf.size(member):
                raise _Malformed(f"storage {member} holds {zf.size(member)} bytes, expected {nbytes}")
            if nbytes > budget[0]:
                raise _Malformed(f"the tensors declare more than {mb(MAX_TENSOR_BYTES)} in all")
            budget[0] -= nbytes
            raw = zf.read(member, MAX_TENSOR_BYTES, nbytes)
            cache[key] = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
            return cache[key]

        data = zf.read(pkl[0], MAX_PICKLE_BYTES)
        try:
            root = _SafeUnpickler(io.BytesIO(bytes(data)), load_storage).load()
            _check_nesting(root)
            return root
        except _Refused as e:
            raise zf.refuse(
                f"refused to load: the file asks to call {e.qualname}, which is not a tensor rebuilder. "
                f"A weights file has no reason to do that; do not load it with torch.load."
            ) from None
        except _Malformed as e:
            raise zf.refuse(f"malformed torch.save file: {e}") from None
        except UserError:
            raise
        except (RecursionError, MemoryError) as e:
            raise zf.refuse(f"cannot read the pickle safely ({type(e).__name__})") from None
        except Exception as e:  # noqa: BLE001 - whatever else a crafted pickle provokes: one line
            raise zf.refuse(f"cannot read the pickle safely ({type(e).__name__}: {e})") from None


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
    if depth > MAX_NESTING:
        raise _Malformed(f"module tree deeper than {MAX_NESTING} levels")
    state = _module_state(obj)
    if state is None:
        raise _Malformed(f"module {prefix.rstrip('.') or '<root>'} is {short(obj)}, not a torch module")
    attrs = {k: v for k, v in state.items() if isinstance(k, str) and not k.startswith("_") and isinstance(v, _PLAIN)}
    out.modules[prefix.rstrip(".")] = (type(obj)._stub_qualname, attrs)
    skip = state.get("_non_persistent_buffers_set") or ()
    skip = set(skip) if isinstance(skip, (set, frozenset, list, tuple)) else set()
    for group in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(group) or {}, Mapping):
            raise _Malformed(f"module {prefix.rstrip('.') or '<root>'}: {group} is {short(state.get(group))}")
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is None or name in skip:
                continue
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise _Malformed(f"{prefix}{short(name)} is {short(t)}, not a named tensor")
            out.tensors[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if not isinstance(name, str):
            raise _Malformed(f"module {prefix.rstrip('.') or '<root>'} has a child named {short(name)}")
        if child is not None:
            _walk(child, f"{prefix}{name}.", out, depth + 1)


def harvest_tensors(root, path, depth: int = 0) -> Harvest:
    """State dict (dotted keys) of a pickled module tree, or of a pickled state dict."""
    out = Harvest()
    try:
        if _module_state(root) is not None:
            _walk(root, "", out)
            return out
        if isinstance(root, Mapping) and depth < 4:
            if root and all(isinstance(v, torch.Tensor) for v in root.values()):
                if not all(isinstance(k, str) for k in root):
                    raise _Malformed("a state dict with keys that are not strings")
                out.tensors.update(root.items())
                return out
            for key in ("state_dict", "model_state_dict", "model"):
                if key in root:
                    return harvest_tensors(root[key], path, depth + 1)
    except _Malformed as e:
        raise UnsafePickleError(f"{path}: malformed model file: {clip(str(e))}") from None
    raise UnsafePickleError(
        f"{path}: holds {short(root)}, neither a pickled model nor a state dict of tensors"
    )
