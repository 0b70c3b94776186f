"""`heads tune`: Optuna studies over a recipe's head hyperparameters, cross-validated inside the
training split only; writes a recipe JSON for `heads fit --recipe`."""
from __future__ import annotations

import sys

import click

from featheads.core.clitools import AliasedOption, threads_option

from .tune import GROUPINGS, TUNE_TASKS


@click.command("tune")
@click.option("--store", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--recipe", required=True,
              help="Recipe whose heads are tuned (logistic, lightgbm, paper, or a JSON file): its features and "
                   "head (mlp, linear or lightgbm) per task; its params are the base the searched ones override.")
@click.option("--task", required=True, type=click.Choice(list(TUNE_TASKS)),
              help="Task to tune; mtl tunes expr, va and au (one study each).")
@click.option("--train", default="train", show_default=True,
              help="Split whose rows are cross-validated; no other split is read.")
@click.option("--cv", default=5, show_default=True, type=click.IntRange(min=2), help="Folds, grouped by --groups.")
@click.option("--groups", default="video", show_default=True, type=click.Choice(list(GROUPINGS)),
              help="What a fold keeps together: video, subject (video name before the first '_', e.g. CK+) or row.")
@click.option("--trials", default=30, show_default=True, type=click.IntRange(min=1),
              help="Finished trials (complete or pruned) each study reaches, counting every worker's; the same "
                   "command continues an interrupted study.")
@click.option("--storage", default=None,
              help="Optuna storage: a SQLite file path, a path ending .log (journal file), an RDB URL "
                   "(postgresql://... with pip install -e '.[postgres]'), or 'memory'. "
                   "Default: <out stem>.optuna.db beside --out.")
@click.option("--study", "study_name", default=None,
              help="Study name prefix (default heads-<recipe>-<train>); one study per task: <prefix>-<task>.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampler, the folds and the heads.")
@click.option("--source-name", "backbone", cls=AliasedOption, aliases=("--backbone",), default=None,
              help="Feature source of the store that fills {backbone} [default: the store's only one].")
@click.option("--features", "features", multiple=True, metavar="SPEC",
              help="Feature spec to choose among (repeat the option: the choice is a parameter of the study, "
                   "scored on the same folds); \"{backbone}\" allowed. Default: the recipe's features.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Tuned recipe (JSON) to write.")
@click.option("--no-progress", "quiet", is_flag=True, cls=AliasedOption, aliases=("--quiet",), help="No progress bars.")
@threads_option
def tune(store, recipe, task, train, cv, groups, trials, storage, study_name, seed, backbone, features, out, quiet):
    """Tune head hyperparameters by grouped cross-validation on the training split; write a recipe.

    \b
    Example:
      heads tune --store s.h5 --recipe lightgbm --task expr --cv 5 --trials 50 --out tuned.json
      heads fit expr --store s.h5 --recipe tuned.json --out runs/tuned
      heads tune --store s.h5 --recipe logistic --task au --groups subject --trials 30 \\
          --features "{backbone}.embeddings+{backbone}.logits" \\
          --features "{backbone}.embeddings+{backbone}.logits+{backbone}.map_blocks_3_2x2" --out tuned.json
    """
    from .tune import tune_heads, tuned_summary

    try:
        doc = tune_heads(store, recipe, task, train=train, cv=cv, trials=trials, storage=storage,
                         study_name=study_name, groups=groups, seed=seed, backbone=backbone, out=out,
                         progress=not quiet, features=features)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished trials are kept in the study; run the same command again to continue",
                   err=True)
        sys.exit(130)
    for line in tuned_summary(doc):
        click.echo(line)
    click.echo(f"wrote {out}: heads fit {task} --recipe {out} ...")
