"""Process-wide CPU settings that make repana's training and evaluation faster on Linux.

Freed memory kept for reuse (below), OpenMP threads that sleep instead of spinning while they wait
(:func:`configure_process_defaults`), and how many torch threads a piece of work gets
(:func:`choose_threads`).

**Threads.** The rule (``threads = N`` / ``--threads N``, ``REPANA_THREADS=N`` or an ``OMP_NUM_THREADS``
set outside repana override it):

- **one thread** when the work is small: a Conv4 forward over one task's (or batch's) images below
  :data:`PARALLEL_MIN_MACS` multiply-adds (every Omniglot-size network: 0.08-0.85 G);
- **one thread** for the similarity measures (``repana compare``, :func:`similarity_threads`): at
  5000x512 a second thread gained nothing for CKA and halved CCA's speed;
- otherwise (MiniImageNet-size convolutions) **the idle cores**: the CPUs of this process's affinity mask
  that were idle over the next
  0.1 s (``/proc/stat``'s per-CPU tick counters: other processes' load, measured now, not the 1-minute
  load average), rounded, at least 1, at most the usable cores (affinity, physical cores, cgroup CPU
  quota) and :data:`MAX_DEFAULT_THREADS`;
- with ``OMP_WAIT_POLICY=PASSIVE`` set by the ``repana`` command before torch loads.

Why: torch's old default (one spinning thread per core) fell off a cliff next to a busy process
(20-75x slower: a waiting thread spins on the core the thread it waits for needs); the passive
policy alone removed the cliff but woke a sleeping thread at every op, which made the quick preset's
small ops 1.5-2x slower than one thread on an idle machine. One thread never waits for another: no
cliff, and on small ops only spinning threads on a quiet machine beat it (1.06-1.4x). Large ops gain
from every idle core (a MiniImageNet-size MAML step 1.3-1.4x from a second one) but lose
when a thread shares its core with another process (every op waits for that thread), hence the cores
idle now. The count is chosen once per run (training records it in every checkpoint and a resumed run
keeps it: results depend on the thread count), so a load that starts later is met with the passive
policy's bounded slowdown, not the cliff. Measurements: docs/training.md, ``benchmarks/threads.py``.

glibc's ``malloc`` serves large blocks (above a threshold that grows to at most 32 MiB) with ``mmap``
and gives them back to the kernel on ``free``, and it trims freed memory at the top of its heap as
soon as more than twice that threshold is free. A conv net on CPU allocates and frees maps of several
MiB to tens of MiB in every forward and backward pass, so each pass touches fresh pages and pays one
page fault per 4 KiB page: measured on one thread, a Conv4-64 max-pool forward of 75 Omniglot images
took 7,300 faults and 43 ms (median) instead of 0 faults and 19 ms; MiniImageNet's Conv4-32 on 75
84x84 images 51,000 faults and 173 ms forward, 362 ms forward+backward, instead of 82 and 226 ms.

:func:`retain_freed_memory` raises both glibc thresholds so that freed blocks stay in the process for
the next pass. The cost is resident memory: up to ``limit_bytes`` of freed memory is kept instead of
returned. ``repana`` commands call it on start (``REPANA_RETAIN_FREED_MIB=0`` turns it off); from
Python, call it once yourself. It changes the allocator of the whole process (like ``mallopt`` or the
``MALLOC_*_`` variables it stands for) and does nothing on other C libraries (macOS, musl) or where
the user set those thresholds (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or their
``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import os

from repana.errors import ConfigError

__all__ = ["retain_freed_memory", "retain_freed_memory_from_env", "DEFAULT_RETAIN_BYTES", "ENV_VAR",
           "configure_process_defaults", "usable_cores", "default_threads", "THREAD_ENV_DEFAULTS",
           "MAX_DEFAULT_THREADS", "THREADS_ENV", "PARALLEL_MIN_MACS", "threads_from_env", "explicit_threads", "idle_cores",
           "thread_rule", "choose_threads", "similarity_threads", "conv4_macs_per_image", "conv4_threads",
           "set_conv4_threads"]

DEFAULT_RETAIN_BYTES = 1 << 30   # 1 GiB: every map of the paper's networks at CPU batch sizes fits
ENV_VAR = "REPANA_RETAIN_FREED_MIB"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc <malloc.h>
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def _glibc_mallopt():
    """glibc's ``mallopt`` function, or None on another C library."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded in this process (no library search)
        libc.gnu_get_libc_version  # only glibc has it (musl and macOS's libc do not)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def retain_freed_memory(limit_bytes: int = DEFAULT_RETAIN_BYTES) -> bool:
    """Keep up to ``limit_bytes`` of freed heap memory in the process instead of returning it to the
    kernel, and serve blocks below ``limit_bytes`` from that heap (module doc: why this pays).

    Returns True when glibc accepted both settings; False on another C library, when the user set
    these thresholds in the environment (theirs win), or when glibc refused a value. ``limit_bytes``
    must be an int in [1 MiB, 2 GiB).
    """
    limit = int(limit_bytes)
    if not (1 << 20) <= limit < (1 << 31):
        raise ConfigError(f"limit_bytes = {limit_bytes} must be between 1 MiB and 2 GiB (a C int)")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(os.environ.get(name) for name in _USER_VARIABLES) or any(t in tunables for t in _USER_TUNABLES):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    # mmap threshold first: setting it also stops glibc from moving the thresholds on its own
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def retain_freed_memory_from_env() -> bool:
    """:func:`retain_freed_memory` with ``$REPANA_RETAIN_FREED_MIB`` MiB (unset: 1024; 0: off)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return retain_freed_memory()
    try:
        mib = int(value)
    except ValueError:
        raise ConfigError(f"{ENV_VAR} = {value!r} must be a whole number of MiB (0 turns it off)") from None
    if mib == 0:
        return False
    if not 1 <= mib < 2048:
        raise ConfigError(f"{ENV_VAR} = {mib} must be between 1 and 2047 MiB (0 turns it off)")
    return retain_freed_memory(mib << 20)


# ----- threads on a machine that is doing something else -----

# OpenMP's wait policy: libgomp (torch's CPU backend) reads it once, when torch is imported. Unset, a
# thread that reaches the end of a parallel region spins (GOMP_SPINCOUNT, 300,000 iterations by
# default) before it sleeps, and the threads waiting for the next region spin too. Next to a busy core
# the spinning threads take the time slices of the thread they wait for: measured with
# benchmarks/threads.py on 2 cores, a quick-preset step took 9.1 s instead of 0.42 s when one busy
# loop ran beside it (21.6x). PASSIVE (waiting threads sleep at once) removes that cliff but makes every
# parallel region wake its threads (tens of microseconds each): the quick preset's small ops then ran
# at 0.53x the speed of one thread on the idle machine. Hence the thread rule below.
# KMP_BLOCKTIME=0 is the same setting for Intel's OpenMP (libiomp5), in case torch is built with it.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# A cap on the automatic thread count: not measured beyond 2 cores here, a hedge against 64 threads on
# a big server, where synchronising many threads per op costs more than the ops of these networks.
MAX_DEFAULT_THREADS = 8
#: ``REPANA_THREADS=N``: N torch threads for every repana command and ``threads = 0`` training run.
THREADS_ENV = "REPANA_THREADS"
# OMP_NUM_THREADS value that configure_process_defaults set (inherited by child processes): not the user's
_DEFAULTED_ENV = "REPANA_DEFAULT_OMP_NUM_THREADS"
#: Convolution multiply-adds of one forward pass over one task's (or batch's) images from which more than one
#: thread pays (see :func:`choose_threads`): an Omniglot-size task is 0.08-0.25 G (one thread), a
#: MiniImageNet-size one 2.2-2.7 G (the idle cores).
PARALLEL_MIN_MACS = 10 ** 9
IDLE_SAMPLE_S = 0.1   # how long :func:`idle_cores` watches the CPUs


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


def default_threads() -> int:
    """The process-wide thread count the ``repana`` command starts with (``OMP_NUM_THREADS``):
    ``$REPANA_THREADS`` when set, else the usable cores, at most :data:`MAX_DEFAULT_THREADS`. Training
    and evaluation then choose per network (:func:`choose_threads`)."""
    return threads_from_env() or min(usable_cores(), MAX_DEFAULT_THREADS)


def explicit_threads(environ=None) -> tuple[int, str] | None:
    """A thread count the user gave in the environment, and its variable: ``$REPANA_THREADS``, else an
    ``OMP_NUM_THREADS`` that repana did not set itself (a shell export, a cluster job script, ``torchrun``'s
    1 per process); None when neither (repana's rule decides)."""
    environ = os.environ if environ is None else environ
    from_env = threads_from_env(environ)
    if from_env:
        return from_env, THREADS_ENV
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp and omp != environ.get(_DEFAULTED_ENV):
        try:
            count = int(omp.split(",")[0])   # OpenMP's nested list "4,2": the outer level
        except ValueError:
            return None   # not a count OpenMP understands either: leave it to the rule
        if count > 0:
            return count, "OMP_NUM_THREADS"
    return None


def threads_from_env(environ=None) -> int | None:
    """``$REPANA_THREADS`` as a positive int, None when unset, empty or 0 (automatic)."""
    environ = os.environ if environ is None else environ
    value = environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ConfigError(f"{THREADS_ENV} = {value!r} must be a whole number of threads (0 or unset: "
                          "automatic)") from None
    if threads < 0:
        raise ConfigError(f"{THREADS_ENV} = {threads} must not be negative (0 or unset: automatic)")
    return threads or None


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


def idle_cores(sample_s: float = IDLE_SAMPLE_S, stat_path: str = "/proc/stat", cpus: set[int] | None = None) -> float | None:
    """How many of this process's CPUs (``cpus``, default its affinity mask) sat idle during the next
    ``sample_s`` seconds, from the kernel's per-CPU tick counters; None where /proc/stat is missing
    (macOS, Windows). Other processes' load, measured now: the caller is asleep while it watches."""
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


def thread_rule(work_macs: float | None, usable: int, idle: float | None, cap: int = MAX_DEFAULT_THREADS) -> int:
    """The automatic thread count (pure; :func:`choose_threads` feeds it the machine's numbers).

    ``work_macs``: multiply-adds of one parallel unit of work (one task's conv forward; None: unknown,
    taken as large). Below :data:`PARALLEL_MIN_MACS`: 1 thread. Else the
    idle cores rounded (``idle``, None: unknown, taken as all ``usable``), at least 1, at most ``usable``
    and ``cap``.
    """
    if work_macs is not None and work_macs < PARALLEL_MIN_MACS:
        return 1
    free = usable if idle is None else int(idle + 0.5)
    return max(1, min(free, usable, cap))


def choose_threads(work_macs: float | None = None, environ=None) -> int:
    """repana's torch thread count for a piece of work: the user's count when given
    (:func:`explicit_threads`: ``$REPANA_THREADS``, or ``OMP_NUM_THREADS`` set outside repana), else
    :func:`thread_rule` with this machine's usable cores and the cores idle right now (watched for
    :data:`IDLE_SAMPLE_S` seconds, only when the work is large enough to want them).

    Why (measured with benchmarks/threads.py on 2 cores, docs/training.md): one thread never waits for
    another, so it has no cliff; on the small ops of Omniglot-size networks it was the fastest cliff-free
    setting (two spinning threads were up to 1.5x faster on a quiet machine and 20-60x slower next to a
    busy process). MiniImageNet-size convolutions gained 1.4x from a second idle core, and lose when a
    thread shares its core with another process (the others wait for it at the end of each op), hence
    the idle cores, not all of them.
    """
    given = explicit_threads(environ)
    if given:
        return given[0]
    large = work_macs is None or work_macs >= PARALLEL_MIN_MACS
    return thread_rule(work_macs, usable_cores(), idle_cores() if large else None)


def similarity_threads(environ=None) -> int:
    """Torch threads for the similarity measures (``repana compare``): the user's count when given
    (:func:`explicit_threads`), else 1. Measured on 2 cores, 5000x512 float32 layers: CKA took the same time
    on 2 threads as on one (numpy's symmetric rank-k products on one thread do half the multiplications of
    torch's general ones) and CCA twice as long (its Cholesky, triangular solves and SVD of 512x512
    matrices gain nothing from a second thread and pay its wake-ups); docs/training.md."""
    given = explicit_threads(environ)
    return given[0] if given else 1


def conv4_macs_per_image(in_channels: int, hidden: int, image_size: int, pooling: str = "max", **_) -> int:
    """Multiply-adds of the four 3x3 convolutions of a Conv4 (``repana.models.Conv4``'s arguments; a
    model's ``config`` dict can be passed as ``**config``) on one image."""
    side, channels, total = int(image_size), [int(in_channels)] + [int(hidden)] * 4, 0
    for block in range(4):
        out_side = (side - 1) // 2 + 1 if pooling == "stride" else side
        total += out_side * out_side * channels[block] * channels[block + 1] * 9
        side = out_side if pooling == "stride" else out_side // 2
    return total


def conv4_threads(model_config: dict, images: int, environ=None) -> int:
    """:func:`choose_threads` for a Conv4 (``model_config``: its ``config``) run on ``images`` images
    at a time (one task: ways x (shots + queries); a classification batch). Another architecture
    (``arch`` other than conv4, e.g. the residual network) counts as large work."""
    if model_config.get("arch", "conv4") != "conv4":
        return choose_threads(None, environ)
    return choose_threads(conv4_macs_per_image(**model_config) * int(images), environ)


def set_conv4_threads(model_config: dict, images: int) -> None:
    """Set torch's CPU thread count to :func:`conv4_threads` for running this Conv4 on ``images`` images
    at a time: ``$REPANA_THREADS`` (or an ``OMP_NUM_THREADS`` set outside repana), else one thread for
    Omniglot-size episodes and the idle cores for MiniImageNet-size ones. The evaluating commands
    (``repana evaluate``, ``predict``, ``analyze``) call it before their work; it imports torch."""
    import torch

    torch.set_num_threads(conv4_threads(model_config, images))


def configure_process_defaults(environ=None) -> dict[str, str]:
    """Set the process defaults that keep torch's CPU threads from falling off a cliff when another
    process uses a core: ``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0`` and ``OMP_NUM_THREADS`` =
    :func:`default_threads`, each only where the user has not set it (theirs win).

    Call it before ``import torch``: OpenMP reads these variables once, when torch loads it. The
    ``repana`` command calls it first thing. Returns the variables it set that take effect in this
    process: when torch is already imported they are still set (child processes inherit them) but
    cannot change this one, and the return value is empty.
    """
    import sys

    environ = os.environ if environ is None else environ
    wanted = {**THREAD_ENV_DEFAULTS, "OMP_NUM_THREADS": str(threads_from_env(environ) or
                                                           min(usable_cores(), MAX_DEFAULT_THREADS))}
    changed = {}
    for name, value in wanted.items():
        if not environ.get(name):
            environ[name] = value
            changed[name] = value
    if "OMP_NUM_THREADS" in changed:
        environ[_DEFAULTED_ENV] = changed["OMP_NUM_THREADS"]   # repana's default, not an explicit count
    return {} if "torch" in sys.modules else changed
