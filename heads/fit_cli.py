"""`heads fit mtl | expr | lsd`: fit a recipe's heads on a store, write the run folder and predictions."""
from __future__ import annotations

import functools
from pathlib import Path

import click


def _common_options(f):
    @click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
                  help="Feature store (HDF5) with features and labels.")
    @click.option("--recipe", default="paper", show_default=True,
                  help="Built-in recipe (paper, logistic, lightgbm) or a recipe JSON file.")
    @click.option("--train", default="train", show_default=True, help="Split the heads are fitted on.")
    @click.option("--eval", "eval_split", default="val", show_default=True,
                  help="Split the metrics are computed on (never used for fitting or early stopping).")
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Run folder to create (models, resolved recipe, metrics.json).")
    @click.option("--name", default=None, help="Predictions name in the store [default: the --out folder's name].")
    @click.option("--seed", default=0, show_default=True, type=int, help="Seed of every head.")
    @click.option("--backbone", default=None,
                  help="Feature source that fills {backbone} in the recipe [default: the store's only one].")
    @click.option("--overwrite", is_flag=True, help="Replace an existing run folder and predictions of that name.")
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    @functools.wraps(f)
    def wrapper(**kw):
        return f(**kw)

    return wrapper


def _run(fn, store, recipe, train, eval_split, out, name, seed, backbone, overwrite, quiet, **extra):
    from .report import format_metrics

    metrics = fn(store, recipe, out=out, train=train, eval=eval_split, seed=seed, backbone=backbone, name=name,
                 overwrite=overwrite, progress=not quiet, **extra)
    click.echo(format_metrics(metrics, eval_split))
    click.echo(f"run folder: {out}   predictions: {name or Path(out).name}")


@click.group("fit")
def fit():
    """Fit heads on cached features (multi-task, expression only, or LSD)."""


@fit.command("mtl")
@_common_options
@click.option("--joint", is_flag=True, help="One multi-task network (the recipe's \"joint\" entry) instead of "
                                            "three separate heads.")
def mtl(joint, **kw):
    """Fit the EXPR, VA and AU heads; predictions expr (N,8), va (N,2), au (N,12) for every row."""
    from .fitting import fit_mtl

    _run(fit_mtl, joint=joint, **kw)


@fit.command("expr")
@_common_options
def expr(**kw):
    """Fit the expression head only (8 MTL classes); predictions expr (N,8)."""
    from .fitting import fit_expr

    _run(fit_expr, **kw)


@fit.command("lsd")
@_common_options
def lsd(**kw):
    """Fit the LSD head (6 classes, LSD order); predictions lsd (N,6)."""
    from .fitting import fit_lsd

    _run(fit_lsd, **kw)
