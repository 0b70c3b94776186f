"""Everything a blend needs about one split, read from the store once: inputs, labels, frames.

    data = BlendData.load(store, ["mlp", "openface", "logits:enet_b0_8_va_mtl"], "mtl", "val", max_delta=30)
    data.blends["expr"].scores(weights, smoothing)      # (8, n)
    data.labels["expr"][data.scored["expr"]]            # the labelled rows a score is computed on

For task "mtl" each of expr, va and au blends the inputs that have predictions for it; for a
single task every input must have it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from .combine import TaskBlend
from .inputs import input_tasks, read_inputs
from .smoothing import TemporalSmoother

__all__ = ["TASK_GROUPS", "task_list", "BlendData"]

TASK_GROUPS = {"mtl": ("expr", "va", "au"), "expr": ("expr",), "va": ("va",), "au": ("au",), "lsd": ("lsd",)}


def task_list(task: str) -> tuple[str, ...]:
    try:
        return TASK_GROUPS[task]
    except KeyError:
        raise UserError(f"unknown blend task {task!r}; choose one of {', '.join(TASK_GROUPS)}") from None


@dataclass
class BlendData:
    split: str
    rows: np.ndarray  # store rows of the split, sorted
    keys: np.ndarray
    videos: np.ndarray
    frames: np.ndarray
    smoother: TemporalSmoother | None  # None when max_delta is 0
    blends: dict[str, TaskBlend]  # per task
    labels: dict[str, np.ndarray]  # per task, over all rows of the split
    scored: dict[str, np.ndarray]  # per task: positions (into rows) that are labelled and covered

    @classmethod
    def load(
        cls, store: FeatureStore, inputs: list[str], task: str, split: str, *, max_delta: int,
        per_task_inputs: dict[str, list[str]] | None = None,
    ) -> "BlendData":
        """Read a split. per_task_inputs overrides which inputs each task blends (as in a spec)."""
        tasks = task_list(task)
        rows = store.rows(split)
        if len(rows) == 0:
            raise UserError(f"{store.path}: split {split!r} has no rows")
        used = per_task_inputs or _inputs_per_task(store, inputs, tasks)
        s = store.samples(rows, columns=("key", "video", "frame"))
        frames = np.asarray(s["frame"], dtype=np.int64)
        smoother = None
        if max_delta > 0:
            try:
                smoother = TemporalSmoother(s["video"], frames, max_delta=max_delta)
            except ValueError as e:
                raise UserError(f"{store.path}: split {split!r}: {e}") from None
        blends, labels, scored = {}, {}, {}
        for t in tasks:
            blends[t] = TaskBlend(t, used[t], read_inputs(store, used[t], t, rows), smoother)
            y = store.labels(t, rows)
            labels[t] = y
            scored[t] = np.flatnonzero(store.label_mask(t, y) & blends[t].covered)
        return cls(split, rows, s["key"], s["video"], frames, smoother, blends, labels, scored)

    @property
    def temporal(self) -> bool:
        """Whether smoothing can change anything: some row has a frame of its video within max_delta."""
        return self.smoother is not None and self.smoother.temporal

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.blends)

    def fingerprint(self) -> str:
        """sha256 of the inputs, labels and frames: a resumed study must see the same numbers."""
        h = hashlib.sha256()
        for t, b in self.blends.items():
            h.update(t.encode())
            b.update_hash(h)
            h.update(np.ascontiguousarray(self.labels[t]).tobytes())
        h.update(np.ascontiguousarray(self.frames).tobytes())
        h.update("\n".join(map(str, self.videos)).encode())
        return h.hexdigest()


def _inputs_per_task(store: FeatureStore, inputs: list[str], tasks: tuple[str, ...]) -> dict[str, list[str]]:
    has = {name: input_tasks(store, name) for name in inputs}
    out = {}
    for t in tasks:
        names = [n for n in inputs if t in has[n]]
        if len(tasks) == 1:
            lacking = [n for n in inputs if t not in has[n]]
            if lacking:
                n = lacking[0]
                raise UserError(
                    f"{store.path}: input {n!r} has no {t!r} predictions (it has: {', '.join(has[n]) or 'none'})"
                )
        if not names:
            raise UserError(f"{store.path}: none of the inputs {', '.join(inputs)} has {t!r} predictions")
        out[t] = names
    unused = [n for n in inputs if not any(n in v for v in out.values())]
    if unused:
        raise UserError(f"{store.path}: input {unused[0]!r} has none of the tasks {', '.join(tasks)}")
    return out
