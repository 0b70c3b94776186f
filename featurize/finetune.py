"""`featurize finetune` as functions: a registered backbone + a new head, trained stage by stage, resumable.

    result = run_finetune(source="folders", images="demo/data/training_set_synthetic_images", task="lsd",
                          backbone="enet_b0_8_va_mtl", out="ft_lsd",
                          val=dict(images="demo/data/validation_set_real_images"))

What happens (recipe: `featurize.finetune_recipe`, default `hsenn`, the HSE-NN LSD schedule):
1. the rows are read with `featurize run`'s readers (abaw-mtl annotations or class folders, folders or zip
   archives, --subdir); the backbone is loaded as `featurize run` loads it and its classifier replaced by a
   new head with the task's outputs (`featurize.finetune_heads`);
2. each stage trains the head only (the rest frozen, in eval mode) or all layers, for its epochs at its lr,
   with SAM over Adam (or plain Adam/AdamW/SGD), the task's loss (`featurize.finetune_loss`) and the
   recipe's augmentations (`featurize.finetune_augment`); a new optimizer starts with each stage;
3. after every epoch the validation rows (when given) are scored, and a checkpoint is written
   (`<out>/checkpoint.pt`, also every `checkpoint_steps` steps and on Ctrl-C); the same call again
   continues from it. Randomness is drawn from (seed, epoch, step), so a resumed run on the CPU ends with
   the same weights as an uninterrupted one;
4. `<out>/model.safetensors` (the network's state dict, logit names in its metadata) and
   `<out>/finetune.json` (base backbone and weights sha256, recipe, data, per-epoch metrics, result sha256).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featheads.core.errors import UserError

from .finetune_heads import (FINETUNE_TASKS, head_parameters, network_of, replace_head, task_logit_names)
from .finetune_loss import FinetuneLoss, headline, score
from .finetune_recipe import load_finetune_recipe

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"
BEST = "best.safetensors"
REPORT = "finetune.json"
FORMAT = 1


class FinetuneError(UserError):
    """A fine-tune that cannot run as asked (labels, task, output folder, resume)."""


# --------------------------------------------------------------------------- data


@dataclass
class FinetuneData:
    """Rows to train or score on: where the images are, and the task's labels as arrays."""

    root: object  # featurize.images image root
    images: list  # image paths relative to root
    labels: dict  # {"y": (n,)} for lsd/expr, {"expr", "va", "au"} for mtl
    describe: dict  # for finetune.json

    def __len__(self) -> int:
        return len(self.images)


def task_labels(samples, task: str, where: str) -> dict:
    """The task's labels of `samples` (store conventions: -1 / NaN missing)."""
    if task in ("lsd", "expr"):
        if not any(task in s.labels for s in samples):
            raise FinetuneError(f"{where}: the rows carry no {task} labels (lsd: --source folders --task lsd; "
                                f"expr: class folders or an abaw-mtl annotation file)")
        y = np.array([s.labels.get(task, -1) for s in samples], dtype=np.int64)
        return {"y": y}
    if not any("va" in s.labels for s in samples):
        raise FinetuneError(f"{where}: --task mtl needs an abaw-mtl annotation file (expression, VA and AU labels)")
    return {
        "expr": np.array([s.labels.get("expr", -1) for s in samples], dtype=np.int64),
        "va": np.array([s.labels.get("va", [np.nan, np.nan]) for s in samples], dtype=np.float32).reshape(-1, 2),
        "au": np.array([s.labels.get("au", [-1] * 12) for s in samples], dtype=np.int64).reshape(-1, 12),
    }


