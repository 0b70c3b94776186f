"""Command-line options shared by every command that writes a store (click, no h5py).

    @click.command()
    @wait_option            # --wait SECONDS: how long to queue behind another writer of the store
    def apply(...): ...

The option sets FEATHEADS_STORE_WAIT for the command, which `FeatureStore.open(path, "a")` reads, so a
command gets it without passing it down through every function that opens the store.
"""
from __future__ import annotations

import os

import click

from .lock import DEFAULT_WAIT


def _set_wait(ctx, param, value):
    if value is not None:
        os.environ["FEATHEADS_STORE_WAIT"] = repr(float(value))
    return value


def wait_option(f):
    return click.option(
        "--wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS", expose_value=False,
        callback=_set_wait, is_eager=True,
        help=f"Wait this long for another writer of the store to finish [default: FEATHEADS_STORE_WAIT or "
             f"{DEFAULT_WAIT:g}].",
    )(f)
