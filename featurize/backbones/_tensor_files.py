"""`load_tensors(path)`: the tensors of a weights file, whichever tensor format it is in.

torch.save zip archives (whole pickled models or state dicts, `_safe_pickle`) and safetensors files
(`_safetensors`). Anything else is refused without being parsed; an old-format (non-zip) pickle in
particular is never unpickled.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ._safe_pickle import Harvest, UnsafePickleError, harvest_tensors, read_torch_file
from ._safetensors import looks_like_safetensors, read_safetensors


def load_tensors(path) -> Harvest:
    """The tensors of a model, state-dict or safetensors file, read safely with bounded memory."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise UnsafePickleError(f"{path}: cannot read ({e.strerror or e})") from None
    if zipfile.is_zipfile(path):
        return harvest_tensors(read_torch_file(path), path)
    if looks_like_safetensors(head):
        harvest = Harvest()
        harvest.tensors.update(read_safetensors(path))
        return harvest
    return harvest_tensors(read_torch_file(path), path)  # refused with the "not a zip archive" message
