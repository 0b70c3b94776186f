"""`blend submit`: ABAW4 challenge files from a predictions run, validated against the test list."""
from __future__ import annotations

import click

from .submission import FORMATS


@click.command("submit")
@click.option("--format", "fmt", required=True, type=click.Choice(list(FORMATS)), help="Challenge file format.")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--predictions", "run", required=True, help="Predictions run (e.g. the --name of blend apply).")
@click.option("--split", default="test", show_default=True, help="Split the listed images belong to.")
@click.option("--test-list", required=True, type=click.Path(dir_okay=False),
              help="Official test list (MTL_Challenge_test_set_release.txt / LSD_Challenge_test_set_release.txt).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Challenge file to write.")
def submit(fmt, store_path, run, split, test_list, out):
    """Write the challenge file in the order of the test list and validate it.

    \b
    Example:
      blend submit --format abaw4-mtl --store s.h5 --predictions final --split test \\
                   --test-list MTL_Challenge_test_set_release.txt --out predictions.txt
    """
    from .submission import write_submission

    path, notes = write_submission(fmt, store_path, run, split, test_list, out)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    n = sum(1 for _ in open(path)) - 1
    click.echo(f"wrote {path}: {n} rows, validated against {test_list}")
