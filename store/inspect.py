"""What `store info` prints and what `store verify` checks."""
from __future__ import annotations

import numpy as np

from .feature_store import STATUS_INVALID, STATUS_MISSING, STATUS_OK, FeatureStore
from .schema import TASKS


def summarize(st: FeatureStore) -> dict:
    """A JSON-able summary: rows per split, label coverage per task and split, sources, predictions."""
    split = st.samples(columns=("split",))["split"]
    splits = sorted(set(split))
    out = {
        "path": st.path,
        "attrs": st.attrs(),
        "rows": st.n_rows,
        "splits": {s: int((split == s).sum()) for s in splits},
        "labels": {},
        "sources": {},
        "predictions": {},
    }
    for task in st.tasks():
        have = st.label_mask(task, st.labels(task))
        out["labels"][task] = {s: int(have[split == s].sum()) for s in splits}
    for name in st.sources():
        info = st.source_info(name)
        status = st.source_status(name)
        out["sources"][name] = {
            "arrays": {k: {"shape": list(v["shape"]), "dtype": v["dtype"]} for k, v in info["arrays"].items()},
            "ok": int((status == STATUS_OK).sum()),
            "invalid": int((status == STATUS_INVALID).sum()),
            "missing": int((status == STATUS_MISSING).sum()),
            "identity": info.get("identity", {}),
            "provenance": info.get("provenance", {}),
        }
    for run, tasks in st.runs().items():
        out["predictions"][run] = {}
        for task in tasks:
            p = st.read_predictions(run, task)
            done = np.isfinite(p.reshape(len(p), -1)).all(axis=1)
            out["predictions"][run][task] = {"shape": list(p.shape), "rows": int(done.sum())}
    return out


def format_summary(s: dict) -> str:
    lines = [f"{s['path']}: {s['rows']} rows, schema v{s['attrs'].get('schema_version')}, "
             f"toolkit {s['attrs'].get('toolkit_version')}"]
    splits = list(s["splits"])
    lines.append("")
    header = f"{'':<22}" + "".join(f"{sp:>12}" for sp in splits)
    lines.append(header)
    lines.append(f"{'rows':<22}" + "".join(f"{s['splits'][sp]:>12}" for sp in splits))
    for task, cov in s["labels"].items():
        lines.append(f"{'labels ' + task:<22}" + "".join(f"{cov[sp]:>12}" for sp in splits))
    if s["sources"]:
        lines.append("")
        lines.append("sources:")
        for name, src in s["sources"].items():
            arrays = ", ".join(f"{k} {tuple(v['shape'][1:])} {v['dtype']}" for k, v in src["arrays"].items())
            lines.append(f"  {name}: {arrays}; ok {src['ok']}, invalid {src['invalid']}, missing {src['missing']}")
            ident = src["identity"]
            if ident:
                lines.append("    identity: " + ", ".join(f"{k}={v}" for k, v in sorted(ident.items())))
            prov = src["provenance"]
            if prov:
                lines.append("    provenance: " + ", ".join(f"{k}={v}" for k, v in sorted(prov.items())))
    if s["predictions"]:
        lines.append("")
        lines.append("predictions:")
        for run, tasks in s["predictions"].items():
            items = ", ".join(f"{t} {tuple(v['shape'][1:])} on {v['rows']} rows" for t, v in tasks.items())
            lines.append(f"  {run}: {items}")
    return "\n".join(lines)


def verify(st: FeatureStore, max_errors: int = 20) -> list[str]:
    """Check every invariant of docs/STORE.md; return the violations found (empty when the store is sound)."""
    errors: list[str] = []

    def bad(msg):
        if len(errors) < max_errors:
            errors.append(msg)

    n = st.n_rows
    for name, ds in st._iter_row_datasets():
        if ds.shape[0] != n:
            bad(f"{name}: {ds.shape[0]} rows, expected {n} (row alignment)")
    if errors:
        return errors  # nothing below is meaningful when rows are misaligned

    smp = st.samples()
    keys = smp["key"]
    if len(set(keys)) != n:
        uniq, counts = np.unique(keys.astype(str), return_counts=True)
        for k in uniq[counts > 1][:5]:
            bad(f"samples/key: {str(k)!r} appears {int(counts[uniq == k][0])} times")
    for i in np.flatnonzero(np.asarray([not s for s in smp["split"]], dtype=bool))[:5]:
        bad(f"samples/split: row {i} ({keys[i]!r}) has an empty split name")

    for task in st.tasks():
        t = TASKS[task]
        y = st.labels(task)
        if t.kind == "class":
            wrong = np.flatnonzero((y < -1) | (y >= len(t.names)))
            for i in wrong[:5]:
                bad(f"labels/{task}: row {i} ({keys[i]!r}) has code {int(y[i])}, allowed -1..{len(t.names) - 1}")
        elif t.kind == "multilabel":
            wrong = np.flatnonzero(~np.isin(y, (-1, 0, 1)).all(axis=1))
            for i in wrong[:5]:
                bad(f"labels/{task}: row {i} ({keys[i]!r}) has codes {y[i].tolist()}, allowed -1, 0, 1")
            partial = np.flatnonzero((y < 0).any(axis=1) & (y >= 0).any(axis=1))
            for i in partial[:5]:
                bad(f"labels/{task}: row {i} ({keys[i]!r}) is partly missing {y[i].tolist()} (all or none)")
        else:
            half = np.flatnonzero(np.isnan(y).any(axis=1) & ~np.isnan(y).all(axis=1))
            for i in half[:5]:
                bad(f"labels/{task}: row {i} ({keys[i]!r}) is partly missing {y[i].tolist()}")
            out = np.flatnonzero(np.isfinite(y).all(axis=1) & (np.abs(y) > 1).any(axis=1))
            for i in out[:5]:
                bad(f"labels/{task}: row {i} ({keys[i]!r}) has {y[i].tolist()} outside [-1, 1]")

    for name in st.sources():
        status = st.source_status(name)
        codes = np.flatnonzero(~np.isin(status, (STATUS_MISSING, STATUS_OK, STATUS_INVALID)))
        for i in codes[:5]:
            bad(f"features/{name}/status: row {i} has code {int(status[i])}, allowed 0, 1, 2")
        ok = status == STATUS_OK
        for arr in st.source_info(name)["arrays"]:
            X, _ = st.read_features(f"{name}.{arr}")
            nonfinite = np.flatnonzero(ok & ~np.isfinite(X).all(axis=1))
            for i in nonfinite[:5]:
                bad(f"features/{name}/{arr}: row {i} ({keys[i]!r}) is marked ok but has non-finite values")
    return errors
