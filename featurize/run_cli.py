"""`featurize run`: images -> frozen backbone -> embeddings + logits in a feature store."""
from __future__ import annotations

import click


@click.command("run")
@click.option("--source", "source", type=click.Choice(["abaw-mtl", "folders", "images"]), default="abaw-mtl",
              show_default=True, help="Layout of the input: ABAW4 MTL annotation file, class folders, or images.")
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=str),
              help="abaw-mtl: annotation file or test list; images: optional file list (one path per line).")
@click.option("--images", required=True, type=click.Path(path_type=str),
              help="Image root: a folder or a .zip archive (read without unpacking).")
@click.option("--subdir", help="Folder inside --images to use as the root, e.g. fer2013/train in a zip.")
@click.option("--task", type=click.Choice(["lsd", "expr"]),
              help="folders: what the class folder names mean (lsd: ANGRER..SURPRISE; expr: angry, happy, ...).")
@click.option("--split", required=True, help="Split name the rows belong to (train, val, test, ...).")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Feature store (HDF5); created if missing.")
@click.option("--backbone", default="enet_b0_8_va_mtl", show_default=True,
              help="Registered backbone (see `featurize backbones`) or timm:<model name>.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Weights file; default: the cached copy, else one download from the official URL.")
@click.option("--source-name", help="Feature source to write in the store (default: the backbone name).")
@click.option("--logit-names", help="Comma-separated names of the logits, e.g. for a fine-tuned --weights file "
              "with another class count (default: the file's metadata, else the backbone's names, else 0,1,...).")
@click.option("--pooled-maps", metavar="MODULE:G[,...]",
              help="Also store inner feature maps averaged over a G x G grid, one array map_<module>_<G>x<G> each "
                   "(e.g. blocks.2:2,blocks.3:2 on fer_mini_xception); part of the source identity. A wrong "
                   "module name lists the backbone's modules. See docs/FEATURIZE.md.")
@click.option("--gpu", is_flag=True, help="Run the backbone on the CUDA GPU.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Autocast precision; fp16 needs --gpu. Part of the source identity.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0),
              help="Decoding worker processes (0: decode in the main process). Default: GPU half the cores, 1 to 8; "
                   "CPU 0 up to 4 cores (workers would compete with the forward pass), else a quarter of the cores.")
@click.option("--strict", is_flag=True, help="Stop at the first missing or unreadable image instead of "
              "recording it as invalid.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N rows (a quick trial).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--shard", metavar="I/N", help="Compute only the I-th of N shards (whole videos together); default: "
              "from torchrun (RANK/WORLD_SIZE) or a SLURM job array, else all rows. See docs/SCALE.md.")
@click.option("--retry-invalid", is_flag=True, help="Recompute rows recorded invalid (e.g. after fixing --images).")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Wait this long for another writer of the store to finish [default: FEATHEADS_STORE_WAIT or 300].")
def run(source, annotations, images, subdir, task, split, store_path, backbone, weights, source_name, logit_names,
        pooled_maps, gpu, precision, batch_size, workers, strict, limit, no_progress, shard, retry_invalid, wait):
    """Featurize images into a store: embeddings and logits of a frozen backbone for every row.

    Interrupted (Ctrl-C, kill), the same command again computes only the missing rows.

    \b
    featurize run --source abaw-mtl --annotations training_set_annotations.txt \\
        --images cropped_aligned --split train --store affwild2.h5
    featurize run --source folders --task lsd --images training_set_synthetic_images \\
        --split lsd_train --store lsd.h5
    featurize run --source folders --task expr --images fer2013.zip --subdir fer2013/test \\
        --split fer_test --store fer.h5
    """
    from featheads.core.errors import UserError

    from .pipeline import parse_shard, run_featurize
    from .finetune_heads import parse_logit_names

    try:
        summary = run_featurize(
            source=source, annotations=annotations, images=images, subdir=subdir, task=task, split=split,
            store=store_path, backbone=backbone, weights=weights, source_name=source_name, gpu=gpu,
            precision=precision, batch_size=batch_size, workers=workers, strict=strict, limit=limit,
            progress=not no_progress, shard=parse_shard(shard) if shard else None, retry_invalid=retry_invalid,
            wait=wait, logit_names=parse_logit_names(logit_names), pooled_maps=pooled_maps,
        )
    except KeyboardInterrupt:
        from store.journal import pending_rows

        n, parts = pending_rows(store_path)
        where = f"journal parts in {parts}" if n else f"in {store_path}"
        click.echo(f"\ninterrupted: {n} computed rows are saved ({where}); run the same command to continue: "
                   "it computes only the missing rows", err=True)
        raise SystemExit(130) from None
    for key, reason in summary.invalid_examples:
        click.echo(f"invalid: {key}: {reason}", err=True)
    if summary.invalid > len(summary.invalid_examples) and summary.invalid_examples:
        click.echo(f"invalid: ... ({summary.invalid} invalid rows in all)", err=True)
    click.echo(str(summary))
    if summary.rows and summary.invalid == summary.rows:
        raise UserError(
            f"every one of the {summary.rows} rows is invalid: check --images (and --subdir) point at the folder "
            "the annotation paths are relative to, then run again with --retry-invalid"
        )
