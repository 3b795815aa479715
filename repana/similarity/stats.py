"""Uncertainty for similarity values: bootstrap confidence intervals, permutation tests, null baselines.

All three resample *datapoints* (rows), keeping the features of each representation intact, and are seeded
(numpy ``default_rng(seed)``) so a run is reproducible. ``measure`` is a registered measure name
(:func:`repana.similarity.list_measures`); options go to the measure (``keep=20`` for svcca ...).

* :func:`bootstrap_ci`: confidence interval through ``scipy.stats.bootstrap``, resampling datapoints (rows of
  ``X`` and ``Y`` together, paired) with replacement: BCa (bias-corrected and accelerated, the default) or
  percentile. The percentile interval is the spread of the resampled values and need not contain the
  full-data value; BCa shifts and stretches it to correct the bootstrap distribution's bias and skew (duplicated
  datapoints bias CCA and the unbiased HSIC upwards), at the cost of ``n`` extra evaluations (the jackknife).
* :func:`permutation_test`: p-value of "no correspondence between the rows of X and Y": the measure on
  ``X`` against ``Y`` with its rows permuted, ``p = (1 + #{null >= observed}) / (1 + n_permutations)``.
* :func:`null_baseline`: what the measure gives by chance at this n and these widths (mean, spread and
  95th percentile over row permutations of ``Y``), so 0.9 can be told from chance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from repana.errors import InputError
from repana.progress import progress
from repana.similarity._arrays import check_same_datapoints
from repana.similarity.registry import get_measure
from repana.similarity.representation import as_representation


#: Interval methods of :func:`bootstrap_ci` (names as ``scipy.stats.bootstrap`` spells them).
BOOTSTRAP_METHODS = ("BCa", "percentile")


@dataclass(frozen=True)
class BootstrapResult:
    """``value`` on all datapoints; ``[low, high]`` interval at ``confidence`` by ``method`` (``"BCa"`` or
    ``"percentile"``); ``samples`` ``(n_resamples,)``: the measure on each resample; ``standard_error``: their
    standard deviation."""

    value: float
    low: float
    high: float
    confidence: float
    samples: np.ndarray = field(repr=False)  # too long to print
    method: str = "BCa"
    standard_error: float = float("nan")


@dataclass(frozen=True)
class PermutationResult:
    """``value`` observed; ``p_value`` one-sided (large values are evidence); ``null`` (n_permutations,)."""

    value: float
    p_value: float
    null: np.ndarray = field(repr=False)  # too long to print


@dataclass(frozen=True)
class NullBaseline:
    """The measure on row-permuted ``Y``: ``mean``, ``std``, ``quantile_95`` and ``samples`` (n_permutations,)."""

    mean: float
    std: float
    quantile_95: float
    samples: np.ndarray = field(repr=False)  # too long to print


def bootstrap_ci(measure: str, X, Y, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 show_progress: bool | None = None, method: str = "BCa", **options) -> BootstrapResult:
    """Bootstrap confidence interval of ``measure(X, Y)`` over datapoints, through ``scipy.stats.bootstrap``.

    Each resample draws ``n`` row indices with replacement and evaluates the measure on those rows of ``X``
    and ``Y`` together (paired: a datapoint keeps its two representations), each re-centred.

    Args:
        measure: a registered measure name; ``options`` go to it (``keep=20`` for svcca ...).
        X, Y: ``(n, d_x)`` and ``(n, d_y)`` activations of the same datapoints (any accepted array type).
        n_resamples: bootstrap resamples.
        confidence: level of the two-sided interval, in (0, 1).
        seed: seeds numpy's ``default_rng`` (same seed, same resamples, same interval).
        method: ``"BCa"`` (default; also evaluates the measure on the ``n`` leave-one-out subsets) or
            ``"percentile"`` (the ``(1 - confidence) / 2`` quantiles of the resampled values).

    Returns:
        :class:`BootstrapResult`. When every resample gives the same value (e.g. ``X`` against itself), BCa
        is undefined and the interval is that value on both sides.

    Raises:
        InputError: bad ``confidence`` / ``n_resamples`` / ``method``, or a BCa interval that scipy cannot
            form (a degenerate jackknife): use ``method="percentile"``.
    """
    from scipy import stats as scipy_stats  # imported here: scipy is only needed for intervals

    spec = get_measure(measure)
    _check_count(n_resamples, "n_resamples")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    if method not in BOOTSTRAP_METHODS:
        raise InputError(f"unknown bootstrap method {method!r}; choose one of {BOOTSTRAP_METHODS}")
    rx, ry = _pair(spec, X, Y)
    value = spec(rx, ry, **options)
    n_evaluations = n_resamples + (rx.n if method == "BCa" else 0)
    with progress(total=n_evaluations, desc=f"bootstrap {measure}", enabled=show_progress) as bar:
        def statistic(rows: np.ndarray) -> float:
            index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
            bar.update(1)
            return spec(rx.subset(index), ry.subset(index), **options)

        with warnings.catch_warnings():
            # a degenerate distribution is handled below, with a clear result instead of scipy's warning
            warnings.simplefilter("ignore", getattr(scipy_stats, "DegenerateDataWarning", RuntimeWarning))
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"scipy\.stats")
            result = scipy_stats.bootstrap((np.arange(rx.n),), statistic, n_resamples=n_resamples,
                                           vectorized=False, confidence_level=confidence, method=method,
                                           **_generator_argument(scipy_stats.bootstrap, seed))
    samples = np.asarray(result.bootstrap_distribution, dtype=float)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.ptp(samples) == 0.0:
        low = high = float(samples[0])
    elif not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"the {method} bootstrap interval of {measure} is undefined here (scipy returned "
                         f"[{low}, {high}]); use method='percentile'")
    return BootstrapResult(value, low, high, confidence, samples, method, float(result.standard_error))


def permutation_test(measure: str, X, Y, n_permutations: int = 1000, seed: int = 0,
                     show_progress: bool | None = None, **options) -> PermutationResult:
    """One-sided permutation p-value of ``measure(X, Y)`` against row-permuted ``Y`` (smallest: 1/(1+n_permutations))."""
    spec = get_measure(measure)
    rx, ry = _pair(spec, X, Y)
    value = spec(rx, ry, **options)
    null = _permuted_values(spec, rx, ry, n_permutations, seed, show_progress, options)
    p_value = (1.0 + np.count_nonzero(null >= value - 1e-12)) / (1.0 + n_permutations)
    return PermutationResult(value, float(p_value), null)


def null_baseline(measure: str, X, Y, n_permutations: int = 100, seed: int = 0,
                  show_progress: bool | None = None, **options) -> NullBaseline:
    """Chance level of ``measure`` at this n, d_x, d_y: the measure on row-permuted ``Y``."""
    spec = get_measure(measure)
    rx, ry = _pair(spec, X, Y)
    samples = _permuted_values(spec, rx, ry, n_permutations, seed, show_progress, options)
    return NullBaseline(float(samples.mean()), float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
                        float(np.quantile(samples, 0.95)), samples)


def _generator_argument(function, seed: int) -> dict:
    """scipy >= 1.15 takes ``rng=``, older releases (>= 1.10, the dependency floor) ``random_state=``."""
    import inspect

    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _pair(spec, X, Y):
    rx = as_representation(X, "X", spec.min_datapoints)
    ry = as_representation(Y, "Y", spec.min_datapoints)
    check_same_datapoints(rx.n, ry.n)
    return rx, ry


def _check_count(count: int, name: str) -> None:
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"{name} must be a positive integer, got {count!r}")


def _permuted_values(spec, rx, ry, n_permutations, seed, show_progress, options) -> np.ndarray:
    _check_count(n_permutations, "n_permutations")
    rng = np.random.default_rng(seed)
    values = np.empty(n_permutations)
    for i in progress(range(n_permutations), desc=f"permutations {spec.name}", enabled=show_progress):
        values[i] = spec(rx, ry.permuted(torch.from_numpy(rng.permutation(ry.n))), **options)
    return values
