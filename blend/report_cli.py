"""`blend report`: metrics table and PNG plots of a predictions run on a labelled split."""
from __future__ import annotations

import click

from featheads.core.clitools import AliasedOption


@click.command("report")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--run", "run", cls=AliasedOption, aliases=("--predictions",), required=True,
              help="Prediction run to report on.")
@click.option("--split", default="val", show_default=True, help="Labelled split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for metrics.json and PNGs.")
@click.option("--overwrite", is_flag=True, help="Replace the report files of an earlier report in --out.")
def report(store_path, run, split, out_dir, overwrite):
    """Print the challenge metrics; write metrics.json, confusion matrices, per-AU F1 bars and
    (for runs of blend apply) blend-weight curves as PNG.

    \b
    Example:
      blend report --store s.h5 --run final --split val --out report/
    """
    from pathlib import Path

    from featheads.core.errors import UserError

    from .report import write_report

    if (Path(out_dir) / "metrics.json").exists() and not overwrite:
        raise UserError(f"{out_dir} holds an earlier report; pass --overwrite to replace it (or --out another folder)")

    table, files = write_report(store_path, run, split, out_dir)
    click.echo(f"predictions {run!r} on split {split!r}")
    click.echo(table)
    for f in files:
        click.echo(f"wrote {f}")
