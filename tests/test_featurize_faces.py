"""`featurize faces` and `featurize faces-ingest` on real faces that ship with scikit-image
(the astronaut photo), made into short videos by the tests: moved, scaled, with face-less frames."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("facenet_pytorch", reason="needs the faces extra: pip install -e '.[faces]'")
av = pytest.importorskip("av", reason="needs PyAV (the faces extra)")
skdata = pytest.importorskip("skimage.data", reason="needs scikit-image for its packaged face photo")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from featurize.cli import main  # noqa: E402
from featurize import face_align  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BACKGROUND = (90, 110, 130)


def head() -> Image.Image:
    """The astronaut's head and shoulders (about 170x200 pixels, face about 90 pixels wide)."""
    return Image.fromarray(skdata.astronaut()).crop((140, 20, 310, 220))


def make_video(path, n=12, size=(160, 128), blank=(), codec="mpeg4", fps=25):
    """A video whose frame i (1-based) holds the head moved and scaled, or nothing for i in `blank`.
    Returns {frame: (x, y, w, h)} of the pasted head."""
    face = head()
    where = {}
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
    for i in range(1, n + 1):
        canvas = Image.new("RGB", size, BACKGROUND)
        if i not in blank:
            scale = 0.55 + 0.04 * (i % 5)
            w, h = int(170 * scale), int(200 * scale)
            x, y = 4 + (3 * i) % 40, 2 + i % 10
            canvas.paste(face.resize((w, h)), (x, y))
            where[i] = (x, y, w, h)
        for p in s.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return where


def run(*args, ok=True):
    res = CliRunner().invoke(main, ["faces", *map(str, args), "--threads", "1", "--no-progress"])
    if ok:
        assert res.exit_code == 0, res.output
    return res


def index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "faces_index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One run over a folder with a video (frames 4 and 5 without a face), a photo and a blank photo."""
    root = tmp_path_factory.mktemp("faces")
    inp, out = root / "in", root / "out"
    (inp / "photos").mkdir(parents=True)
    where = make_video(inp / "clip.mp4", n=12, blank=(4, 5))
    Image.fromarray(skdata.astronaut()).save(inp / "photos" / "astronaut.png")
    Image.new("RGB", (200, 150), BACKGROUND).save(inp / "photos" / "empty.jpg")
    res = run("--input", inp, "--out", out)
    return inp, out, where, res


def test_layout_frame_numbers_and_index(made):
    inp, out, where, res = made
    crops = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    video_frames = [f"clip/{n:05d}.jpg" for n in range(1, 13) if n not in (4, 5)]
    assert crops == video_frames + ["photos/astronaut.jpg"]
    for c in crops:
        assert Image.open(out / c).size == (112, 112)
    recs = index(out)
    frames = [r for r in recs if r["media"] == "clip.mp4" and not r.get("done")]
    assert [r["frame"] for r in frames] == list(range(1, 13))  # every frame, 1-based, in order
    for r in frames:
        assert r["key"] == f"clip/{r['frame']:05d}.jpg"
        assert r["found"] == (r["frame"] not in (4, 5))
        if r["found"]:  # the box lies on the pasted head, the landmarks inside the box
            x, y, w, h = where[r["frame"]]
            x0, y0, x1, y1 = r["box"]
            assert x - 5 <= x0 < x1 <= x + w + 5 and y - 5 <= y0 < y1 <= y + h + 5
            lm = np.array(r["landmarks"])
            assert lm.shape == (5, 2) and (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all()
            assert lm[0, 0] < lm[1, 0] and lm[2, 1] < lm[3, 1]  # left eye left of right eye, nose above mouth
            assert r["score"] >= 0.9
    done = {r["media"]: r for r in recs if r.get("done")}
    assert set(done) == {"clip.mp4", "photos/astronaut.png", "photos/empty.jpg"}
    assert done["clip.mp4"]["frames"] == 12 and done["clip.mp4"]["crops"] == 10 and done["clip.mp4"]["status"] == "ok"
    assert "3 file(s) processed" in res.output and "11 crop(s)" in res.output


def test_frames_without_a_face(made):
    inp, out, where, res = made
    recs = {r["key"]: r for r in index(out) if r.get("key")}
    for key in ("clip/00004.jpg", "clip/00005.jpg", "photos/empty.jpg"):
        assert recs[key]["found"] is False and recs[key]["box"] is None and recs[key]["faces"] == 0
        assert not (out / key).exists()
    listed = (out / "faces_list.txt").read_text().splitlines()
    assert listed[0] == "image,valence,arousal,expression,aus"
    assert [k.split(",")[0] for k in listed[1:]] == [f"clip/{n:05d}.jpg" for n in range(1, 13)] + [
        "photos/astronaut.jpg", "photos/empty.jpg"]


def test_every_keeps_the_video_frame_numbers(tmp_path):
    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "v.avi", n=10)
    run("--input", tmp_path / "in", "--out", tmp_path / "out", "--every", "3", "--size", "64")
    assert sorted(p.name for p in (tmp_path / "out" / "v").iterdir()) == ["00001.jpg", "00004.jpg", "00007.jpg",
                                                                         "00010.jpg"]
    assert Image.open(tmp_path / "out" / "v" / "00004.jpg").size == (64, 64)


