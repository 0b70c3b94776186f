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
        except KeyboardInterrupt:  # a command that knows more (featurize run, blend tune) says it itself
            click.echo("\ninterrupted: what was committed before is kept; run the same command to continue",
                       err=True)
            raise SystemExit(130) from None


def command_group(help: str, subcommands: dict[str, str] | None = None) -> click.Group:
    """A featheads command group (`featurize`, `heads`, `blend`, `store`): `subcommands` maps a name to
    "module:attr", imported when used; --version; UserErrors as one line and exit code 1."""
    @click.group(cls=LazyGroup, lazy=subcommands, help=help)
    @click.version_option(package_name="featheads")
    def main():
        pass

    return main


class AliasedOption(click.Option):
    """An option that also answers to its old names (`aliases`), which --help does not show, so that
    scripts written for an earlier spelling keep working while the help shows one vocabulary (docs/CLI.md).

        @click.option("--run", "run", cls=AliasedOption, aliases=("--name",), help="...")
    """

    def __init__(self, param_decls=None, *, aliases=(), **kwargs):
        super().__init__(list(param_decls or ()) + list(aliases), **kwargs)
        self.aliases = tuple(aliases)

    def get_help_record(self, ctx):
        shown = [o for o in self.opts if o not in self.aliases]
        saved, self.opts = self.opts, shown
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved


def threads_option(f):
    """--threads N: at most N CPU threads for the heads' libraries (featheads/core/threads.py). The command
    groups read it from the command line before the libraries load; this applies it again at parse time."""
    def apply(ctx, param, value):
        if value is not None:
            from .threads import apply_thread_limit

            apply_thread_limit(value)
        return value

    return click.option("--threads", type=click.IntRange(min=1), default=None, expose_value=False, is_eager=True,
                        callback=apply, metavar="N",
                        help="At most N CPU threads (torch, BLAS, LightGBM) [default: the CPUs this process may "
                             "use: its affinity mask, capped by a cgroup quota].")(f)
