"""Parsing OpenFace 2 CSVs: the real FeatureExtraction output, column groups, bad files."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from openface_fixtures import AU_COLUMNS, write_image_csv, write_sequence_csv

from featurize.openface import parse_groups, read_openface_csv
from featheads.core.errors import UserError


def _csv_module_columns(path, names):
    """Independent reference: the stdlib csv reader, names stripped."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip() for h in rows[0]]
    return np.array([[float(r[header.index(n)]) for n in names] for r in rows[1:]])


def test_real_feature_extraction_csv(shared_data):
    path = shared_data / "openface" / "OpenFace_Test.csv"
    t = read_openface_csv(path)
    assert t.kind == "sequence"
    assert t.columns == AU_COLUMNS and len(t.columns) == 35
    assert t.columns[:17] == [c for c in t.columns if c.endswith("_r")]
    assert t.values.shape == (100, 35) and t.values.dtype == np.float32
    np.testing.assert_array_equal(t.frame, np.arange(1, 101))
    assert t.success.all()
    np.testing.assert_allclose(t.values, _csv_module_columns(path, AU_COLUMNS), rtol=1e-6)


def test_real_csv_groups(shared_data):
    path = shared_data / "openface" / "OpenFace_Test.csv"
    t = read_openface_csv(path, parse_groups("landmarks3d,gaze,pose,au,landmarks"))
    sizes = {"au": 35, "pose": 6, "gaze": 6, "landmarks": 136, "landmarks3d": 204}
    assert len(t.columns) == sum(sizes.values())
    # canonical group order whatever order was asked
    assert t.columns[:35] == AU_COLUMNS
    assert t.columns[35:41] == ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    assert t.columns[41:47] == ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_1_x", "gaze_1_y", "gaze_1_z"]
    assert t.columns[47] == "x_0" and t.columns[47 + 68] == "y_0" and t.columns[-1] == "Z_67"
    np.testing.assert_allclose(t.values, _csv_module_columns(path, t.columns), rtol=1e-6)


def test_openface_22_header_and_image_csv(tmp_path):
    au = write_sequence_csv(tmp_path / "v.csv", 4, version="2.2", success=[1, 0, 1, 1], pose=True)
    t = read_openface_csv(tmp_path / "v.csv", ("au", "pose"))
    assert t.columns == AU_COLUMNS + ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    np.testing.assert_allclose(t.values[:, :35], au, rtol=1e-6)
    np.testing.assert_array_equal(t.success, [True, False, True, True])

    write_image_csv(tmp_path / "img.csv", [(0.5, au[0]), (0.9, au[1])])
    t = read_openface_csv(tmp_path / "img.csv")
    assert t.kind == "image" and t.frame is None and t.success.all()
    np.testing.assert_allclose(t.confidence, [0.5, 0.9])


def test_unknown_group():
    with pytest.raises(UserError, match="unknown group 'eyes'.*au, pose, gaze, landmarks, landmarks3d"):
        parse_groups("au,eyes")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines.__setitem__(3, lines[3].replace(",0.98,", ",abc,", 1)),
         r"line 4 column 'confidence': 'abc' is not a number"),
        (lambda lines: lines.__setitem__(2, lines[2].rsplit(",", 1)[0] + ",1e"),
         r"line 3 column 'AU45_c': '1e' is not a number"),
        (lambda lines: lines.__setitem__(5, lines[5] + ",7"), r"line 6 has 41 fields, the header has 40"),
        (lambda lines: lines.__setitem__(0, lines[0].replace("success", "ok")), r"line 1 has no 'success' column"),
        (lambda lines: lines.__setitem__(0, lines[0].replace("AU", "XX")), r"no 'au' columns .*run with -aus"),
        (lambda lines: lines.__setitem__(0, "time" + lines[0][5:]), r"line 1 starts with 'time'"),
        (lambda lines: lines.__setitem__(2, "2.5" + lines[2][1:]),
         r"line 3 column 'frame': '2.5' is not a whole number"),
    ],
)
def test_bad_csv_names_file_line_and_column(tmp_path, edit, message):
    path = tmp_path / "bad.csv"
    write_sequence_csv(path, 6)
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message) as e:
        read_openface_csv(path)
    assert str(path) in str(e.value)


def test_missing_pose_group_names_the_flag(tmp_path):
    write_sequence_csv(tmp_path / "v.csv", 3)
    with pytest.raises(UserError, match=r"no 'pose' columns.*-pose"):
        read_openface_csv(tmp_path / "v.csv", ("au", "pose"))
