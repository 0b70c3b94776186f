"""Fine-tuning recipes: the training schedule as data, like the heads' recipes.

    {"format": 1, "name": "hsenn", "description": "...", "batch_size": 32,
     "stages": [{"name": "head", "train": "head", "epochs": 3, "lr": 1e-3},
                {"name": "all", "train": "all", "epochs": 6, "lr": 1e-4}],
     "optimizer": {"name": "sam" | "adam" | "adamw" | "sgd", "base": "adam" | "adamw" | "sgd",
                   "rho": 0.05, "weight_decay": 0.0},
     "loss": {"class_weights": "mean_over_counts" | "none", "label_smoothing": 0.1,
              "au_pos_weight": true, "mtl_weights": {"va": 1, "expr": 1, "au": 1}},
     "augment": {"hflip": 0.5, "affine": {"degrees": 10, "translate": 0.1, "scale": [0.9, 1.1]} | null,
                 "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2} | null,
                 "erasing": 0.25, "mix": null | "mixup" | "mixaugment", "mix_alpha": 0.1},
     "checkpoint_steps": 0}

`train`: "head" (only the new classifier; the rest is frozen and kept in eval mode, so BatchNorm
statistics do not move) or "all". Built-in recipes live in featurize/finetune_recipes/*.json; the
default, `hsenn`, is the schedule of HSE-NN's LSD fine-tune (../shared/REFERENCE.md, "LSD as published").
Errors name the recipe and the key.
"""
from __future__ import annotations

import copy
from pathlib import Path

from featheads.core.errors import UserError
from featheads.core.jsonfile import builtin_names, read_named_json

BUILTIN_DIR = Path(__file__).parent / "finetune_recipes"
DEFAULT_RECIPE = "hsenn"
OPTIMIZERS = ("sam", "adam", "adamw", "sgd")
BASES = ("adam", "adamw", "sgd")
MIXES = (None, "mixup", "mixaugment")
_TOP = {"format", "name", "description", "batch_size", "stages", "optimizer", "loss", "augment", "checkpoint_steps"}
_DEFAULTS = {
    "batch_size": 32,
    "optimizer": {"name": "sam", "base": "adam", "rho": 0.05, "weight_decay": 0.0},
    "loss": {"class_weights": "mean_over_counts", "label_smoothing": 0.1, "au_pos_weight": True,
             "mtl_weights": {"va": 1.0, "expr": 1.0, "au": 1.0}},
    "augment": {"hflip": 0.0, "affine": None, "color_jitter": None, "erasing": 0.0, "mix": None, "mix_alpha": 0.1},
    "checkpoint_steps": 0,
}


class FinetuneRecipeError(UserError):
    """A fine-tuning recipe that cannot be used; the message names the recipe and the key."""


def builtin_recipes() -> list[str]:
    return builtin_names(BUILTIN_DIR)


