"""repana's one thread policy: how many CPU threads a piece of work gets, and setting them.

**The rule.** The user's count wins: ``threads = N`` in a run's config (``--set threads=N``), else
``REPANA_THREADS=N``, else an ``OMP_NUM_THREADS`` set outside repana (:func:`explicit_threads`).
Otherwise (:func:`thread_rule`, fed by :func:`choose_threads`):

- **one thread** when the work is small: one forward pass over one task's (or batch's) inputs below
  ``parallel_min_macs`` multiply-adds (:data:`PARALLEL_MIN_MACS` for the few-shot networks: every
  Omniglot-size network is 0.08-0.85 G; the callers count the work from the model,
  :func:`repana.models.forward_macs`);
- **one thread** for the similarity measures (``repana compare``, :func:`similarity_threads`): at
  5000x512 a second thread gained nothing for CKA and halved CCA's speed;
- otherwise (MiniImageNet-size convolutions) **the idle cores**: the usable cores
  (:func:`repana.runtime.cores.usable_cores`) that were idle over the next 0.1 s
  (:func:`repana.runtime.cores.idle_cores`), rounded, at least 1, at most :data:`MAX_DEFAULT_THREADS`;
- with ``OMP_WAIT_POLICY=PASSIVE`` set by the ``repana`` command before torch loads
  (:func:`configure_process_defaults`).

A training run resumed from a checkpoint keeps the count the checkpoint records (:func:`run_threads`):
results depend on the thread count.

Why: torch's old default (one spinning thread per core) fell off a cliff next to a busy process
(20-75x slower: a waiting thread spins on the core the thread it waits for needs); the passive
policy alone removed the cliff but woke a sleeping thread at every op, which made the quick preset's
small ops 1.5-2x slower than one thread on an idle machine. One thread never waits for another: no
cliff, and on small ops only spinning threads on a quiet machine beat it (1.06-1.4x). Large ops gain
from every idle core (a MiniImageNet-size MAML step 1.3-1.4x from a second one) but lose
when a thread shares its core with another process (every op waits for that thread), hence the cores
idle now. The count is chosen once per run, so a load that starts later is met with the passive
policy's bounded slowdown, not the cliff. Measurements: docs/training.md, ``benchmarks/threads.py``.

**Applying it.** torch's pool: ``torch.set_num_threads`` (:func:`set_torch_threads`). numpy's OpenBLAS
pool, which the similarity measures use for float64 products on one torch thread
(:mod:`repana.similarity._blas`): :func:`numpy_blas_threads`, through threadpoolctl.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache

from repana.errors import ConfigError
from repana.runtime import cores

__all__ = ["THREAD_ENV_DEFAULTS", "MAX_DEFAULT_THREADS", "THREADS_ENV", "PARALLEL_MIN_MACS", "threads_from_env",
           "explicit_threads", "default_threads", "configure_process_defaults", "thread_rule", "choose_threads",
           "run_threads", "similarity_threads", "set_torch_threads", "numpy_blas_is_openblas", "numpy_blas_threads"]

# OpenMP's wait policy: libgomp (torch's CPU backend) reads it once, when torch is imported. Unset, a
# thread that reaches the end of a parallel region spins (GOMP_SPINCOUNT, 300,000 iterations by
# default) before it sleeps, and the threads waiting for the next region spin too. Next to a busy core
# the spinning threads take the time slices of the thread they wait for: measured with
# benchmarks/threads.py on 2 cores, a quick-preset step took 9.1 s instead of 0.42 s when one busy
# loop ran beside it (21.6x). PASSIVE (waiting threads sleep at once) removes that cliff but makes every
# parallel region wake its threads (tens of microseconds each): the quick preset's small ops then ran
# at 0.53x the speed of one thread on the idle machine. Hence the thread rule.
# KMP_BLOCKTIME=0 is the same setting for Intel's OpenMP (libiomp5), in case torch is built with it.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
# A cap on the automatic thread count: not measured beyond 2 cores here, a hedge against 64 threads on
# a big server, where synchronising many threads per op costs more than the ops of these networks.
MAX_DEFAULT_THREADS = 8
#: ``REPANA_THREADS=N``: N torch threads for every repana command and ``threads = 0`` training run.
THREADS_ENV = "REPANA_THREADS"
# OMP_NUM_THREADS value that configure_process_defaults set (inherited by child processes): not the user's
_DEFAULTED_ENV = "REPANA_DEFAULT_OMP_NUM_THREADS"
#: Multiply-adds of one forward pass of a few-shot network over one task's (or batch's) images from which
#: more than one thread pays: an Omniglot-size task is 0.08-0.25 G (one thread), a MiniImageNet-size one
#: 2.2-2.7 G (the idle cores).
PARALLEL_MIN_MACS = 10 ** 9


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


def default_threads(environ=None) -> int:
    """The process-wide thread count the ``repana`` command starts with (``OMP_NUM_THREADS``):
    ``$REPANA_THREADS`` when set, else the usable cores, at most :data:`MAX_DEFAULT_THREADS`. Training
    and evaluation then choose per network (:func:`choose_threads`)."""
    return threads_from_env(environ) or min(cores.usable_cores(), MAX_DEFAULT_THREADS)


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
    wanted = {**THREAD_ENV_DEFAULTS, "OMP_NUM_THREADS": str(default_threads(environ))}
    changed = {}
    for name, value in wanted.items():
        if not environ.get(name):
            environ[name] = value
            changed[name] = value
    if "OMP_NUM_THREADS" in changed:
        environ[_DEFAULTED_ENV] = changed["OMP_NUM_THREADS"]   # repana's default, not an explicit count
    return {} if "torch" in sys.modules else changed


def thread_rule(work_macs: float | None, usable: int, idle: float | None, cap: int = MAX_DEFAULT_THREADS,
                parallel_min_macs: float = PARALLEL_MIN_MACS) -> int:
    """The automatic thread count (pure; :func:`choose_threads` feeds it the machine's numbers).

    ``work_macs``: multiply-adds of one parallel unit of work (one task's forward pass; None: unknown,
    taken as large). Below ``parallel_min_macs``: 1 thread. Else the idle cores rounded (``idle``, None:
    unknown, taken as all ``usable``), at least 1, at most ``usable`` and ``cap``.
    """
    if work_macs is not None and work_macs < parallel_min_macs:
        return 1
    free = usable if idle is None else int(idle + 0.5)
    return max(1, min(free, usable, cap))


def choose_threads(work_macs: float | None = None, environ=None, parallel_min_macs: float = PARALLEL_MIN_MACS) -> int:
    """repana's torch thread count for a piece of work of ``work_macs`` multiply-adds per forward pass
    (None: unknown, taken as large): the user's count when given (:func:`explicit_threads`), else
    :func:`thread_rule` with this machine's usable cores and the cores idle right now (watched for
    :data:`repana.runtime.cores.IDLE_SAMPLE_S` seconds, only when the work is large enough to want them).

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
    large = work_macs is None or work_macs >= parallel_min_macs
    return thread_rule(work_macs, cores.usable_cores(), cores.idle_cores() if large else None,
                       parallel_min_macs=parallel_min_macs)


