"""Raw videos and photos -> face crops in the s-Aff-Wild2 layout, plus an index of every detection
(docs/FACES.md).

    summary = crop_faces("recordings/", "crops/", FacesConfig(every=1, size=112, align=True))

Layout written under `out` (paths relative to the input keep their folders):

    <folder>/<video stem>/<00001>.jpg     one face per sampled frame, 1-based frame numbers
    <folder>/<video stem>_<k>/<00001>.jpg  with all_faces: track k = 1, 2, ... of that video
    <folder>/<photo stem>.jpg             (<photo stem>_<k>.jpg with all_faces)
    faces_index.jsonl                     one JSON line per sampled frame (and face), then one "done"
                                          line per finished video or photo
    faces_list.txt                        every crop key (and every face-less frame's key) in the
                                          ABAW4 test-list format, for `featurize run --source abaw-mtl`
    faces_settings.json                   what made the crops; a rerun with other settings is refused

Resumable per video or photo: a file's lines go to `.faces-parts/` while it is processed and are
appended to the index when it is finished, its "done" line last, so the index only counts finished
files, and a killed run redoes only the file it was in.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from featheads.core.errors import UserError

from . import face_align
from .heap import GLIBC
from .images import DECODE_ERRORS, is_image_name
from .video_frames import VideoError, is_video_name, open_video

INDEX = "faces_index.jsonl"
LIST = "faces_list.txt"
SETTINGS = "faces_settings.json"
PARTS = ".faces-parts"
SELECT_MODES = ("largest", "confident", "tracked")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
TRACK_IOU = 0.3  # a face continues a track when its box overlaps the track's last box this much
TRACK_GAP = 25  # sampled frames a track waits for its face before it ends


@dataclass
class FacesConfig:
    every: int = 1
    size: int = 112
    margin: float = 0.0
    align: bool = False
    all_faces: bool = False
    select: str = "largest"
    min_score: float = 0.9
    min_face: int = 20
    detector: str = "mtcnn"
    batch_size: int = 16
    quality: int = 95

    def settings(self) -> dict:
        """What changes the crops or the index (batch size does not)."""
        d = asdict(self)
        d.pop("batch_size")
        return d


@dataclass
class FacesSummary:
    files: int = 0  # videos and photos processed by this run
    already_done: int = 0
    frames: int = 0  # sampled frames (photos count one each)
    crops: int = 0
    no_face: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not processed
    truncated: list[tuple[str, str]] = field(default_factory=list)  # (file, why) processed in part
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        text = (f"faces: {self.files} file(s) processed ({self.already_done} already done), "
                f"{self.frames} frame(s), {self.crops} crop(s), {self.no_face} without a face; "
                f"{rate:.1f} frames/s")
        if self.truncated:
            text += f"; {len(self.truncated)} truncated"
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


# ---------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Media:
    rel: str  # path relative to the input root, "/"-separated
    kind: str  # "video" or "photo"
    base: str  # output name without extension: crop folder (video) or crop file stem (photo)


class MediaRoot:
    """Videos and photos in a folder (at any depth) or a .zip archive."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"--input {self.path}: no such folder or zip archive")
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise UserError(f"--input {self.path}: neither a folder nor a zip archive")
        self._zip = zipfile.ZipFile(self.path) if self.is_zip else None

    def describe(self, rel: str) -> str:
        return f"{self.path}:{rel}" if self.is_zip else str(self.path / rel)

    def names(self) -> list[str]:
        if self._zip is not None:
            out = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            out = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                rel_dir = os.path.relpath(dirpath, self.path).replace(os.sep, "/")
                out += [f if rel_dir == "." else f"{rel_dir}/{f}" for f in filenames]
        return sorted(n for n in out
                      if not any(p.startswith(".") or p == "__MACOSX" for p in n.split("/")))

    def open_video(self, rel: str):
        if self._zip is not None:
            return open_video(self._zip.open(rel))
        return open_video(str(self.path / rel))

    def read_bytes(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(rel)
        return (self.path / rel).read_bytes()


def list_media(root: MediaRoot) -> list[Media]:
    """Every video and photo under the root, with the output name each gets; clashes are errors."""
    media = []
    for rel in root.names():
        stem = posixpath.splitext(rel)[0]
        if is_video_name(rel):
            media.append(Media(rel, "video", stem))
        elif is_image_name(rel):
            media.append(Media(rel, "photo", stem))
    if not media:
        raise UserError(f"--input {root.path}: no videos ({', '.join(e[1:] for e in _video_exts())}) "
                        "or photos found")
    seen: dict[str, str] = {}
    videos = {m.base for m in media if m.kind == "video"}
    for m in media:
        if m.base in seen:
            raise UserError(f"{root.describe(m.rel)} and {seen[m.base]} would both be written as {m.base}: "
                            "rename one of them")
        seen[m.base] = m.rel
        if m.kind == "photo" and posixpath.dirname(m.base) in videos:
            raise UserError(f"{root.describe(m.rel)} lies in a folder named like the video "
                            f"{posixpath.dirname(m.base)}, whose frame crops go there: move the photo")
    return media


def _video_exts():
    from .video_frames import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS[:5]


# ------------------------------------------------------------------------------- face selection
def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class OneFace:
    """One face per frame: the largest, the most confident, or the one overlapping the face chosen
    in the previous frames most (falling back to the largest when none overlaps)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.last = None

    def pick(self, faces):
        if not faces:
            return []
        if self.mode == "confident":
            best = max(faces, key=lambda f: f.score)
        elif self.mode == "tracked" and self.last is not None:
            overlaps = [iou(f.box, self.last) for f in faces]
            i = int(np.argmax(overlaps))
            best = faces[i] if overlaps[i] > 0 else max(faces, key=lambda f: f.area)
        else:
            best = max(faces, key=lambda f: f.area)
        self.last = best.box
        return [(None, best)]


class Tracks:
    """Every face, as tracks 1, 2, ...: greedy matching by box overlap with each track's last box."""

    def __init__(self):
        self.active: list[list] = []  # [k, last box, sampled-frame index last seen]
        self.next_k = 1
        self.t = 0

    def pick(self, faces):
        self.t += 1
        self.active = [a for a in self.active if self.t - a[2] <= TRACK_GAP]
        pairs = sorted(((iou(f.box, a[1]), i, j) for i, f in enumerate(faces) for j, a in enumerate(self.active)),
                       reverse=True)
        taken_f, taken_t, out = set(), set(), []
        for overlap, i, j in pairs:
            if overlap < TRACK_IOU:
                break
            if i in taken_f or j in taken_t:
                continue
            taken_f.add(i)
            taken_t.add(j)
            self.active[j][1], self.active[j][2] = faces[i].box, self.t
            out.append((self.active[j][0], faces[i]))
        for i in sorted(set(range(len(faces))) - taken_f, key=lambda i: -faces[i].area):
            self.active.append([self.next_k, faces[i].box, self.t])
            out.append((self.next_k, faces[i]))
            self.next_k += 1
        return sorted(out, key=lambda p: p[0])


# ------------------------------------------------------------------------------------ the index
def face_record(media: Media, frame, key, face, n_faces: int, track, matrix) -> dict:
    rec = {"media": media.rel, "frame": frame, "key": key, "track": track, "found": face is not None,
           "faces": n_faces}
    if face is not None:
        rec.update(box=[round(v, 2) for v in face.box], score=round(face.score, 6),
                   landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
                   matrix=[[round(float(v), 6) for v in row] for row in matrix])
    else:
        rec.update(box=None, score=None, landmarks=None, matrix=None)
    return rec


def read_index(out: Path) -> tuple[list[dict], set[str]]:
    """Records of the finished files and their names. A torn last block (killed while appending) is
    cut off, so the index again ends at a finished file."""
    path = out / INDEX
    if not path.is_file():
        return [], set()
    records, done, good_bytes, pos, block = [], set(), 0, 0, []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            pos += len(raw)
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
            except ValueError:
                raise UserError(f"{path}:{lineno}: not a JSON line; the index is damaged "
                                "(delete it and the crops to start again)") from None
            block.append(rec)
            if rec.get("done"):
                records += block
                done.add(rec["media"])
                block, good_bytes = [], pos
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return records, done


def iter_index(out) -> Iterator[dict]:
    """The records of `out`/faces_index.jsonl, one by one (finished files only)."""
    path = Path(out) / INDEX
    if not path.is_file():
        raise UserError(f"{path}: no such file; make it with `featurize faces --out {out}`")
    block = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                raise UserError(f"{path}:{lineno}: not a JSON line") from None
            block.append(rec)
            if rec.get("done"):
                yield from block
                block = []


def write_list(out: Path) -> int:
    """faces_list.txt from the index: one key per sampled frame (or face), in ABAW4 test-list form."""
    keys = [r["key"] for r in iter_index(out) if not r.get("done") and r.get("key")]
    tmp = out / (LIST + ".tmp")
    tmp.write_text("image,valence,arousal,expression,aus\n" + "".join(f"{k},,,,\n" for k in keys))
    os.replace(tmp, out / LIST)
    return len(keys)


def check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}"
                             for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
            raise UserError(f"{out} holds crops made with other settings ({diff}): use another --out, "
                            "or the same options")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------- the processing
