"""Readers: ABAW4 MTL annotations and test lists, class folders (LSD, FER-style), image folders, file
lists, zip archives; malformed input stops before any work with FILE:LINE."""
from __future__ import annotations

import math
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from featurize.cli import main
from featurize.images import ImageRootError, open_image_root
from featurize.readers import (
    AnnotationError,
    read_abaw_mtl,
    read_class_folders,
    read_images,
    sample_columns,
)
from featurize_fixtures import HEADER, write_faces
from store import LSD_FOLDERS

AU0 = ",".join(["0"] * 12)


def _ann(tmp_path, *lines, header=HEADER):
    p = tmp_path / "ann.txt"
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def test_mtl_labels_and_missing_codes(tmp_path):
    p = _ann(
        tmp_path,
        f"vid_1/00001.jpg,0.25,-0.5,3,{','.join(['1'] + ['0'] * 11)}",
        f"vid_1/00002.jpg,-5,-5,-1,{','.join(['-1'] + ['0'] * 11)}",  # VA, EXPR, AU all missing
        f"vid_2/left/img.png,1,-1,7,{AU0}",
        "",  # blank lines are ignored
    )
    samples = read_abaw_mtl(p)
    assert [s.key for s in samples] == ["vid_1/00001.jpg", "vid_1/00002.jpg", "vid_2/left/img.png"]
    assert [s.video for s in samples] == ["vid_1", "vid_1", "vid_2/left"]
    assert [s.frame for s in samples] == [1, 2, -1]
    cols = sample_columns(samples)
    assert cols["labels"]["expr"].tolist() == [3, -1, 7]
    va = cols["labels"]["va"]
    assert va.dtype == np.float32 and va[0].tolist() == [0.25, -0.5] and np.isnan(va[1]).all()
    au = cols["labels"]["au"]
    assert au.dtype == np.int8 and au[0, 0] == 1 and (au[1] == -1).all() and (au[2] == 0).all()
    assert cols["frames"].tolist() == [1, 2, -1]


def test_mtl_test_list_has_no_labels(tmp_path):
    p = _ann(tmp_path, "v/00001.jpg,,,,", "v/00002.jpg", header="image,valence,arousal,expression,aus")
    samples = read_abaw_mtl(p)
    assert [s.key for s in samples] == ["v/00001.jpg", "v/00002.jpg"]
    assert sample_columns(samples)["labels"] == {}


@pytest.mark.parametrize("line, lineno, message", [
    (f"v/1.jpg,0.1,0.2,3,{AU0},0", 3, "17 fields, expected 16"),
    (f"v/1.jpg,abc,0.2,3,{AU0}", 3, "valence 'abc' is not a number"),
    (f"v/1.jpg,0.1,0.2,8,{AU0}", 3, "expression '8' is not one of -1..7"),
    (f"v/1.jpg,0.1,0.2,2.5,{AU0}", 3, "expression '2.5'"),
    (f"v/1.jpg,0.1,0.2,1,{','.join(['2'] + ['0'] * 11)}", 3, "AU1 '2' is not one of -1..1"),
    (f"v/1.jpg,1.5,0.2,1,{AU0}", 3, "valence '1.5' is outside [-1, 1]"),
    (f"v/1.jpg,0.1,-4,1,{AU0}", 3, "arousal '-4' is outside"),
    (f"v/1.jpg,0.1,nan,1,{AU0}", 3, "not a finite number"),
    (f",0.1,0.2,1,{AU0}", 3, "empty image name"),
    (f"../etc/passwd,0.1,0.2,1,{AU0}", 3, "relative to the image root"),
    (f"v/0.jpg,0.1,0.2,1,{AU0}", 3, "already listed on line 2"),
])
def test_mtl_malformed_line_names_file_and_line(tmp_path, line, lineno, message):
    p = _ann(tmp_path, f"v/0.jpg,0.1,0.2,1,{AU0}", line)
    with pytest.raises(AnnotationError) as e:
        read_abaw_mtl(p)
    assert f"{p}:{lineno}:" in str(e.value) and message in str(e.value)


def test_mtl_bad_header(tmp_path):
    p = _ann(tmp_path, header="image,valence,arousal")
    with pytest.raises(AnnotationError, match=r"ann.txt:1: unexpected header"):
        read_abaw_mtl(p)


