"""Fixtures shared by every test module. Area-specific fixtures live beside their tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATHEADS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real FER2013, CK+, OpenFace files); tests that need it skip where it is absent."""
    p = SHARED / "data"
    if not p.is_dir():
        pytest.skip(f"real data not found at {p} (set FEATHEADS_SHARED to the folder holding data/ and models/)")
    return p


@pytest.fixture(scope="session")
def shared_models() -> Path:
    p = SHARED / "models"
    if not (p / "fer_mini_xception.hdf5").is_file():
        pytest.skip(f"{p}/fer_mini_xception.hdf5 not found (set FEATHEADS_SHARED)")
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's weights cache from tests."""
    monkeypatch.setenv("FEATHEADS_CACHE", str(tmp_path_factory.mktemp("cache")))
