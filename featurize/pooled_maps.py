"""Inner feature maps of a backbone, average-pooled to a small grid, as extra arrays of a source.

    maps = parse_pooled_maps("blocks.2:2,blocks.3:2")        # `featurize run --pooled-maps ...`
    widths = map_widths(model, spec, maps)                     # {"map_blocks_2_2x2": 256, ...}

A backbone's `embeddings` are the global average of its last feature map: where on the face
something happened (brows, lips) is averaged away, which costs action-unit and expression heads on
small datasets (docs/REAL_DATA.md, "Where CK+ loses"). `--pooled-maps MODULE:G` keeps, next to the
embeddings, the output of the named module (any `model.named_modules()` name whose output is a
(B, C, H, W) map) averaged over a G x G grid of the image: C x G x G more columns, channel-major
(channel c, then grid row, then grid column), as `torch.nn.functional.adaptive_avg_pool2d` gives.
The array is `map_<module with dots as _>_<G>x<G>`, e.g. `map_blocks_3_2x2`, read like any other:
`--features fer_mini_xception.embeddings+fer_mini_xception.map_blocks_3_2x2`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from featheads.core.errors import UserError

MAX_GRID = 8


@dataclass(frozen=True)
class PooledMap:
    module: str  # a name from model.named_modules(), e.g. "blocks.3"
    grid: int  # G: the map is averaged over G x G cells

    @property
    def array(self) -> str:
        return f"map_{self.module.replace('.', '_')}_{self.grid}x{self.grid}"

    def __str__(self) -> str:
        return f"{self.module}:{self.grid}"


def parse_pooled_maps(text: str | None) -> tuple[PooledMap, ...]:
    """"blocks.2:2,blocks.3:4" -> (PooledMap("blocks.2", 2), PooledMap("blocks.3", 4)); "" or None -> ()."""
    if not text or not text.strip():
        return ()
    out: list[PooledMap] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"([A-Za-z0-9_.]+):(\d+)", part)
        if m is None:
            raise UserError(f"--pooled-maps {part!r}: write MODULE:G, for example blocks.3:2 (module blocks.3 "
                            "averaged over a 2 x 2 grid)")
        grid = int(m.group(2))
        if not 1 <= grid <= MAX_GRID:
            raise UserError(f"--pooled-maps {part!r}: the grid G must be between 1 and {MAX_GRID}")
        pm = PooledMap(m.group(1), grid)
        if pm in out:
            raise UserError(f"--pooled-maps {part!r}: given twice")
        out.append(pm)
    return tuple(out)


def _map_shapes(model: torch.nn.Module, spec, wanted=None) -> dict[str, tuple[int, ...]]:
    """{module name: output shape of one image} for the modules that return a tensor, from one zero
    image run through the model in eval mode (every module, or only `wanted`)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name and (wanted is None or name in wanted):
            def hook(m, i, out, name=name):
                if isinstance(out, torch.Tensor):
                    shapes.setdefault(name, tuple(out.shape[1:]))
            handles.append(mod.register_forward_hook(hook))
    try:
        x = torch.zeros(1, spec.channels, spec.input_size, spec.input_size)
        with torch.inference_mode():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def spatial_modules(model: torch.nn.Module, spec, depth: int = 3) -> dict[str, tuple[int, ...]]:
    """{module name: (C, H, W)} of the modules up to `depth` levels deep that return a spatial map."""
    shapes = _map_shapes(model, spec)
    return {n: s for n, s in shapes.items() if len(s) == 3 and n.count(".") < depth and s[1] > 1 and s[2] > 1}


def map_widths(model: torch.nn.Module, spec, maps: tuple[PooledMap, ...]) -> dict[str, int]:
    """{array name: C x G x G} of each pooled map; a module that does not exist or returns no spatial
    map big enough for its grid is a UserError that lists the modules that do."""
    if not maps:
        return {}
    shapes = _map_shapes(model, spec, {pm.module for pm in maps})
    widths = {}
    for pm in maps:
        shape = shapes.get(pm.module)
        if shape is None or len(shape) != 3 or shape[1] < pm.grid or shape[2] < pm.grid:
            found = "no such module" if pm.module not in dict(model.named_modules()) else (
                f"its output is {'x'.join(map(str, shape))}" if shape else "it returns no tensor")
            listing = ", ".join(f"{n} ({'x'.join(map(str, s))})" for n, s in spatial_modules(model, spec).items())
            raise UserError(f"--pooled-maps {pm}: {spec.name} has {found}; a (C, H, W) map of at least "
                            f"{pm.grid} x {pm.grid} is needed. Modules with a spatial map: {listing}")
        widths[pm.array] = shape[0] * pm.grid * pm.grid
    return widths


class MapHooks:
    """Forward hooks that keep each requested module's output pooled to its grid, for the last call."""

    def __init__(self, model: torch.nn.Module, maps: tuple[PooledMap, ...]):
        self.out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[pm.module].register_forward_hook(self._hook(pm)) for pm in maps]

    def _hook(self, pm: PooledMap):
        def keep(mod, inputs, output):
            pooled = torch.nn.functional.adaptive_avg_pool2d(output.float(), pm.grid)
            self.out[pm.array] = pooled.reshape(len(pooled), -1)
        return keep

    def take(self) -> dict[str, torch.Tensor]:
        out, self.out = self.out, {}
        return out