def read_finetune_data(*, source: str, images, task: str, annotations=None, subdir=None, split: str,
                       limit: int | None = None, role: str = "train") -> FinetuneData:
    """Rows read as `featurize run` reads them (same readers, options and errors), with the task's labels."""
    from .images import open_image_root
    from .pipeline import read_samples

    if source not in ("abaw-mtl", "folders"):
        raise FinetuneError(f"--source {source!r}: fine-tuning needs labels; use abaw-mtl or folders")
    folder_task = task if source == "folders" else None
    if source == "folders" and task == "mtl":
        raise FinetuneError("--task mtl needs --source abaw-mtl (class folders carry no VA or AU labels)")
    root = open_image_root(images, subdir)
    samples = read_samples(source, annotations=annotations, root=root, task=folder_task)
    if limit is not None:
        samples = samples[:limit]
    labels = task_labels(samples, task, root.describe(""))
    where = annotations or root.describe("")
    if task != "mtl" and role == "train":
        present = np.unique(labels["y"][labels["y"] >= 0])
        if len(present) < 2:
            raise FinetuneError(f"{where}: the training rows hold {len(present)} class(es) of {task}; "
                                "a classifier needs at least two")
    keys = hashlib.sha256("\n".join(s.key for s in samples).encode()).hexdigest()
    describe = {"source": source, "images": str(images), "annotations": None if annotations is None else str(annotations),
                "subdir": subdir, "split": split, "rows": len(samples), "keys_sha256": keys}
    if task != "mtl":
        k = len(task_logit_names(task))
        describe["class_counts"] = np.bincount(labels["y"][labels["y"] >= 0], minlength=k).tolist()
    return FinetuneData(root=root, images=[s.image for s in samples], labels=labels, describe=describe)


def _loader(data: FinetuneData, spec, batches, workers: int):
    """Batches of (positions, uint8 pixels (B, S, S, C), errors) in the given order of index arrays."""
    from torch.utils.data import DataLoader

    from .pipeline import PixelDataset, collate_pixels

    dataset = PixelDataset(data.root, data.images, size=spec.input_size, grayscale=spec.grayscale,
                           interpolation=spec.interpolation)
    return DataLoader(dataset, batch_sampler=[list(map(int, b)) for b in batches], num_workers=workers,
                      collate_fn=collate_pixels)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The shuffled batches of one epoch, a function of (seed, epoch) only; a last batch of 1 row joins
    the one before it (BatchNorm cannot train on one row)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


def _labels_of(data: FinetuneData, pos, device) -> dict:
    out = {}
    for k, v in data.labels.items():
        t = torch.from_numpy(v[pos])
        out[k] = t.to(device)
    return out


# --------------------------------------------------------------------------- model and optimizer


def _set_stage(model, stage: dict) -> list:
    """requires_grad per the stage; returns the parameters that train."""
    head = set(map(id, head_parameters(model)))
    params = []
    for p in model.parameters():
        trains = stage["train"] == "all" or id(p) in head
        p.requires_grad_(trains)
        if trains:
            params.append(p)
    return params


def _train_mode(model, stage: dict) -> None:
    if stage["train"] == "all":
        model.train()
    else:  # frozen layers keep their BatchNorm statistics and no dropout
        model.eval()
        from .finetune_heads import head_module

        head_module(model).train()


def make_optimizer(params, opt: dict, lr: float):
    """SAM over the base (name "sam"), or the plain optimizer."""
    from .finetune_sam import SAM

    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    kwargs = {"lr": lr, "weight_decay": float(opt["weight_decay"])}
    if opt["name"] == "sam":
        return SAM(params, classes[opt["base"]], rho=float(opt["rho"]), **kwargs)
    return classes[opt["name"]](params, **kwargs)


@contextlib.contextmanager
def _bn_frozen(model):
    """BatchNorm running statistics untouched (SAM's second pass must not update them twice)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def _autocast(device, precision: str):
    from .inference import PRECISIONS

    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _memory_format(device):
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


class _Normalizer:
    def __init__(self, spec, device):
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
        self.device = device

    def pixels01(self, pixels):
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return x.float().div_(255)

    def __call__(self, x01):
        # clone, not contiguous(): a (B, 1, H, W) view of NHWC pixels counts as contiguous with strides
        # (HW, 1, W, 1), and torch 2.14's CPU convolution backward corrupts memory on those strides
        return ((x01 - self.mean) / self.std).clone(memory_format=_memory_format(self.device))


# --------------------------------------------------------------------------- files


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_weights(model, path: Path, *, logit_names, backbone: str, task: str) -> str:
    """The network's state dict as safetensors (logit names in the metadata); returns its sha256."""
    from .backbones._safetensors import write_safetensors
    from .backbones._state_dict_weights import LOGIT_NAMES_KEY
    from .weights import sha256_file

    state = {k: v.detach().cpu().contiguous() for k, v in network_of(model).state_dict().items()}
    meta = {LOGIT_NAMES_KEY: json.dumps(list(logit_names)), "featheads.backbone": backbone,
            "featheads.task": task, "featheads.format": str(FORMAT)}
    _atomic(path, lambda tmp: write_safetensors(tmp, state, meta))
    return sha256_file(path)


