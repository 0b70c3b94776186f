"""Resumability: kill -9 (or Ctrl-C) a real featurize process mid-run, run it again, and the store equals
an uninterrupted run's; journal parts from another identity are refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featurize.images import open_image_root
from featurize.journal import Journal, parts_dir
from featurize.pipeline import FeaturizeConfig, featurize_samples, source_identity
from featurize.readers import read_abaw_mtl
from featurize_fixtures import tiny_backbone, write_mtl_dataset
from store import STATUS_MISSING, FeatureStore, FingerprintMismatchError

TESTS = Path(__file__).resolve().parent
CONFIG = FeaturizeConfig(batch_size=2, workers=0, part_rows=2, progress=False)
SCRIPT = """
import sys
from featurize.images import open_image_root
from featurize.pipeline import FeaturizeConfig, featurize_samples
from featurize.readers import read_abaw_mtl
from featurize_fixtures import tiny_backbone

ann, images, store = sys.argv[1:4]
featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=store, split="train",
                  backbone=tiny_backbone(sleep=0.15),
                  config=FeaturizeConfig(batch_size=2, workers=0, part_rows=2, progress=False))
"""


def _run(ann, images, store, backbone=None):
    return featurize_samples(read_abaw_mtl(ann), root=open_image_root(images), store=store, split="train",
                             backbone=backbone or tiny_backbone(), config=CONFIG)


def _snapshot(store) -> dict:
    """Everything a user reads from the store: samples, labels, each source's arrays and status."""
    with FeatureStore.open(store) as st:
        snap = {f"samples/{k}": v for k, v in st.samples().items()}
        for task in st.tasks():
            snap[f"labels/{task}"] = st.labels(task)
        for src in st.sources():
            info = st.source_info(src)
            snap[f"{src}/identity"] = info["identity"]
            for arr in info["arrays"]:
                snap[f"{src}/{arr}"] = st.read_features(f"{src}.{arr}")[0]
            snap[f"{src}/status"] = st.source_status(src)
    return snap


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray) and a[k].dtype.kind == "f":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # NaN == NaN here
        elif isinstance(a[k], np.ndarray):
            assert a[k].tolist() == b[k].tolist(), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_to_the_same_store(tmp_path, sig):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=3, frames=6)
    store = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ann), str(images), str(store)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    parts = parts_dir(store, "tiny")
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and any(p.suffix == ".npz" for p in parts.iterdir())):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no journal part appeared"
        time.sleep(0.02)
    proc.send_signal(sig)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode != 0, out  # interrupted, not finished

    with FeatureStore.open(store) as st:  # the interrupted run left rows to do
        assert (st.source_status("tiny") == STATUS_MISSING).any()
    summary = _run(ann, images, store)
    assert summary.skipped >= 2 and summary.computed == len(keys) - summary.skipped
    assert (summary.ok, summary.invalid) == (len(keys), 0)
    assert not parts.exists()  # merged and cleaned up

    _run(ann, images, tmp_path / "uninterrupted.h5")
    _assert_same(_snapshot(store), _snapshot(tmp_path / "uninterrupted.h5"))


def test_parts_of_another_identity_are_refused(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=1, frames=4)
    store = tmp_path / "s.h5"
    _run(ann, images, store)
    other = Journal(store, "tiny", source_identity(tiny_backbone(seed=7), "fp32"))
    part = other.write_part(keys[:1], {"embeddings": np.zeros((1, 16)), "logits": np.zeros((1, 5))}, np.ones(1))
    with pytest.raises(FingerprintMismatchError) as e:
        _run(ann, images, store)
    assert str(part) in str(e.value) and "tiny-seed7" in str(e.value)


def test_parts_left_behind_are_merged_not_recomputed(tmp_path):
    ann, images, keys = write_mtl_dataset(tmp_path, videos=1, frames=4)
    store = tmp_path / "s.h5"
    bb = tiny_backbone()
    journal = Journal(store, "tiny", source_identity(bb, "fp32"))
    marker = np.full((2, 16), 7.0)  # values only a merge can put there
    journal.write_part(keys[1:3], {"embeddings": marker, "logits": np.zeros((2, 5))}, np.ones(2))
    summary = _run(ann, images, store, bb)
    assert (summary.skipped, summary.computed, summary.ok) == (2, 2, 4)
    with FeatureStore.open(store) as st:
        emb = st.read_features("tiny.embeddings")[0]
    assert (emb[1:3] == 7.0).all() and not (emb[[0, 3]] == 7.0).any()