def run_threads(configured: int, saved: int | None, work_macs: float | None, environ=None,
                parallel_min_macs: float = PARALLEL_MIN_MACS) -> tuple[int, str]:
    """The torch thread count of a training run (supervised or RL) and where it comes from, in this order:
    ``configured`` (the run's ``threads``; 0: automatic) -> "config"; ``$REPANA_THREADS`` or an
    ``OMP_NUM_THREADS`` set outside repana -> the variable's name; ``saved`` (the count the checkpoint being
    resumed records; None or 0: none) -> "checkpoint", so a resumed run continues bit-identically; else
    :func:`choose_threads` for ``work_macs`` multiply-adds per forward pass -> "automatic"."""
    if configured:
        return int(configured), "config"
    given = explicit_threads(environ)
    if given:
        return given
    if saved:
        return int(saved), "checkpoint"
    return choose_threads(work_macs, environ, parallel_min_macs), "automatic"


def similarity_threads(environ=None) -> int:
    """Torch threads for the similarity measures (``repana compare``): the user's count when given
    (:func:`explicit_threads`), else 1. Measured on 2 cores, 5000x512 float32 layers: CKA took the same time
    on 2 threads as on one (numpy's symmetric rank-k products on one thread do half the multiplications of
    torch's general ones) and CCA twice as long (its Cholesky, triangular solves and SVD of 512x512
    matrices gain nothing from a second thread and pay its wake-ups); docs/training.md."""
    given = explicit_threads(environ)
    return given[0] if given else 1


def set_torch_threads(work_macs: float | None = None) -> int:
    """Set torch's CPU thread count to :func:`choose_threads` for work of ``work_macs`` multiply-adds per
    forward pass and return it. The evaluating commands (``repana evaluate``, ``predict``, ``analyze``)
    call it before their work with their network's count (:func:`repana.models.forward_macs`); it imports
    torch."""
    import torch

    threads = choose_threads(work_macs)
    torch.set_num_threads(threads)
    return threads


@lru_cache(maxsize=1)
def _numpy_openblas():
    """threadpoolctl's controller of the OpenBLAS a numpy wheel ships (``numpy.libs``), or None where
    numpy uses another BLAS. Imports numpy (which loads its BLAS)."""
    import numpy as np
    from threadpoolctl import ThreadpoolController

    numpy_libs = os.path.realpath(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs"))
    openblas = ThreadpoolController().select(internal_api="openblas")
    paths = [info["filepath"] for info in openblas.info()
             if os.path.dirname(os.path.realpath(info["filepath"])) == numpy_libs]
    return openblas.select(filepath=paths) if paths else None


def numpy_blas_is_openblas() -> bool:
    """Whether numpy's products run in an OpenBLAS whose thread pool :func:`numpy_blas_threads` sets."""
    return _numpy_openblas() is not None


@contextmanager
def numpy_blas_threads(threads: int):
    """Inside the ``with`` block numpy's OpenBLAS runs on ``threads`` threads; its count is restored
    afterwards (threadpoolctl's ``limit``). Does nothing where numpy uses another BLAS."""
    blas = _numpy_openblas()
    if blas is None:
        yield
        return
    with blas.limit(limits=int(threads)):
        yield