def _save_checkpoint(path: Path, state: dict) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint: one line, what to do
        raise FinetuneError(f"{path}: cannot read the checkpoint ({type(e).__name__}); delete it to start "
                            "over, or use another --out") from None


def _fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- the loop


@dataclass
class FinetuneResult:
    out: Path
    weights: Path
    weights_sha256: str
    report: dict
    resumed_from: str | None = None  # "epoch E step S" when it continued a checkpoint
    already_done: bool = False

    def __str__(self) -> str:
        eps = self.report["epochs"]
        last = eps[-1] if eps else {}
        val = last.get("val") or {}
        key = headline(self.report["task"])
        tail = f", val {key} {val[key]:.4f}" if key in val else ""
        how = "already done" if self.already_done else (f"resumed from {self.resumed_from}" if self.resumed_from
                                                          else "trained")
        return (f"{self.weights} ({how}; {len(eps)} epochs, last train loss {last.get('train_loss', float('nan')):.4f}"
                f"{tail}; kept {self.report['kept']}; sha256 {self.weights_sha256[:12]})")


class _StopFlag:
    """Ctrl-C sets a flag; the loop checkpoints at the end of the step and stops."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.set:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


@dataclass
class _Training:
    """What one fine-tune call trains with: fixed from its start to its end."""

    train: FinetuneData
    val: FinetuneData | None
    task: str
    backbone: str
    loaded: object  # featurize.backbones.LoadedBackbone: spec, base weights sha256 and path
    names: tuple  # logit names of the new head
    recipe: dict
    fingerprint: str  # what a checkpoint or a finished fine-tune must match
    out: Path
    seed: int
    device: torch.device
    precision: str
    keep_best: bool
    workers: int
    stop_after_steps: int | None
    model: torch.nn.Module
    norm: _Normalizer
    loss_fn: FinetuneLoss
    scaler: object  # torch.amp.GradScaler for fp16, else None

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def stages(self) -> list:
        return self.recipe["stages"]

    @property
    def plan(self) -> list[tuple[int, int]]:
        """Global epoch -> (stage, epoch of the stage)."""
        return [(si, e) for si, st in enumerate(self.stages) for e in range(st["epochs"])]

    @property
    def batch_size(self) -> int:
        return self.recipe["batch_size"]

    @property
    def steps_per_epoch(self) -> int:
        return len(epoch_batches(len(self.train), self.batch_size, self.seed, 0))

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT


@dataclass
class _Progress:
    """Where the training stands (what a checkpoint holds), and how many steps this call has trained."""

    start_epoch: int = 0  # where this call starts
    start_step: int = 0
    history: list = field(default_factory=list)  # one entry per finished epoch
    best: dict | None = None  # keep_best: {"epoch", "score"}
    optimizer_state: dict | None = None  # of the checkpoint, loaded into the first optimizer of this call
    scaler_state: dict | None = None
    epoch_sums: tuple = (0.0, 0, 0)  # loss sum, rows, images of the epoch a checkpoint stopped in
    resumed_from: str | None = None  # "epoch E step S" when it continues a checkpoint
    steps_this_call: int = 0


def finetune(train: FinetuneData, *, task: str, backbone: str, weights=None, out, val: FinetuneData | None = None,
             recipe=None, seed: int = 0, gpu: bool = False, precision: str = "fp32", keep_best: bool = False,
             workers: int = 0, progress: bool = True, overwrite: bool = False, stop_after_steps: int | None = None,
             echo=None, recipe_source: str | None = None) -> FinetuneResult:
    """Fine-tune `backbone` on `train` for `task` into folder `out` (see the module docstring).

    recipe: built-in name, JSON file or dict (default `hsenn`). keep_best: keep the epoch with the best
    validation score instead of the last (optimistic: it is chosen on the rows it is scored on).
    stop_after_steps: stop (as Ctrl-C would, with a checkpoint) after this many steps of this call (tests).
    """
    from .backbones import load_backbone
    from .inference import check_precision, pick_device

    if task not in FINETUNE_TASKS:
        raise FinetuneError(f"--task {task!r}: choose one of {', '.join(FINETUNE_TASKS)}")
    if keep_best and val is None:
        raise FinetuneError("--keep-best needs validation rows (--val-images)")
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    recipe_doc, source_of_recipe = load_finetune_recipe(recipe)
    recipe_source = recipe_source or source_of_recipe  # where the recipe came from, before any overrides
    if recipe_doc["augment"]["mix"] and task == "mtl":
        raise FinetuneError("augment.mix (Mix-up / Mix-augment) is for the class tasks lsd and expr, not mtl")
    device = pick_device(gpu)
    check_precision(precision, device)
    out = Path(out)
    loaded = load_backbone(backbone, weights)
    names = task_logit_names(task)
    fp = _config_fingerprint(train, val, task=task, backbone=backbone, base_weights_sha256=loaded.weights_sha256,
                             recipe=recipe_doc, seed=seed, precision=precision, keep_best=keep_best)
    if out.exists() and overwrite:
        _remove_outputs(out)
    done = _finished_result(out, fp)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)

    training = _Training(
        train=train, val=val, task=task, backbone=backbone, loaded=loaded, names=names, recipe=recipe_doc,
        fingerprint=fp, out=out, seed=seed, device=device, precision=precision, keep_best=keep_best,
        workers=workers, stop_after_steps=stop_after_steps, model=_new_model(loaded, len(names), seed, device),
        norm=_Normalizer(loaded.spec, device),
        loss_fn=FinetuneLoss(task, recipe_doc["loss"], train.labels, len(names), device),
        scaler=torch.amp.GradScaler(device.type) if precision == "fp16" else None)
    state = _resume(training, echo)
    _train_epochs(training, state, progress)
    return _save_result(training, state, recipe_source)


def _config_fingerprint(train: FinetuneData, val: FinetuneData | None, *, task, backbone, base_weights_sha256, recipe,
                        seed, precision, keep_best) -> str:
    """What a checkpoint or a finished fine-tune in `out` must match to be continued or reused
    (checkpoint_steps only changes when checkpoints are written, so it is left out)."""
    return _fingerprint({
        "format": FORMAT, "backbone": backbone, "base_weights_sha256": base_weights_sha256, "task": task,
        "recipe": {k: v for k, v in recipe.items() if k != "checkpoint_steps"}, "seed": seed, "precision": precision,
        "keep_best": keep_best, "train": train.describe, "val": None if val is None else val.describe})


def _remove_outputs(out: Path) -> None:
    """--overwrite: the files of an earlier fine-tune in `out` deleted."""
    for name in (REPORT, CHECKPOINT, WEIGHTS, BEST):
        (out / name).unlink(missing_ok=True)


def _finished_result(out: Path, fingerprint: str) -> FinetuneResult | None:
    """The result of a finished fine-tune of this configuration in `out`; None when none finished there; a
    finished one of another configuration is an error."""
    report_path = out / REPORT
    if not report_path.exists():
        return None
    try:
        report = json.loads(report_path.read_text())
    except ValueError:
        report = {}
    if report.get("config_sha256") == fingerprint and (out / WEIGHTS).exists():
        return FinetuneResult(out, out / WEIGHTS, report["weights_sha256"], report, already_done=True)
    raise FinetuneError(f"{report_path}: {out} holds a finished fine-tune of another configuration; "
                        "use another --out, or --overwrite")


def _new_model(loaded, num_outputs: int, seed: int, device):
    """The backbone with a new head of `num_outputs` (seeded), on the device."""
    torch.manual_seed(seed)
    model = replace_head(loaded.model, num_outputs, seed=seed)
    # channels_last on the GPU (cuDNN's fast layout); on the CPU torch 2.14's convolution backward of a
    # 1-channel channels_last input crashes (SIGSEGV), so the CPU trains in the default layout
    return model.to(device, memory_format=_memory_format(device))


def _resume(t: _Training, echo) -> _Progress:
    """The progress of the checkpoint in `out` (its weights loaded into the model), or a fresh start."""
    if not t.checkpoint_path.exists():
        return _Progress()
    ck = _load_checkpoint(t.checkpoint_path)
    if ck.get("config_sha256") != t.fingerprint:
        raise FinetuneError(f"{t.checkpoint_path}: the checkpoint is of another configuration (backbone, weights, "
                            "task, recipe, data, seed or precision differ); use another --out, or --overwrite")
    network_of(t.model).load_state_dict(ck["model"])
    p = _Progress(start_epoch=int(ck["epoch"]), start_step=int(ck["step"]), history=list(ck["history"]),
                  best=ck.get("best"), optimizer_state=ck.get("optimizer"), scaler_state=ck.get("scaler"),
                  epoch_sums=tuple(ck.get("epoch_sums", (0.0, 0, 0))))
    p.resumed_from = f"epoch {p.start_epoch + 1} step {p.start_step}"
    echo(f"resuming {t.out} from {p.resumed_from} (of {len(t.plan)} epochs x {t.steps_per_epoch} steps)")
    return p


def _write_checkpoint(t: _Training, p: _Progress, epoch: int, step: int, optimizer, sums=(0.0, 0, 0)) -> None:
    """`<out>/checkpoint.pt` at (epoch, step): the weights, optimizer and scaler states, history and best."""
    _save_checkpoint(t.checkpoint_path, {
        "format": FORMAT, "config_sha256": t.fingerprint, "epoch": epoch, "step": step,
        "model": {k: v.detach().cpu() for k, v in network_of(t.model).state_dict().items()},
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scaler": None if t.scaler is None else t.scaler.state_dict(), "history": p.history, "best": p.best,
        "epoch_sums": [float(sums[0]), int(sums[1]), int(sums[2])],
    })


def _train_epochs(t: _Training, p: _Progress, progress: bool) -> None:
    """The epochs of the plan from where `p` stands, under a progress bar; a stop (Ctrl-C or
    stop_after_steps) writes a checkpoint and raises KeyboardInterrupt."""
    from tqdm import tqdm

    steps_per_epoch = t.steps_per_epoch
    bar = tqdm(total=len(t.plan) * steps_per_epoch, initial=p.start_epoch * steps_per_epoch + p.start_step,
               unit="step", desc=f"finetune {t.task}", disable=not progress, dynamic_ncols=True, smoothing=0.1)
    optimizer = None
    with _StopFlag() as stop:
        for epoch in range(p.start_epoch, len(t.plan)):
            optimizer = _epoch_optimizer(t, p, epoch, optimizer)
            _train_epoch(t, p, epoch, optimizer, stop, bar)
    bar.close()


def _epoch_optimizer(t: _Training, p: _Progress, epoch: int, optimizer):
    """The optimizer of the epoch: a fresh one on the stage's parameters when a stage (or this call) starts;
    a checkpoint's optimizer and scaler states continued in the first epoch of this call."""
    plan = t.plan
    si = plan[epoch][0]
    if optimizer is None or plan[epoch - 1][0] != si:  # a new stage: its parameters, a fresh optimizer
        stage = t.stages[si]
        params = _set_stage(t.model, stage)
        optimizer = make_optimizer(params, t.recipe["optimizer"], stage["lr"])
    if p.optimizer_state is not None:
        optimizer.load_state_dict(p.optimizer_state)  # the stage's optimizer continues where it stopped
    if t.scaler is not None and p.scaler_state is not None:
        t.scaler.load_state_dict(p.scaler_state)
    p.optimizer_state = p.scaler_state = None
    return optimizer


