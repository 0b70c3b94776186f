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


if __name__ == "__main__":
    main()
