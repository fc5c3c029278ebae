"""How many CPU threads this process may really use, and torch set to it.

`os.cpu_count()` (and torch's default) counts the host's cores. In a container or under `taskset` the
process may run on fewer: its affinity mask says which cores it may use, and a cgroup CPU quota
(`docker --cpus 2`, Kubernetes limits) how much time it gets on them. More compute threads than that
do not run at once; they wait on each other at every parallel region, and a decode step of a small
model has hundreds of those. The budget is the smaller of the two, at least 1; `TUNELOOP_THREADS`
overrides it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cpu_budget(cgroup: Path = CGROUP) -> int:
    """CPUs this process can use at once: affinity mask and cgroup quota, whichever is smaller."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota(cgroup)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_quota(cgroup: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`); None when
    there is none or it cannot be read."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.is_file():  # "QUOTA PERIOD" in microseconds, or "max PERIOD"
            parts = v2.read_text().split()
            if not parts or parts[0] == "max":
                return None
            return int(parts[0]) / (int(parts[1]) if len(parts) > 1 else 100000)
        v1 = cgroup / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota = int(v1.read_text())
            return None if quota <= 0 else quota / int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError, ZeroDivisionError):
        return None
    return None


def wanted() -> int | None:
    """The thread count to use: TUNELOOP_THREADS when set (a positive integer); None when OMP_NUM_THREADS is
    set (the user's or a launcher's choice, e.g. torchrun's one per rank: left alone); else the CPU budget."""
    value = os.environ.get("TUNELOOP_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            from tuneloop.errors import TuneloopError

            raise TuneloopError(f"TUNELOOP_THREADS is {value!r}; set it to a positive whole number of threads, or unset it")
        return int(value)
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return cpu_budget()


def apply() -> int:
    """Set torch's compute threads to `wanted()`; returns the count in use."""
    import torch

    threads = wanted()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
