"""The blend commands end to end in a temporary folder: tune -> apply -> submit -> report, and errors."""
import json

import optuna
import pytest
from click.testing import CliRunner

from blend.cli import main
from blend.submission import validate_submission
from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from blend_fixtures import LOGIT_SOURCE, write_lsd_store, write_mtl_store


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.mark.parametrize("cmd", ["tune", "apply", "submit", "report"])
def test_help(cmd):
    res = run(cmd, "--help")
    assert "Example" in res.output


def write_list(path, header, keys):
    path.write_text(header + "\n" + "\n".join(keys) + "\n")
    return path


def test_mtl_end_to_end(tmp_path):
    store = write_mtl_store(tmp_path / "s.h5", n_videos=5, n_frames=40)
    spec = tmp_path / "mtl.json"
    res = run("tune", "--store", store, "--runs", f"mlp,openface,logits:{LOGIT_SOURCE}", "--task", "mtl",
              "--trials", 6, "--cv", 2, "--out", spec)
    assert "P_MTL" in res.output and "out-of-fold" in res.output
    d = json.loads(spec.read_text())
    assert d["format"] == "featheads-blend-spec" and d["task"] == "mtl"
    assert (tmp_path / "mtl.optuna.db").is_file()  # the default storage, beside the spec
    # run again with more trials: the studies continue
    run("tune", "--store", store, "--runs", f"mlp,openface,logits:{LOGIT_SOURCE}", "--task", "mtl",
        "--trials", 8, "--cv", 2, "--out", spec)
    url = f"sqlite:///{tmp_path / 'mtl.optuna.db'}"
    assert len(optuna.load_study(study_name="blend-mtl-val", storage=url).trials) == 8
    assert json.loads(spec.read_text())["study"]["trials"] == 8

    res = run("apply", "--spec", spec, "--store", store, "--split", "val", "--name", "final")
    p_mtl = float(res.output.split("P_MTL")[1].split()[0])
    assert p_mtl == pytest.approx(json.loads(spec.read_text())["scores"]["in_sample"]["P_MTL"], abs=1e-4)
    run("apply", "--spec", spec, "--store", store, "--split", "test", "--name", "final")

    with FeatureStore.open(store) as s:
        keys = list(s.samples(s.rows("test"))["key"])
    listed = keys[::-1]  # the official order is the list's, not the store's
    tl = write_list(tmp_path / "MTL_Challenge_test_set_release.txt", "image,valence,arousal,expression,aus", listed)
    out = tmp_path / "sub.txt"
    res = run("submit", "--format", "abaw4-mtl", "--store", store, "--predictions", "final", "--split", "test",
              "--test-list", tl, "--out", out)
    lines = out.read_text().splitlines()
    assert lines[0] == "image,valence,arousal,expression,aus"
    assert [ln.split(",")[0] for ln in lines[1:]] == listed
    assert all(len(ln.split(",")) == 16 for ln in lines[1:])
    validate_submission("abaw4-mtl", out, listed)

    res = run("report", "--store", store, "--predictions", "final", "--split", "val", "--out", tmp_path / "rep")
    assert "P_MTL" in res.output and "F1 AU12" in res.output
    for name in ("metrics.json", "confusion_expr.png", "au_f1.png", "blend_weights.png"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    # a heads run (no spec): metrics and plots, no weight curves
    res = run("report", "--store", store, "--predictions", "mlp", "--split", "val", "--out", tmp_path / "rep2")
    assert not (tmp_path / "rep2" / "blend_weights.png").exists()


def test_lsd_end_to_end_in_sample(tmp_path):
    store = write_lsd_store(tmp_path / "l.h5")
    spec = tmp_path / "lsd.json"
    res = run("tune", "--store", store, "--runs", f"finetuned,logits:{LOGIT_SOURCE}", "--task", "lsd",
              "--trials", 8, "--in-sample", "--storage", "memory", "--out", spec)
    assert "P_LSD" in res.output
    assert json.loads(spec.read_text())["scores"]["out_of_fold"] is None
    run("apply", "--spec", spec, "--store", store, "--split", "test", "--name", "lsd_final")
    with FeatureStore.open(store) as s:
        keys = list(s.samples(s.rows("test"))["key"])
    tl = write_list(tmp_path / "LSD_Challenge_test_set_release.txt", "image,expression", keys)
    out = tmp_path / "lsd.txt"
    run("submit", "--format", "abaw4-lsd", "--store", store, "--predictions", "lsd_final", "--test-list", tl,
        "--out", out)
    rows = [ln.split(",") for ln in out.read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == keys and all(r[1] in "012345" for r in rows)
    one_line_error(run("report", "--store", store, "--predictions", "lsd_final", "--split", "val",
                       "--out", tmp_path / "r", ok=False), "no prediction on a labelled row")
    run("apply", "--spec", spec, "--store", store, "--split", "val", "--name", "lsd_final")
    res = run("report", "--store", store, "--predictions", "lsd_final", "--split", "val", "--out", tmp_path / "r")
    assert "P_LSD" in res.output and (tmp_path / "r" / "confusion_lsd.png").is_file()


def one_line_error(res, *needles):
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in res.output, res.output


def test_errors_are_one_line_and_name_the_problem(tmp_path):
    store = write_mtl_store(tmp_path / "s.h5", n_videos=3, n_frames=20)
    one_line_error(run("tune", "--store", store, "--runs", "mlp,ghost", "--task", "expr", "--in-sample",
                       "--storage", "memory", "--out", tmp_path / "x.json", ok=False), "ghost")
    one_line_error(run("tune", "--store", store, "--runs", "mlp,mlp", "--task", "expr", "--out", tmp_path / "x.json",
                       ok=False), "named twice")
    one_line_error(run("tune", "--store", store, "--runs", "mlp", "--task", "expr", "--cv", 5,
                       "--storage", "memory", "--out", tmp_path / "x.json", ok=False), "only 3 videos")
    res = run("tune", "--store", store, "--runs", "mlp", "--task", "expr", "--cv", 3, "--in-sample",
              "--out", tmp_path / "x.json", ok=False)
    assert res.exit_code == 2 and "exclude each other" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "featheads-blend-spec",\n "task": }')
    one_line_error(run("apply", "--spec", bad, "--store", store, "--split", "val", ok=False), f"{bad}:2: not valid JSON")
    bad.write_text(json.dumps({"format": "featheads-blend-spec", "version": 1, "task": "expr",
                               "tasks": {"expr": {"weights": {"mlp": 1.0}}}}))
    one_line_error(run("apply", "--spec", bad, "--store", store, "--split", "val", ok=False), "tasks.expr.smoothing")

    spec = tmp_path / "e.json"
    run("tune", "--store", store, "--runs", "mlp", "--task", "mtl", "--in-sample", "--trials", 2,
        "--storage", "memory", "--out", spec)
    one_line_error(run("apply", "--spec", spec, "--store", store, "--split", "val", "--name", "mlp", ok=False),
                   "inputs")
    run("apply", "--spec", spec, "--store", store, "--split", "test")
    with FeatureStore.open(store) as s:
        keys = list(s.samples(s.rows("test"))["key"])
        val_key = s.samples(s.rows("val"))["key"][0]
    header = "image,valence,arousal,expression,aus"
    out = tmp_path / "sub.txt"
    out.write_text("an earlier submission\n")
    tl = write_list(tmp_path / "l0.txt", header, keys)
    one_line_error(run("submit", "--format", "abaw4-mtl", "--store", store, "--run", "final",
                       "--test-list", tl, "--out", out, ok=False), "--overwrite")
    tl = write_list(tmp_path / "l1.txt", header, keys + ["nowhere/00001.jpg"])
    one_line_error(run("submit", "--format", "abaw4-mtl", "--store", store, "--predictions", "final",
                       "--test-list", tl, "--out", out, "--overwrite", ok=False), "nowhere/00001.jpg", f"entry {len(keys) + 1}")
    tl = write_list(tmp_path / "l2.txt", header, keys + [val_key])
    one_line_error(run("submit", "--format", "abaw4-mtl", "--store", store, "--predictions", "final",
                       "--test-list", tl, "--out", out, "--overwrite", ok=False), "split 'val'")
    tl = write_list(tmp_path / "l3.txt", header, keys + keys[:1])
    one_line_error(run("submit", "--format", "abaw4-mtl", "--store", store, "--predictions", "final",
                       "--test-list", tl, "--out", out, "--overwrite", ok=False), "listed again")
    tl = write_list(tmp_path / "l4.txt", header, keys)
    one_line_error(run("submit", "--format", "abaw4-mtl", "--store", store, "--predictions", "openface",
                       "--test-list", tl, "--out", out, "--overwrite", ok=False), "no 'va' predictions")
    assert out.read_text() == "an earlier submission\n"  # nothing already written is lost


def test_validation_catches_broken_files(tmp_path):
    images = ["v/00001.jpg", "v/00002.jpg"]
    good = ["image,valence,arousal,expression,aus",
            "v/00001.jpg,0.1,-0.2,3," + ",".join("0" * 12),
            "v/00002.jpg,1.0,-1.0,7," + ",".join("1" * 12)]
    f = tmp_path / "s.txt"

    def check(lines, *needles):
        f.write_text("\n".join(lines) + "\n")
        with pytest.raises(UserError) as e:
            validate_submission("abaw4-mtl", f, images)
        for n in needles:
            assert n in str(e.value)

    f.write_text("\n".join(good) + "\n")
    validate_submission("abaw4-mtl", f, images)
    check(good[:1] + good[2:], "1 rows for 2 images")
    check([good[0], good[2], good[1]], "line 2", "v/00002.jpg")
    check([good[0], good[1].replace("0.1", "1.5"), good[2]], "line 2", "valence")
    check([good[0], good[1], good[2].replace(",7,", ",8,")], "line 3", "expression")
    check([good[0], good[1][:-1] + "2", good[2]], "AU value")
    check(["image,expression"] + good[1:], "header")
    f.write_text("image,expression\nv/00001.jpg,5\nv/00002.jpg,6\n")
    with pytest.raises(UserError, match="line 3: expression '6'"):
        validate_submission("abaw4-lsd", f, images)
