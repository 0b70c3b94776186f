"""`featurize run` as functions: rows -> decode (DataLoader workers) -> backbone -> journal -> store.

    summary = run_featurize(source="abaw-mtl", annotations="train.txt", images="cropped_aligned",
                            split="train", store="s.h5")                # what `featurize run` does
    summary = featurize_samples(samples, root=root, store="s.h5", split="train",
                                backbone=load_backbone("enet_b0_8_va_mtl"))   # rows you made yourself

Steps, each resumable:
1. read all rows (a malformed line stops here, before any work);
2. under the store's writer lock, briefly: register the rows (a no-op for rows already there), create the
   source or check that it was made the same way (backbone, weights sha256, preprocessing, precision),
   merge journal parts an interrupted run left behind, and find the rows still missing;
3. without the lock: decode + resize in DataLoader workers, normalise and run the backbone batch by
   batch, and write finished batches as journal parts (`featurize.journal`);
4. under the lock, briefly: merge the parts into the store, then delete them.
Killed at any point (kill -9, Ctrl-C), the same call again finishes only the missing rows.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from store import STATUS_INVALID, STATUS_MISSING, STATUS_OK, FeatureStore
from featheads.core.errors import UserError

from .heap import keep_freed_memory
from .images import ImageDecodeError, decode_resized, open_image_root
from .journal import Journal
from .pooled_maps import map_widths, parse_pooled_maps
from .readers import AnnotationError, Sample, read_abaw_mtl, read_class_folders, read_images, sample_columns

SOURCES = ("abaw-mtl", "folders", "images")


@dataclass(frozen=True)
class FeaturizeConfig:
    """How to run the backbone; none of it changes the features except `precision`."""

    gpu: bool = False  # CUDA; the CPU otherwise
    precision: str = "fp32"  # fp32 | bf16 (CPU with AVX512-BF16, or GPU) | fp16 (GPU); part of the identity
    batch_size: int = 64  # 64 keeps oneDNN busy on a CPU without holding many images in memory
    workers: int | None = None  # decoding processes; None: half the cores, 1 to 8
    strict: bool = False  # an unreadable image stops the run instead of being recorded as invalid
    progress: bool = True  # tqdm bar with images/s and ETA on stderr
    part_rows: int = 4096  # journal: rows per part file ...
    part_seconds: float = 30.0  # ... or at least one part this often (work lost to a kill: at most this)
    pooled_maps: tuple = ()  # featurize.pooled_maps.PooledMap: inner maps kept as extra arrays; in the identity


@dataclass
class RunSummary:
    store: str
    source: str
    split: str
    rows: int  # rows of this run
    ok: int  # rows with features (now, including earlier runs)
    invalid: int  # rows whose image is missing or unreadable
    skipped: int  # rows done before this run (in the store or in journal parts)
    computed: int  # rows run through the backbone now
    seconds: float  # time spent decoding + computing (model preparation excluded)
    device: str
    invalid_examples: list = field(default_factory=list)  # (key, reason), the first few of this run

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.store} [{self.source}] split {self.split}: {self.rows} rows, {self.ok} ok, "
            f"{self.invalid} invalid, {self.skipped} skipped as done; computed {self.computed} in "
            f"{self.seconds:.1f} s ({self.images_per_second:.1f} images/s) on {self.device}"
        )


class PixelDataset:
    """Map-style dataset: i -> (i, uint8 (S, S, C) pixels, error message or "")."""

    def __init__(self, root, images: list[str], *, size: int, grayscale: bool, interpolation: str):
        self.root = root
        self.images = images
        self.size = size
        self.grayscale = grayscale
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            px = decode_resized(self.root.read_bytes(self.images[i]), self.size,
                                grayscale=self.grayscale, interpolation=self.interpolation)
            return i, px, ""
        except ImageDecodeError as e:
            return i, np.zeros((self.size, self.size, 1 if self.grayscale else 3), np.uint8), str(e)


def collate_pixels(items):
    """-> (index int64 (B,), pixels uint8 tensor (B, S, S, C), errors list[str])."""
    import torch

    index = np.fromiter((it[0] for it in items), dtype=np.int64, count=len(items))
    pixels = torch.from_numpy(np.stack([it[1] for it in items]))
    return index, pixels, [it[2] for it in items]


def default_workers(device_type: str = "cpu") -> int:
    """Decoding processes. On a GPU: half the cores, 1 to 8 (8 keep up with a B0 forward in fp16).
    On the CPU the forward pass uses every core and decoding a face crop costs a few percent of it,
    so a worker process only competes with it: none up to 4 cores (measured on 2 cores: 2.0x the
    reference loop with 0 workers, 1.6x with 1), then a quarter of the cores."""
    cores = os.cpu_count() or 2
    if device_type == "cuda":
        return max(1, min(8, cores // 2))
    return 0 if cores <= 4 else min(8, cores // 4)


def source_identity(backbone, precision: str, pooled_maps=()) -> dict:
    """What makes features comparable: the backbone spec, the weights' sha256 and the precision (and the
    pooled maps, when any: a source holds the same arrays for every row)."""
    identity = {**backbone.spec.identity(), "weights_sha256": backbone.weights_sha256, "precision": precision}
    if pooled_maps:
        identity["pooled_maps"] = [str(pm) for pm in pooled_maps]
    return identity


def _provenance(backbone, config: FeaturizeConfig, device: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    return {
        "featheads": v("featheads"), "torch": v("torch"), "timm": v("timm"), "pillow": v("pillow"),
        "numpy": v("numpy"), "device": device, "precision": config.precision,
        "batch_size": config.batch_size, "weights_path": str(getattr(backbone, "weights_path", None)),
        "command": " ".join(sys.argv)[:2000],
    }


class _PendingParts:
    """Finished batches not yet in a journal part."""

    def __init__(self, journal: Journal, config: FeaturizeConfig):
        self.journal, self.config = journal, config
        self.keys: list[str] = []
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.status: list[np.ndarray] = []
        self.last = time.monotonic()

    def add(self, keys, arrays: dict, status):
        self.keys.extend(keys)
        for name, values in arrays.items():
            self.arrays.setdefault(name, []).append(values)
        self.status.append(status)
        if len(self.keys) >= self.config.part_rows or time.monotonic() - self.last >= self.config.part_seconds:
            self.flush()

    def flush(self):
        if self.keys:
            self.journal.write_part(self.keys, {k: np.concatenate(v) for k, v in self.arrays.items()},
                                    np.concatenate(self.status))
        self.keys, self.arrays, self.status = [], {}, []
        self.last = time.monotonic()


def _merge(store_path: str, journal: Journal, rows: np.ndarray, wait: float | None = None) -> np.ndarray:
    """Merge the journal into the store; returns the source status of `rows` afterwards. The merged parts
    are deleted after the store is committed and before the lock is released, so two mergers never race
    and a kill between the two only leaves parts that the next merge writes again (same values)."""
    with FeatureStore.open(store_path, "a", wait=wait) as st:
        merged = journal.merge_into(st)
        st.commit()
        journal.remove(merged)
        status = st.source_status(journal.source, rows)
    return status


def shard_rows(samples: list[Sample], index: int, count: int) -> np.ndarray:
    """Positions of the `index`-th of `count` shards of `samples` (0-based): whole videos together, videos
    in order of first appearance cut into `count` contiguous runs of about equal rows. Deterministic."""
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {index + 1}/{count}: I must be between 1 and N")
    videos = sample_columns(samples)["videos"]
    first: dict[str, int] = {}
    sizes: list[int] = []
    ids = np.empty(len(samples), dtype=np.int64)
    for i, v in enumerate(videos):
        j = first.setdefault(v, len(first))
        if j == len(sizes):
            sizes.append(0)
        sizes[j] += 1
        ids[i] = j
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if sizes else np.zeros(0, np.int64)
    video_shard = (before * count) // max(len(samples), 1)
    return np.flatnonzero(video_shard[ids] == index) if len(samples) else np.zeros(0, np.int64)


def featurize_samples(
    samples: list[Sample], *, root, store, split: str, backbone, source_name: str | None = None,
    config: FeaturizeConfig = FeaturizeConfig(), shard: tuple[int, int] | None = None,
    retry_invalid: bool = False, wait: float | None = None,
) -> RunSummary:
    """Register `samples` in split `split` of `store` and write features of `backbone` for every one.

    root: image root (`featurize.images.open_image_root`) that `Sample.image` paths are relative to.
    backbone: a `featurize.backbones.LoadedBackbone` (anything with .model, .spec, .weights_sha256).
    source_name: the store source (default: the backbone's name).
    shard: (index, count), 0-based: compute only that shard's rows (`shard_rows`); every shard registers
    all rows, so the store's row order is the same whichever shard comes first.
    retry_invalid: recompute rows recorded invalid (2) as well as missing ones.
    wait: seconds to wait for the writer lock (None: FEATHEADS_STORE_WAIT or 300 s).
    """
    from .inference import describe_device

    store = os.fspath(store)
    spec = backbone.spec
    source = source_name or spec.name
    device = _run_device(config)
    if config.batch_size < 1:
        raise UserError(f"--batch-size {config.batch_size}: must be at least 1")
    identity = source_identity(backbone, config.precision, config.pooled_maps)
    device_name = describe_device(device)
    widths = {"embeddings": (spec.embedding_dim, None), "logits": (len(spec.logit_names), spec.logit_names)}
    widths.update((name, (w, None)) for name, w in map_widths(backbone.model, spec, config.pooled_maps).items())
    journal = Journal(store, source, identity)
    all_rows, status = _register(store, samples, split, source, identity, widths,
                                 _provenance(backbone, config, device_name), journal, wait)
    if shard is not None:
        mine = shard_rows(samples, *shard)
        samples = [samples[i] for i in mine]
        rows, status = all_rows[mine], status[mine]
    else:
        rows = all_rows
    redo = (status == STATUS_MISSING) | ((status == STATUS_INVALID) if retry_invalid else False)
    todo = np.flatnonzero(redo)

    examples: list[tuple[str, str]] = []
    seconds = 0.0
    if len(todo):
        start = time.perf_counter()
        with keep_freed_memory():  # each batch's activations reuse the last one's pages (featurize.heap)
            examples = _compute(samples, todo, root=root, backbone=backbone, device=device, config=config,
                                journal=journal, source=source, widths={k: w for k, (w, _) in widths.items()},
                                merge=lambda: _merge(store, journal, rows, wait))
        seconds = time.perf_counter() - start
        status = _merge(store, journal, rows, wait)

    return RunSummary(
        store=store, source=source, split=split, rows=len(samples), ok=int((status == STATUS_OK).sum()),
        invalid=int((status == STATUS_INVALID).sum()), skipped=len(samples) - len(todo), computed=len(todo),
        seconds=seconds, device=device_name, invalid_examples=examples,
    )


def _run_device(config: FeaturizeConfig):
    """The device of this run: the CPU, or the GPU (torchrun's LOCAL_RANK picks one per process)."""
    import torch

    from .inference import check_precision, pick_device

    device = pick_device(config.gpu)
    if device.type == "cuda" and os.environ.get("LOCAL_RANK", "").isdigit():  # torchrun: one GPU per process
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    check_precision(config.precision, device)
    return device


def _register(store, samples, split, source, identity, arrays, provenance, journal, wait):
    """Add the rows and the source (arrays: name -> (width, column names); merging parts an interrupted
    run left) -> (rows, their status)."""
    with FeatureStore.open(store, "a", wait=wait) as st:
        all_rows = st.add_samples([s.key for s in samples], split=split, **sample_columns(samples))
        st.create_source(source, identity=identity, arrays=arrays, provenance=provenance)
        merged = journal.merge_into(st)
        st.commit()
        journal.remove(merged)
        return all_rows, st.source_status(source, all_rows)


def _compute(samples, todo, *, root, backbone, device, config, journal, source, widths,
             merge) -> list[tuple[str, str]]:
    """Run the backbone over the `todo` rows, batch by batch into journal parts; returns up to ten
    (key, reason) of invalid rows. --strict: the first bad image merges what is finished and stops."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .inference import BatchRunner

    spec = backbone.spec
    runner = BatchRunner(backbone.model, spec, device=device, precision=config.precision,
                         pooled_maps=config.pooled_maps)
    dataset = PixelDataset(root, [samples[i].image for i in todo], size=spec.input_size,
                           grayscale=spec.grayscale, interpolation=spec.interpolation)
    workers = default_workers(device.type) if config.workers is None else config.workers
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=False, num_workers=workers,
        collate_fn=collate_pixels, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    examples: list[tuple[str, str]] = []
    pending = _PendingParts(journal, config)
    bar = tqdm(total=len(todo), unit="img", desc=f"featurize {source}", disable=not config.progress,
               dynamic_ncols=True, smoothing=0.05)
    try:
        for index, pixels, errors in loader:
            keys = [samples[todo[i]].key for i in index]
            ok = np.array([not e for e in errors])
            if config.strict and not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                image = samples[todo[index[i]]].image
                raise UserError(f"{root.describe(image)}: {errors[i]} (--strict)")
            arrays = {name: np.full((len(keys), w), np.nan, np.float32) for name, w in widths.items()}
            if ok.any():
                batch = pixels if ok.all() else pixels[torch.from_numpy(ok)]
                for name, values in runner.arrays(batch).items():
                    arrays[name][ok] = values
            finite = np.logical_and.reduce([np.isfinite(a).all(axis=1) for a in arrays.values()])
            for i in np.flatnonzero(ok & ~finite):
                errors[i] = "the backbone gave non-finite features"
            status = np.where(ok & finite, STATUS_OK, STATUS_INVALID).astype(np.int8)
            for i in np.flatnonzero(status != STATUS_OK):
                if len(examples) < 10:
                    examples.append((keys[i], errors[i]))
            pending.add(keys, arrays, status)
            bar.update(len(keys))
    except UserError:  # --strict: keep what is finished in the store, then stop
        bar.close()
        pending.flush()
        merge()
        raise
    finally:
        bar.close()
        pending.flush()  # finished batches survive Ctrl-C (merged by the next run)
    return examples


def read_samples(source: str, *, annotations=None, root=None, task: str | None = None) -> list[Sample]:
    """The rows of a --source: abaw-mtl (annotation file), folders (class folders, --task), images."""
    if source == "abaw-mtl":
        if annotations is None:
            raise AnnotationError("--source abaw-mtl needs --annotations FILE (the ABAW4 MTL annotation file)")
        return read_abaw_mtl(annotations)
    if source == "folders":
        if task is None:
            raise AnnotationError("--source folders needs --task lsd or --task expr (what the folder names mean)")
        if annotations is not None:
            raise AnnotationError("--source folders reads labels from folder names; drop --annotations")
        return read_class_folders(root, task)
    if source == "images":
        return read_images(root, annotations)
    raise AnnotationError(f"--source {source!r}: choose one of {', '.join(SOURCES)}")


def run_featurize(
    *, source: str = "abaw-mtl", annotations=None, images, subdir: str | None = None, task: str | None = None,
    split: str, store, backbone: str = "enet_b0_8_va_mtl", weights=None, source_name: str | None = None,
    gpu: bool = False, precision: str = "fp32", batch_size: int = 64, workers: int | None = None,
    strict: bool = False, limit: int | None = None, progress: bool = True, allow_download: bool = True,
    shard: tuple[int, int] | None = None, retry_invalid: bool = False, wait: float | None = None,
    logit_names=None, pooled_maps: str | None = None,
) -> RunSummary:
    """`featurize run` as a function: read rows, load the backbone, featurize every row into `store`.

    logit_names: names of the logit columns (--logit-names), e.g. for a fine-tuned state dict with
    another class count; default: the weights file's metadata, else the backbone's names, else the --task's
    class names (--source folders) when the count is theirs, else 0, 1, ...

    shard: (index, count) 0-based; None: from torchrun (RANK/WORLD_SIZE) or a SLURM job array
    (SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) when set, else every row (`shard_from_env`).
    pooled_maps: "MODULE:G,..." (--pooled-maps): inner maps kept as extra arrays (featurize.pooled_maps)."""
    from store.feature_store import check_store_folder

    from .backbones import load_backbone

    check_store_folder(store)  # one line before any model is loaded ...
    if os.path.exists(store):  # ... as is a file that is not a featheads store (nothing is written to it)
        FeatureStore.open(store).close()
    if shard is None:
        shard = shard_from_env()
    root = open_image_root(images, subdir)
    samples = read_samples(source, annotations=annotations, root=root, task=task)
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit {limit}: must be at least 1")
        samples = samples[:limit]
    config = FeaturizeConfig(gpu=gpu, precision=precision, batch_size=batch_size, workers=workers,
                             strict=strict, progress=progress, pooled_maps=parse_pooled_maps(pooled_maps))
    from .inference import check_precision, pick_device

    check_precision(precision, pick_device(gpu))  # before loading (or downloading) any weights
    from store.schema import get_task

    class_names = get_task(task).names if source == "folders" and task else None  # a fine-tuned head's classes
    loaded = load_backbone(backbone, weights, allow_download=allow_download, logit_names=logit_names,
                           class_names=class_names)
    print(loaded.weights_report(), file=sys.stderr)  # which weights (path, sha256, downloaded?) or a warning
    return featurize_samples(samples, root=root, store=store, split=split, backbone=loaded,
                             source_name=source_name, config=config, shard=shard, retry_invalid=retry_invalid,
                             wait=wait)


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" (1-based, as users count) -> (I - 1, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: write I/N, for example 2/4 (the 2nd of 4 shards)") from None
    if n < 1 or not 1 <= i <= n:
        raise UserError(f"--shard {text}: I must be between 1 and N")
    return i - 1, n


def shard_from_env(env=None) -> tuple[int, int] | None:
    """(index, count) from torchrun (RANK, WORLD_SIZE) or a SLURM job array; None when neither is set."""
    env = os.environ if env is None else env
    for rank, size in (("RANK", "WORLD_SIZE"), ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")):
        if env.get(rank) is not None and env.get(size) is not None:
            try:
                i, n = int(env[rank]), int(env[size])
            except ValueError:
                raise UserError(f"{rank}={env[rank]!r}, {size}={env[size]!r}: not whole numbers") from None
            if rank.startswith("SLURM"):
                i -= int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            if n < 1 or not 0 <= i < n:
                raise UserError(f"{rank}={env[rank]}, {size}={env[size]}: the rank is outside the job")
            return (i, n) if n > 1 else None
    return None
