"""Effective datapoints of a comparison, and when a similarity value is degenerate.

Repeated inputs are one datapoint: 5 distinct rows repeated 20 times span the same 4-dimensional space of
centred datapoints as the 5 rows once. :func:`distinct_datapoints` counts the distinct rows of a pair of
representations (a row of the pair is its row of ``X`` next to its row of ``Y``).

A representation is *saturated* when the rank of its centred data reaches ``distinct datapoints - 1``, the
most any representation of those datapoints can have: its datapoints are then affinely independent, every
function of them is a linear readout of it, and generic data of ``d`` features are saturated as soon as
``distinct datapoints <= d + 1``. Measures invariant to invertible linear maps (CCA, SVCCA, PWCCA) are then
1 whatever the other representation is (Kornblith et al. 2019, Section 3, arXiv 1905.00414); repana's
CCA family refuses such inputs (``k_x + k_y >= distinct datapoints``, see :mod:`repana.similarity.cca`). Plain
CKA (linear, RBF) and Procrustes see only the centred Gram matrix, which is free when saturated: unrelated
data score near 1 (2 distinct datapoints: exactly 1; 50 x 20000 Gaussian data: Procrustes 0.9994). Such a value
is flagged degenerate (:func:`degenerate_reason`): a ``degenerate`` column in comparison frames and a
:class:`~repana.similarity.RepanaWarning` naming the effective rank.
"""

from __future__ import annotations

import torch

from repana.similarity._arrays import warn
from repana.similarity.representation import Representation

_BLOCK_ROWS = 512


def distinct_datapoints(rx: Representation, ry: Representation | None = None, stop_at: int | None = None) -> int:
    """Number of distinct rows of ``rx`` (and ``ry`` beside it): the datapoints a comparison really has.

    Exact: rows are compared by value (their float64 bytes, with -0.0 read as 0.0). ``stop_at``: stop counting
    once that many distinct rows are found and return ``stop_at``: what a caller that only asks "more than
    k?" needs, in the time of about k rows instead of a pass over all of them (conv maps with spatial
    positions as datapoints have thousands of rows, and one blank background repeats many of them).
    """
    limit = rx.n if stop_at is None else min(int(stop_at), rx.n)
    seen: set[bytes] = set()
    for start in range(0, rx.n, _BLOCK_ROWS):   # blocks: an early stop converts only the rows it reads
        rows = slice(start, start + _BLOCK_ROWS)
        block = rx.centered[rows] if ry is None else torch.cat([rx.centered[rows], ry.centered[rows]], dim=1)
        # + 0.0 turns -0.0 into 0.0, so that equal values have equal bytes
        for row in (block.detach().to("cpu", torch.float64) + 0.0).contiguous().numpy():
            seen.add(row.tobytes())
            if len(seen) >= limit:
                return limit
    return len(seen)


def is_saturated(rep: Representation, n_distinct: int) -> bool:
    """True when ``rep``'s centred rank reaches ``n_distinct - 1`` (its datapoints are affinely independent)."""
    if rep.d + 1 < n_distinct:
        return False  # the rank is at most d
    return rep.rank() >= n_distinct - 1


def degenerate_reason(rx: Representation, ry: Representation) -> str | None:
    """Why a measure that saturates (plain CKA, Procrustes) is near 1 by construction on this pair, naming the
    effective rank; None when neither side is saturated."""
    # saturation needs distinct datapoints <= d + 1 (is_saturated), so counting stops above the larger d + 1
    n_distinct = distinct_datapoints(rx, ry, stop_at=max(rx.d, ry.d) + 2)
    for rep in (rx, ry):
        if is_saturated(rep, n_distinct):
            repeated = "" if n_distinct == rep.n else f" ({rep.n} rows, {n_distinct} distinct)"
            return (f"{rep.name} has effective rank {rep.rank()} = its {n_distinct} distinct datapoints - 1"
                    f"{repeated} with {rep.d} features: any representation of these datapoints is a linear "
                    f"readout of it, so unrelated representations score near 1 (2 distinct datapoints: exactly 1); use "
                    f"more distinct datapoints than features (reduction 'mean' or 'positions' for conv maps), "
                    f"cka_debiased or repana.similarity.null_baseline")
    return None


def warn_if_degenerate(measure: str, rx: Representation, ry: Representation) -> None:
    """A :class:`~repana.similarity.RepanaWarning` when :func:`degenerate_reason` finds a reason."""
    reason = degenerate_reason(rx, ry)
    if reason is not None:
        warn(f"{measure} is degenerate here: {reason}")
