"""Centered kernel alignment (Kornblith et al. 2019): linear, RBF, and debiased (Song et al. 2012 HSIC).

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for kernel matrices of two representations of the
same datapoints. Two exact ways to compute linear CKA, chosen by cost:

* feature form (used when ``d_x * d_y <= n^2``, so always when ``n > d``): ``||Xc^T Yc||_F^2`` needs a
  ``(d_x, d_y)`` matrix, never an ``n x n`` one;
* Gram form (when features outnumber datapoints): ``<H K H, H L H>`` with ``K = X X^T``.

Debiased CKA replaces the biased HSIC by the unbiased estimator of Song et al. (2012), computed from
U-centred Gram matrices or, for the linear kernel, from feature-space sums (both forms agree to
rounding). Plain CKA is inflated when datapoints are few against features: independent isotropic random
data give about ``sqrt(dx dy / ((n + dx) (n + dy)))`` (75 x 1600: about 0.95); a :class:`RepanaWarning`
says so and points to ``debiased=True`` or :func:`repana.similarity.null_baseline`.
"""

from __future__ import annotations

import math

from repana.errors import InputError
from repana.similarity._arrays import warn
from repana.similarity.datapoints import warn_if_degenerate
from repana.similarity.representation import BANDWIDTHS, Representation, as_representation, check_pair

KERNELS = ("linear", "rbf")
FORMS = ("auto", "feature", "gram")
#: Plain CKA warns when independent isotropic data of this shape would score at least this much.
CHANCE_WARNING_LEVEL = 0.25


def cka(X, Y, kernel: str = "linear", debiased: bool = False, sigma_fraction: float = 0.8,
        form: str = "auto", bandwidth: str = "median_distinct_pairs") -> float:
    """CKA between ``X (n, d_x)`` and ``Y (n, d_y)``.

    ``X``, ``Y``: numpy arrays or torch tensors of any float dtype (float16, bfloat16, float32, float64) or
    integers, CPU or CUDA, nested lists or pandas DataFrames; computed in float64 (cast first). Values of any
    magnitude (1e-200 ... 1e200) give the same result as unit-scale data (rescaled by a power of two inside).

    Args:
        kernel: ``"linear"`` or ``"rbf"`` (Gaussian kernel ``exp(-||xi - xj||^2 / (2 sigma^2))``).
        sigma_fraction: RBF only: ``sigma = sigma_fraction *`` the median distance named by ``bandwidth``
            (Kornblith et al. 2019 report fractions 0.2, 0.4 and 0.8; their notebook's demo uses 0.5).
        bandwidth: RBF only: ``"median_distinct_pairs"`` (default): median Euclidean distance over the
            pairs ``i < j``; ``"median_all_entries"``: ``sigma**2 = sigma_fraction**2 *`` the median of all
            ``n**2`` squared distances, the diagonal's zeros included -- Kornblith et al.'s demo notebook
            (``gram_rbf(x, threshold=sigma_fraction)``), which reproduces its published values exactly.
        debiased: use the unbiased HSIC estimator (Song et al. 2012); needs n >= 4. Recommended when
            datapoints are few against features; values can then be slightly negative.
        form: ``"auto"`` (feature form when ``d_x d_y <= n^2``, else Gram form), ``"feature"`` or ``"gram"``
            (both exact; forcing one is for testing and benchmarking; ``"feature"`` is linear-only).

    Returns:
        CKA as a Python float in [0, 1] (debiased: can dip below 0). Plain CKA warns (RepanaWarning) when the
        value is degenerate: a side's centred rank reaches its distinct datapoints - 1
        (:mod:`repana.similarity.datapoints`).
    """
    rx = as_representation(X, "X", min_datapoints=4 if debiased else 2)
    ry = as_representation(Y, "Y", min_datapoints=4 if debiased else 2)
    value = cka_from_representations(rx, ry, kernel=kernel, debiased=debiased,
                                     sigma_fraction=sigma_fraction, form=form, bandwidth=bandwidth)
    if not debiased:
        warn_if_degenerate("plain CKA", rx, ry)
    return value


def cka_from_representations(rx: Representation, ry: Representation, kernel: str = "linear",
                             debiased: bool = False, sigma_fraction: float = 0.8, form: str = "auto",
                             bandwidth: str = "median_distinct_pairs") -> float:
    """:func:`cka` on prepared :class:`Representation` objects (their per-layer statistics are reused)."""
    check_pair(rx, ry)
    if kernel not in KERNELS:
        raise InputError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if form not in FORMS:
        raise InputError(f"unknown form {form!r}; choose one of {FORMS}")
    if bandwidth not in BANDWIDTHS:
        raise InputError(f"unknown RBF bandwidth {bandwidth!r}; choose one of {BANDWIDTHS}")
    if debiased and rx.n < 4:
        raise InputError(f"debiased CKA needs at least 4 datapoints, got {rx.n}")
    if not debiased:
        _warn_if_inflated(rx.n, rx.d, ry.d)
    if form == "auto":
        form = "feature" if kernel == "linear" and rx.d * ry.d <= rx.n * rx.n else "gram"
    if form == "feature":
        if kernel != "linear":
            raise InputError("the feature form exists only for the linear kernel; use form='gram' or 'auto'")
        return _linear_cka_feature(rx, ry, debiased)
    return _gram_cka(rx, ry, kernel, debiased, sigma_fraction, bandwidth)


