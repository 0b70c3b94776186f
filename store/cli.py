"""`store` command group: look inside a feature store and check its invariants."""
from __future__ import annotations

import json

import click

from featheads.core.clitools import AliasedOption, command_group


main = command_group("Inspect, verify, merge and export featheads HDF5 feature stores.")


def store_argument(f):
    """The store as --store PATH (as every command names it) or as a plain argument (the earlier spelling)."""
    f = click.argument("path", required=False, type=click.Path(dir_okay=False), metavar="[PATH]")(f)
    return click.option("--store", "store_opt", type=click.Path(dir_okay=False), default=None,
                        help="The feature store (or give it as PATH).")(f)


def _store_path(path, store_opt) -> str:
    if path and store_opt and path != store_opt:
        raise click.UsageError(f"two stores given: {store_opt} (--store) and {path}; give one")
    if not (path or store_opt):
        raise click.UsageError("name the store: --store PATH")
    return store_opt or path


@main.command()
@store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(path, store_opt, as_json):
    """Rows per split, label coverage per task, sources (shape, dtype, coverage, provenance), predictions.

    \b
    Example:
      store info --store demo/store.h5
    """
    path = _store_path(path, store_opt)
    from .feature_store import FeatureStore
    from .inspect import format_summary, summarize

    with FeatureStore.open(path) as st:
        s = summarize(st)
    click.echo(json.dumps(s, indent=2, default=str) if as_json else format_summary(s))


@main.command()
@store_argument
@click.option("--repair", is_flag=True, help="Save every readable sample, label, source and prediction into a new "
              "store (--out), for a store damaged by an older version or a failing disk.")
@click.option("--out", type=click.Path(dir_okay=False), help="--repair: the new store [default: PATH.recovered.h5].")
def verify(path, store_opt, repair, out):
    """Check every invariant (row alignment, unique keys, label codes, finite features where valid).

    Exits with code 1 and lists the first violations when the store is not sound.

    \b
    store verify --store s.h5
    store verify --store broken.h5 --repair --out saved.h5
    """
    path = _store_path(path, store_opt)
    from .feature_store import FeatureStore
    from .inspect import verify as check

    if repair:
        from .recover import recover

        out = out or (path[:-3] if path.endswith(".h5") else path) + ".recovered.h5"
        for line in recover(path, out):
            click.echo(f"{path}: {line}")
        with FeatureStore.open(out) as st:
            errors, n = check(st), st.n_rows
        click.echo(f"{out}: recovered store, {n} rows, " + ("OK" if not errors else f"{len(errors)} problems"))
        raise SystemExit(1 if errors else 0)
    from .feature_store import damaged

    with FeatureStore.open(path) as st:
        try:
            errors = check(st)
        except (OSError, RuntimeError, KeyError) as e:  # HDF5 cannot read part of it
            raise damaged(path, e) from None
        n = st.n_rows
    if errors:
        for e in errors:
            click.echo(f"{path}: {e}", err=True)
        click.echo(f"{path}: `store verify --store {path} --repair` saves what is readable into a new store", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: OK ({n} rows)")


@main.command()
@store_argument
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Wait this long for another writer [default: FEATHEADS_STORE_WAIT or 300].")
def merge(path, store_opt, wait):
    """Merge the journal parts beside a store (PATH.parts/, left by sharded or interrupted featurize runs).

    Each `featurize run` merges at its end; this does it without running one (docs/SCALE.md).

    \b
    Example:
      store merge --store affwild2.h5
    """
    path = _store_path(path, store_opt)
    from .journal import merge_all

    done = merge_all(path, wait=wait)
    if not done:
        click.echo(f"{path}: no journal parts to merge")
    for source, n in done.items():
        click.echo(f"{path}: merged {n} rows of {source}")


@main.command("export")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="The feature store.")
@click.option("--split", default=None, help="Export this split's rows only [default: every row].")
@click.option("--features", default=None, metavar="SPEC",
              help="Feature columns to include, as heads take them (e.g. fer_mini_xception.logits).")
@click.option("--runs", "predictions", cls=AliasedOption, aliases=("--predictions",), default="", metavar="RUN[,RUN...]",
              help="Prediction runs to include as columns.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default=None,
              help="File format [default: from the --out suffix].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file to write (.parquet or .csv).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def export_cmd(store_path, split, features, predictions, fmt, out, overwrite):
    """Write rows (key, video, frame, split, labels, chosen features and predictions) for pandas.

    Missing labels are missing values. Parquet needs pyarrow: pip install -e ".[export]".

    \b
    store export --store demo/store.h5 --split val --runs final --out val.csv
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
