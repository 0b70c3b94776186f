"""`blend submit`: ABAW4 challenge files from a predictions run, validated against the test list."""
from __future__ import annotations

import click

from featheads.core.clitools import AliasedOption

from .submission import FORMATS


@click.command("submit")
@click.option("--format", "fmt", required=True, type=click.Choice(list(FORMATS)), help="Challenge file format.")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--run", "run", cls=AliasedOption, aliases=("--predictions",), required=True,
              help="Prediction run to submit (e.g. the --run of blend apply).")
@click.option("--split", default="test", show_default=True, help="Split the listed images belong to.")
@click.option("--test-list", required=True, type=click.Path(dir_okay=False),
              help="Official test list (MTL_Challenge_test_set_release.txt / LSD_Challenge_test_set_release.txt).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Challenge file to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def submit(fmt, store_path, run, split, test_list, out, overwrite):
    """Write the challenge file in the order of the test list and validate it.

    \b
    Example:
      blend submit --format abaw4-mtl --store s.h5 --run final --split test \\
                   --test-list MTL_Challenge_test_set_release.txt --out submission.csv
    """
    from pathlib import Path

    from featheads.core.errors import UserError

    from .submission import write_submission

    if Path(out).exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")

    path, notes = write_submission(fmt, store_path, run, split, test_list, out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    n = sum(1 for _ in open(path)) - 1
    click.echo(f"wrote {path}: {n} rows, validated against {test_list}")