def test_zip_input_gives_the_same_crops(made, tmp_path):
    inp, out, _, _ = made
    archive = tmp_path / "media.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(inp.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(inp).as_posix())
    run("--input", archive, "--out", tmp_path / "out")
    strip = lambda recs: [{k: v for k, v in r.items() if k != "matrix"} for r in recs]  # noqa: E731
    assert strip(index(tmp_path / "out")) == strip(index(out))


def test_rerun_with_other_settings_is_refused(made):
    inp, out, _, _ = made
    res = run("--input", inp, "--out", out, "--align", ok=False)
    assert res.exit_code == 1 and "other settings" in res.output and "align False -> True" in res.output
    res = run("--input", inp, "--out", out)  # same settings: nothing to do
    assert "0 file(s) processed (3 already done)" in res.output


def test_align_is_upright_and_centred_on_the_landmarks(tmp_path):
    from featurize.face_detectors import load_detector

    (tmp_path / "in").mkdir()
    tilted = Image.fromarray(skdata.astronaut()).rotate(25, resample=Image.Resampling.BILINEAR, center=(225, 120))
    tilted.save(tmp_path / "in" / "tilted.png")
    run("--input", tmp_path / "in", "--out", tmp_path / "aligned", "--align")
    run("--input", tmp_path / "in", "--out", tmp_path / "plain")
    det = load_detector("mtcnn")

    def eyes_and_points(path):
        faces = det.detect_batch([np.asarray(Image.open(path).convert("RGB"))])[0]
        assert len(faces) >= 1
        lm = max(faces, key=lambda f: f.score).landmarks
        return np.degrees(np.arctan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0])), lm

    tilt_plain, _ = eyes_and_points(tmp_path / "plain" / "tilted.jpg")
    assert abs(tilt_plain) > 15  # the test photo really is tilted
    tilt, lm = eyes_and_points(tmp_path / "aligned" / "tilted.jpg")
    assert abs(tilt) < 5  # upright: eyes level
    assert np.abs(lm - face_align.template(112)).max() < 8  # landmarks on the template
    assert abs(lm[:, 0].mean() - 56) < 4  # centred
    rec = [r for r in index(tmp_path / "aligned") if r.get("found")][0]
    mapped = face_align.apply(np.array(rec["matrix"]), rec["landmarks"])
    assert np.abs(mapped - face_align.template(112)).max() < 8  # the recorded transform is the one used


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = np.radians(30)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 12.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -4.0]])
    assert np.allclose(face_align.similarity_transform(src, face_align.apply(m, src)), m)


