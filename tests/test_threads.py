"""Thread counts from the CPUs a process may use, passive OpenMP waiting where other jobs hold the CPUs,
and --threads, in real processes."""
import os
import subprocess
import sys
import time

import pytest

from featheads.core.threads import (POOL_VARIABLES, available_cpus, busy_cpus, cgroup_cpu_limit,
                                    prepare_threads, threads_from_argv)


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
    n = prepare_threads(None, env, busy=0)
    assert n == available_cpus() and env["OMP_NUM_THREADS"] == "7" and env["OPENBLAS_NUM_THREADS"] == str(n)
    env = {"OMP_NUM_THREADS": "7", "OMP_WAIT_POLICY": "ACTIVE"}
    assert prepare_threads(1, env, busy=available_cpus()) == 1
    assert all(env[v] == "1" for v in POOL_VARIABLES) and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"FEATHEADS_THREADS": "1"}
    assert prepare_threads(None, env, busy=0) == 1 and env["OMP_NUM_THREADS"] == "1"


def test_openmp_waits_passively_only_where_other_jobs_hold_the_cpus():
    n = available_cpus()
    quiet, busy = {}, {}
    assert prepare_threads(None, quiet, busy=0) == n
    assert "OMP_WAIT_POLICY" not in quiet and "KMP_BLOCKTIME" not in quiet  # the libraries' short default spin
    prepare_threads(None, busy, busy=n)
    assert busy["OMP_WAIT_POLICY"] == "PASSIVE" and busy["KMP_BLOCKTIME"] == "0"
    if n > 1:  # one thread fits beside n - 1 busy CPUs; n threads do not
        one, all_threads = {}, {}
        prepare_threads(1, one, busy=n - 1)
        assert "OMP_WAIT_POLICY" not in one
        prepare_threads(None, all_threads, busy=n - 1)
        assert all_threads["OMP_WAIT_POLICY"] == "PASSIVE"
    kept = {"KMP_BLOCKTIME": "50"}
    prepare_threads(None, kept, busy=n)
    assert kept["OMP_WAIT_POLICY"] == "PASSIVE" and kept["KMP_BLOCKTIME"] == "50"


def test_busy_cpus_reads_the_runnable_tasks_less_this_one(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nctxt 5\nprocs_running 4\nprocs_blocked 0\n")
    assert busy_cpus(stat, samples=1) == 3
    stat.write_text("procs_running 1\n")
    assert busy_cpus(stat, samples=2, interval=0) == 0
    assert busy_cpus(tmp_path / "missing") == 0
    stat.write_text("no such line\n")
    assert busy_cpus(stat) == 0


PROBE = """
import sys
sys.argv = ["heads"] + sys.argv[1:]
import {group}.cli  # sets the pools up before numpy / torch load
import os, torch
from threadpoolctl import threadpool_info
blas = {{p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}}
print(torch.get_num_threads(), os.environ.get("OMP_WAIT_POLICY", "default"), sorted(blas))
"""


@pytest.mark.parametrize("group", ["heads", "blend"])
def test_the_commands_size_torch_and_blas_from_the_cpus_and_threads_before_they_load(group):
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES + ("OMP_WAIT_POLICY", "FEATHEADS_THREADS")}
    code = PROBE.format(group=group)
    out = subprocess.run([sys.executable, "-c", code, "fit", "--threads", "1"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "1" and out[2:] in (["[1]"], ["[]"])
    out = subprocess.run([sys.executable, "-c", code, "fit"], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out[0] == str(available_cpus())


SPIN = "import time\nt = time.time() + 60\nwhile time.time() < t:\n    pass\n"


def test_a_command_started_while_other_jobs_hold_every_cpu_waits_passively():
    n = available_cpus()
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES + ("OMP_WAIT_POLICY", "FEATHEADS_THREADS")}
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n + 1)]
    try:
        deadline = time.time() + 20
        while busy_cpus() < n and time.time() < deadline:  # the spinners are running
            time.sleep(0.1)
        out = subprocess.run([sys.executable, "-c", PROBE.format(group="heads"), "fit"], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout.split()
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert out[1] == "PASSIVE"
