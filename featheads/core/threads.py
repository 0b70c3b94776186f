"""How many threads the CPU work uses, and keeping thread pools from spinning on shared cores.

The heads' libraries each bring a thread pool: torch's intra-op pool (OpenMP), the BLAS under numpy and
scikit-learn (OpenBLAS), LightGBM's OpenMP. Left alone, each sizes itself to every core of the machine,
whatever share of it this process may use, and OpenMP threads spin-wait between parallel regions: on a
node where other jobs hold cores, that waiting burns the cores the work needs (the CPU seconds of the same
fit doubled in bench/heads_scale.py --loaded).

So, before those libraries load (the `heads` and `blend` commands do it first thing):

- the thread count is the CPUs this process may run on (`os.sched_getaffinity`), capped by a cgroup CPU
  quota (containers, SLURM) and by `--threads` / FEATHEADS_THREADS where given;
- every pool gets that count through its environment variable (a variable the user set is kept);
- where other jobs hold the CPUs when the command starts (`busy_cpus`: tasks runnable now, not counting this
  process), OpenMP waits passively (OMP_WAIT_POLICY=PASSIVE): an idle thread sleeps instead of spinning.
  Where the CPUs are free it keeps the libraries' default, a short spin (libgomp's GOMP_SPINCOUNT, about
  3 ms) before sleeping: passive waiting there puts a sleep and a wake-up between every two parallel
  operations, which made the `paper` AU head 1.1 to 2.5x slower on a quiet VM (bench/RESULTS.md). The
  check is made once, at start: a job that starts later meets threads that spin for at most ~3 ms at a time.

At run time `limit_threads(n)` applies the count to the pools already loaded (torch, BLAS via threadpoolctl
where installed). The pools run one after another, never stacked: a head fits with one library at a time.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path

POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
PASSIVE_WAIT = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
ENV_THREADS = "FEATHEADS_THREADS"

__all__ = ["available_cpus", "cgroup_cpu_limit", "prepare_threads", "limit_threads", "threads_from_argv",
           "apply_thread_limit", "busy_cpus"]


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by this process's cgroup quota (v2 cpu.max, v1 cpu.cfs_quota_us), None if unlimited."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota (rounded up, at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def threads_from_argv(argv=None) -> int | None:
    """The value of `--threads N` / `--threads=N` on a command line, read before click parses it."""
    argv = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith("--threads="):
            value = a[len("--threads="):]
        else:
            continue
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None  # click reports the bad value
    return None


def busy_cpus(stat: str | os.PathLike = "/proc/stat", samples: int = 3, interval: float = 0.01) -> int:
    """CPUs other jobs keep busy now: the tasks runnable on the machine (/proc/stat procs_running) less this
    process's one, the median of a few samples; 0 where /proc/stat cannot be read."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        try:
            with open(stat) as f:
                running = next(int(ln.split()[1]) for ln in f if ln.startswith("procs_running "))
        except (OSError, StopIteration, ValueError, IndexError):
            return 0
        counts.append(max(0, running - 1))
    return sorted(counts)[len(counts) // 2]


def prepare_threads(requested: int | None = None, environ=None, busy: int | None = None) -> int:
    """Set the pools' thread counts in the environment, and passive waiting where the CPUs are not free
    (`busy` CPUs held by other jobs, measured with `busy_cpus()` when None); returns the count.

    Effective only before numpy, torch or LightGBM load. Counts the user set in the environment stay, unless
    `requested` (from --threads) asks for fewer; a wait policy the user set always stays."""
    environ = os.environ if environ is None else environ
    n = available_cpus()
    wanted = requested if requested is not None else _int(environ.get(ENV_THREADS))
    if wanted is not None and wanted > 0:
        n = min(n, wanted)
    for var in POOL_VARIABLES:
        if requested is not None or var not in environ:
            environ[var] = str(n)
    if "OMP_WAIT_POLICY" not in environ:
        if busy is None:
            busy = busy_cpus()
        if available_cpus() - busy < n:
            for var, value in PASSIVE_WAIT.items():
                environ.setdefault(var, value)
    return n


def apply_thread_limit(n: int) -> int:
    """`--threads N` for the rest of the process: the environment (libraries not loaded yet, child processes),
    torch's pool and the BLAS pools already loaded (threadpoolctl). Returns the count used."""
    n = prepare_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    threadpool_limits(limits=n)
    return n


@contextlib.contextmanager
def limit_threads(n: int | None):
    """Within the block, the pools already loaded use at most n threads (None: leave them as they are)."""
    if n is None or n <= 0:
        yield
        return
    restore = []
    torch = sys.modules.get("torch")
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(int(n))
        restore.append(lambda: torch.set_num_threads(old))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    with threadpool_limits(limits=int(n)) if threadpool_limits is not None else contextlib.nullcontext():
        try:
            yield
        finally:
            for undo in restore:
                undo()


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