def chance_level(n_datapoints: int, n_features_x: int, n_features_y: int) -> float:
    """Approximate plain linear CKA of independent isotropic Gaussian data of this shape."""
    return math.sqrt(n_features_x * n_features_y / ((n_datapoints + n_features_x) * (n_datapoints + n_features_y)))


def _warn_if_inflated(n: int, dx: int, dy: int) -> None:
    level = chance_level(n, dx, dy)
    if level >= CHANCE_WARNING_LEVEL:
        warn(f"plain CKA with {n} datapoints against {dx} and {dy} features is inflated: independent random "
             f"data of this shape score about {level:.2f}. Use debiased=True ('cka_debiased'), more datapoints, "
             f"or compare against repana.similarity.null_baseline")


def _linear_cka_feature(rx: Representation, ry: Representation, debiased: bool) -> float:
    cross = rx.cross(ry)  # (d_x, d_y): the only per-pair work
    cross_inner = float((cross * cross).sum())
    if not debiased:
        return cross_inner / math.sqrt(rx.linear_self_inner * ry.linear_self_inner)
    numerator = _unbiased_hsic_feature(rx, ry, cross_inner)
    return _normalise(numerator, _self_unbiased_hsic_feature(rx), _self_unbiased_hsic_feature(ry))


def _unbiased_hsic_feature(rx: Representation, ry: Representation, cross_inner: float) -> float:
    """``n (n - 3) HSIC_u`` for the linear kernel from feature-space sums (centred data: ``K 1 = 0``).

    With ``K~`` the Gram matrix with its diagonal zeroed and ``k_i = ||x_i||^2``:
    ``tr(K~ L~) = ||X^T Y||^2 - sum k_i l_i``, ``1^T K~ 1 = -||X||_F^2``, ``1^T K~ L~ 1 = sum k_i l_i``.
    """
    n = rx.n
    diag_inner = float((rx.row_sq_norms * ry.row_sq_norms).sum())
    return cross_inner + rx.sq_norm * ry.sq_norm / ((n - 1) * (n - 2)) - n / (n - 2) * diag_inner


def _self_unbiased_hsic_feature(rep: Representation) -> float:
    return rep.cached("self_unbiased_hsic_feature",
                       lambda: _unbiased_hsic_feature(rep, rep, rep.linear_self_inner))


def _gram_cka(rx: Representation, ry: Representation, kernel: str, debiased: bool, sigma_fraction: float,
              bandwidth: str) -> float:
    kx = rx.centered_gram(kernel, sigma_fraction, unbiased=debiased, bandwidth=bandwidth)
    ky = ry.centered_gram(kernel, sigma_fraction, unbiased=debiased, bandwidth=bandwidth)
    key = ("self_gram_inner", kernel, (float(sigma_fraction), bandwidth) if kernel == "rbf" else None, debiased)
    self_x = rx.cached(key, lambda: float((kx * kx).sum()))
    self_y = ry.cached(key, lambda: float((ky * ky).sum()))
    return _normalise(float((kx * ky).sum()), self_x, self_y)


def _normalise(cross: float, self_x: float, self_y: float) -> float:
    if self_x <= 0 or self_y <= 0:
        raise InputError("CKA is undefined: the estimated HSIC of a representation with itself is <= 0 "
                         "(debiased estimator with too few datapoints, or a degenerate kernel); "
                         "use more datapoints")
    return cross / math.sqrt(self_x * self_y)


def unbiased_linear_hsic(rx: Representation, ry: Representation) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of the linear kernels, normalised by ``n (n - 3)``.

    Feature or Gram form by cost, as in :func:`cka`; ``rx is ry`` reuses the cached self statistics.
    """
    check_pair(rx, ry)
    n = rx.n
    if n < 4:
        raise InputError(f"the unbiased HSIC estimator needs at least 4 datapoints, got {n}")
    if rx.d * ry.d <= n * n:
        if rx is ry:
            value = _self_unbiased_hsic_feature(rx)
        else:
            cross = rx.cross(ry)
            value = _unbiased_hsic_feature(rx, ry, float((cross * cross).sum()))
    else:
        kx = rx.centered_gram("linear", unbiased=True)
        ky = ry.centered_gram("linear", unbiased=True)
        value = float((kx * ky).sum())
    return value / (n * (n - 3))
