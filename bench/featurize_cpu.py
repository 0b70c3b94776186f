"""CPU throughput of `featurize run` against the hsemotion reference loop, same model, same images, same run.

    python bench/featurize_cpu.py                 # 384 images, prints a table, appends to bench/RESULTS.md
    python bench/featurize_cpu.py --n 128 --no-append

Images: 112x112 RGB JPEG faces of the toolkit's synthetic s-Aff-Wild2 layout (featurize.synthetic), read
through the abaw-mtl reader like a real run. Model: tf_efficientnet_b0 with a Linear(1280, 10) classifier,
the architecture of enet_b0_8_va_mtl, randomly initialised (seed 0; no download needed), with the
enet_b0_8_va_mtl preprocessing (224 px bilinear, ImageNet mean/std).

Reference (the hsemotion package's loop): per image PIL open + convert RGB, torchvision Resize((224, 224))
+ ToTensor + Normalize, torch.stack into batches, fp32 forward under torch.no_grad. Each reference round
runs in a fresh Python process, as a user's script would (nothing of ours loaded: no thread or allocator
settings), timed after a warm-up forward, model creation excluded.
Ours: featurize.pipeline.featurize_samples (what `featurize run` calls), timed end to end: model
preparation, DataLoader decoding workers, forward, journal parts and the store merge included.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from featurize.backbones import get_spec  # noqa: E402
from featurize.backbones._timm_embedder import TimmEmbedder  # noqa: E402
from featurize.images import open_image_root  # noqa: E402
from featurize.pipeline import FeaturizeConfig, default_workers, featurize_samples  # noqa: E402
from featurize.readers import read_abaw_mtl  # noqa: E402
from featurize.synthetic import SplitSize, write_dataset  # noqa: E402
from store import FeatureStore  # noqa: E402


def make_images(folder: Path, n: int) -> tuple[Path, Path]:
    videos = max(1, round(n / 100))
    paths = write_dataset(folder, seed=0, sizes={"train": SplitSize(videos, -(-n // videos) + 8)}, progress=False)
    return paths["train"], paths["images"]


def make_backbone():
    """Random tf_efficientnet_b0 + Linear(1280, 10) with random BatchNorm statistics (seed 0).

    timm's initial statistics (mean 0, var 1, gamma 1, beta 0) leave activations at ~1e-6; statistics
    re-estimated on images make a random network chaotic (features swing by 1e2 on rounding). Random
    statistics around the identity give well-conditioned features of order 0.1 to 1.
    """
    import timm

    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(c, generator=gen) * 0.2 - 0.1)
    model = TimmEmbedder(net).eval()
    return SimpleNamespace(model=model, spec=get_spec("enet_b0_8_va_mtl"), weights_sha256="random-init-seed0",
                           weights_path=None)


def trained_bf16_check(n: int = 3589) -> str | None:
    """bf16 vs fp32 features of a trained network (fer_mini_xception, ../shared/models) on FER2013
    test faces (../shared/data), when those files are there: how far bf16 moves real features."""
    shared = REPO.parent / "shared"
    weights, archive = shared / "models" / "fer_mini_xception.hdf5", shared / "data" / "fer2013.zip"
    if not (weights.is_file() and archive.is_file()):
        return None
    from featurize.backbones import load_backbone
    from featurize.readers import read_class_folders

    root = open_image_root(archive, "fer2013/test")
    samples = read_class_folders(root, "expr")[:: max(1, 3589 // n)][:n]
    backbone = load_backbone("fer_mini_xception", weights)
    feats = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            cfg = FeaturizeConfig(precision=precision, workers=0, progress=False)
            feats[precision] = ours(samples, root, Path(tmp) / f"{precision}.h5", backbone, precision, cfg)[1:]
    (e32, l32), (e16, l16) = feats["fp32"], feats["bf16"]
    spread = float(e32.std(axis=0).mean())
    agree = float((l32.argmax(1) == l16.argmax(1)).mean())
    cosine = (e16 * e32).sum(1) / np.maximum(np.linalg.norm(e16, axis=1) * np.linalg.norm(e32, axis=1), 1e-30)
    return (f"- trained network, bf16 vs fp32 (fer_mini_xception on {len(samples)} FER2013 test faces): embedding "
            f"cosine to fp32 mean {cosine.mean():.5f}, min {cosine.min():.5f} (target >= 0.999); same top class "
            f"{agree:.2%} (target >= 99%); embeddings max abs diff {np.abs(e16 - e32).max():.2e}, mean "
            f"{np.abs(e16 - e32).mean():.2e} (feature spread across images: std {spread:.2e}); logits max abs diff "
            f"{np.abs(l16 - l32).max():.2e}")


def reference_loop(model, paths: list[Path], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize((224, 224)),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    embs, logits = [], []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i:i + batch_size]])
            e, lg = model(batch)
            embs.append(e.numpy())
            logits.append(lg.numpy())
    return np.concatenate(embs), np.concatenate(logits)


def reference_round(tmp: Path, paths: list[Path], batch_size: int) -> tuple[float, np.ndarray, np.ndarray]:
    """One timed reference run in a fresh process: (seconds, embeddings, logits)."""
    (tmp / "paths.txt").write_text("\n".join(map(str, paths)))
    out = tmp / "reference.npz"
    subprocess.run([sys.executable, __file__, "--reference-child", str(tmp), "--batch-size", str(batch_size)],
                   check=True)
    with np.load(out) as z:
        return float(z["seconds"]), z["emb"], z["logits"]


def reference_child(tmp: Path, batch_size: int) -> int:
    paths = [Path(p) for p in (tmp / "paths.txt").read_text().splitlines()]
    model = make_backbone().model
    with torch.no_grad():  # warm up oneDNN (ours is timed cold, start-up included)
        model(torch.zeros(2, 3, 224, 224))
    t = time.perf_counter()
    emb, logits = reference_loop(model, paths, batch_size)
    seconds = time.perf_counter() - t
    np.savez(tmp / "reference.npz", seconds=seconds, emb=emb, logits=logits)
    return 0


def ours(samples, root, store: Path, backbone, source: str, config: FeaturizeConfig):
    if store.exists():
        store.unlink()
    t = time.perf_counter()
    featurize_samples(samples, root=root, store=store, split="bench", backbone=backbone, source_name=source,
                      config=config)
    seconds = time.perf_counter() - t
    with FeatureStore.open(store) as st:
        emb = st.read_features(f"{source}.embeddings")[0]
        logits = st.read_features(f"{source}.logits")[0]
    return seconds, emb, logits


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=384, help="number of images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="decoding workers of ours (default: featurize's)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best is reported")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--reference-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reference_child:
        return reference_child(args.reference_child, args.batch_size)
    load = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ann, images = make_images(tmp / "data", args.n)
        samples = read_abaw_mtl(ann)[: args.n]
        root = open_image_root(images)
        paths = [images / s.image for s in samples]
        n = len(samples)
        backbone = make_backbone()
        config = FeaturizeConfig(batch_size=args.batch_size, workers=args.workers, progress=False)
        precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
        ref_s, runs, feats = [], {p: [] for p in precisions}, {}
        for _ in range(args.repeat):  # interleaved, so that load from other processes hits all alike
            seconds, ref_emb, ref_logits = reference_round(tmp, paths, args.batch_size)
            ref_s.append(seconds)
            for precision in precisions:
                cfg = FeaturizeConfig(**{**config.__dict__, "precision": precision})
                s, emb, logits = ours(samples, root, tmp / f"{precision}.h5", backbone, precision, cfg)
                runs[precision].append(s)
                feats[precision] = (emb, logits)

    ref_best = min(ref_s)
    rows = [("reference (PIL + torchvision, fp32)", ref_best, 1.0, 0.0, 0.0, 0.0)]
    for precision, times in runs.items():
        if not times:
            continue
        emb, logits = feats[precision]
        d_emb, d_log = np.abs(emb - ref_emb), np.abs(logits - ref_logits)
        rows.append((f"featurize run --precision {precision}", min(times), ref_best / min(times),
                     float(max(d_emb.max(), d_log.max())), float(d_emb.mean()), float(d_log.mean())))
    scale = float(np.abs(ref_emb).mean())
    header = f"| pipeline | images/s | x reference | max abs diff | mean abs diff emb | mean abs diff logits |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for name, s, ratio, dmax, demb, dlog in rows:
        lines.append(f"| {name} | {n / s:.1f} | {ratio:.2f} | {dmax:.2e} | {demb:.2e} | {dlog:.2e} |")
    workers = config.workers if config.workers is not None else f"{default_workers('cpu')} (default, {os.cpu_count()} CPUs)"
    notes = [
        f"- {n} images 112x112 RGB JPEG (synthetic s-Aff-Wild2 layout), batch {args.batch_size}, "
        f"decoding workers {workers}; best of {args.repeat} runs each; "
        f"all timings: {', '.join(f'{k} ' + ' / '.join(f'{n / s:.1f}' for s in v) for k, v in {'reference': ref_s, **runs}.items() if v)} images/s",
        "- per-round ratios to the reference run just before: " + "; ".join(
            f"{k} " + ", ".join(f"{r / o:.2f}" for r, o in zip(ref_s, v)) for k, v in runs.items() if v),
        f"- model: tf_efficientnet_b0 + Linear(1280, 10), random init (seed 0) with random "
        f"BatchNorm statistics; |embedding| mean {scale:.3g} max {float(np.abs(ref_emb).max()):.3g}, "
        f"|logit| mean {float(np.abs(ref_logits).mean()):.3g} max {float(np.abs(ref_logits).max()):.3g}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads; machine: {cpu_name()}, {platform.platform()}; "
        f"load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
        f"(other processes share the CPUs: compare the interleaved per-round figures)",
    ]
    trained = None if args.no_bf16 else trained_bf16_check()
    if trained:
        notes.append(trained)
    table = "\n".join(lines + [""] + notes)
    print(table)
    if not args.no_append:
        cmd = "python bench/featurize_cpu.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        section = (f"\n## featurize_cpu: `featurize run` vs the hsemotion reference loop "
                   f"({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})\n\n`{cmd.strip()}`\n\n{table}\n")
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
