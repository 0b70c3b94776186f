"""`heads fit mtl | expr | lsd`: fit a recipe's heads on a store, write the run folder and predictions."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from featheads.core.clitools import AliasedOption, threads_option
from store.options import wait_option


def _common_options(f):
    @click.option("--store", "store", required=True, type=click.Path(dir_okay=False),
                  help="Feature store (HDF5) with features and labels.")
    @click.option("--recipe", default="auto", show_default=True,
                  help="A built-in recipe (auto: the best of linear, MLP and LightGBM by inner grouped CV on the "
                       "training rows; paper: the published heads; " + ", ".join(_other_recipes()) + "), a recipe "
                       "JSON file, or the output of `heads tune`.")
    @click.option("--train", default="train", show_default=True, help="Split the heads are fitted on.")
    @click.option("--eval", "eval_split", default="val", show_default=True,
                  help="Split the metrics are computed on (never used for fitting or early stopping).")
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Run folder to create (models, resolved recipe, metrics.json).")
    @click.option("--run", "name", cls=AliasedOption, aliases=("--name",), default=None,
                  help="Prediction run written to the store [default: the --out folder's name].")
    @click.option("--seed", default=0, show_default=True, type=int, help="Seed of every head.")
    @click.option("--source-name", "backbone", cls=AliasedOption, aliases=("--backbone",), default=None,
                  help="Feature source of the store that fills {backbone} in the recipe [default: the store's only "
                       "one].")
    @click.option("--overwrite", is_flag=True, help="Replace an existing run folder and predictions of that name.")
    @click.option("--no-progress", "quiet", is_flag=True, cls=AliasedOption, aliases=("--quiet",),
                  help="No progress bars.")
    @threads_option
    @wait_option
    @click.option("--keep-members", is_flag=True,
                  help="Bagged heads (recipe 'bagging'): also write each member's predictions as runs NAME.m0, NAME.m1, ...")
    @functools.wraps(f)
    def wrapper(**kw):
        return f(**kw)

    return wrapper


def _other_recipes() -> list[str]:
    from .recipe import builtin_recipes

    return [r for r in builtin_recipes() if r not in ("auto", "paper")]


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
@click.option("--aux", type=click.Choice(["landmarks"]), default=None,
              help="With --joint: also regress the OpenFace 68 2D landmarks (normalised per face) as an auxiliary "
                   "task, MSE x the joint head's aux_weight; rows without landmarks are masked.")
def mtl(joint, aux, **kw):
    """Fit the EXPR, VA and AU heads; predictions expr (N,8), va (N,2), au (N,12) for every row.

    \b
    Example:
      heads fit mtl --store demo/store.h5 --recipe logistic --out runs/logistic
    """
    from .fitting import fit_mtl

    _run(fit_mtl, joint=joint, aux=aux, **kw)


@fit.command("expr")
@_common_options
def expr(**kw):
    """Fit the expression head only (8 MTL classes); predictions expr (N,8).

    \b
    Example:
      heads fit expr --store demo/store.h5 --recipe transformer --out runs/expr_transformer
    """
    from .fitting import fit_expr

    _run(fit_expr, **kw)


@fit.command("lsd")
@_common_options
def lsd(**kw):
    """Fit the LSD head (6 classes, LSD order); predictions lsd (N,6).

    \b
    Example:
      heads fit lsd --store demo/lsd.h5 --out runs/lsd_auto
    """
    from .fitting import fit_lsd

    _run(fit_lsd, **kw)
