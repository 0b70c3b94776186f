"""The on-disk schema of the feature store: label tasks, class orders, version.

Everything that names an order (classes, AUs, logit names) lives here so that readers, heads,
blends and submissions agree. See docs/STORE.md for the file layout.
"""
from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

# ABAW4 MTL expression order (docs/REFERENCE.md).
MTL_EXPR_CLASSES = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)
# ABAW4 AU order.
AU_NAMES = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
# ABAW4 learning-from-synthetic-data classes, in index order (class folder names are in LSD_FOLDERS).
LSD_CLASSES = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
LSD_FOLDERS = ("ANGRER", "DISGUST", "FEAR", "HAPPINESS", "SADNESS", "SURPRISE")
# AffectNet order of the MT-EmotiEffNet logits (8 emotions, then valence and arousal).
AFFECTNET_CLASSES = (
    "Anger", "Contempt", "Disgust", "Fear", "Happiness", "Neutral", "Sadness", "Surprise",
)
AFFECTNET_TO_MTL = (5, 0, 2, 3, 4, 6, 7, 1)  # MTL class i <- AffectNet column AFFECTNET_TO_MTL[i]
AFFECTNET_TO_LSD = (0, 2, 3, 4, 6, 7)
VA_NAMES = ("valence", "arousal")

# Emotion names as class folders and logits spell them (lower-cased) -> MTL expression index.
# AffectNet's Contempt becomes Other, as in AFFECTNET_TO_MTL; FER2013 has no Other.
EXPR_NAME_TO_MTL = {
    "neutral": 0,
    "angry": 1, "anger": 1,
    "disgust": 2, "disgusted": 2,
    "fear": 3, "fearful": 3,
    "happy": 4, "happiness": 4,
    "sad": 5, "sadness": 5,
    "surprise": 6, "surprised": 6,
    "contempt": 7, "other": 7,
}
# MTL expression index -> LSD index (the six basic emotions).
MTL_TO_LSD = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}


@dataclass(frozen=True)
class Task:
    """A label task of the store.

    kind: "class" (int8, -1 missing), "regression" (float32, NaN missing) or
    "multilabel" (int8 0/1, -1 missing; a row misses all columns or none).
    """

    name: str
    kind: str
    names: tuple  # class names (class) or column names (regression, multilabel)

    @property
    def width(self) -> int:
        return 1 if self.kind == "class" else len(self.names)

    @property
    def dtype(self) -> str:
        return "float32" if self.kind == "regression" else "int8"

    @property
    def shape_tail(self) -> tuple:
        return () if self.kind == "class" else (len(self.names),)


TASKS = {
    "expr": Task("expr", "class", MTL_EXPR_CLASSES),
    "va": Task("va", "regression", VA_NAMES),
    "au": Task("au", "multilabel", AU_NAMES),
    "lsd": Task("lsd", "class", LSD_CLASSES),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
