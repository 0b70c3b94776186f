"""Speed, memory and detection rate of `featurize faces` (MTCNN, facenet-pytorch) on the CPU (or --gpu).

    python bench/faces_speed.py                       # 300-frame videos, a 10,000-frame video, appends
    python bench/faces_speed.py --frames 100 --long-frames 2000 --no-append

1. frames/s of decode + detect + crop + write (crop_faces, what the command runs) on a 112x112 and a
   640x360 video made from scikit-image's astronaut photo (the head moved and scaled over a plain
   background, one frame in ten without a face), with 1 and 2 torch threads.
2. Peak memory (max RSS of a `featurize faces` subprocess) on a short and on a long 640x360 video:
   flat means the video is streamed.
3. Detection on real photos: the faces that ship with scikit-image (astronaut, camera, the 100 LFW faces
   of `data.lfw_subset()` and its 100 non-face patches, 25x25, upsampled x4), and the 981 CK+ crops of
   ../shared/data/ckplus (48x48 grayscale; skipped when absent).
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from featurize.face_detectors import load_detector  # noqa: E402
from featurize.faces import FacesConfig, crop_faces  # noqa: E402

SHARED = Path(os.environ.get("FEATHEADS_SHARED", REPO.parent / "shared"))


def make_video(path, n, size, codec="mpeg4", fps=25):
    """The astronaut's head moving and changing size; every 10th frame without it."""
    head = Image.fromarray(skdata.astronaut()).crop((140, 20, 310, 220))
    w, h = size
    c = av.open(str(path), "w")
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    base = h * 0.8 / 200
    for i in range(n):
        canvas = Image.new("RGB", size, (90, 110, 130))
        if i % 10 != 9:
            scale = base * (0.75 + 0.25 * np.sin(i / 17))
            fw, fh = max(8, int(170 * scale)), max(8, int(200 * scale))
            x = int((w - fw) * (0.5 + 0.5 * np.sin(i / 23)))
            y = int((h - fh) * (0.5 + 0.5 * np.cos(i / 31)))
            canvas.paste(head.resize((fw, fh)), (x, y))
        for p in s.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def speed(tmp: Path, size, frames: int, threads: int, device: str) -> tuple[float, int, int]:
    inp = tmp / f"in_{size[0]}x{size[1]}"
    if not inp.is_dir():
        inp.mkdir()
        make_video(inp / "clip.mp4", frames, size)
    out = tmp / f"out_{size[0]}x{size[1]}_{threads}_{time.monotonic_ns()}"
    torch.set_num_threads(threads)
    t = time.perf_counter()
    s = crop_faces(inp, out, FacesConfig(), device=device, progress=False)
    sec = time.perf_counter() - t
    return s.frames / sec, s.crops, s.frames


def peak_rss(tmp: Path, frames: int, device: str) -> tuple[float, float]:
    """(max RSS in MB of `featurize faces` on a 640x360 video of `frames` frames, wall seconds)."""
    inp = tmp / f"long_{frames}"
    inp.mkdir()
    make_video(inp / "long.mp4", frames, (640, 360))
    cmd = [sys.executable, "-c",
           "import resource, sys; from featurize.cli import main\n"
           "try:\n main()\nexcept SystemExit: pass\n"
           "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
           "faces", "--input", str(inp), "--out", str(tmp / f"long_out_{frames}"), "--threads", "1",
           "--no-progress"] + (["--gpu"] if device == "cuda" else [])
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    sec = time.perf_counter() - t
    kb = int(res.stdout.split("MAXRSS")[1].split()[0])
    return kb / 1024, sec


def count_found(detector, images, min_score=0.9, batch=50) -> tuple[int, float]:
    n, t = 0, time.perf_counter()
    for i in range(0, len(images), batch):
        for faces in detector.detect_batch(images[i:i + batch]):
            n += any(f.score >= min_score for f in faces)
    return n, len(images) / (time.perf_counter() - t)


