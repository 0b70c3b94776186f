"""Small JSON files a user hands the toolkit (recipes, blend specs, run folders): one clear error each."""
from __future__ import annotations

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


def toolkit_version() -> str:
    """The installed featheads version ("unknown" when running from an uninstalled source tree)."""
    try:
        from importlib.metadata import version

        return version("featheads")
    except Exception:
        return "unknown"
