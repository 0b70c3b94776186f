"""`blend report`: metrics table and PNG plots of a predictions run on a labelled split."""
from __future__ import annotations

import click


@click.command("report")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--predictions", "run", required=True, help="Predictions run to report on.")
@click.option("--split", default="val", show_default=True, help="Labelled split.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for metrics.json and PNGs.")
def report(store_path, run, split, out_dir):
    """Print the challenge metrics; write metrics.json, confusion matrices, per-AU F1 bars and
    (for runs of blend apply) blend-weight curves as PNG.

    \b
    Example:
      blend report --store s.h5 --predictions final --split val --out report/
    """
    from .report import write_report

    table, files = write_report(store_path, run, split, out_dir)
    click.echo(f"predictions {run!r} on split {split!r}")
    click.echo(table)
    for f in files:
        click.echo(f"wrote {f}")
