"""featurize.heap.keep_freed_memory: inside the block a freed large array's pages are reused by the next
one (no new page faults); outside it, and again after it, every large array faults its pages in afresh;
leaving the block hands the kept memory back. Run in a child process: the allocator settings are global."""
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="keep_freed_memory acts on glibc only (a no-op elsewhere)")

CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from featurize.heap import keep_freed_memory

    def rss_kb():
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS")).split()[1])

    def faults(rounds=4):  # page faults of each of `rounds` 64 MiB arrays, each freed before the next
        out = []
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            a = np.ones(16 << 20, np.float32)
            del a
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out

    res = {"outside": faults(), "rss_before": rss_kb()}
    with keep_freed_memory():
        res["inside"] = faults()
        a = np.ones(16 << 20, np.float32)
        del a
        res["rss_inside"] = rss_kb()
    res["rss_after"] = rss_kb()
    res["after"] = faults()
    print(json.dumps(res))
""")


def test_freed_pages_are_reused_inside_and_returned_after():
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    first = res["inside"][0]
    assert min(res["outside"]) > 100, res  # a fresh mapping per array: it faults its pages in
    assert first > 100, res  # the first array inside still needs its pages once
    assert max(res["inside"][1:]) < first / 20, res  # the next ones reuse them
    assert min(res["after"]) > 100, res  # the old behaviour is back after the block
    kept = res["rss_inside"] - res["rss_before"]
    assert kept > 32_000, res  # ~64 MiB stayed in the heap inside the block ...
    assert res["rss_after"] - res["rss_before"] < kept / 4, res  # ... and went back to the kernel on leaving
