"""Backbone names -> registry entries: the one place that parses a backbone name.

A name is either registered (`enet_b0_8_va_mtl`, `fer_mini_xception`, ...) or `timm:<timm model
name>`, an entry made on demand from timm's own configuration.
"""
from __future__ import annotations

from ._registry import UnknownBackboneError, _Entry, list_backbones, registered_entry
from ._spec import BackboneSpec

TIMM_PREFIX = "timm:"


def timm_model_name(name: str) -> str | None:
    """The timm model name of `timm:<name>`, else None."""
    return name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else None


def resolve_backbone(name: str) -> _Entry:
    """The registry entry for backbone `name` (registered, or `timm:<model>`)."""
    model = timm_model_name(name)
    if model is not None:
        from ._timm_generic import timm_entry

        return timm_entry(model, name)
    entry = registered_entry(name)
    if entry is None:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())}, or {TIMM_PREFIX}<timm model name>"
        )
    return entry


def get_spec(name: str) -> BackboneSpec:
    """The spec of a registered backbone or of `timm:<timm model name>`."""
    return resolve_backbone(name).spec
