"""`featurize faces` (raw videos and photos -> face crops + index) and `featurize faces-ingest`
(the index -> store source `faces`); docs/FACES.md."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from store.options import wait_option

from featheads.core.errors import UserError


@click.command()
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="Folder (searched at any depth) or .zip of videos (mp4, avi, mkv, mov, webm, ...) "
                   "and/or photos (jpg, png, ...).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output: <video>/<00001>.jpg per sampled frame, <folder>/<photo stem>.jpg, "
                   "faces_index.jsonl, faces_list.txt.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Keep frames 1, 1+K, 1+2K, ... (numbers stay those of the video).")
@click.option("--size", default=112, show_default=True, type=click.IntRange(min=8), help="Crop side in pixels.")
@click.option("--margin", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Extra context: the crop square grows (or the aligned template shrinks) by 1+M.")
@click.option("--align", is_flag=True,
              help="Similarity transform of the 5 landmarks onto the 112x112 ArcFace template (upright, "
                   "eyes level) instead of the plain square around the box.")
@click.option("--all-faces", is_flag=True, help="Every face, as tracks <video>_<k> (photos: <stem>_<k>.jpg).")
@click.option("--select", type=click.Choice(["largest", "confident", "tracked"]), default="largest",
              show_default=True, help="Which face when one per frame: largest box, highest score, or the "
                                      "one overlapping the previous frame's choice.")
@click.option("--min-score", default=0.9, show_default=True, type=click.FloatRange(0, 1),
              help="Detections below this score are ignored.")
@click.option("--min-face", default=20, show_default=True, type=click.IntRange(min=12),
              help="Smallest face side (pixels) the detector looks for.")
@click.option("--detector", default="mtcnn", show_default=True, help="Registered face detector.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Frames detected together.")
@click.option("--gpu", is_flag=True, help="Detect on the CUDA GPU (error when there is none).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="CPU threads of the detector (0: torch's default). MTCNN's many small layers gain "
                   "little from threads: on a shared 2-core machine 1 thread was 4x faster than 2.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def faces(input_path, out, every, size, margin, align, all_faces, select, min_score, min_face, detector,
          batch_size, gpu, threads, no_progress):
    """Detect, crop (and align) faces of raw videos and photos into the s-Aff-Wild2 layout.

    Resumable: rerun the same command after an interruption; finished videos are skipped. A video
    that cannot be decoded is reported and skipped (exit code 1 at the end); the others go on.

    \b
    featurize faces --input recordings/ --out crops --align
    featurize run --source abaw-mtl --annotations crops/faces_list.txt --images crops \\
        --split test --store mine.h5
    featurize faces-ingest --store mine.h5 --crops crops
    """
    from .faces import FacesConfig, crop_faces

    import torch

    if threads:
        torch.set_num_threads(threads)
    device = "cpu"
    if gpu:
        if not torch.cuda.is_available():
            raise UserError("--gpu: no CUDA GPU is available to torch")
        device = "cuda"
    config = FacesConfig(every=every, size=size, margin=margin, align=align, all_faces=all_faces, select=select,
                         min_score=min_score, min_face=min_face, detector=detector, batch_size=batch_size)
    summary = crop_faces(input_path, out, config, device=device, progress=not no_progress)
    click.echo(str(summary))
    if summary.failed:
        raise UserError(f"{len(summary.failed)} file(s) could not be decoded: "
                        + "; ".join(f"{name} ({why})" for name, why in summary.failed[:5])
                        + ("; ..." if len(summary.failed) > 5 else ""))


@click.command("faces-ingest")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Feature store whose rows (from `featurize run` on the crops) get the detections.")
@click.option("--crops", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The --out folder of `featurize faces` (its faces_index.jsonl).")
@click.option("--split", help="Only rows of this split (default: all rows).")
@click.option("--source-name", default="faces", show_default=True, help="Name of the store source.")
@wait_option
def faces_ingest(store_path, crops, split, source_name):
    """Detection boxes, scores and 5 landmarks -> source `faces` (15 columns) of the store.

    \b
    Example:
      featurize faces-ingest --store mine.h5 --crops crops
    """
    from .faces_ingest import COLUMNS, ingest_faces

    plan = ingest_faces(store_path, crops, split=split, source=source_name,
                        provenance={"command": " ".join(sys.argv)})
    ok = int((plan.status == 1).sum())
    why = ", ".join(f"{k}: {v}" for k, v in sorted(plan.reasons.items()))
    kept = f"; {plan.kept} row(s) not in the index kept what the source had" if plan.kept else ""
    click.echo(f"faces-ingest: {ok} row(s) ok, {len(plan.status) - ok} invalid{f' ({why})' if why else ''}"
               f"{kept}; {len(COLUMNS)} columns -> source {source_name!r} of {store_path}")
