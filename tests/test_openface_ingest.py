"""`featurize openface`: CSVs -> store source, matched through the sorted frame listing."""
from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from openface_fixtures import (
    AU_COLUMNS,
    au_values,
    make_frames,
    make_store,
    read_values,
    write_image_csv,
    write_sequence_csv,
)

from featurize.cli import main as featurize_cli
from store import STATUS_INVALID, STATUS_OK, FeatureStore


def run(*args):
    res = CliRunner().invoke(featurize_cli, ["openface", "--no-progress", *map(str, args)])
    return res


def test_help():
    res = CliRunner().invoke(featurize_cli, ["openface", "--help"])
    assert res.exit_code == 0 and "--csv-dir" in res.output and "--groups" in res.output


def test_real_csv_through_sorted_listing(tmp_path, shared_data):
    """Row i of the CSV is the i-th file of the sorted folder listing, whatever the numbers in the names."""
    names = [f"{n:05d}.jpg" for n in range(3, 303, 3)]  # 100 frames, gaps in the numbering
    make_frames(tmp_path / "img" / "vid", names + ["notes.txt", "x.JPG"])  # ignored, as OpenFace does
    (tmp_path / "csv").mkdir()
    shutil.copy(shared_data / "openface" / "OpenFace_Test.csv", tmp_path / "csv" / "vid.csv")
    keys = ["vid/00006.jpg", "vid/00300.jpg", "vid/00150.jpg"]
    store = make_store(tmp_path / "s.h5", keys)
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img")
    assert res.exit_code == 0, res.output
    assert "3 row(s) ok, 0 invalid" in res.output

    with open(shared_data / "openface" / "OpenFace_Test.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip() for h in rows[0]]
    ref = {int(r[0]): [float(r[header.index(c)]) for c in AU_COLUMNS] for r in rows[1:]}
    got = read_values(store)
    for key in keys:
        frame = sorted(names).index(key.split("/")[1]) + 1
        assert got[key][0] == STATUS_OK
        np.testing.assert_allclose(got[key][1], ref[frame], rtol=1e-6)
    with FeatureStore.open(store) as st:
        assert st.feature_names("openface.values")[0] == "openface.values.AU01_r"
        info = st.source_info("openface")
        assert info["identity"]["columns"] == AU_COLUMNS and info["identity"]["groups"] == ["au"]
        assert info["provenance"]["csv_dir"].endswith("csv")


def test_success_zero_missing_csv_and_missing_frame_are_invalid(tmp_path):
    make_frames(tmp_path / "img" / "a", [f"{i:05d}.png" for i in range(1, 6)])
    au = write_sequence_csv(tmp_path / "csv" / "a.csv", 5, success=[1, 1, 0, 1, 1])
    keys = ["a/00001.png", "a/00003.png", "a/00005.png", "a/00009.png", "b/00001.png"]
    store = make_store(tmp_path / "s.h5", keys)
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img")
    assert res.exit_code == 0, res.output
    assert "2 row(s) ok, 3 invalid" in res.output
    assert "success 0: 1" in res.output and "no CSV: 1" in res.output
    got = read_values(store)
    np.testing.assert_allclose(got["a/00001.png"][1], au[0], rtol=1e-6)
    np.testing.assert_allclose(got["a/00005.png"][1], au[4], rtol=1e-6)
    for key in ("a/00003.png", "a/00009.png", "b/00001.png"):
        assert got[key][0] == STATUS_INVALID and np.isnan(got[key][1]).all()
    with FeatureStore.open(store) as st:
        X, valid = st.read_features("openface.values")
    assert valid.tolist() == [True, False, True, False, False]


def test_later_ingest_keeps_rows_it_has_no_csv_for(tmp_path):
    make_frames(tmp_path / "img" / "a", ["1.jpg", "2.jpg"])
    make_frames(tmp_path / "img" / "b", ["1.jpg", "2.jpg"])
    au_a = write_sequence_csv(tmp_path / "csv1" / "a.csv", 2, seed=1)
    au_b = write_sequence_csv(tmp_path / "csv2" / "b.csv", 2, seed=2)
    store = make_store(tmp_path / "s.h5", ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"])
    assert run("--store", store, "--csv-dir", tmp_path / "csv1", "--images", tmp_path / "img").exit_code == 0
    assert read_values(store)["b/1.jpg"][0] == STATUS_INVALID  # no CSV yet
    res = run("--store", store, "--csv-dir", tmp_path / "csv2", "--images", tmp_path / "img")
    assert res.exit_code == 0, res.output
    assert "2 row(s) without a CSV kept what the source had" in res.output
    got = read_values(store)
    assert all(got[k][0] == STATUS_OK for k in got)
    np.testing.assert_allclose(got["a/2.jpg"][1], au_a[1], rtol=1e-6)
    np.testing.assert_allclose(got["b/1.jpg"][1], au_b[0], rtol=1e-6)


def test_per_image_csvs_keep_the_most_confident_face(tmp_path):
    au = au_values(3, seed=5)
    write_image_csv(tmp_path / "csv" / "x" / "a.csv", [(0.4, au[0]), (0.95, au[1])])
    write_image_csv(tmp_path / "csv" / "x" / "b.csv", [])  # no face found
    write_image_csv(tmp_path / "csv" / "flat.csv", [(0.9, au[2])])  # an image at the top level
    store = make_store(tmp_path / "s.h5", ["x/a.jpg", "x/b.jpg", "x/c.jpg", "flat.png"])
    res = run("--store", store, "--csv-dir", tmp_path / "csv")  # no --images needed for per-image CSVs
    assert res.exit_code == 0, res.output
    assert "no face found: 1" in res.output and "no CSV: 1" in res.output
    got = read_values(store)
    np.testing.assert_allclose(got["x/a.jpg"][1], au[1], rtol=1e-6)
    np.testing.assert_allclose(got["flat.png"][1], au[2], rtol=1e-6)
    assert got["x/b.jpg"][0] == STATUS_INVALID and got["x/c.jpg"][0] == STATUS_INVALID


def test_flat_folder_sequence_is_named_after_the_images_folder(tmp_path):
    make_frames(tmp_path / "test_images", ["b.jpg", "a.jpg", "c.jpg"])
    au = write_sequence_csv(tmp_path / "csv" / "test_images.csv", 3, version="2.0", sep=", ")
    store = make_store(tmp_path / "s.h5", ["c.jpg", "a.jpg"], split="test")
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "test_images",
              "--split", "test")
    assert res.exit_code == 0, res.output
    got = read_values(store)
    np.testing.assert_allclose(got["a.jpg"][1], au[0], rtol=1e-6)
    np.testing.assert_allclose(got["c.jpg"][1], au[2], rtol=1e-6)


def test_split_limits_the_rows(tmp_path):
    make_frames(tmp_path / "img" / "a", ["1.jpg"])
    write_sequence_csv(tmp_path / "csv" / "a.csv", 1)
    store = make_store(tmp_path / "s.h5", ["a/1.jpg"], split="train")
    make_store(store, ["v/1.jpg"], split="val")
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img", "--split", "train")
    assert res.exit_code == 0, res.output
    with FeatureStore.open(store) as st:
        assert st.source_status("openface").tolist() == [STATUS_OK, 0]  # val untouched: not computed


@pytest.mark.parametrize("problem, message", [
    ("count", r"a\.csv: 4 frame rows, but .*a holds 5 images"),
    ("nonnumeric", r"b\.csv: line 3 column 'AU06_r': 'x' is not a number"),
    ("duplicate", r"a\.csv: line 3 repeats frame 1"),
    ("groups", r"b\.csv: no 'pose' columns"),
])
def test_bad_input_changes_nothing(tmp_path, problem, message):
    """Every CSV is checked before the store is opened for writing: earlier features survive."""
    make_frames(tmp_path / "img" / "a", [f"{i}.jpg" for i in range(5)])
    make_frames(tmp_path / "img" / "b", [f"{i}.jpg" for i in range(3)])
    good = write_sequence_csv(tmp_path / "csv" / "a.csv", 5, seed=3, pose=True)
    write_sequence_csv(tmp_path / "csv" / "b.csv", 3, seed=4, pose=True)
    store = make_store(tmp_path / "s.h5", ["a/0.jpg", "b/2.jpg"])
    groups = ["--groups", "au,pose"]
    assert run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img", *groups).exit_code == 0
    before = read_values(store)

    if problem == "count":
        write_sequence_csv(tmp_path / "csv" / "a.csv", 4, seed=9, pose=True)
    elif problem == "duplicate":
        p = tmp_path / "csv" / "a.csv"
        lines = p.read_text().splitlines()
        lines[2] = "1" + lines[2][1:]
        p.write_text("\n".join(lines) + "\n")
    else:  # b.csv is parsed after a.csv: a good file was already read when the bad one fails
        p = tmp_path / "csv" / "b.csv"
        if problem == "nonnumeric":
            lines = p.read_text().splitlines()
            cells = lines[2].split(",")
            cells[5 + 6 + 4] = "x"  # frame..success, 6 pose columns, then AU06_r
            lines[2] = ",".join(cells)
            p.write_text("\n".join(lines) + "\n")
        else:
            write_sequence_csv(p, 3, seed=4)  # no pose columns
    res = run("--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img", *groups)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("Error:")]) == 1
    assert re.search(message, res.output), res.output
    after = read_values(store)
    np.testing.assert_array_equal(after["a/0.jpg"][1], before["a/0.jpg"][1])
    np.testing.assert_allclose(after["a/0.jpg"][1][:35], good[0], rtol=1e-6)
    assert after["b/2.jpg"][0] == STATUS_OK


