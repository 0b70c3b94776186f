"""Read a safetensors file (8-byte header length, JSON header, raw little-endian tensors) safely.

No code can run (the format holds no code), and nothing is allocated before the header has been
checked: its length against the file, every tensor's dtype, shape and byte range against the data
that follows the header (inside it, no overlaps, exactly `numel * itemsize` bytes), the total against
`MAX_TENSOR_BYTES`.
"""
from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict
from pathlib import Path

import torch

from ._limits import MAX_HEADER_BYTES, MAX_NDIM, MAX_TENSOR_BYTES, WeightsFileError, clip, mb, short

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def looks_like_safetensors(head: bytes) -> bool:
    """True when the first 9 bytes are a plausible header length followed by '{'."""
    return len(head) >= 9 and head[8:9] == b"{"


def _refuse(path, reason: str) -> WeightsFileError:
    return WeightsFileError(f"{path}: {clip(reason)}")


def _entries(path, header: dict, data_len: int):
    """Yield (name, dtype, shape, begin, end) for each tensor, every field checked."""
    spans, total = [], 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _refuse(path, f"header entry {short(name)} is not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = DTYPES.get(entry["dtype"]), entry["shape"], entry["data_offsets"]
        if dtype is None:
            raise _refuse(path, f"{short(name)}: unsupported dtype {short(entry['dtype'])}")
        if (not isinstance(shape, list) or len(shape) > MAX_NDIM
                or not all(type(v) is int and 0 <= v < 1 << 48 for v in shape)):
            raise _refuse(path, f"{short(name)}: shape {short(shape)} is not at most {MAX_NDIM} non-negative ints")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(v) is int for v in offsets)):
            raise _refuse(path, f"{short(name)}: data_offsets {short(offsets)} is not [begin, end]")
        begin, end = offsets
        nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end <= data_len or end - begin != nbytes:
            raise _refuse(path, f"{short(name)}: shape {tuple(shape)} needs {nbytes} bytes, the file gives "
                                f"[{begin}, {end}) of {data_len}")
        total += nbytes
        if total > MAX_TENSOR_BYTES:
            raise _refuse(path, f"the tensors declare more than {mb(MAX_TENSOR_BYTES)} in all")
        spans.append((begin, end, name))
        yield str(name), dtype, tuple(shape), begin, end
    spans.sort()
    for (b1, e1, n1), (b2, _e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise _refuse(path, f"tensors {short(n1)} and {short(n2)} overlap")


def read_safetensors(path) -> "OrderedDict[str, torch.Tensor]":
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _refuse(path, "truncated safetensors file (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise _refuse(path, f"safetensors header declares {n} bytes, the file has {size - 8} after it")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as e:
            raise _refuse(path, f"safetensors header is not JSON ({type(e).__name__})") from None
        if not isinstance(header, dict):
            raise _refuse(path, "safetensors header is not a JSON object")
        data_start, data_len = 8 + n, size - 8 - n
        entries = list(_entries(path, header, data_len))  # all checked before anything is read
        out = OrderedDict()
        for name, dtype, shape, begin, end in entries:
            buf = bytearray(end - begin)
            f.seek(data_start + begin)
            if f.readinto(buf) != len(buf):
                raise _refuse(path, f"{short(name)}: file truncated")
            flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
            out[name] = flat.reshape(shape)
    return out


def write_safetensors(path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, byte for byte the same for the same tensors and metadata:
    tensors in name order, metadata keys sorted, the header padded with spaces to 8 bytes (the
    safetensors package's own writer orders the metadata at random, so equal weights got other
    bytes and another sha256 on every save)."""
    names = {v: k for k, v in DTYPES.items()}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in names:
            raise ValueError(f"{name}: dtype {t.dtype} has no safetensors name")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
