"""`heads predict`: apply a fitted run folder to a store (the same feature sources are required)."""
from __future__ import annotations

import click

from featheads.core.clitools import AliasedOption, threads_option
from store.options import wait_option


@click.command("predict")
@click.option("--heads", "heads_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder written by `heads fit` (its --out).")
@click.option("--store", required=True, type=click.Path(dir_okay=False), help="Store to predict every row of.")
@click.option("--run", "name", cls=AliasedOption, aliases=("--name",), default=None,
              help="Prediction run written to the store [default: the heads folder's run name].")
@click.option("--overwrite", is_flag=True, help="Replace existing predictions of that name.")
@click.option("--no-progress", "quiet", is_flag=True, cls=AliasedOption, aliases=("--quiet",), help="No progress bar.")
@threads_option
@wait_option
def predict(heads_dir, store, name, overwrite, quiet):
    """Write /predictions/RUN/<task> for every row of the store with the heads fitted in --heads.

    \b
    Example:
      heads predict --heads runs/logistic --store other.h5 --run logistic
    """
    from pathlib import Path

    from featheads.core.errors import UserError

    from .predicting import predict_run

    if heads_dir is None:
        if name is not None and (Path(name) / "run.json").is_file():  # the spelling before --heads
            heads_dir, name = name, None
        else:
            raise UserError("--heads: the run folder of `heads fit` is required (e.g. --heads runs/logistic); "
                            "--run names the prediction run written to the store")
    counts = predict_run(heads_dir, store, name=name, overwrite=overwrite, progress=not quiet)
    for task, n in counts.items():
        click.echo(f"{task}: {n} rows predicted")