def _train_epoch(t: _Training, p: _Progress, epoch: int, optimizer, stop: _StopFlag, bar) -> None:
    """One epoch: its steps, the validation scores, its history entry and line, a checkpoint, a stop if asked."""
    plan = t.plan
    si = plan[epoch][0]
    stage = t.stages[si]
    sums, timed, seconds = _train_steps(t, p, epoch, stage, optimizer, stop, bar)
    entry = _epoch_entry(epoch, stage, sums, timed, seconds)
    if t.val is not None:
        entry["val"] = _validate(t, p, epoch)
    p.history.append(entry)
    bar.write(_epoch_line(epoch, len(plan), stage, entry), file=sys.stderr)
    next_stage_starts = epoch + 1 < len(plan) and plan[epoch + 1][0] != si  # it takes a fresh optimizer
    _write_checkpoint(t, p, epoch + 1, 0, None if next_stage_starts else optimizer)
    if stop.set or (_steps_used_up(t, p) and epoch + 1 < len(plan)):
        bar.close()
        raise KeyboardInterrupt(f"stopped after epoch {epoch + 1}; checkpoint {t.checkpoint_path}")


def _train_steps(t: _Training, p: _Progress, epoch: int, stage: dict, optimizer, stop: _StopFlag, bar):
    """The epoch's steps from where this call starts it; returns ((loss sum, rows, images) of the epoch,
    images trained by this call, seconds)."""
    batches = epoch_batches(len(t.train), t.batch_size, t.seed, epoch)
    resumed = epoch == p.start_epoch
    step0 = p.start_step if resumed else 0
    loss_sum, loss_rows, images = p.epoch_sums if resumed else (0.0, 0, 0)
    n_epochs = len(t.plan)
    t0, timed = time.perf_counter(), 0  # images/s: of the images this call trained
    for step, (pos, pixels, errors) in enumerate(_loader(t.train, t.spec, batches[step0:], t.workers), start=step0):
        loss, rows = _train_batch(t, optimizer, stage, epoch, step, pos, pixels, errors)
        loss_sum += loss * rows
        loss_rows += rows
        images += rows
        timed += rows
        p.steps_this_call += 1
        bar.update(1)
        rate = timed / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(epoch=f"{epoch + 1}/{n_epochs}", stage=stage["name"],
                        loss=f"{loss_sum / max(loss_rows, 1):.4f}", img_s=f"{rate:.1f}")
        if step + 1 < len(batches):
            _checkpoint_within_epoch(t, p, epoch, step, optimizer, (loss_sum, loss_rows, images), stop, bar)
    return (loss_sum, loss_rows, images), timed, time.perf_counter() - t0


