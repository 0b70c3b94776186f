"""`featurize openface`: OpenFace 2 action units (and pose, gaze, landmarks) as a store source."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from featheads.core.errors import UserError
from store.options import wait_option


@click.command()
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Feature store whose rows (from `featurize run`) get OpenFace features.")
@click.option("--csv-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="OpenFace outputs: <folder>.csv per frame folder (FeatureExtraction) or "
                   "<folder>/<image stem>.csv per image (FaceLandmarkImg). With --run, where they are written.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="The image folder OpenFace read (the store keys are relative to it). Needed for "
                   "FeatureExtraction CSVs, whose rows are frame numbers of the sorted folder listing.")
@click.option("--groups", default="au", show_default=True,
              help="Column groups, comma separated: au (17 AU*_r + 18 AU*_c), pose, gaze, landmarks "
                   "(2D x_*, y_*), landmarks3d (X_*, Y_*, Z_*).")
@click.option("--split", help="Only rows of this split (default: all rows).")
@click.option("--source-name", default="openface", show_default=True, help="Name of the store source.")
@click.option("--run", "run_binary", is_flag=True,
              help="First run OpenFace FeatureExtraction on every frame folder lacking a CSV.")
@click.option("--openface-bin", type=click.Path(dir_okay=False, path_type=Path),
              help="FeatureExtraction executable (default: the one on PATH).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@wait_option
def openface(store_path, csv_dir, images, groups, split, source_name, run_binary, openface_bin, no_progress):
    """Ingest OpenFace 2 CSVs into a store source with one array `values` (rows x columns).

    Rows whose folder or image has no CSV, and rows OpenFace failed on (success 0, no face), become
    invalid; rows that already have features keep them when this run has no CSV for them. Every CSV
    is checked before the store is written.

    \b
    Example:
      featurize openface --store affwild2.h5 --csv-dir openface_csv --images affwild2/cropped_aligned
    """
    from .openface import ingest, parse_groups

    group_names = parse_groups(groups)
    if run_binary:
        from .openface_run import run_openface

        if images is None:
            raise UserError("--run needs --images: FeatureExtraction reads the frame folders under it")
        ran, done = run_openface(store_path, images, csv_dir, groups=group_names, split=split,
                                 openface_bin=openface_bin, progress=not no_progress)
        click.echo(f"openface: FeatureExtraction ran on {ran} folder(s), {done} already had a CSV")
    plan = ingest(store_path, csv_dir, images=images, groups=group_names, split=split, source=source_name,
                  progress=not no_progress, provenance={"command": " ".join(sys.argv)})
    ok = int((plan.status == 1).sum())
    why = ", ".join(f"{k}: {v}" for k, v in sorted(plan.reasons.items()))
    kept = f"; {plan.kept} row(s) without a CSV kept what the source had" if plan.kept else ""
    click.echo(
        f"openface: {ok} row(s) ok, {len(plan.status) - ok} invalid{f' ({why})' if why else ''}{kept}; "
        f"{len(plan.columns)} columns from {len(plan.files)} CSV(s) -> source {source_name!r} of {store_path}"
    )
