"""`blend tune`: an Optuna study over blend weights, smoothing and per-AU thresholds -> spec JSON."""
from __future__ import annotations

import sys

import click

from featheads.core.clitools import threads_option

from .data import TASK_GROUPS


@click.command("tune")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="Feature store (HDF5).")
@click.option("--runs", required=True,
              help="Comma-separated inputs: prediction runs of the store, or logits:<source> for a backbone's logits.")
@click.option("--task", required=True, type=click.Choice(list(TASK_GROUPS)),
              help="What to tune: one task, or mtl (expr, va and au together, objective P_MTL).")
@click.option("--split", default="val", show_default=True, help="Split whose labels the blend is tuned on.")
@click.option("--trials", default=300, show_default=True, type=click.IntRange(min=1),
              help="Finished trials each study reaches, counting every worker's (several workers may share one "
                   "--storage); the same command continues an interrupted study.")
@click.option("--storage", default=None,
              help="Optuna storage: a SQLite file path, a path ending .log (Optuna journal file), an RDB URL "
                   "(sqlite:///..., postgresql://... with pip install -e '.[postgres]'), or 'memory'. Default: <out stem>.optuna.db beside --out.")
@click.option("--study", "study_name", default=None, help="Study name (default blend-<task>-<split>).")
@click.option("--cv", default=5, show_default=True, type=click.IntRange(min=2),
              help="Folds grouped by video: parameters chosen on the other folds, scored on the held-out one.")
@click.option("--in-sample", is_flag=True,
              help="Tune and score on the same rows only (the published practice): no out-of-fold estimate.")
@click.option("--max-delta", default=30, show_default=True, type=click.IntRange(min=0),
              help="Largest smoothing window, in frames each side; 0 leaves smoothing out.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the samplers and of the folds.")
@click.option("--objective", default="challenge", show_default=True, type=click.Choice(["challenge", "abaw2"]),
              help="challenge: the task's ABAW score (P_EXPR, P_VA, P_AU, P_LSD, P_MTL); abaw2 (--task expr): "
                   "the ABAW2 expression score 0.67 macro F1 + 0.33 accuracy.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Blend spec (JSON) to write.")
@click.option("--no-progress", "quiet", is_flag=True, help="No progress bar.")
@threads_option
@click.pass_context
def tune(ctx, store_path, runs, task, split, trials, storage, study_name, cv, in_sample, max_delta, seed, objective,
         out, quiet):
    """Tune blend weights, temporal smoothing and per-AU thresholds with Optuna; write a blend spec.

    \b
    Example:
      blend tune --store s.h5 --runs mlp,openface --task mtl --split val --trials 300 --out mtl.json
    """
    from click.core import ParameterSource

    from .inputs import parse_input_names
    from .spec import summary_lines, write_spec
    from .storage import describe_storage
    from .tune import tune as run_tune

    if in_sample and ctx.get_parameter_source("cv") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--cv and --in-sample exclude each other")
    from pathlib import Path

    if not Path(out).resolve().parent.is_dir():
        raise click.UsageError(f"--out {out}: folder {Path(out).parent} does not exist")
    inputs = parse_input_names(runs)
    try:
        result = run_tune(store_path, inputs, task, split, trials=trials, storage=storage, study_name=study_name,
                          cv=0 if in_sample else cv, seed=seed, max_delta=max_delta, spec_path=out,
                          objective=objective, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished trials are kept in the study; run the same command again to continue",
                   err=True)
        sys.exit(130)
    spec = result.spec
    write_spec(spec, out)
    for line in summary_lines(spec):
        click.echo(line)
    rows = spec.rows
    for t, n in rows["scored"].items():
        if n < rows["labelled"][t]:
            click.echo(f"note: {rows['labelled'][t] - n} labelled {t} rows have no prediction from any input "
                       "and are not scored", err=True)
    click.echo(f"wrote {out} (study {spec.study['name']!r} in {describe_storage(spec.study['storage'])}, "
               f"{spec.study['trials']} trials)")