def test_other_groups_into_an_existing_source_is_refused(tmp_path):
    make_frames(tmp_path / "img" / "a", ["1.jpg"])
    write_sequence_csv(tmp_path / "csv" / "a.csv", 1, pose=True)
    store = make_store(tmp_path / "s.h5", ["a/1.jpg"])
    args = ["--store", store, "--csv-dir", tmp_path / "csv", "--images", tmp_path / "img"]
    assert run(*args).exit_code == 0
    res = run(*args, "--groups", "au,pose")
    assert res.exit_code == 1 and "differ from those of source 'openface'" in res.output
    res = run(*args, "--groups", "au,pose", "--source-name", "openface_pose")
    assert res.exit_code == 0, res.output
    with FeatureStore.open(store) as st:
        assert st.read_features("openface_pose.values")[0].shape == (1, 41)


def test_sequence_csv_needs_images_and_wrong_csv_dir_is_clear(tmp_path):
    make_frames(tmp_path / "img" / "a", ["1.jpg"])
    write_sequence_csv(tmp_path / "csv" / "a.csv", 1)
    store = make_store(tmp_path / "s.h5", ["a/1.jpg"])
    res = run("--store", store, "--csv-dir", tmp_path / "csv")
    assert res.exit_code == 1 and "pass --images" in res.output
    (tmp_path / "empty").mkdir()
    res = run("--store", store, "--csv-dir", tmp_path / "empty", "--images", tmp_path / "img")
    assert res.exit_code == 1 and "no OpenFace CSV for any of the 1 folder(s)" in res.output
    with FeatureStore.open(store) as st:
        assert st.sources() == []
