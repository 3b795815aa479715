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

import numpy as np
import torch

from repana.runtime import numpy_blas_is_openblas, numpy_blas_threads

#: Products with fewer multiply-adds than this stay in torch (the numpy round trip costs ~10 us).
NUMPY_MIN_MULTIPLY_ADDS = 2 ** 20


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of float64 matrices (numpy's OpenBLAS on CPU with one torch thread when available and the
    product is large, else torch)."""
    if (not numpy_blas_is_openblas() or torch.get_num_threads() != 1 or a.device.type != "cpu"
            or b.device.type != "cpu" or a.dtype != torch.float64 or b.dtype != torch.float64 or a.ndim != 2
            or b.ndim != 2 or a.shape[0] * a.shape[1] * b.shape[1] < NUMPY_MIN_MULTIPLY_ADDS):
        return a @ b
    with numpy_blas_threads(1):
        return torch.from_numpy(a.numpy() @ b.numpy())


def column_sums(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_i a[i, j], sum_i a[i, j]**2)``, two ``(d,)`` float64 tensors, of a float64 ``(n, d)`` matrix.

    On CPU through numpy on one OpenBLAS thread (``ones @ a``, a memory-bound matrix-vector product, and
    ``einsum``: each one read of the data, no temporary; for (5000, 64) 0.04 ms and 0.10 ms on one thread, for (20000, 512) 3.6 ms and 3.0 ms,
    against 0.05 / 7.7 ms for torch's column sum and 70 ms for its column norms at the larger size),
    elsewhere through torch.
    """
    if a.device.type == "cpu" and a.dtype == torch.float64 and a.ndim == 2:
        values = a.numpy()
        with numpy_blas_threads(1):   # one OpenBLAS thread: its pool spins (see the module docstring)
            sums = np.ones(values.shape[0]) @ values
        return torch.from_numpy(sums), torch.from_numpy(np.einsum("ij,ij->j", values, values))
    return a.sum(dim=0), torch.einsum("ij,ij->j", a, a)
