"""The limits every weights reader checks before it allocates, and one-line refusal messages.

A weights file is untrusted input: whatever it declares (tensor shapes, storage sizes, zip members'
uncompressed sizes, HDF5 dataset shapes) is checked against the bytes the file really holds and
against the caps below *before* memory is allocated for it. docs/BACKBONES.md lists the same numbers.
"""
from __future__ import annotations

import re

from featheads.core.errors import UserError

MAX_TENSOR_BYTES = 4 << 30  # all tensors of one weights file together (the largest official file: ~35 MB)
MAX_PICKLE_BYTES = 16 << 20  # data.pkl of a torch.save file, uncompressed (official files: < 1 MB)
MAX_PICKLE_OPS = 2_000_000  # pickle opcodes run for one data.pkl (official files: ~0.1 million)
MAX_NESTING = 100  # containers/modules nested inside each other (official files: < 30)
MAX_NDIM = 8  # dimensions of one tensor
MAX_KERAS_BYTES = 256 << 20  # a Keras .hdf5 is read into memory whole (the fer file: 0.9 MB)
MAX_HEADER_BYTES = 64 << 20  # the JSON header of a safetensors file
MAX_ZIP_RATIO = 100  # a zip member may inflate to at most 100x its compressed size ...
ZIP_RATIO_FREE = 1 << 20  # ... unless it is at most 1 MiB uncompressed
MAX_OBJECTS = 100_000  # HDF5 groups + datasets, Keras layers
MAX_MESSAGE = 240  # characters of a refusal's reason



class WeightsFileError(UserError):
    """A weights file refused before it was used: unreadable, unsafe, or declaring more than it holds."""


_OBJECT_AT = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def short(obj, width: int = 60) -> str:
    """A repr that is safe on anything a crafted file can build: never recursive, never long."""
    import torch

    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if type(obj) is int and obj.bit_length() > 64:
        return f"a {obj.bit_length()}-bit int"
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        if len(obj) <= 8 and all(type(v) in (float, bool, str, type(None)) or type(v) is int and v.bit_length() <= 64
                                 for v in obj):
            return clip(repr(obj), width)  # small and flat: (2, 2), [1, 1], ...
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, (str, bytes)):
        text = repr(obj[:width])
        return text + ("..." if len(obj) > width else "")
    try:
        text = object.__repr__(obj) if type(obj).__repr__ is object.__repr__ else repr(obj)
    except Exception:  # noqa: BLE001 - a repr that fails still must not break the message
        text = f"<{type(obj).__name__}>"
    return clip(text, width)


def clip(text: str, width: int = MAX_MESSAGE) -> str:
    """One line, at most `width` characters, without `<_io.BytesIO object at 0x...>` noise."""
    text = _OBJECT_AT.sub(lambda m: f"<{m.group(1).rsplit('.', 1)[-1]}>", str(text))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB"
