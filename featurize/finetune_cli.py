"""`featurize finetune`: train a registered backbone with a new head (head first, then all layers)."""
from __future__ import annotations

import click


@click.command("finetune")
@click.option("--source", "source", type=click.Choice(["abaw-mtl", "folders"]), default="folders", show_default=True,
              help="Layout of the training rows: ABAW4 MTL annotation file, or class folders (as `featurize run`).")
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=str), help="abaw-mtl: the annotation file.")
@click.option("--images", required=True, type=click.Path(path_type=str),
              help="Image root of the training rows: a folder or a .zip archive (read without unpacking).")
@click.option("--subdir", help="Folder inside --images to use as the root, e.g. fer2013/train in a zip.")
@click.option("--split", default="train", show_default=True, help="Name of the training split (recorded).")
@click.option("--val-annotations", type=click.Path(dir_okay=False, path_type=str),
              help="abaw-mtl: annotation file of the validation rows.")
@click.option("--val-images", type=click.Path(path_type=str),
              help="Image root of the validation rows, scored after every epoch (same --source layout).")
@click.option("--val-subdir", help="Folder inside --val-images.")
@click.option("--val-split", default="val", show_default=True, help="Name of the validation split (recorded).")
@click.option("--task", required=True, type=click.Choice(["lsd", "expr", "mtl"]),
              help="The new head: lsd (6 classes), expr (8), mtl (8 expressions + valence/arousal + 12 AUs).")
@click.option("--backbone", default="enet_b0_8_va_mtl", show_default=True,
              help="Registered backbone (see `featurize backbones`) or timm:<model name>.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Weights of the backbone; default: the cached copy, else one download.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: model.safetensors, finetune.json, checkpoint.pt while training.")
@click.option("--recipe", help="Built-in fine-tuning recipe (hsenn, jeong) or a JSON file [default: hsenn].")
@click.option("--optimizer", type=click.Choice(["sam", "adam", "adamw", "sgd"]), help="Override the recipe's optimizer.")
@click.option("--rho", type=click.FloatRange(min=0), help="SAM's neighbourhood size (override).")
@click.option("--head-epochs", type=click.IntRange(min=0), help="Epochs of the head-only stage(s) (override).")
@click.option("--all-epochs", type=click.IntRange(min=0), help="Epochs of the all-layers stage(s) (override).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the recipe's batch size.")
@click.option("--hflip", type=click.FloatRange(0, 1), help="Probability of a horizontal flip (override).")
@click.option("--affine/--no-affine", default=None, help="RandomAffine: +-10 degrees, 10% shift, scale 0.9-1.1.")
@click.option("--color-jitter/--no-color-jitter", default=None, help="ColorJitter: brightness, contrast, saturation 0.2.")
@click.option("--erasing", type=click.FloatRange(0, 1), help="Probability of RandomErasing (override).")
@click.option("--mix", type=click.Choice(["none", "mixup", "mixaugment"]), help="Image-level Mix-up or Mix-augment.")
@click.option("--mix-alpha", type=click.FloatRange(min=1e-6), help="Beta(alpha, alpha) of Mix-up (Jeong et al.: 0.1).")
@click.option("--checkpoint-steps", type=click.IntRange(min=0), help="Also checkpoint every N steps (0: epochs only).")
@click.option("--keep-best", is_flag=True, help="Keep the epoch with the best validation score instead of the last "
              "(the published practice; optimistic, since it is chosen on the rows it is scored on).")
