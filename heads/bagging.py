"""Bagging with soft voting (Jeong et al., ABAW4 LSD; seeds/002): "weak" members fitted on samples of
videos, their probabilities (or VA values) averaged.

Recipe: any head's params may hold

    "bagging": {"estimators": 5, "fraction": 0.2, "seed": 0}

Member m is fitted on the rows of a random set of videos (a video's frames stay together) holding
about `fraction` of the labelled training rows. When estimators x fraction <= 1 the members' video
sets are disjoint: the videos are shuffled once and member m takes those whose middle labelled row
falls in [m, m + 1) x fraction x (labelled rows), so each holds the fraction within half a video.
Otherwise each member shuffles the videos itself and takes them in turn until it has at least
fraction x (labelled rows). Videos without a label of the task are never drawn. A
temporal member gets all rows of its videos (unlabelled frames stay context). Member m is seeded
random_state + m. `heads fit ... --keep-members` also writes each member's predictions as runs
`<run>.m0`, `<run>.m1`, ... so that "strong + weak" ensembles can be blended.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from .registry import class_by_name, make_head

__all__ = ["BaggedHead", "check_bagging", "member_videos"]

_KEYS = {"estimators", "fraction", "seed"}


def check_bagging(bagging) -> dict:
    """The bagging options with defaults filled; ValueError naming the bad key."""
    if not isinstance(bagging, dict):
        raise ValueError(f'bagging={bagging!r}; expected {{"estimators": 5, "fraction": 0.2, "seed": 0}}')
    unknown = set(bagging) - _KEYS
    if unknown:
        raise ValueError(f"bagging has unknown key {sorted(unknown)[0]!r}; keys: {', '.join(sorted(_KEYS))}")
    out = {"estimators": 5, "fraction": 0.2, "seed": 0, **bagging}
    if not isinstance(out["estimators"], (int, np.integer)) or out["estimators"] < 1:
        raise ValueError(f"bagging estimators={out['estimators']!r}; expected a positive integer")
    if not isinstance(out["fraction"], (int, float)) or not 0 < out["fraction"] <= 1:
        raise ValueError(f"bagging fraction={out['fraction']!r}; expected 0 < fraction <= 1")
    if not isinstance(out["seed"], (int, np.integer)):
        raise ValueError(f"bagging seed={out['seed']!r}; expected an integer")
    return out


def labelled_mask(kind: str, y) -> np.ndarray:
    """Rows with a label: class -1, AU rows with a -1, VA rows with a NaN are unlabelled; joint: any task."""
    if kind == "joint":
        return np.logical_or.reduce([labelled_mask(k, y[t]) for t, k in
                                     (("expr", "multiclass"), ("va", "regression"), ("au", "multilabel"))])
    y = np.asarray(y)
    if kind == "regression":
        return np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    if kind == "multilabel":
        return (y.reshape(len(y), -1) >= 0).all(axis=1)
    return y.reshape(-1) >= 0


def member_videos(groups, labelled, estimators: int, fraction: float, seed: int) -> list[np.ndarray]:
    """For each member, the sorted array of group values (videos) it is fitted on."""
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    lab_per_video = np.bincount(inv, weights=np.asarray(labelled, float), minlength=len(uniq))
    target = fraction * lab_per_video.sum()
    rng = np.random.default_rng(seed)
    if estimators * fraction <= 1.0 + 1e-9:  # disjoint: consecutive slices of one shuffled order
        order = rng.permutation(len(uniq))
        order = order[lab_per_video[order] > 0]
        counts = lab_per_video[order]
        mid = np.cumsum(counts) - counts / 2  # each video's middle, in labelled rows
        slot = np.floor(mid / target).astype(np.int64) if target > 0 else np.zeros(len(order), np.int64)
        members = [order[slot == m] for m in range(estimators)]
    else:  # each member draws its own videos until it has at least `fraction` of the labelled rows
        members = []
        for _ in range(estimators):
            order = rng.permutation(len(uniq))
            order = order[lab_per_video[order] > 0]
            k = int(np.searchsorted(np.cumsum(lab_per_video[order]), target - 1e-9)) + 1
            members.append(order[:k])
    for m in members:
        if len(m) == 0:
            raise ValueError(f"bagging: not enough labelled videos for {estimators} members of "
                             f"{fraction:.0%} (there are {int((lab_per_video > 0).sum())})")
    members = [np.sort(uniq[m]) for m in members]
    return members


class BaggedHead(BaseEstimator):
    """`estimators` copies of head `head` (recipe name) of label kind `kind` with `params`, each fitted
    on a sample of videos; predictions are the members' mean (soft voting).

    fit(X, y, groups=videos, **context) needs groups; context (frames=) goes to temporal members.
    """

    def __init__(self, *, head="mlp", kind="multiclass", params=None, bagging=None, n_classes=None,
                 random_state=0, verbose=False):
        self.head = head
        self.kind = kind
        self.params = params
        self.bagging = bagging
        self.n_classes = n_classes
        self.random_state = random_state
        self.verbose = verbose

    @property
    def temporal(self) -> bool:
        from .registry import head_class

        return bool(getattr(head_class(self.head, self.kind), "temporal", False))

    def recipe_params(self) -> dict:
        """The params as written in a recipe: the member's parameters plus "bagging"."""
        return {**(self.params or {}), "bagging": check_bagging(self.bagging or {})}

    def _member(self, m: int):
        params = dict(self.params or {})
        params.pop("verbose", None)
        head = make_head(self.head, self.kind, params, n_classes=self.n_classes, seed=int(self.random_state) + m)
        if "verbose" in head.get_params():
            head.set_params(verbose=self.verbose)
        return head

    def fit(self, X, y, groups=None, **context):
        opts = check_bagging(self.bagging or {})
        if groups is None:
            raise ValueError("bagging samples by video: pass groups= (the video of every row)")
        groups = np.asarray(groups)
        labelled = labelled_mask(self.kind, y)
        videos = member_videos(groups, labelled, opts["estimators"], opts["fraction"], opts["seed"])
        self.members_, self.member_videos_, self.member_rows_ = [], [], []
        for m, vids in enumerate(videos):
            rows = np.flatnonzero(np.isin(groups, vids))
            ym = {t: np.asarray(v)[rows] for t, v in y.items()} if isinstance(y, dict) else np.asarray(y)[rows]
            ctx = {k: np.asarray(v)[rows] for k, v in context.items() if v is not None}
            head = self._member(m)
            head.fit(np.asarray(X)[rows], ym, groups=groups[rows], **ctx)
            self.members_.append(head)
            self.member_videos_.append([str(v) for v in vids])
            self.member_rows_.append(int(labelled[rows].sum()))
        self.n_features_in_ = int(np.asarray(X).shape[1])
        if hasattr(self.members_[0], "classes_"):
            self.classes_ = self.members_[0].classes_
        return self

    def _mean(self, method: str, X, context):
        outs = [getattr(h, method)(X, **context) for h in self.members_]
        if isinstance(outs[0], dict):
            return {t: np.mean([o[t] for o in outs], axis=0) for t in outs[0]}
        return np.mean(outs, axis=0)

    def predict_proba(self, X, **context):
        return self._mean("predict_proba", X, context)

    def predict(self, X, **context):
        if self.kind == "regression":
            return self._mean("predict", X, context)
        p = self.predict_proba(X, **context)
        if self.kind == "multilabel":
            return (p >= 0.5).astype(np.int64)
        return self.classes_[np.argmax(p, axis=1)]

    def predict_tasks(self, X, **context):
        return self._mean("predict_tasks", X, context)

    # -- persistence (heads.persist): each member's state under "m<i>."
    def _fitted_state(self):
        meta = {"n_features_in_": self.n_features_in_, "member_videos_": self.member_videos_,
                "member_rows_": self.member_rows_, "members": []}
        arrays, texts = {}, {}
        for i, h in enumerate(self.members_):
            m_meta, m_arrays, m_texts = h._fitted_state()
            meta["members"].append({"class": type(h).__name__, "params": h.get_params(deep=False), "state": m_meta,
                                    "texts": sorted(m_texts)})
            arrays.update({f"m{i}.{k}": v for k, v in m_arrays.items()})
            texts.update({f"m{i}.{k}": v for k, v in m_texts.items()})
        return meta, arrays, texts

    def _restore_state(self, meta, arrays, texts):
        self.n_features_in_ = meta["n_features_in_"]
        self.member_videos_ = meta["member_videos_"]
        self.member_rows_ = meta["member_rows_"]
        self.members_ = []
        for i, doc in enumerate(meta["members"]):
            cls = class_by_name(doc["class"])
            h = cls(**doc["params"])
            p = f"m{i}."
            h._restore_state(doc["state"], {k[len(p):]: v for k, v in arrays.items() if k.startswith(p)},
                             {k[len(p):]: v for k, v in texts.items() if k.startswith(p)})
            self.members_.append(h)
        if hasattr(self.members_[0], "classes_"):
            self.classes_ = self.members_[0].classes_
