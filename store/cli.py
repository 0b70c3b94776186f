"""`store` command group: look inside a feature store and check its invariants."""
from __future__ import annotations

import json

import click

from featheads.core.clitools import LazyGroup


@click.group(cls=LazyGroup)
@click.version_option(package_name="featheads")
def main():
    """Inspect and verify featheads HDF5 feature stores."""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(path, as_json):
    """Rows per split, label coverage per task, sources (shape, dtype, coverage, provenance), predictions."""
    from .feature_store import FeatureStore
    from .inspect import format_summary, summarize

    with FeatureStore.open(path) as st:
        s = summarize(st)
    click.echo(json.dumps(s, indent=2, default=str) if as_json else format_summary(s))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def verify(path):
    """Check every invariant (row alignment, unique keys, label codes, finite features where valid).

    Exits with code 1 and lists the first violations when the store is not sound."""
    from .feature_store import FeatureStore
    from .inspect import verify as check

    with FeatureStore.open(path) as st:
        errors = check(st)
        n = st.n_rows
    if errors:
        for e in errors:
            click.echo(f"{path}: {e}", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: OK ({n} rows)")


@main.command("export")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="The feature store.")
@click.option("--split", default=None, help="Export this split's rows only [default: every row].")
@click.option("--features", default=None, metavar="SPEC",
              help="Feature columns to include, as heads take them (e.g. fer_mini_xception.logits).")
@click.option("--predictions", default="", metavar="RUN[,RUN...]", help="Prediction runs to include as columns.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default=None,
              help="File format [default: from the --out suffix].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file to write (.parquet or .csv).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def export_cmd(store_path, split, features, predictions, fmt, out, overwrite):
    """Write rows (key, video, frame, split, labels, chosen features and predictions) for pandas.

    Missing labels are missing values. Parquet needs pyarrow: pip install -e ".[export]".

    \b
    store export --store demo/store.h5 --split val --predictions final --out val.csv
    """
    from pathlib import Path

    from .errors import UserError
    from .export import export
    from .feature_store import FeatureStore

    if Path(out).exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    runs = [r.strip() for r in predictions.split(",") if r.strip()]
    with FeatureStore.open(store_path) as st:
        n = export(st, out, split=split, features=features, predictions=runs, fmt=fmt)
    click.echo(f"{out}: {n} rows")


if __name__ == "__main__":
    main()