def detection(device: str) -> list[tuple[str, int, int, float]]:
    rows = []
    torch.set_num_threads(1)
    det = load_detector("mtcnn", device=device)
    for name in ("astronaut", "camera"):
        img = np.asarray(Image.fromarray(getattr(skdata, name)()).convert("RGB"))
        found, rate = count_found(det, [img])
        rows.append((f"scikit-image {name} ({img.shape[1]}x{img.shape[0]}), min-face 20", found, 1, rate))
    lfw = (skdata.lfw_subset() * 255).astype(np.uint8)
    up = [np.asarray(Image.fromarray(x).convert("RGB").resize((100, 100), Image.Resampling.BILINEAR)) for x in lfw]
    found, rate = count_found(det, up[:100])
    rows.append(("scikit-image lfw_subset faces (25x25 -> 100x100), min-face 20", found, 100, rate))
    found, rate = count_found(det, up[100:])
    rows.append(("scikit-image lfw_subset NON-faces (25x25 -> 100x100): false detections", found, 100, rate))
    ck = sorted(glob.glob(str(SHARED / "data" / "ckplus" / "cropped_aligned" / "*" / "*.png")))
    if ck:
        imgs = [np.asarray(Image.open(f).convert("RGB")) for f in ck]
        for min_face in (20, 12):
            det = load_detector("mtcnn", device=device, min_face=min_face)
            found, rate = count_found(det, imgs)
            rows.append((f"CK+ crops (48x48 grayscale, ../shared/data/ckplus), min-face {min_face}",
                         found, len(imgs), rate))
    else:
        rows.append((f"CK+ crops: skipped, {SHARED / 'data' / 'ckplus'} not found", 0, 0, 0.0))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="frames of the speed videos")
    ap.add_argument("--long-frames", type=int, default=10000, help="frames of the long video (memory)")
    ap.add_argument("--gpu", action="store_true", help="also time the detector on the CUDA GPU")
    ap.add_argument("--parts", default="speed,memory,detection", help="which measurements, comma separated")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    devices = ["cpu"] + (["cuda"] if args.gpu else [])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory(prefix="faces-bench-") as tmp:
        tmp = Path(tmp)
        if "speed" in parts:
            lines += ["| video | device | torch threads | frames | crops | frames/s |", "|---|---|---:|---:|---:|---:|"]
        for size in ((112, 112), (640, 360)) if "speed" in parts else ():
            for device in devices:
                for threads in ((1, 2) if device == "cpu" else (1,)):
                    fps, crops, frames = speed(tmp, size, args.frames, threads, device)
                    lines.append(f"| {size[0]}x{size[1]} mpeg4 | {device} | {threads} | {frames} | {crops} | {fps:.1f} |")
                    print(lines[-1], flush=True)
        if "memory" in parts:
            lines += ["", "| 640x360 video | frames | peak RSS (MB) | wall s |", "|---|---:|---:|---:|"]
        for frames in sorted({min(200, args.long_frames), args.long_frames}) if "memory" in parts else ():
            mb, sec = peak_rss(tmp, frames, devices[-1])
            lines.append(f"| `featurize faces --threads 1` | {frames} | {mb:.0f} | {sec:.0f} |")
            print(lines[-1], flush=True)
    if "detection" in parts:
        lines += ["", "| photos | found | of | images/s |", "|---|---:|---:|---:|"]
    for name, found, total, rate in detection(devices[-1]) if "detection" in parts else ():
        lines.append(f"| {name} | {found} | {total} | {rate:.1f} |")
        print(lines[-1], flush=True)
    wall = time.perf_counter() - t0
    cmd = "python bench/faces_speed.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    from importlib.metadata import version

    notes = [
        f"- decode (PyAV {av.__version__}) + MTCNN (facenet-pytorch {version('facenet-pytorch')}, min-score 0.9, "
        "batch 16) + crop 112x112 + JPEG write, end to end through `featurize.faces.crop_faces`; "
        "videos: the astronaut's head moving and scaling over a plain background, every 10th frame without it",
        f"- torch {torch.__version__}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}; load average (1 min) at start {load0:.1f}, at end {os.getloadavg()[0]:.1f}; "
        f"bench wall time {wall:.0f} s",
        "- the machine was shared with other jobs during the run: frames/s are lower bounds, and 2 threads can "
        "be slower than 1 when the CPUs are oversubscribed (OpenMP threads spin)",
    ]
    text = "\n".join([f"\n## faces_speed: `featurize faces` (MTCNN) speed, memory, detection "
                      f"({dt.datetime.now():%Y-%m-%d %H:%M})", "", f"`{cmd.strip()}`", "", *lines, "", *notes, ""])
    print(text)
    if not args.no_append:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