def test_cli_malformed_line_stops_before_any_work(tmp_path):
    write_faces(tmp_path / "img", ["v/00001.jpg"])
    ann = _ann(tmp_path, f"v/00001.jpg,0.1,0.2,1,{AU0}", f"v/00002.jpg,0.1,0.2,9,{AU0}")
    store = tmp_path / "s.h5"
    r = CliRunner().invoke(main, ["run", "--annotations", str(ann), "--images", str(tmp_path / "img"),
                                  "--split", "train", "--store", str(store), "--backbone", "no-such-backbone"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1] == f"Error: {ann}:3: expression '9' is not one of -1..7"
    assert not store.exists()  # nothing registered, no backbone loaded


def test_lsd_class_folders(tmp_path):
    names = [f"{folder}/{i}.jpg" for folder in LSD_FOLDERS for i in range(2)]
    write_faces(tmp_path, names)
    (tmp_path / "ANGRER" / "notes.txt").write_text("not an image: not listed")
    samples = read_class_folders(open_image_root(tmp_path), "lsd")
    assert len(samples) == 12
    labels = sample_columns(samples)["labels"]["lsd"]
    assert labels.tolist() == [i for i in range(6) for _ in range(2)]
    assert samples[0].key == "ANGRER/0.jpg" and samples[0].video == "ANGRER/0" and samples[0].frame == -1


def test_expr_class_folders_map_to_mtl_order(tmp_path):
    folders = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "Contempt"]
    write_faces(tmp_path, [f"{f}/a.jpg" for f in folders])
    samples = read_class_folders(open_image_root(tmp_path), "expr")
    got = {s.key.split("/")[0]: s.labels["expr"] for s in samples}
    assert got == {"angry": 1, "disgust": 2, "fear": 3, "happy": 4, "neutral": 0, "sad": 5, "surprise": 6,
                   "Contempt": 7}


def test_unknown_class_folder_lists_known_names(tmp_path):
    write_faces(tmp_path, ["HAPPINESS/a.jpg", "JOY/b.jpg"])
    with pytest.raises(AnnotationError) as e:
        read_class_folders(open_image_root(tmp_path), "lsd")
    assert "unknown class folder 'JOY'" in str(e.value) and "ANGRER, DISGUST" in str(e.value)


def test_image_folder_and_file_list(tmp_path):
    write_faces(tmp_path / "img", ["b.png", "a.jpg", "sub/c.jpeg"])
    (tmp_path / "img" / "readme.txt").write_text("x")
    root = open_image_root(tmp_path / "img")
    assert [s.key for s in read_images(root)] == ["a.jpg", "b.png", "sub/c.jpeg"]
    lst = tmp_path / "list.txt"
    lst.write_text("image,expression\nsub/c.jpeg,\nb.png,\n\n")
    samples = read_images(root, lst)
    assert [s.key for s in samples] == ["sub/c.jpeg", "b.png"] and samples[0].labels == {}
    plain = tmp_path / "plain.txt"
    plain.write_text("a.jpg\nb.png\n")
    assert [s.key for s in read_images(root, plain)] == ["a.jpg", "b.png"]


def test_zip_archive_with_subdir(tmp_path):
    paths = write_faces(tmp_path / "src", ["fer/train/happy/1.jpg", "fer/train/sad/2.jpg", "fer/test/sad/3.jpg"])
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in paths:
            z.write(p, p.relative_to(tmp_path / "src").as_posix())
    root = open_image_root(archive, "fer/train")
    samples = read_class_folders(root, "expr")
    assert [(s.key, s.labels["expr"]) for s in samples] == [("happy/1.jpg", 4), ("sad/2.jpg", 5)]
    assert root.read_bytes("sad/2.jpg") == paths[1].read_bytes()
    with pytest.raises(ImageRootError, match="has no folder 'nope'"):
        open_image_root(archive, "nope")
    with pytest.raises(ImageRootError, match="no such folder or zip archive"):
        open_image_root(tmp_path / "missing.zip")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(ImageRootError, match="neither a folder nor a zip archive"):
        open_image_root(tmp_path / "fake.zip")


@pytest.mark.realdata
def test_real_ckplus_annotations(shared_data):
    samples = read_abaw_mtl(shared_data / "ckplus" / "annotations.txt")
    assert len(samples) == 981 and samples[0].key.endswith(".png")
    cols = sample_columns(samples)
    assert np.isnan(cols["labels"]["va"]).all()  # CK+ has no valence/arousal
    assert (cols["labels"]["expr"] >= 1).all()  # no neutral class
    au_missing = (cols["labels"]["au"] == -1).all(axis=1)
    assert math.isclose(au_missing.sum() / 3, 119)  # 119 of 327 sequences without FACS codes, 3 frames each


@pytest.mark.realdata
def test_real_fer2013_zip_class_folders(shared_data):
    samples = read_class_folders(open_image_root(shared_data / "fer2013.zip", "fer2013/test"), "expr")
    assert len(samples) == 3589
    counts = np.bincount(sample_columns(samples)["labels"]["expr"], minlength=8)
    assert counts[7] == 0 and counts[:7].min() > 0
