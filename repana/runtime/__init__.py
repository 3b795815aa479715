"""Process-wide CPU settings that make repana's training and evaluation faster on Linux, one job per module:

- :mod:`repana.runtime.memory`: freed heap memory kept for reuse (glibc's ``mallopt``), so conv passes stop
  page-faulting on fresh maps (:func:`retain_freed_memory`);
- :mod:`repana.runtime.cores`: the cores this process may use (:func:`usable_cores`: affinity mask,
  hyper-thread siblings once, cgroup quota) and those idle now (:func:`idle_cores`: ``/proc/stat``);
- :mod:`repana.runtime.threads`: the one thread policy: the user's count, else one thread for small work
  and the idle cores for large (:func:`choose_threads`, :func:`run_threads` for training runs,
  :func:`similarity_threads`), the OpenMP defaults set before torch loads
  (:func:`configure_process_defaults`), torch's and numpy's BLAS thread pools (:func:`set_torch_threads`,
  :func:`numpy_blas_threads`).

Import the names from ``repana.runtime``; importing it loads neither torch nor numpy.
"""

from repana.runtime.cores import IDLE_SAMPLE_S, idle_cores, usable_cores
from repana.runtime.memory import (DEFAULT_RETAIN_BYTES, RETAIN_FREED_ENV, retain_freed_memory,
                                   retain_freed_memory_from_env)
from repana.runtime.threads import (MAX_DEFAULT_THREADS, PARALLEL_MIN_MACS, THREAD_ENV_DEFAULTS, THREADS_ENV,
                                    choose_threads, configure_process_defaults, default_threads, explicit_threads,
                                    numpy_blas_is_openblas, numpy_blas_threads, run_threads, set_torch_threads,
                                    similarity_threads, thread_rule, threads_from_env)

__all__ = ["retain_freed_memory", "retain_freed_memory_from_env", "DEFAULT_RETAIN_BYTES", "RETAIN_FREED_ENV",
           "usable_cores", "idle_cores", "IDLE_SAMPLE_S",
           "THREAD_ENV_DEFAULTS", "MAX_DEFAULT_THREADS", "THREADS_ENV", "PARALLEL_MIN_MACS", "threads_from_env",
           "explicit_threads", "default_threads", "configure_process_defaults", "thread_rule", "choose_threads",
           "run_threads", "similarity_threads", "set_torch_threads", "numpy_blas_is_openblas", "numpy_blas_threads"]
