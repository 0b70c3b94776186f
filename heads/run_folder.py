"""The run folder written by `heads fit` and read by `heads predict`.

    runs/NAME/run.json      what was fitted: command, store, splits, seed, backbone, per head the
                            feature spec, class, feature count, training rows, fit seconds, and the
                            identity of every feature source used (checked again at predict time)
    runs/NAME/recipe.json   the resolved recipe ({backbone} filled, all head parameters); it can be
                            passed back as --recipe to fit the same heads again
    runs/NAME/metrics.json  the evaluation split's metrics
    runs/NAME/<key>/        one saved head per task (expr, va, au, lsd) or joint/ (heads.persist)

The folder is written under a temporary name and renamed when complete, so an interrupted fit
never leaves a half-written run behind and never damages an existing one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from featheads.core.errors import UserError
from featheads.core.jsonfile import read_json

from .persist import load_head, save_head
from .plan import Plan

RUN_FORMAT = 1


def check_writable(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: run folder exists and is not empty; choose another --out or pass --overwrite")


def write_run(out, doc: dict, recipe: dict, metrics: dict, fitted: list, *, overwrite: bool) -> None:
    """Write the complete run folder `out` atomically (temp folder, then rename)."""
    out = Path(out)
    check_writable(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for plan, head in fitted:
            save_head(head, tmp / plan.key)
        _dump(tmp / "run.json", doc)
        _dump(tmp / "recipe.json", recipe)
        _dump(tmp / "metrics.json", metrics)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_run(path) -> tuple[dict, list]:
    """(run.json, [(Plan, fitted head), ...]) of a run folder."""
    path = Path(path)
    f = path / "run.json"
    if not f.is_file():
        raise UserError(f"{path}: not a run folder (no run.json); pass the --out folder of `heads fit`")
    doc = read_json(f)
    if doc.get("format") != RUN_FORMAT:
        raise UserError(f"{f}: run format {doc.get('format')!r}; this version reads {RUN_FORMAT}")
    fitted = []
    for key, entry in doc["heads"].items():
        plan = Plan(key=key, features=entry["features"], head=entry["head"])
        fitted.append((plan, load_head(path / key)))
    return doc, fitted


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")
