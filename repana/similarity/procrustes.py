"""Orthogonal Procrustes similarity and distance (Ding, Denain & Steinhardt 2021).

Both representations are centred and scaled to unit Frobenius norm; the distance is
``min_R ||X - Y R||_F^2 = 2 - 2 ||X^T Y||_*`` over orthogonal ``R`` (``||.||_*``: nuclear norm, the sum of
singular values; unequal widths behave as zero-padded), and the similarity is ``||X^T Y||_*`` in [0, 1].
Invariant to orthogonal transforms, isotropic scaling and translation; not to general linear maps.
"""

from __future__ import annotations

import math

import torch

from repana.similarity.datapoints import warn_if_degenerate
from repana.similarity.representation import Representation, as_representation, check_pair


def procrustes_similarity(X, Y) -> float:
    """``||X^T Y||_*`` of centred, unit-Frobenius-norm ``X (n, d_x)`` and ``Y (n, d_y)``; 1 iff ``Y = X R``.

    Inputs as for every measure (any float dtype, lists, DataFrames; any magnitude: the unit-norm scaling
    happens after an exact power-of-two rescaling, so 1e200-scaled data give the same value, never 0).
    Warns (RepanaWarning) when the value is degenerate: a side's centred rank reaches its distinct
    datapoints - 1 (:mod:`repana.similarity.datapoints`). Also exported as ``repana.similarity.procrustes``,
    named like ``cka`` and ``svcca``."""
    rx, ry = as_representation(X, "X"), as_representation(Y, "Y")
    value = procrustes_similarity_from_representations(rx, ry)
    warn_if_degenerate("procrustes", rx, ry)
    return value


def procrustes_distance(X, Y) -> float:
    """Squared orthogonal Procrustes distance ``2 - 2 * procrustes_similarity(X, Y)``, in [0, 2]."""
    return 2.0 - 2.0 * procrustes_similarity(X, Y)


def procrustes_similarity_from_representations(rx: Representation, ry: Representation) -> float:
    check_pair(rx, ry)
    cross = rx.cross(ry) if rx.d <= rx.n and ry.d <= ry.n else _compact(rx).T @ _compact(ry)
    nuclear = float(torch.linalg.svdvals(cross).sum())
    return min(nuclear / math.sqrt(rx.sq_norm * ry.sq_norm), 1.0)


def _compact(rep: Representation) -> torch.Tensor:
    """A factor ``C`` with ``C C^T = Xc Xc^T`` and at most ``n`` columns: ``Xc`` itself when ``d <= n``, else
    ``Q diag(sqrt(lambda))`` from the eigendecomposition of the ``(n, n)`` Gram matrix (cheaper than an SVD of
    the wide ``Xc``; the nuclear norm only needs ``X^T Y`` up to an orthogonal transform on each side)."""
    if rep.d <= rep.n:
        return rep.centered

    def compute():
        eigenvalues, eigenvectors = torch.linalg.eigh(rep.gram)
        return eigenvectors * eigenvalues.clamp(min=0.0).sqrt()
    return rep.cached("compact", compute)
