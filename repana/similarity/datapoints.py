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

_KEY_SEED = 20_191_909  # fixed: the same inputs always give the same row keys


def _row_keys(rep: Representation) -> torch.Tensor:
    """``(n,)`` float64: each row of the data times one fixed random vector. Equal rows give equal keys, and
    distinct rows equal keys only on a measure-zero set (then :func:`distinct_datapoints` compares rows)."""
    def compute():
        data, _ = rep._product_operand()  # raw or centred: equal rows stay equal either way
        generator = torch.Generator().manual_seed(_KEY_SEED + rep.d)
        direction = torch.randn(rep.d, dtype=torch.float64, generator=generator).to(data.device)
        return data @ direction
    return rep.cached("row_keys", compute)


def distinct_datapoints(rx: Representation, ry: Representation | None = None) -> int:
    """Number of distinct rows of ``rx`` (and ``ry`` beside it): the datapoints a comparison really has.

    Exact: when the row keys of the pair are all different the rows are too; otherwise the rows themselves
    are compared (``torch.unique``, only then, as it sorts whole rows)."""
    keys = _row_keys(rx) if ry is None else _row_keys(rx) + 2.0 * _row_keys(ry)
    if torch.unique(keys).numel() == rx.n:
        return rx.n
    data = rx.centered if ry is None else torch.cat([rx.centered, ry.centered], dim=1)
    return int(torch.unique(data, dim=0).shape[0])


def is_saturated(rep: Representation, n_distinct: int) -> bool:
    """True when ``rep``'s centred rank reaches ``n_distinct - 1`` (its datapoints are affinely independent)."""
    if rep.d + 1 < n_distinct:
        return False  # the rank is at most d
    return rep.rank() >= n_distinct - 1


def degenerate_reason(rx: Representation, ry: Representation) -> str | None:
    """Why a measure that saturates (plain CKA, Procrustes) is near 1 by construction on this pair, naming the
    effective rank; None when neither side is saturated."""
    n_distinct = distinct_datapoints(rx, ry)
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