def _train_batch(t: _Training, optimizer, stage: dict, epoch: int, step: int, pos, pixels, errors) -> tuple[float, int]:
    """One step on the batch's decoded images: (its loss, their count); (0.0, 0) and no step when fewer
    than two decode."""
    ok = np.array([not e for e in errors])
    if ok.sum() < 2:
        return 0.0, 0
    sel = torch.from_numpy(ok)
    loss = train_step(t.model, optimizer, t.loss_fn, t.norm, pixels[sel], _labels_of(t.train, pos[ok], t.device),
                      stage=stage, aug=t.recipe["augment"], rng=np.random.default_rng([t.seed, epoch, step, 7]),
                      torch_seed=(t.seed * 1_000_003 + epoch * 100_003 + step) % (2 ** 63),
                      device=t.device, precision=t.precision, scaler=t.scaler)
    return loss, int(ok.sum())


def _steps_used_up(t: _Training, p: _Progress) -> bool:
    return t.stop_after_steps is not None and p.steps_this_call >= t.stop_after_steps


def _checkpoint_within_epoch(t: _Training, p: _Progress, epoch: int, step: int, optimizer, sums, stop: _StopFlag,
                             bar) -> None:
    """After a step that does not end its epoch: a checkpoint every `checkpoint_steps` steps; on a stop
    (Ctrl-C or stop_after_steps), a checkpoint and KeyboardInterrupt."""
    interrupted = stop.set or _steps_used_up(t, p)
    every = t.recipe["checkpoint_steps"]
    if interrupted or (every and (step + 1) % every == 0):
        _write_checkpoint(t, p, epoch, step + 1, optimizer, sums)
    if interrupted:
        bar.close()
        raise KeyboardInterrupt(f"stopped at epoch {epoch + 1} step {step + 1}; checkpoint {t.checkpoint_path}")


