"""Recipes: which features feed which head with which parameters, per task. Recipes are data.

    {"format": 1, "name": "...", "description": "...",
     "tasks": {"expr": {"features": "{backbone}.embeddings+{backbone}.logits",
                        "head": "mlp", "params": {...}},
               "va": {...}, "au": {...}, "lsd": {...}},
     "joint": {"features": "...", "head": "joint_mlp", "params": {...}}}     # optional, for --joint

`features` is a store feature spec ("source.array+source.array", or a source name for all its
arrays); "{backbone}" is replaced by --backbone or by the store's only source holding both
embeddings and logits. Built-in recipes live in heads/recipes/*.json; any JSON file of this form
can be passed instead. Errors name the recipe and the key. Any entry's params may also hold
"bagging": {"estimators", "fraction", "seed"} (heads.bagging); torch heads take "mixup" (heads.mixup).
"""
from __future__ import annotations

from pathlib import Path

from featheads.core.errors import UserError
from featheads.core.jsonfile import builtin_names, read_named_json

from .registry import HEADS, TASK_KINDS, head_class, param_names

BUILTIN_DIR = Path(__file__).parent / "recipes"
RECIPE_FORMAT = 1
_TOP_KEYS = {"format", "name", "description", "tasks", "joint", "tuning"}  # tuning: heads tune's record
_ENTRY_KEYS = {"features", "head", "params"}


class RecipeError(UserError):
    """A recipe that cannot be used; the message names the recipe and the key."""


def builtin_recipes() -> list[str]:
    return builtin_names(BUILTIN_DIR)


def load_recipe(recipe) -> tuple[dict, str]:
    """A recipe from a built-in name, a JSON file path or a dict -> (validated copy, source for messages)."""
    doc, source = read_named_json(recipe, BUILTIN_DIR, what="recipe", error=RecipeError)
    validate_recipe(doc, source)
    return doc, source


def validate_recipe(doc: dict, source: str) -> None:
    def fail(key, msg):
        raise RecipeError(f"{source}: {key}: {msg}")

    if not isinstance(doc, dict):
        fail("(top level)", "a recipe is a JSON object")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        fail(sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if doc.get("format", RECIPE_FORMAT) != RECIPE_FORMAT:
        fail("format", f"{doc['format']!r}; this version reads format {RECIPE_FORMAT}")
    tasks = doc.get("tasks", {})
    if not isinstance(tasks, dict) or not (tasks or "joint" in doc):
        fail("tasks", "missing or empty; expected an object with some of " + ", ".join(TASK_KINDS))
    for task, entry in tasks.items():
        if task not in TASK_KINDS:
            fail(f"tasks.{task}", f"unknown task; tasks: {', '.join(TASK_KINDS)}")
        _validate_entry(entry, TASK_KINDS[task][0], f"tasks.{task}", fail)
    if "joint" in doc:
        _validate_entry(doc["joint"], "joint", "joint", fail)


def _validate_entry(entry, kind: str, key: str, fail) -> None:
    if not isinstance(entry, dict):
        fail(key, 'expected {"features": ..., "head": ..., "params": {...}}')
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        fail(f"{key}.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(_ENTRY_KEYS))}")
    for k in ("features", "head"):
        if not isinstance(entry.get(k), str) or not entry[k].strip():
            fail(f"{key}.{k}", "missing or not a string")
    if entry["head"] not in HEADS:
        fail(f"{key}.head", f"unknown head {entry['head']!r}; heads: {', '.join(HEADS)}")
    try:
        cls = head_class(entry["head"], kind)
    except ValueError as e:
        fail(f"{key}.head", str(e))
    params = entry.get("params", {})
    if not isinstance(params, dict):
        fail(f"{key}.params", "expected an object of parameter: value")
    allowed = set(param_names(cls)) - {"random_state", "n_classes"} | {"bagging"}  # bagging: heads.bagging
    if "bagging" in params:
        from .bagging import check_bagging

        try:
            check_bagging(params["bagging"])
        except ValueError as e:
            fail(f"{key}.params.bagging", str(e))
    for name in params:
        if name not in allowed:
            fail(f"{key}.params.{name}", f"{cls.__name__} has no such parameter; parameters: "
                                         f"{', '.join(sorted(allowed))}")


def fill_backbone(spec: str, backbone: str | None, source: str, key: str) -> str:
    if "{backbone}" not in spec:
        return spec
    if backbone is None:
        raise RecipeError(f"{source}: {key}: uses {{backbone}} but no backbone is known; pass --backbone")
    return spec.replace("{backbone}", backbone)


def choose_backbone(sources_with_arrays: dict[str, list[str]], backbone: str | None, store_path: str) -> str:
    """--backbone if given, else the store's only source with both "embeddings" and "logits"."""
    if backbone is not None:
        if backbone not in sources_with_arrays:
            raise UserError(f"{store_path}: no feature source {backbone!r} (--backbone); sources: "
                            f"{', '.join(sources_with_arrays) or 'none'}")
        return backbone
    cands = [s for s, arrs in sources_with_arrays.items() if {"embeddings", "logits"} <= set(arrs)]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise UserError(f"{store_path}: no feature source with both embeddings and logits for {{backbone}}; "
                        f"sources: {', '.join(sources_with_arrays) or 'none'} (run `featurize run` first)")
    raise UserError(f"{store_path}: several backbone sources ({', '.join(cands)}); choose one with --backbone")
