"""`heads fit mtl | expr | lsd` as Python functions.

    fit_mtl(store, "paper", train="train", eval="val", out="runs/paper")     # expr + va + au heads
    fit_mtl(store, "paper", out="runs/joint", joint=True)                   # one multi-task network
    fit_expr(store, "lightgbm", out="runs/gbm_expr")
    fit_lsd(store, "paper", out="runs/lsd")

Each head is fitted on the training split's rows that have its task's label and valid features
(groups = videos, for early stopping). Then every row of the store is predicted, the evaluation
split is scored, the run folder is written (atomically) and the predictions go to
/predictions/<name> of the store (name = the run folder's name unless given). Nothing is written
before everything has been fitted and predicted, so a failing fit leaves no trace.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from featheads.core.errors import UserError
from store.feature_store import FeatureStore

from .evaluate import evaluate
from .feature_cache import FeatureCache
from .landmarks import landmark_targets
from .plan import JOINT_TASKS, Plan, training_target
from .predicting import predict_rows, write_predictions
from .recipe import RecipeError, choose_backbone, fill_backbone, load_recipe
from .registry import fit_takes_rows, make_head
from .run_folder import RUN_FORMAT, check_writable, write_run
from .temporal_rows import is_temporal, temporal_training_data

__all__ = ["fit_mtl", "fit_expr", "fit_lsd", "fit_tasks"]


def fit_mtl(store, recipe="auto", *, out, train="train", eval="val", joint=False, seed=0, backbone=None,
            name=None, overwrite=False, progress=False, keep_members=False, aux=None) -> dict:
    """Fit the expr, va and au heads of `recipe` (or its joint network with joint=True); returns the metrics.
    aux="landmarks" (joint only): OpenFace landmarks as an auxiliary target (heads.landmarks)."""
    return fit_tasks(store, recipe, ("expr", "va", "au"), command="mtl", out=out, train=train, eval=eval,
                     joint=joint, seed=seed, backbone=backbone, name=name, overwrite=overwrite, progress=progress,
                     keep_members=keep_members, aux=aux)


def fit_expr(store, recipe="auto", *, out, train="train", eval="val", seed=0, backbone=None, name=None,
             overwrite=False, progress=False, keep_members=False) -> dict:
    """Fit the expression head only (8 MTL classes)."""
    return fit_tasks(store, recipe, ("expr",), command="expr", out=out, train=train, eval=eval, seed=seed,
                     backbone=backbone, name=name, overwrite=overwrite, progress=progress,
                     keep_members=keep_members)


def fit_lsd(store, recipe="auto", *, out, train="train", eval="val", seed=0, backbone=None, name=None,
            overwrite=False, progress=False, keep_members=False) -> dict:
    """Fit the learning-from-synthetic-data head (6 classes, LSD order)."""
    return fit_tasks(store, recipe, ("lsd",), command="lsd", out=out, train=train, eval=eval, seed=seed,
                     backbone=backbone, name=name, overwrite=overwrite, progress=progress,
                     keep_members=keep_members)


def _entries(doc: dict, source: str, tasks, joint: bool) -> list[tuple[str, dict]]:
    """(key, recipe entry) of every head to fit."""
    if joint:
        if "joint" not in doc:
            raise RecipeError(f"{source}: joint: missing; --joint needs a \"joint\" entry (see recipe 'paper')")
        return [("joint", doc["joint"])]
    missing = [t for t in tasks if t not in doc["tasks"]]
    if missing:
        raise RecipeError(f"{source}: tasks.{missing[0]}: missing; this recipe has {', '.join(doc['tasks'])}")
    return [(t, doc["tasks"][t]) for t in tasks]


def _training_data(st: FeatureStore, plan: Plan, train_rows: np.ndarray, source: str, aux=None,
                   features: FeatureCache | None = None, *, as_rows: bool = False):
    """(X, y, groups, None) for one head: the labelled training rows with valid features; groups = videos.
    as_rows (with a FeatureCache): (X of every store row (the cache's array itself), y, groups, rows):
    the training rows are X[rows], not copied (for heads whose fit takes `rows`: the MLP heads)."""
    videos = st.samples(train_rows, columns=("video",))["video"]
    if plan.key == "joint":
        labels = {t: st.labels(t, train_rows) for t in JOINT_TASKS}
        mask = np.zeros(len(train_rows), bool)
        for t, y in labels.items():
            mask |= FeatureStore.label_mask(t, y)
    else:
        y = st.labels(plan.key, train_rows)
        mask = FeatureStore.label_mask(plan.key, y)
    if not mask.any():
        what = "any of expr, va, au" if plan.key == "joint" else f"a {plan.key!r}"
        raise UserError(f"{st.path}: no row of the training split has {what} label")
    rows = train_rows[mask]
    as_rows = as_rows and features is not None
    if as_rows:
        X, valid_all = features.read(plan.features)
        valid = valid_all[rows]
    else:
        X, valid = st.read_features(plan.features, rows) if features is None else features.read(plan.features, rows)
    if not valid.any():
        raise UserError(f"{st.path}: no labelled training row has valid features {plan.features!r} "
                        f"({source}: {plan.key})")
    if not as_rows:
        X = X[valid] if not valid.all() else X
    groups = videos[mask][valid]
    if plan.key == "joint":
        Y = {t: y[mask][valid] for t, y in labels.items()}
        if aux == "landmarks":  # auxiliary target, NaN (masked) where OpenFace has no landmarks
            Y["landmarks"] = landmark_targets(st, rows[valid])
    else:
        Y = training_target(plan.key, y[mask][valid])
    return X, Y, groups, (rows[valid] if as_rows else None)


def fit_tasks(store, recipe, tasks, *, command: str, out, train="train", eval="val", joint=False, seed=0,
              backbone=None, name=None, overwrite=False, progress=False, keep_members=False, aux=None) -> dict:
    """Fit the recipe's heads for `tasks`, predict every row, score `eval`, write run folder and predictions.

    keep_members: for bagged heads (heads.bagging), also write each member's predictions as runs
    `<name>.m0`, `<name>.m1`, ... (only to the store; the run folder holds the whole bag)."""
    out = Path(out)
    name = name or out.name
    if aux is not None and (aux != "landmarks" or not joint):
        raise UserError(f"--aux {aux}: the only auxiliary task is 'landmarks', of the joint head (--joint)")
    check_writable(out, overwrite)
    doc, source = load_recipe(recipe)
    t_start = time.perf_counter()
    with FeatureStore.open(store) as st:
        train_rows, eval_rows = st.rows(train), st.rows(eval)
        if name in st.runs() and not overwrite:
            raise UserError(f"{st.path}: predictions {name!r} exist already; choose another --out/--run "
                            f"or pass --overwrite")
        entries = _entries(doc, source, tasks, joint)
        if any("{backbone}" in e["features"] for _, e in entries):
            arrays = {s: list(st.source_info(s)["arrays"]) for s in st.sources()}
            backbone = choose_backbone(arrays, backbone, st.path)
        plans = [Plan(key, fill_backbone(e["features"], backbone, source, f"{key}.features"), e["head"],
                      dict(e.get("params", {}))) for key, e in entries]
        if keep_members:  # checked before fitting anything
            _check_members(st, plans, name, source, overwrite)
        sources = _source_identities(st, plans, source)
        features = FeatureCache(st)  # each spec read once, for training and predicting
        fitted, info = _fit_plans(st, plans, train_rows, source=source, aux=aux, seed=seed, progress=progress,
                                  features=features)
        rows = st.rows()
        preds = predict_rows(st, fitted, rows, progress=progress, features=features)
        member_preds = _member_predictions(st, fitted, rows, name, progress, features) if keep_members else {}
        del features
        pos = np.searchsorted(rows, eval_rows)
        labels = {t: st.labels(t, eval_rows) for t in preds}
        metrics = {"split": eval, **evaluate(labels, {t: p[pos] for t, p in preds.items()})}
        store_path = str(Path(st.path).resolve())
    resolved = {"format": doc.get("format", 1), "name": doc.get("name", source),
                "description": doc.get("description", ""),
                "tasks": {p.key: _resolved_entry(p, h) for p, h in fitted if p.key != "joint"}}
    if joint:
        resolved["joint"] = _resolved_entry(*fitted[0])
    run_doc = {
        "format": RUN_FORMAT, "name": name, "command": command, "store": store_path, "train": train,
        "eval": eval, "seed": seed, "joint": joint, "aux": aux, "backbone": backbone, "recipe": source,
        "heads": info, "sources": sources, "versions": _versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    write_run(out, run_doc, resolved, metrics, fitted, overwrite=overwrite)
    run_attrs = {"recipe": json.dumps(resolved), "train": train, "eval": eval, "command": command, "seed": seed,
                 "joint": int(joint), "run_folder": str(out.resolve())}
    head_attrs = {t: {"head": p.head, "features": p.features} for p, _ in fitted for t in p.tasks}
    try:
        write_predictions(store, name, preds, rows, run_attrs=run_attrs, head_attrs=head_attrs)
        for member, mpreds in member_preds.items():
            write_predictions(store, member, mpreds, rows, run_attrs={**run_attrs, "bag_of": name},
                              head_attrs=head_attrs)
    except UserError as e:  # e.g. another process holds the store's writer lock
        raise UserError(f"{e}; the run folder {out} is complete: write its predictions later with "
                        f"`heads predict --heads {out} --store {store} --run {name}`") from None
    return metrics


def _check_members(st, plans, name: str, source: str, overwrite: bool) -> None:
    """--keep-members: some head is bagged, and its members' runs may be written."""
    n_members = [p.params["bagging"].get("estimators", 5) for p in plans if "bagging" in p.params]
    if not n_members:
        raise UserError(f"--keep-members: no head of {source} is bagged (add \"bagging\" to its params, "
                        "see recipe 'bagging')")
    taken = [f"{name}.m{i}" for i in range(max(n_members)) if f"{name}.m{i}" in st.runs()]
    if taken and not overwrite:
        raise UserError(f"{st.path}: predictions {taken[0]!r} exist already; choose another --run "
                        f"or pass --overwrite")


def _source_identities(st, plans, source: str) -> dict:
    """{feature source: its identity} of every source the plans read (a bad feature spec: RecipeError)."""
    sources = {}
    for plan in plans:
        try:
            for src, _ in st.parse_feature_spec(plan.features):
                sources[src] = st.source_info(src).get("identity", {})
        except UserError as e:
            raise RecipeError(f"{source}: {plan.key}.features {plan.features!r}: {e}") from None
    return sources


def _fit_plans(st, plans, train_rows, *, source: str, aux, seed: int, progress: bool,
               features: FeatureCache | None = None) -> tuple[list, dict]:
    """Fit every plan's head on the training rows -> ([(plan, fitted head)], {key: what run.json records})."""
    fitted, info = [], {}
    bar = tqdm(plans, desc="fit", unit="head", disable=not progress)
    for plan in bar:
        bar.set_postfix_str(f"{plan.key} ({plan.head})")
        context = {}
        try:
            head = make_head(plan.head, plan.kind, plan.params, n_classes=plan.n_classes, seed=seed)
        except ValueError as e:
            raise RecipeError(f"{source}: {plan.key}: {e}") from None
        if is_temporal(plan):  # all rows of the training videos, with frame numbers (heads.temporal)
            X, Y, groups, context["frames"] = temporal_training_data(st, plan, train_rows, features)
        else:
            X, Y, groups, rows = _training_data(st, plan, train_rows, source, aux, features,
                                                as_rows=fit_takes_rows(head))
            if rows is not None:
                context["rows"] = rows
        try:
            if "verbose" in head.get_params():
                head.set_params(verbose=progress)
            t0, c0 = time.perf_counter(), time.process_time()
            head.fit(X, Y, groups=groups, **context)
        except ValueError as e:
            raise RecipeError(f"{source}: {plan.key}: {e}") from None
        n_train = len(context["rows"]) if "rows" in context else len(X)
        info[plan.key] = {"features": plan.features, "head": plan.head, "class": type(head).__name__,
                          "n_features": int(X.shape[1]), "n_train_rows": int(n_train),
                          "fit_seconds": round(time.perf_counter() - t0, 3),
                          "fit_cpu_seconds": round(time.process_time() - c0, 3)}
        fitted.append((plan, head))
        del X, Y
    return fitted, info


def _member_predictions(st, fitted: list, rows: np.ndarray, name: str, progress: bool,
                        features: FeatureCache | None = None) -> dict:
    """{"<name>.m<i>": predictions} of the members of the bagged heads (heads.bagging); one run per
    member index, holding member i of every bagged head of the run."""
    out: dict = {}
    bags = [(plan, head) for plan, head in fitted if hasattr(head, "members_")]
    for i in range(max(len(h.members_) for _, h in bags)):
        members = [(plan, h.members_[i]) for plan, h in bags if i < len(h.members_)]
        out[f"{name}.m{i}"] = predict_rows(st, members, rows, progress=progress, features=features)
    return out


def _resolved_entry(plan: Plan, head) -> dict:
    if hasattr(head, "recipe_params"):  # a bag (heads.bagging): the member's params plus "bagging"
        params = head.recipe_params()
    else:
        params = {k: v for k, v in head.get_params().items() if k not in ("random_state", "n_classes", "verbose")}
    return {"features": plan.features, "head": plan.head, "params": json.loads(json.dumps(params, default=list))}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("featheads", "numpy", "scikit-learn", "torch", "lightgbm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
