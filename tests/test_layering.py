"""The layering of the design, read from the code's imports (every import statement, lazy ones included).

store imports none of featurize/heads/blend; heads and blend never import featurize; featurize never imports
heads or blend; heads never imports blend; featheads.core imports no room; only featheads.app composes rooms.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("featurize", "store", "heads", "blend")
FORBIDDEN = {
    "store": {"featurize", "heads", "blend", "featheads.app"},
    "featurize": {"heads", "blend", "featheads.app"},
    "heads": {"featurize", "blend", "featheads.app"},
    "blend": {"featurize", "featheads.app"},
    "featheads/core": {"featurize", "store", "heads", "blend", "featheads.app"},
}


def _imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _violations(package: str):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, module in _imported_modules(path):
            for forbidden in FORBIDDEN[package]:
                if module == forbidden or module.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package):
    assert _violations(package) == []


def test_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a planted import of heads inside a fake store package is reported."""
    fake = tmp_path / "store"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from heads.metrics import ccc\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _violations("store") == ["store/bad.py:2 imports heads.metrics"]