def load_finetune_recipe(recipe=None) -> tuple[dict, str]:
    """A recipe from a built-in name, a JSON file or a dict (None: the default) -> (full copy, source)."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    doc, source = read_named_json(recipe, BUILTIN_DIR, what="fine-tuning recipe", error=FinetuneRecipeError)
    return complete_recipe(doc, source), source


def complete_recipe(doc, source: str) -> dict:
    """Validate `doc` and fill the keys it leaves out with the defaults."""
    def fail(key, msg):
        raise FinetuneRecipeError(f"{source}: {key}: {msg}")

    if not isinstance(doc, dict):
        fail("<top>", "a recipe is a JSON object")
    unknown = set(doc) - _TOP
    if unknown:
        fail(sorted(unknown)[0], f"unknown key; known: {', '.join(sorted(_TOP))}")
    if doc.get("format", 1) != 1:
        fail("format", f"{doc.get('format')!r}: only format 1 is known")
    out = copy.deepcopy(_DEFAULTS)
    out.update({k: v for k, v in doc.items() if k not in ("optimizer", "loss", "augment")})
    for part in ("optimizer", "loss", "augment"):
        given = doc.get(part, {})
        if not isinstance(given, dict):
            fail(part, "must be an object")
        extra = set(given) - set(_DEFAULTS[part])
        if extra:
            fail(f"{part}.{sorted(extra)[0]}", f"unknown key; known: {', '.join(_DEFAULTS[part])}")
        out[part].update(copy.deepcopy(given))
    out.setdefault("name", Path(source).stem)
    _check(out, fail)
    return out


def _number(value, lo, hi, key, fail, integer=False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        fail(key, f"{value!r}: expected {'an integer' if integer else 'a number'} in [{lo}, {hi}]")


def _check(r: dict, fail) -> None:
    _number(r["batch_size"], 1, 1 << 16, "batch_size", fail, integer=True)
    _number(r["checkpoint_steps"], 0, 1 << 30, "checkpoint_steps", fail, integer=True)
    stages = r.get("stages")
    if not isinstance(stages, list) or not stages:
        fail("stages", "a non-empty list of {name, train, epochs, lr}")
    names = set()
    for i, st in enumerate(stages):
        key = f"stages[{i}]"
        if not isinstance(st, dict) or set(st) - {"name", "train", "epochs", "lr"} or not {"train", "epochs", "lr"} <= set(st):
            fail(key, "expected {name, train, epochs, lr}")
        st.setdefault("name", st["train"] if st["train"] not in names else f"{st['train']}{i}")
        if st["train"] not in ("head", "all"):
            fail(f"{key}.train", f"{st['train']!r}: choose head or all")
        _number(st["epochs"], 0, 10_000, f"{key}.epochs", fail, integer=True)
        _number(st["lr"], 0, 10, f"{key}.lr", fail)
        if st["name"] in names:
            fail(f"{key}.name", f"{st['name']!r} used twice")
        names.add(st["name"])
    if sum(st["epochs"] for st in stages) < 1:
        fail("stages", "no epochs at all")
    opt = r["optimizer"]
    if opt["name"] not in OPTIMIZERS:
        fail("optimizer.name", f"{opt['name']!r}: choose one of {', '.join(OPTIMIZERS)}")
    if opt["base"] not in BASES:
        fail("optimizer.base", f"{opt['base']!r}: choose one of {', '.join(BASES)}")
    _number(opt["rho"], 0, 10, "optimizer.rho", fail)
    _number(opt["weight_decay"], 0, 10, "optimizer.weight_decay", fail)
    loss = r["loss"]
    if loss["class_weights"] not in ("mean_over_counts", "none"):
        fail("loss.class_weights", f"{loss['class_weights']!r}: choose mean_over_counts or none")
    _number(loss["label_smoothing"], 0, 0.99, "loss.label_smoothing", fail)
    if not isinstance(loss["au_pos_weight"], bool):
        fail("loss.au_pos_weight", "true or false")
    mw = loss["mtl_weights"]
    if not isinstance(mw, dict) or set(mw) != {"va", "expr", "au"}:
        fail("loss.mtl_weights", "an object with the keys va, expr, au")
    for k, v in mw.items():
        _number(v, 0, 1000, f"loss.mtl_weights.{k}", fail)
    aug = r["augment"]
    _number(aug["hflip"], 0, 1, "augment.hflip", fail)
    _number(aug["erasing"], 0, 1, "augment.erasing", fail)
    _number(aug["mix_alpha"], 1e-6, 100, "augment.mix_alpha", fail)
    if aug["mix"] not in MIXES:
        fail("augment.mix", f"{aug['mix']!r}: choose null, mixup or mixaugment")
    if aug["affine"] is not None:
        a = aug["affine"]
        if not isinstance(a, dict) or set(a) - {"degrees", "translate", "scale"}:
            fail("augment.affine", "null or {degrees, translate, scale: [lo, hi]}")
        _number(a.setdefault("degrees", 0), 0, 180, "augment.affine.degrees", fail)
        _number(a.setdefault("translate", 0), 0, 1, "augment.affine.translate", fail)
        sc = a.setdefault("scale", [1.0, 1.0])
        if not (isinstance(sc, list) and len(sc) == 2 and all(isinstance(v, (int, float)) for v in sc)
                and 0 < sc[0] <= sc[1] <= 10):
            fail("augment.affine.scale", f"{sc!r}: expected [lo, hi] with 0 < lo <= hi")
    if aug["color_jitter"] is not None:
        c = aug["color_jitter"]
        if not isinstance(c, dict) or set(c) - {"brightness", "contrast", "saturation"}:
            fail("augment.color_jitter", "null or {brightness, contrast, saturation}")
        for k in ("brightness", "contrast", "saturation"):
            _number(c.setdefault(k, 0), 0, 1, f"augment.color_jitter.{k}", fail)
