"""The README's and docs/ pages' code blocks run, literally, on the demo's data (as doctest does for docstrings).

A page's ```bash, ```sh and ```python blocks run in order, in a fresh copy of the folder where
`featurize demo --out demo` was run (so `demo/store.h5`, `demo/data/...` exist), with this
environment's `featurize`, `heads`, `blend` and `store` on PATH. A block that cannot run on the demo's data
(it needs the real challenge files, a GPU, OpenFace, or it installs) says so on the line before it:

    <!-- docs-test: skip: needs the real s-Aff-Wild2 files -->

Plain ``` blocks (layouts, output, synopses) are not code and are not run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
BLOCK = re.compile(r"(?:^<!--\s*docs-test:\s*(?P<directive>[^>]*?)\s*-->\n)?^```(?P<lang>bash|sh|python)\n"
                   r"(?P<code>.*?)^```\s*$", re.M | re.S)


def code_blocks(page: Path) -> list[dict]:
    """Every fenced bash/sh/python block of a page: line, language, code and its skip reason (or None)."""
    text = page.read_text()
    out = []
    for m in BLOCK.finditer(text):
        directive = (m.group("directive") or "").strip()
        skip = None
        if directive:
            if not directive.startswith("skip:") or not directive[5:].strip():
                raise ValueError(f"{page.name}:{text[:m.start()].count(chr(10)) + 1}: a docs-test directive is "
                                 f"'skip: <why>', not {directive!r}")
            skip = directive[5:].strip()
        line = text[:m.start("code")].count("\n") + 1
        out.append({"line": line, "lang": m.group("lang"), "code": m.group("code"), "skip": skip})
    return out


def test_the_block_reader_finds_blocks_and_their_skip_reasons(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n```bash\nstore info --store demo/store.h5\n```\n\n```\nnot code\n```\n"
                    "<!-- docs-test: skip: needs a GPU -->\n```python\nimport featurize\n```\n")
    blocks = code_blocks(page)
    assert [(b["lang"], b["skip"], b["line"]) for b in blocks] == [("bash", None, 3), ("python", "needs a GPU", 11)]
    page.write_text("<!-- docs-test: maybe -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="skip: <why>"):
        code_blocks(page)


def _runnable_pages():
    return [p for p in PAGES if any(b["skip"] is None for b in code_blocks(p))]


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory):
    """Where `featurize demo --out demo` ran (the README's first command, without the install)."""
    where = tmp_path_factory.mktemp("docs_demo")
    env = {**os.environ, "FEATHEADS_CACHE": str(where / "cache")}  # downloads the weights, or falls back offline
    proc = subprocess.run([str(Path(sys.executable).parent / "featurize"), "demo", "--out", "demo", "--no-progress"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return where


@pytest.mark.slow
@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: p.name)
def test_every_code_block_of_the_page_runs_on_the_demo_data(page, demo_folder, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(demo_folder, work, symlinks=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FEATHEADS_CACHE": str(work / "cache"), "MPLBACKEND": "Agg"}
    for block in code_blocks(page):
        if block["skip"] is not None:
            continue
        if block["lang"] == "python":
            cmd = [sys.executable, "-c", block["code"]]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", block["code"]]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"{page.relative_to(REPO)}:{block['line']}: exit {proc.returncode}\n"
                                      f"{block['code']}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n"
                                      f"{proc.stderr[-3000:]}")
