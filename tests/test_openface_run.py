"""`featurize openface --run`: calls FeatureExtraction per frame folder (a fake one on PATH here)."""
from __future__ import annotations

import os
import stat
import sys
import textwrap

import numpy as np
from click.testing import CliRunner
from openface_fixtures import AU_COLUMNS, make_frames, make_store, read_values

from featurize.cli import main as featurize_cli
from store import STATUS_OK

# Writes what FeatureExtraction -fdir would: one row per sorted .jpg/.jpeg/.png/.bmp file, AU values
# derived from the file name's number so the test can check the match; logs every call.
FAKE = r'''
import os, sys
args = sys.argv[1:]
opt = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i] in ("-fdir", "-out_dir", "-of")}
with open(os.environ["FAKE_OPENFACE_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if os.environ.get("FAKE_OPENFACE_FAIL") and os.environ["FAKE_OPENFACE_FAIL"] in opt["-fdir"]:
    print("ERROR: could not open the models"); sys.exit(3)
names = sorted(n for n in os.listdir(opt["-fdir"]) if os.path.splitext(n)[1] in (".jpg", ".jpeg", ".png", ".bmp"))
cols = AU_COLUMNS
with open(os.path.join(opt["-out_dir"], opt["-of"] + ".csv"), "w") as f:
    f.write(",".join(["frame", "face_id", "timestamp", "confidence", "success"] + cols) + "\n")
    for i, n in enumerate(names):
        v = int(os.path.splitext(n)[0])
        f.write(",".join([str(i + 1), "0", "0", "0.98", "1"] + [str(v + k / 100) for k in range(len(cols))]) + "\n")
'''


def install_fake(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "FeatureExtraction"
    exe.write_text(f"#!{sys.executable}\nAU_COLUMNS = {AU_COLUMNS!r}\n" + textwrap.dedent(FAKE))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OPENFACE_LOG", str(log))
    return exe, log


def run(*args):
    return CliRunner().invoke(featurize_cli, ["openface", "--no-progress", "--run", *map(str, args)])


def test_run_calls_feature_extraction_per_folder_and_resumes(tmp_path, monkeypatch):
    _, log = install_fake(tmp_path, monkeypatch)
    make_frames(tmp_path / "img" / "v1", ["00010.jpg", "00020.jpg", "00030.jpg"])
    make_frames(tmp_path / "img" / "v2", ["00005.png"])
    store = make_store(tmp_path / "s.h5", ["v1/00020.jpg", "v2/00005.png"])
    args = ["--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img"]
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert "ran on 2 folder(s), 0 already had a CSV" in res.output and "2 row(s) ok" in res.output
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].split()[:2] == ["-fdir", str(tmp_path / "img" / "v1")]
    assert calls[0].endswith("-aus")
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["v1.csv", "v2.csv"]  # no temp left
    got = read_values(store)
    np.testing.assert_allclose(got["v1/00020.jpg"][1], 20 + np.arange(35) / 100, rtol=1e-6)
    np.testing.assert_allclose(got["v2/00005.png"][1], 5 + np.arange(35) / 100, rtol=1e-6)

    res = run(*args)  # both CSVs exist: no new call
    assert res.exit_code == 0 and "ran on 0 folder(s), 2 already had a CSV" in res.output
    assert len(log.read_text().splitlines()) == 2


def test_groups_become_flags(tmp_path, monkeypatch):
    _, log = install_fake(tmp_path, monkeypatch)
    make_frames(tmp_path / "img" / "v", ["1.jpg"])
    store = make_store(tmp_path / "s.h5", ["v/1.jpg"])
    # the fake writes AUs only: asking for pose runs with -pose, then the ingest says what is missing
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img", "--groups", "pose,au")
    assert log.read_text().split()[-2:] == ["-aus", "-pose"]
    assert res.exit_code == 1 and "no 'pose' columns" in res.output and "-pose" in res.output


def test_failure_names_the_folder_and_keeps_finished_csvs(tmp_path, monkeypatch):
    install_fake(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_OPENFACE_FAIL", "v2")
    make_frames(tmp_path / "img" / "v1", ["1.jpg"])
    make_frames(tmp_path / "img" / "v2", ["1.jpg"])
    store = make_store(tmp_path / "s.h5", ["v1/1.jpg", "v2/1.jpg"])
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img")
    assert res.exit_code == 1
    assert "failed on" in res.output and "v2 (exit code 3" in res.output and "could not open the models" in res.output
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["v1.csv"]


def test_missing_binary_and_explicit_binary(tmp_path, monkeypatch):
    exe, _ = install_fake(tmp_path, monkeypatch)
    make_frames(tmp_path / "img" / "v", ["1.jpg"])
    store = make_store(tmp_path / "s.h5", ["v/1.jpg"])
    args = ["--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    res = run(*args)
    assert res.exit_code == 1 and "FeatureExtraction (OpenFace 2) is not on PATH" in res.output
    assert "docs/OPENFACE.md" in res.output
    res = run(*args, "--openface-bin", tmp_path / "nope")
    assert res.exit_code == 1 and "no such executable file" in res.output
    res = run(*args, "--openface-bin", exe)
    assert res.exit_code == 0, res.output
    assert read_values(store)["v/1.jpg"][0] == STATUS_OK
