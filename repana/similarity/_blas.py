"""float64 matrix products (and column sums) on CPU through numpy's OpenBLAS on one thread, through torch on more.

numpy computes ``A^T A`` / ``A A^T`` as a symmetric rank-k update (half the multiplications): for (20000, 512)
float64 on one thread, ``X^T X`` took 340 ms against 657 ms with torch's general product, and ``X^T Y`` 521 ms
against 687 ms. So with one torch thread (``torch.get_num_threads()``: what repana and the user chose) the
product runs in numpy's OpenBLAS, its thread count set to 1 for the call and restored afterwards. With more
threads torch computes it: OpenBLAS's own thread pool spins while it waits (``OMP_WAIT_POLICY`` does not reach
it) and fell off a cliff next to other processes, where torch's OpenMP threads with the passive policy did
not: (5000, 512) float64 on 2 cores at load average 5, ``X^T Y`` took 248 ms with 2 OpenBLAS threads against 92
on one, and 89 ms with 2 torch threads against 105 on one. When numpy's BLAS is not an OpenBLAS whose thread
count can be set (other builds), torch computes every product.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import lru_cache

import numpy as np
import torch

_THREAD_FUNCTIONS = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                     ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                     ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                     ("openblas_get_num_threads", "openblas_set_num_threads")]


@lru_cache(maxsize=1)
def _openblas_threads():
    """(get, set) thread-count functions of the OpenBLAS that numpy loaded, or None."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(folder, "*openblas*"))):
        try:
            library = ctypes.CDLL(path)  # already loaded by numpy: the same handle, nothing re-initialised
        except OSError:
            continue
        for get_name, set_name in _THREAD_FUNCTIONS:
            getter, setter = getattr(library, get_name, None), getattr(library, set_name, None)
            if getter is not None and setter is not None:
                getter.restype = ctypes.c_int
                setter.argtypes = [ctypes.c_int]
                return getter, setter
    return None


#: Products with fewer multiply-adds than this stay in torch (the numpy round trip costs ~10 us).
NUMPY_MIN_MULTIPLY_ADDS = 2 ** 20


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of float64 matrices (numpy's OpenBLAS on CPU with one torch thread when available and the
    product is large, else torch)."""
    threads = _openblas_threads()
    if (threads is None or torch.get_num_threads() != 1 or a.device.type != "cpu" or b.device.type != "cpu"
            or a.dtype != torch.float64 or b.dtype != torch.float64 or a.ndim != 2 or b.ndim != 2
            or a.shape[0] * a.shape[1] * b.shape[1] < NUMPY_MIN_MULTIPLY_ADDS):
        return a @ b
    get_threads, set_threads = threads
    before, wanted = get_threads(), 1
    if before != wanted:
        set_threads(wanted)
    try:
        return torch.from_numpy(a.numpy() @ b.numpy())
    finally:
        if before != wanted:
            set_threads(before)


def column_sums(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_i a[i, j], sum_i a[i, j]**2)``, two ``(d,)`` float64 tensors, of a float64 ``(n, d)`` matrix.

    On CPU through numpy on one OpenBLAS thread (``ones @ a``, a memory-bound matrix-vector product, and
    ``einsum``: each one read of the data, no temporary; for (5000, 64) 0.04 ms and 0.10 ms on one thread, for (20000, 512) 3.6 ms and 3.0 ms,
    against 0.05 / 7.7 ms for torch's column sum and 70 ms for its column norms at the larger size),
    elsewhere through torch.
    """
    if a.device.type == "cpu" and a.dtype == torch.float64 and a.ndim == 2:
        values = a.numpy()
        threads = _openblas_threads()  # one OpenBLAS thread: its pool spins (see the module docstring)
        before, wanted = (threads[0](), 1) if threads is not None else (None, None)
        if before != wanted:
            threads[1](wanted)
        try:
            sums = np.ones(values.shape[0]) @ values
        finally:
            if before != wanted:
                threads[1](before)
        return torch.from_numpy(sums), torch.from_numpy(np.einsum("ij,ij->j", values, values))
    return a.sum(dim=0), torch.einsum("ij,ij->j", a, a)
