"""Thread counts from the CPUs a process may use, passive OpenMP waiting, and --threads, in real processes."""
import os
import subprocess
import sys

import pytest

from featheads.core.threads import (POOL_VARIABLES, available_cpus, cgroup_cpu_limit, prepare_threads,
                                    threads_from_argv)


def test_cgroup_quota_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 1.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


def test_available_cpus_is_the_affinity_mask_capped_by_the_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == affinity  # no quota files there
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert available_cpus(tmp_path) == 1


def test_threads_from_argv():
    assert threads_from_argv(["fit", "mtl", "--threads", "3"]) == 3
    assert threads_from_argv(["fit", "--threads=1"]) == 1
    assert threads_from_argv(["fit", "--threads"]) is None
    assert threads_from_argv(["fit", "--threads", "x"]) is None
    assert threads_from_argv(["fit"]) is None


def test_prepare_threads_keeps_what_the_user_set_unless_threads_asks_for_fewer():
    env = {"OMP_NUM_THREADS": "7"}
    n = prepare_threads(None, env)
    assert n == available_cpus() and env["OMP_NUM_THREADS"] == "7" and env["OPENBLAS_NUM_THREADS"] == str(n)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    assert prepare_threads(1, env) == 1
    assert all(env[v] == "1" for v in POOL_VARIABLES) and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"FEATHEADS_THREADS": "1"}
    assert prepare_threads(None, env) == 1 and env["OMP_NUM_THREADS"] == "1"


PROBE = """
import sys
sys.argv = ["heads"] + sys.argv[1:]
import {group}.cli  # sets the pools up before numpy / torch load
import os, torch
from threadpoolctl import threadpool_info
blas = {{p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}}
print(torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"], sorted(blas))
"""


@pytest.mark.parametrize("group", ["heads", "blend"])
def test_the_commands_size_torch_and_blas_from_the_cpus_and_threads_before_they_load(group):
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES + ("OMP_WAIT_POLICY", "FEATHEADS_THREADS")}
    code = PROBE.format(group=group)
    out = subprocess.run([sys.executable, "-c", code, "fit", "--threads", "1"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "1" and out[1] == "PASSIVE" and out[2:] in (["[1]"], ["[]"])
    out = subprocess.run([sys.executable, "-c", code, "fit"], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out[0] == str(available_cpus())