class Cropper:
    """Detected faces -> crops written under `out` and index records."""

    def __init__(self, out: Path, config: FacesConfig):
        self.out, self.cfg = out, config

    def crop(self, image: Image.Image, face) -> tuple[Image.Image, np.ndarray]:
        cfg = self.cfg
        if cfg.align:
            m = face_align.similarity_to_template(face.landmarks, cfg.size, cfg.margin)
            return face_align.warp(image, m, cfg.size), m
        return (face_align.plain_crop(image, face.box, cfg.size, cfg.margin),
                face_align.plain_crop_matrix(face.box, cfg.size, cfg.margin))

    def write(self, key: str, crop: Image.Image) -> None:
        path = self.out / key
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, format="JPEG", quality=self.cfg.quality)


MALLOC_TRIM = GLIBC.malloc_trim if GLIBC is not None else None


def bound_the_heap() -> None:
    """Keep the process from growing with the length of a video (glibc only; elsewhere a no-op).

    MTCNN allocates tensors of another size for every batch (the number of candidate boxes varies).
    glibc's dynamic mmap threshold moves such blocks into the heap, where they fragment: without this
    the process grew from 1.0 to 1.24 GB over 800 frames of 640x360. A fixed 1 MB threshold (large
    blocks are mmap-ed and given back when freed) plus malloc_trim after each batch kept its peak at
    0.93 GB from the first frames to the last. (featurize.heap.keep_freed_memory around the crop loop,
    what `featurize run` does, gave 1.5x the frames/s but a peak that grew from 1.26 GB after 200 frames
    to 1.40 GB after 10,000: not used here, bench/RESULTS.md 2026-12-03.)"""
    if GLIBC is not None:
        GLIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _faces_above(faces, cfg):
    return [f for f in faces if f.score >= cfg.min_score]


