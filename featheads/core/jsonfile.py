"""Small JSON files a user hands the toolkit (recipes, blend specs, run folders): one clear error each."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from .errors import UserError


def read_json(path, *, what: str = "file", error: type[UserError] = UserError):
    """Parse a JSON file; a missing file or bad JSON is `error` naming the file (and line)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def builtin_names(folder) -> list[str]:
    """The built-in JSON documents of a folder (recipes), by name."""
    return sorted(p.stem for p in Path(folder).glob("*.json"))


def read_named_json(doc, folder, *, what: str, error: type[UserError] = UserError) -> tuple[object, str]:
    """A document given as a dict, a JSON file path or the name of a built-in in `folder` ->
    (a copy to change freely, its source for messages: the file, or "recipe" for a dict)."""
    if isinstance(doc, dict):
        return copy.deepcopy(doc), "recipe"
    path = Path(doc)
    if not path.is_file():
        names = builtin_names(folder)
        if str(doc) not in names:
            raise error(f"{what} {str(doc)!r} is neither a file nor a built-in {what} ({', '.join(names)})")
        path = Path(folder) / f"{doc}.json"
    return read_json(path, what=what, error=error), str(path)


def toolkit_version() -> str:
    """The installed featheads version ("unknown" when running from an uninstalled source tree)."""
    try:
        from importlib.metadata import version

        return version("featheads")
    except Exception:
        return "unknown"