def _epoch_entry(epoch: int, stage: dict, sums, timed: int, seconds: float) -> dict:
    """The epoch's line of the history (finetune.json "epochs")."""
    loss_sum, loss_rows, images = sums
    return {"epoch": epoch + 1, "stage": stage["name"], "train": stage["train"], "lr": stage["lr"],
            "train_loss": loss_sum / max(loss_rows, 1), "images": images, "seconds": round(seconds, 3),
            "images_per_s": timed / seconds if seconds > 0 else 0.0}


def _validate(t: _Training, p: _Progress, epoch: int) -> dict:
    """The validation scores after the epoch; with keep_best, a new best epoch's weights in best.safetensors."""
    scores = evaluate(t.model, t.val, t.spec, device=t.device, precision=t.precision, task=t.task,
                      batch_size=t.batch_size, workers=t.workers)
    key = headline(t.task)
    if t.keep_best and (p.best is None or scores[key] > p.best["score"]):
        p.best = {"epoch": epoch + 1, "score": scores[key]}
        save_weights(t.model, t.out / BEST, logit_names=t.names, backbone=t.backbone, task=t.task)
    return scores


def _epoch_line(epoch: int, n_epochs: int, stage: dict, entry: dict) -> str:
    msg = f"epoch {epoch + 1}/{n_epochs} [{stage['name']}] train loss {entry['train_loss']:.4f}"
    if "val" in entry:
        msg += " val " + ", ".join(f"{k} {v:.4f}" for k, v in entry["val"].items())
    return msg