def process_video(root: MediaRoot, media: Media, detector, cropper: Cropper, part, bar, summary) -> dict:
    """Crop one video; its records go to `part`; returns its "done" record (raises VideoError)."""
    cfg = cropper.cfg
    chooser = Tracks() if cfg.all_faces else OneFace(cfg.select)
    counts = {"sampled": 0, "crops": 0, "no_face": 0}

    def flush(batch):
        found = detector.detect_batch([rgb for _, rgb in batch])
        if MALLOC_TRIM is not None:
            MALLOC_TRIM(0)
        for (n, rgb), faces in zip(batch, found):
            faces = _faces_above(faces, cfg)
            picked = chooser.pick(faces)
            counts["sampled"] += 1
            if not picked:
                counts["no_face"] += 1
                key = None if cfg.all_faces else f"{media.base}/{n:05d}.jpg"
                part.write(json.dumps(face_record(media, n, key, None, 0, None if cfg.all_faces else media.base,
                                                  None)) + "\n")
                continue
            image = Image.fromarray(rgb)
            for k, face in picked:
                track = media.base if k is None else f"{media.base}_{k}"
                key = f"{track}/{n:05d}.jpg"
                crop, m = cropper.crop(image, face)
                cropper.write(key, crop)
                counts["crops"] += 1
                part.write(json.dumps(face_record(media, n, key, face, len(faces), track, m)) + "\n")
        bar.update(len(batch))

    with root.open_video(media.rel) as video:
        batch = []
        for n, rgb in video.frames(every=cfg.every):
            batch.append((n, rgb))
            if len(batch) >= cfg.batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        decoded, shortfall = video.decoded, video.shortfall()
    if decoded == 0:
        raise VideoError(video.error or "no frame could be decoded")
    status, message = ("ok", None) if shortfall is None else ("truncated", shortfall)
    summary.frames += counts["sampled"]
    summary.crops += counts["crops"]
    summary.no_face += counts["no_face"]
    return {"media": media.rel, "done": True, "kind": "video", "status": status, "message": message,
            "frames": decoded, **counts}


