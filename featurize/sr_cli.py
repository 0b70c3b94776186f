"""`featurize sr`: Real-ESRGAN (RealESRGAN_x4plus) super-resolution of an image folder (docs/SR.md)."""
from __future__ import annotations

from pathlib import Path

import click

from featheads.core.errors import UserError


@click.command()
@click.option("--images", required=True, type=click.Path(path_type=Path),
              help="Input images: a folder (searched at any depth) or a .zip archive.")
@click.option("--subdir", help="Folder inside --images to use as the root, e.g. train in a zip.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: same relative paths, names and formats as the input.")
@click.option("--scale", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Output size / input size. The network upscales x4; other scales resize its output "
                   "with Lanczos-4 as the reference does (the paper used 2).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="RealESRGAN_x4plus.pth (else the cached copy, else downloaded once from the official URL).")
@click.option("--gpu", is_flag=True, help="Run on the CUDA GPU (error when there is none).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="Arithmetic of the network: fp16 needs --gpu.")
@click.option("--half", is_flag=True, hidden=True, help="The earlier spelling of --precision fp16.")
@click.option("--tile", default=0, show_default=True, type=click.IntRange(min=0),
              help="Process large images in tiles of this many input pixels (0 = whole image).")
@click.option("--tile-pad", default=10, show_default=True, type=click.IntRange(min=0),
              help="Context pixels around each tile, discarded after.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sr(images, subdir, out, scale, weights, gpu, precision, half, tile, tile_pad, no_progress):
    """Super-resolve every image under --images into --out with Real-ESRGAN x4plus.

    Resumable: images already in --out are skipped and each output is written to a part file and
    renamed. Unreadable images are reported at the end (exit code 1); the others are still written.

    \b
    Example:
      featurize sr --images lsd/training_set_synthetic_images --out lsd_sr/training_set_synthetic_images --gpu
    """
    half = half or precision == "fp16"
    import torch

    from .rrdbnet import describe, load_rrdbnet
    from .sr import MODEL_NAME, WEIGHTS_FILE, WEIGHTS_URL, Upscaler, super_resolve_folder
    from .weights import resolve_weights, sha256_file

    if half and not gpu:
        raise UserError("--precision fp16 needs --gpu (float16 convolutions on the CPU are slow or unsupported)")
    if gpu and not torch.cuda.is_available():
        raise UserError(
            f"--gpu: no CUDA device is available to torch {torch.__version__} "
            f"(built with CUDA {torch.version.cuda or 'none'}); run without --gpu to use the CPU"
        )
    if gpu:
        torch.backends.cudnn.benchmark = False  # the same algorithms every run: same pixels
        torch.backends.cudnn.deterministic = True
    path = resolve_weights(MODEL_NAME, WEIGHTS_URL, WEIGHTS_FILE, weights)
    model = load_rrdbnet(path)
    settings = {
        "model": MODEL_NAME,
        "weights_sha256": sha256_file(path),
        "scale": scale,
        "resize": "none" if scale == 4 else "lanczos4 (OpenCV INTER_LANCZOS4 arithmetic) of the x4 output",
        "network": describe(model),
        "device": "cuda" if gpu else "cpu",
        "precision": "float16" if half else "float32",
        "tile": tile,
        "tile_pad": tile_pad,
        "torch": torch.__version__,
    }
    upscaler = Upscaler(model, device="cuda" if gpu else "cpu", half=half, tile=tile, tile_pad=tile_pad)
    result = super_resolve_folder(images, out, upscaler, scale=scale, settings=settings, subdir=subdir,
                                  progress=not no_progress)
    click.echo(f"sr: {result.written} written, {result.skipped} already there, {len(result.failed)} failed -> {out}")
    if result.failed:
        for where, reason in result.failed[:10]:
            click.echo(f"  {where}: {reason}", err=True)
        more = len(result.failed) - 10
        raise UserError(
            f"{len(result.failed)} image(s) under {images} could not be super-resolved"
            + (f" ({more} more not listed)" if more > 0 else "")
        )