def _save_result(t: _Training, p: _Progress, recipe_source: str | None) -> FinetuneResult:
    """The kept weights as `<out>/model.safetensors`, the report as finetune.json; the checkpoint removed."""
    sha, kept = _keep_weights(t, p.best)
    report = _report(t, p, weights_sha256=sha, kept=kept, recipe_source=recipe_source)
    _atomic(t.out / REPORT, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    t.checkpoint_path.unlink(missing_ok=True)
    return FinetuneResult(t.out, t.out / WEIGHTS, sha, report, resumed_from=p.resumed_from)


def _keep_weights(t: _Training, best: dict | None) -> tuple[str, str]:
    """model.safetensors: the best epoch's weights (keep_best), else the last epoch's; returns (sha256, what
    was kept)."""
    if t.keep_best and best is not None:
        os.replace(t.out / BEST, t.out / WEIGHTS)
        from .weights import sha256_file

        kept = (f"best epoch {best['epoch']} by validation {headline(t.task)} "
                "(optimistic: chosen on the rows it is scored on)")
        return sha256_file(t.out / WEIGHTS), kept
    sha = save_weights(t.model, t.out / WEIGHTS, logit_names=t.names, backbone=t.backbone, task=t.task)
    return sha, "last epoch"


def _report(t: _Training, p: _Progress, *, weights_sha256: str, kept: str, recipe_source: str | None) -> dict:
    """finetune.json: the base model, recipe, data, per-epoch metrics and the result's sha256."""
    from .inference import describe_device

    loaded, out = t.loaded, t.out
    return {
        "format": FORMAT, "config_sha256": t.fingerprint, "backbone": t.backbone,
        "base_weights_sha256": loaded.weights_sha256,
        "base_weights_path": None if loaded.weights_path is None else str(loaded.weights_path),
        "base_identity": t.spec.identity(), "task": t.task, "logit_names": list(t.names), "recipe": t.recipe,
        "recipe_source": recipe_source, "seed": t.seed, "device": describe_device(t.device), "precision": t.precision,
        "data": {"train": t.train.describe, "val": None if t.val is None else t.val.describe},
        "epochs": p.history, "kept": kept, "best": p.best, "weights": WEIGHTS, "weights_sha256": weights_sha256,
        "featurize": f"featurize run --backbone {t.backbone} --weights {out / WEIGHTS} --source-name <name>",
    }


def _forward(model, x, device, precision):
    with _autocast(device, precision):
        return model(x)[1]


def _losses(model, loss_fn, x, labels, mix, device, precision):
    """The step's loss at the current weights: plain, Mix-up, or Mix-augment (Mix-up + loss on the real images)."""
    if mix is None:
        return loss_fn(_forward(model, x, device, precision).float(), labels)
    kind, xm, lam, perm = mix
    out = _forward(model, xm, device, precision).float()
    y2 = {k: v[perm] for k, v in labels.items()}
    loss = lam * loss_fn(out, labels) + (1 - lam) * loss_fn(out, y2)
    if kind == "mixaugment":
        loss = loss + loss_fn(_forward(model, x, device, precision).float(), labels)
    return loss


def train_step(model, optimizer, loss_fn, norm, pixels, labels, *, stage, aug, rng, torch_seed, device,
               precision, scaler=None) -> float:
    """One optimisation step (two forward/backward passes with SAM); returns the loss at the weights before it."""
    from .finetune_augment import augment_pixels, erase, mix_batch
    from .finetune_sam import SAM

    torch.manual_seed(torch_seed)  # dropout / drop-path: the same on a resumed run
    _train_mode(model, stage)
    x = erase(norm(augment_pixels(norm.pixels01(pixels), aug, rng)), aug, rng)
    mix = None
    if aug.get("mix"):
        xm, lam, perm = mix_batch(x, float(aug["mix_alpha"]), rng)
        mix = (aug["mix"], xm, lam, perm)
    loss = _losses(model, loss_fn, x, labels, mix, device, precision)
    value = float(loss.detach())
    if isinstance(optimizer, SAM):
        if scaler is not None:
            scaler.scale(loss).backward()
            ok = optimizer.first_step(scale=float(scaler.get_scale()))
        else:
            loss.backward()
            ok = optimizer.first_step()
        optimizer.zero_grad()
        with _bn_frozen(model):
            loss2 = _losses(model, loss_fn, x, labels, mix, device, precision)
        if scaler is not None:
            scaler.scale(loss2).backward()
            optimizer.restore()
            scaler.step(optimizer.base)
            scaler.update()
        else:
            loss2.backward()
            if ok:
                optimizer.second_step()  # back to w, then the base step with the gradient at w + e
            else:
                optimizer.restore()  # non-finite gradient: skip the step
        optimizer.zero_grad()
    else:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return value


def predict(model, data: FinetuneData, spec, *, device, precision: str = "fp32", batch_size: int = 64,
            workers: int = 0) -> np.ndarray:
    """Outputs (n, K) of the model in eval mode; rows whose image fails to decode are NaN."""
    norm = _Normalizer(spec, device)
    batches = [np.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]
    outs = None
    model.eval()
    with torch.inference_mode():
        for pos, pixels, errors in _loader(data, spec, batches, workers):
            o = _forward(model, norm(norm.pixels01(pixels)), device, precision).float().cpu().numpy()
            if outs is None:
                outs = np.full((len(data), o.shape[1]), np.nan, np.float32)
            o[np.array([bool(e) for e in errors])] = np.nan
            outs[pos] = o
    return outs


def evaluate(model, data: FinetuneData, spec, *, device, precision, task, batch_size, workers) -> dict:
    outs = predict(model, data, spec, device=device, precision=precision, batch_size=batch_size, workers=workers)
    finite = np.isfinite(outs).all(1)
    labels = {k: (v[finite]) for k, v in data.labels.items()}
    return score(task, outs[finite], labels)
