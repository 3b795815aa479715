"""The CPU cores this process may use (:func:`usable_cores`) and how many of them are idle now (:func:`idle_cores`).

Linux tells both: the affinity mask (``taskset``, cpusets, cluster jobs), the hyper-thread siblings of
each core (sysfs), the cgroup v2 CPU quota (``docker --cpus``, Kubernetes limits) and the per-CPU tick
counters of ``/proc/stat``. Elsewhere (macOS, Windows) what cannot be read is left out: the usable cores
fall back to ``os.cpu_count()`` and the idle cores are unknown (None).
"""

from __future__ import annotations

import os

__all__ = ["usable_cores", "idle_cores", "IDLE_SAMPLE_S"]

IDLE_SAMPLE_S = 0.1   # how long :func:`idle_cores` watches the CPUs, in seconds


def _cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """Whole CPUs a cgroup v2 quota allows (``docker --cpus``, Kubernetes limits), or None if unlimited."""
    try:
        with open(path, encoding="ascii") as handle:
            quota, period = handle.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, int(-(-int(quota) // int(period))))   # ceil
    except (ValueError, ZeroDivisionError):
        return None


def _affinity() -> set[int] | None:
    """The logical CPUs this process may run on, or None where the system does not tell."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # macOS, Windows
        return None


def _physical_cores(cpus: set[int], sysfs: str = "/sys/devices/system/cpu") -> int | None:
    """Distinct physical cores among the logical ``cpus`` (SMT siblings counted once), None if unknown."""
    cores = set()
    for cpu in cpus:
        try:
            with open(f"{sysfs}/cpu{cpu}/topology/thread_siblings_list", encoding="ascii") as handle:
                cores.add(handle.read().strip())
        except OSError:
            return None
    return len(cores) or None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask (taskset, cpusets, cluster jobs), counting SMT
    siblings (hyper-threads) of one core once, at most the cgroup's CPU quota (containers), where the
    system tells. A second hyper-thread on a core shares its arithmetic units: little gain for
    convolutions and matrix products, and one more thread to wait for at every op."""
    affinity = _affinity()
    cores = len(affinity) if affinity else (os.cpu_count() or 1)
    physical = _physical_cores(affinity) if affinity else None
    if physical:
        cores = min(cores, physical)
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def _cpu_times(path: str) -> dict[int, tuple[int, int]]:
    """``{cpu: (idle ticks, total ticks)}`` from /proc/stat (idle includes iowait; steal counts as busy)."""
    times = {}
    with open(path, encoding="ascii") as handle:
        for line in handle:
            name, *fields = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            ticks = [int(f) for f in fields[:8]]   # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def idle_cores(sample_s: float = IDLE_SAMPLE_S, stat_path: str = "/proc/stat",
               cpus: set[int] | None = None) -> float | None:
    """How many of this process's CPUs (``cpus``, default its affinity mask) sat idle during the next
    ``sample_s`` seconds, from the kernel's per-CPU tick counters (a float: 1.5 = one and a half CPUs);
    None where /proc/stat is missing (macOS, Windows). Other processes' load, measured now (not the
    1-minute load average): the caller is asleep while it watches."""
    import time

    try:
        before = _cpu_times(stat_path)
        time.sleep(sample_s)
        after = _cpu_times(stat_path)
    except (OSError, ValueError, IndexError):
        return None
    cpus = cpus if cpus is not None else (_affinity() or set(after))
    idle = 0.0
    for cpu in cpus & set(before) & set(after):
        d_idle, d_total = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
        idle += d_idle / d_total if d_total > 0 else 1.0
    return idle
