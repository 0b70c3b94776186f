"""The study notebooks run top to bottom, unedited, on stores built here (nbclient, kernel python3)."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from blend_fixtures import write_lsd_store, write_mtl_store

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name, env_vars, monkeypatch):
    for k, v in env_vars.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebooks draw inline
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(nb):
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
            images += "image/png" in out.get("data", {})
    return "\n".join(text), images


def test_mtl_study_notebook_runs(tmp_path, monkeypatch):
    store = write_mtl_store(tmp_path / "store.h5", n_videos=6, n_frames=40)
    nb = execute("mtl_study.ipynb", {"FEATHEADS_STORE": store, "FEATHEADS_TRIALS": 8}, monkeypatch)
    text, images = outputs(nb)
    assert "P_MTL" in text and "out-of-fold" in text
    assert images >= 5  # history, importances, weight curves, confusion matrix, AU bars


def test_lsd_study_notebook_runs(tmp_path, monkeypatch):
    store = write_lsd_store(tmp_path / "lsd.h5")
    nb = execute("lsd_study.ipynb", {"FEATHEADS_LSD_STORE": store, "FEATHEADS_TRIALS": 8}, monkeypatch)
    text, images = outputs(nb)
    assert "P_LSD" in text
    assert images >= 4


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path
