"""A resolved recipe entry (which features, which head, for which tasks) and how a fitted head's
outputs become per-task score arrays. Shared by fitting (heads fit) and predicting (heads predict)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from store.schema import AU_NAMES, LSD_CLASSES, MTL_EXPR_CLASSES, VA_NAMES

from .registry import TASK_KINDS

# Column names of each task's predictions in the store.
OUTPUT_NAMES = {"expr": MTL_EXPR_CLASSES, "va": VA_NAMES, "au": AU_NAMES, "lsd": LSD_CLASSES}
JOINT_TASKS = ("expr", "va", "au")


@dataclass
class Plan:
    """One head to fit: `key` is a task name, or "joint" for the multi-task network (tasks expr, va, au)."""

    key: str
    features: str
    head: str
    params: dict = field(default_factory=dict)

    @property
    def tasks(self) -> tuple:
        return JOINT_TASKS if self.key == "joint" else (self.key,)

    @property
    def kind(self) -> str:
        return "joint" if self.key == "joint" else TASK_KINDS[self.key][0]

    @property
    def n_classes(self):
        return None if self.key == "joint" else TASK_KINDS[self.key][1]


def head_scores(plan: Plan, head, X: np.ndarray, **context) -> dict[str, np.ndarray]:
    """Per-task float32 scores of a fitted head: class/AU probabilities, VA values.
    context: groups= and frames= of the rows, for temporal heads (heads.temporal)."""
    if plan.kind == "joint":
        out = head.predict_tasks(X, **context)
    elif plan.kind == "regression":
        out = {plan.key: head.predict(X, **context)}
    else:
        out = {plan.key: head.predict_proba(X, **context)}
    return {t: np.asarray(v, dtype=np.float32).reshape(len(X), -1) for t, v in out.items()}


def training_target(task: str, y: np.ndarray) -> np.ndarray:
    """Store labels of labelled rows -> the y a head's fit takes."""
    return y.astype(np.float32 if TASK_KINDS[task][0] == "regression" else np.int64)