def process_photo(root: MediaRoot, media: Media, detector, cropper: Cropper, part, bar, summary) -> dict:
    cfg = cropper.cfg
    try:
        image = Image.open(io.BytesIO(root.read_bytes(media.rel)))
        image = ImageOps.exif_transpose(image).convert("RGB")
    except (*DECODE_ERRORS, KeyError) as e:
        raise VideoError(f"cannot decode the photo ({type(e).__name__}: {e})") from None
    faces = _faces_above(detector.detect_batch([np.asarray(image)])[0], cfg)
    faces = sorted(faces, key=lambda f: -f.area)
    if cfg.all_faces:
        picked = list(enumerate(faces, start=1))
    else:
        picked = OneFace("largest" if cfg.select == "tracked" else cfg.select).pick(faces)
    crops = 0
    if not picked:
        key = None if cfg.all_faces else f"{media.base}.jpg"
        part.write(json.dumps(face_record(media, None, key, None, 0, None, None)) + "\n")
    for k, face in picked:
        key = f"{media.base}.jpg" if k is None else f"{media.base}_{k}.jpg"
        crop, m = cropper.crop(image, face)
        cropper.write(key, crop)
        crops += 1
        part.write(json.dumps(face_record(media, None, key, face, len(faces), None, m)) + "\n")
    bar.update(1)
    summary.frames += 1
    summary.crops += crops
    summary.no_face += 0 if picked else 1
    return {"media": media.rel, "done": True, "kind": "photo", "status": "ok", "message": None,
            "frames": 1, "sampled": 1, "crops": crops, "no_face": 0 if picked else 1}


def _append_block(out: Path, part_path: Path, done: dict) -> None:
    """The finished file's records and its done line, appended to the index (a block torn by a kill
    has no done line and is cut off by the next run's read_index)."""
    with open(out / INDEX, "ab") as f, open(part_path, "rb") as part:
        shutil.copyfileobj(part, f, 1 << 20)
        f.write((json.dumps(done) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    part_path.unlink()


def crop_faces(input_path, out, config: FacesConfig, *, device: str = "cpu", progress: bool = True,
               echo=None) -> FacesSummary:
    """Detect, select, crop and write the faces of every video and photo of `input_path` into `out`."""
    import time

    from tqdm import tqdm

    from .face_detectors import load_detector

    bound_the_heap()

    if config.select not in SELECT_MODES:
        raise UserError(f"--select {config.select!r}: choose from {', '.join(SELECT_MODES)}")
    out = Path(out)
    echo = echo or (lambda msg: tqdm.write(msg, file=sys.stderr))
    root = MediaRoot(input_path)
    if not root.is_zip and out.resolve().is_relative_to(root.path.resolve()):
        raise UserError(f"--out {out} lies inside --input {root.path}: its crops would be read as photos "
                        "by the next run; write them elsewhere")
    media = list_media(root)
    detector = load_detector(config.detector, device=device, min_face=config.min_face)
    settings = {**config.settings(), "detector": detector.identity()}
    check_settings(out, settings)
    _, done = read_index(out)
    shutil.rmtree(out / PARTS, ignore_errors=True)  # whatever is there was being written when killed
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    summary = FacesSummary(already_done=sum(m.rel in done for m in media))
    cropper = Cropper(out, config)
    todo = [m for m in media if m.rel not in done]
    start = time.perf_counter()
    with tqdm(desc="faces", unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        for i, m in enumerate(todo):
            bar.set_postfix_str(f"{i + 1}/{len(todo)} {m.rel}", refresh=False)
            part_path = out / PARTS / f"{i:06d}.jsonl"
            try:
                with open(part_path, "w", encoding="utf-8") as part:
                    fn = process_video if m.kind == "video" else process_photo
                    done_rec = fn(root, m, detector, cropper, part, bar, summary)
            except VideoError as e:
                part_path.unlink(missing_ok=True)
                summary.failed.append((m.rel, str(e)))
                echo(f"faces: {root.describe(m.rel)}: {e}; skipped (the other files go on)")
                continue
            _append_block(out, part_path, done_rec)
            summary.files += 1
            if done_rec["status"] == "truncated":
                summary.truncated.append((m.rel, done_rec["message"]))
                echo(f"faces: {root.describe(m.rel)}: {done_rec['message']}; the frames before are kept")
    summary.seconds = time.perf_counter() - start
    shutil.rmtree(out / PARTS, ignore_errors=True)
    if (out / INDEX).is_file():
        write_list(out)
    return summary
