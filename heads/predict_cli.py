"""`heads predict`: apply a fitted run folder to a store (the same feature sources are required)."""
from __future__ import annotations

import click


@click.command("predict")
@click.option("--run", "run", required=True, type=click.Path(file_okay=False), help="Run folder of `heads fit`.")
@click.option("--store", required=True, type=click.Path(dir_okay=False), help="Store to predict every row of.")
@click.option("--name", default=None, help="Predictions name in the store [default: the run's name].")
@click.option("--overwrite", is_flag=True, help="Replace existing predictions of that name.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(run, store, name, overwrite, quiet):
    """Write /predictions/NAME/<task> for every row of STORE with the heads of RUN."""
    from .predicting import predict_run

    counts = predict_run(run, store, name=name, overwrite=overwrite, progress=not quiet)
    for task, n in counts.items():
        click.echo(f"{task}: {n} rows predicted")