@click.option("--seed", default=0, show_default=True, help="Seed of the new head, the shuffling and the augmentations.")
@click.option("--gpu", is_flag=True, help="Train on the CUDA GPU (channels_last).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Autocast precision; fp16 (with a GradScaler) needs --gpu.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Decoding worker processes.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N training rows (a quick trial).")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that holds a fine-tune or a checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def finetune(source, annotations, images, subdir, split, val_annotations, val_images, val_subdir, val_split, task,
             backbone, weights, out, recipe, optimizer, rho, head_epochs, all_epochs, batch_size, hflip, affine,
             color_jitter, erasing, mix, mix_alpha, checkpoint_steps, keep_best, seed, gpu, precision, workers,
             limit, overwrite, no_progress):
    """Fine-tune a backbone with a new head for --task: the head alone, then all layers (recipe hsenn:
    3 epochs at lr 1e-3, then 6 at 1e-4, SAM over Adam, weighted CE with label smoothing 0.1).

    Interrupted (Ctrl-C, kill -9), the same command again continues from the last checkpoint.
    The result featurizes as a new source: featurize run --backbone <same> --weights OUT/model.safetensors
    --source-name NAME.

    \b
    featurize finetune --source folders --task lsd --images demo/data/training_set_synthetic_images \\
        --val-images demo/data/validation_set_real_images --backbone enet_b0_8_va_mtl --out ft_lsd
    """
    from .finetune import finetune as run

    doc, recipe_source = _recipe_with_overrides(
        recipe, optimizer=optimizer, rho=rho, head_epochs=head_epochs, all_epochs=all_epochs, batch_size=batch_size,
        hflip=hflip, affine=affine, color_jitter=color_jitter, erasing=erasing, mix=mix, mix_alpha=mix_alpha,
        checkpoint_steps=checkpoint_steps)
    train, val = _read_train_and_val(source=source, annotations=annotations, images=images, subdir=subdir,
                                     split=split, val_annotations=val_annotations, val_images=val_images,
                                     val_subdir=val_subdir, val_split=val_split, task=task, limit=limit)
    try:
        result = run(train, task=task, backbone=backbone, weights=weights, out=out, val=val, recipe=doc, seed=seed,
                     gpu=gpu, precision=precision, keep_best=keep_best, workers=workers, progress=not no_progress,
                     overwrite=overwrite, recipe_source=recipe_source)
    except KeyboardInterrupt as e:
        click.echo(f"interrupted: {e or 'stopped'}; run the same command to continue", err=True)
        raise SystemExit(130) from None
    click.echo(str(result))


def _recipe_with_overrides(recipe, *, optimizer, rho, head_epochs, all_epochs, batch_size, hflip, affine,
                           color_jitter, erasing, mix, mix_alpha, checkpoint_steps):
    """The recipe document with the options given on the command line in place; returns (doc, its source)."""
    from .finetune_recipe import load_finetune_recipe

    doc, recipe_source = load_finetune_recipe(recipe)
    if optimizer:
        doc["optimizer"]["name"] = optimizer
        if optimizer != "sam":
            doc["optimizer"]["base"] = optimizer
    if rho is not None:
        doc["optimizer"]["rho"] = rho
    for st in doc["stages"]:
        if st["train"] == "head" and head_epochs is not None:
            st["epochs"] = head_epochs
        if st["train"] == "all" and all_epochs is not None:
            st["epochs"] = all_epochs
    if batch_size:
        doc["batch_size"] = batch_size
    _override_augment(doc["augment"], hflip=hflip, affine=affine, color_jitter=color_jitter, erasing=erasing,
                      mix=mix, mix_alpha=mix_alpha)
    if checkpoint_steps is not None:
        doc["checkpoint_steps"] = checkpoint_steps
    return doc, recipe_source


def _override_augment(aug: dict, *, hflip, affine, color_jitter, erasing, mix, mix_alpha) -> None:
    """The recipe's augmentations with the options given on the command line in place."""
    if hflip is not None:
        aug["hflip"] = hflip
    if affine is not None:
        aug["affine"] = {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]} if affine else None
    if color_jitter is not None:
        aug["color_jitter"] = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2} if color_jitter else None
    if erasing is not None:
        aug["erasing"] = erasing
    if mix is not None:
        aug["mix"] = None if mix == "none" else mix
    if mix_alpha is not None:
        aug["mix_alpha"] = mix_alpha


def _read_train_and_val(*, source, annotations, images, subdir, split, val_annotations, val_images, val_subdir,
                        val_split, task, limit):
    """The training rows and the validation rows (None without --val-images), options checked first."""
    from .finetune import FinetuneError, read_finetune_data

    if source == "abaw-mtl" and annotations is None:
        raise FinetuneError("--source abaw-mtl needs --annotations FILE")
    if (val_annotations or val_subdir) and not val_images:
        raise FinetuneError("--val-annotations / --val-subdir need --val-images")
    train = read_finetune_data(source=source, images=images, annotations=annotations, subdir=subdir, task=task,
                               split=split, limit=limit)
    val = None
    if val_images:
        if source == "abaw-mtl" and val_annotations is None:
            raise FinetuneError("--source abaw-mtl: --val-images needs --val-annotations FILE")
        val = read_finetune_data(source=source, images=val_images, annotations=val_annotations, subdir=val_subdir,
                                 task=task, split=val_split, role="val")
    return train, val