def test_all_faces_are_tracks(tmp_path):
    (tmp_path / "in").mkdir()
    face = head().resize((85, 100))
    c = av.open(str(tmp_path / "in" / "two.mp4"), "w")
    s = c.add_stream("mpeg4", rate=25)
    s.width, s.height, s.pix_fmt = 240, 128, "yuv420p"
    for i in range(6):
        canvas = Image.new("RGB", (240, 128), BACKGROUND)
        canvas.paste(face, (5 + i, 10))
        canvas.paste(face, (140 - i, 20))
        for p in s.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    run("--input", tmp_path / "in", "--out", tmp_path / "out", "--all-faces")
    tracks = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert tracks == ["two_1", "two_2"]
    for t in tracks:
        assert len(list((tmp_path / "out" / t).glob("*.jpg"))) == 6
    recs = [r for r in index(tmp_path / "out") if r.get("found")]
    left = {r["track"] for r in recs if r["box"][0] < 100}
    assert len(left) == 1  # the left face stays in one track over the frames


def test_a_broken_or_truncated_video_is_reported_and_the_rest_goes_on(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    make_video(inp / "good.mp4", n=6)
    make_video(tmp_path / "whole.mp4", n=10)
    data = (tmp_path / "whole.mp4").read_bytes()
    (inp / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])  # mp4 index at the end: cannot be opened
    make_video(tmp_path / "whole.avi", n=30)
    data = (tmp_path / "whole.avi").read_bytes()
    (inp / "half.avi").write_bytes(data[: len(data) // 2])  # avi: the first frames can be read
    (inp / "noise.mkv").write_bytes(os.urandom(3000))
    res = run("--input", inp, "--out", tmp_path / "out", ok=False)
    assert res.exit_code == 1
    assert res.output.count("cut.mp4") == 2  # its message, and the final error listing it
    assert "cut.mp4: cannot open" in res.output and "noise.mkv: cannot open" in res.output
    assert "Traceback" not in res.output
    assert "half.avi: only" in res.output and "the frames before are kept" in res.output
    assert len(list((tmp_path / "out" / "good").glob("*.jpg"))) == 6
    kept = len(list((tmp_path / "out" / "half").glob("*.jpg")))
    assert 0 < kept < 30
    done = {r["media"]: r for r in index(tmp_path / "out") if r.get("done")}
    assert set(done) == {"good.mp4", "half.avi"} and done["half.avi"]["status"] == "truncated"


def test_resume_after_kill(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    make_video(inp / "a_short.mp4", n=4)
    make_video(inp / "b_long.mp4", n=300, size=(96, 80))
    cmd = [sys.executable, "-m", "featurize.cli", "faces", "--input", str(inp), "--out", str(out),
           "--threads", "1", "--batch-size", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = out / ".faces-parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # kill while b_long is half done
        if (out / "faces_index.jsonl").is_file() and any(p.stat().st_size > 2000 for p in parts.glob("*.jsonl")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [r["media"] for r in index(out) if r.get("done")]
    assert done == ["a_short.mp4"]  # the index holds only the finished video
    assert any((out / "b_long").glob("*.jpg"))  # b_long had started
    with open(out / "faces_index.jsonl", "a") as f:  # as if killed while appending a block
        f.write('{"media": "b_long.mp4", "frame": 1, "ke')
    res = run("--input", inp, "--out", out)
    assert "1 file(s) processed (1 already done)" in res.output
    recs = index(out)
    assert [r["media"] for r in recs if r.get("done")] == ["a_short.mp4", "b_long.mp4"]
    frames = [r["frame"] for r in recs if r["media"] == "b_long.mp4" and not r.get("done")]
    assert frames == list(range(1, 301))
    assert not parts.exists()
    assert len(list((out / "b_long").glob("*.jpg"))) == sum(r.get("found", False) for r in recs
                                                            if r["media"] == "b_long.mp4")


def test_crops_to_store_featurize_run_then_ingest(made, tmp_path):
    """The README's chain: faces -> featurize run on faces_list.txt -> faces-ingest."""
    from store import STATUS_INVALID, STATUS_OK, FeatureStore

    inp, out, _, _ = made
    store = tmp_path / "s.h5"
    res = CliRunner().invoke(main, ["run", "--source", "abaw-mtl", "--annotations", str(out / "faces_list.txt"),
                                    "--images", str(out), "--split", "test", "--store", str(store),
                                    "--backbone", "timm:test_efficientnet", "--workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "14 rows, 11 ok, 3 invalid" in res.output  # frames without a face: a row, invalid
    with FeatureStore.open(store, "a") as st:
        st.add_samples(["elsewhere/00001.jpg"], split="other")
    res = CliRunner().invoke(main, ["faces-ingest", "--store", str(store), "--crops", str(out)])
    assert res.exit_code == 0, res.output
    assert "11 row(s) ok, 4 invalid (no face found: 3, not in the index: 1)" in res.output
    recs = {r["key"]: r for r in index(out) if r.get("key")}
    with FeatureStore.open(store) as st:
        keys = list(st.samples()["key"])
        samples = st.samples()
        values, _ = st.read_features("faces.values")
        status = st.source_status("faces")
        backbone_status = st.source_status("timm:test_efficientnet")
        names = st.source_info("faces")["arrays"]["values"]["names"]
    assert (backbone_status[:14] == status[:14]).all()  # a face <=> a crop <=> backbone features
    i = keys.index("clip/00007.jpg")
    assert samples["video"][i] == "clip" and samples["frame"][i] == 7
    assert names[:5] == ["x0", "y0", "x1", "y1", "score"] and len(names) == 15
    for i, k in enumerate(keys):
        r = recs.get(k)
        if r is not None and r["found"]:
            assert status[i] == STATUS_OK
            expected = r["box"] + [r["score"]] + [v for xy in r["landmarks"] for v in xy]
            assert np.allclose(values[i], expected, atol=1e-3)
        else:
            assert status[i] == STATUS_INVALID and np.isnan(values[i]).all()


def test_ingest_refuses_a_store_of_other_images(made, tmp_path):
    from store import FeatureStore

    _, out, _, _ = made
    store = tmp_path / "s.h5"
    with FeatureStore.open(store, "a") as st:
        st.add_samples(["x/00001.jpg"], split="test")
    res = CliRunner().invoke(main, ["faces-ingest", "--store", str(store), "--crops", str(out)])
    assert res.exit_code == 1 and "names none of the 1 row key(s)" in res.output


def test_out_inside_input_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    res = run("--input", tmp_path / "in", "--out", tmp_path / "in" / "crops", ok=False)
    assert res.exit_code == 1 and "lies inside --input" in res.output


def test_select_largest_confident_tracked():
    from featurize.face_detectors import Face
    from featurize.faces import OneFace

    lm = np.zeros((5, 2))
    small_sure = Face((0, 0, 20, 20), 0.999, lm)
    big = Face((50, 50, 100, 100), 0.95, lm)
    assert OneFace("largest").pick([small_sure, big])[0][1] is big
    assert OneFace("confident").pick([small_sure, big])[0][1] is small_sure
    tracked = OneFace("tracked")
    assert tracked.pick([small_sure])[0][1] is small_sure
    passer_by = Face((40, 0, 140, 100), 0.99, lm)  # a larger face enters: the tracked one stays chosen
    assert tracked.pick([passer_by, Face((2, 1, 22, 21), 0.97, lm)])[0][1].box == (2, 1, 22, 21)
    assert tracked.pick([]) == []
    assert tracked.pick([passer_by])[0][1] is passer_by  # nothing overlaps: the largest


def test_detector_splits_sizes_and_skips_tiny_images():
    from featurize.face_detectors import load_detector

    det = load_detector("mtcnn")
    a = skdata.astronaut()
    found = det.detect_batch([a, np.zeros((5, 5, 3), np.uint8), a[:300, :400].copy(), np.zeros((19, 40, 3), np.uint8)])
    assert [len(f) for f in found] == [1, 0, 1, 0]
    assert np.allclose(found[0][0].box, found[2][0].box, atol=5.0)  # same face, same place (other pyramid)
