"""Shared by the four command groups: lazy subcommands, --version and one-line errors for UserError."""
from __future__ import annotations

import importlib

import click

from .errors import UserError


class LazyGroup(click.Group):
    """A click group whose subcommands ("name" -> "module:attr") are imported when used, so that
    `heads --help` does not import torch, and whose UserErrors end in one line and exit code 1."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None


def command_group(help: str, subcommands: dict[str, str] | None = None) -> click.Group:
    """A featheads command group (`featurize`, `heads`, `blend`, `store`): `subcommands` maps a name to
    "module:attr", imported when used; --version; UserErrors as one line and exit code 1."""
    @click.group(cls=LazyGroup, lazy=subcommands, help=help)
    @click.version_option(package_name="featheads")
    def main():
        pass

    return main
