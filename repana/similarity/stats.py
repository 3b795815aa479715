"""Uncertainty for similarity values: bootstrap confidence intervals, permutation tests, null baselines.

All three resample *datapoints* (rows), keeping the features of each representation intact, and are seeded
(numpy ``default_rng(seed)``) so a run is reproducible. ``measure`` is a registered measure name
(:func:`repana.similarity.list_measures`); options go to the measure (``keep=20`` for svcca ...).

* :func:`bootstrap_ci`: percentile interval of the measure over datapoints drawn with replacement. Duplicated
  datapoints bias the unbiased-HSIC (debiased CKA) and CCA estimates somewhat; read the interval as the
  spread of the estimate, centred on the full-data value.
* :func:`permutation_test`: p-value of "no correspondence between the rows of X and Y": the measure on
  ``X`` against ``Y`` with its rows permuted, ``p = (1 + #{null >= observed}) / (1 + n_permutations)``.
* :func:`null_baseline`: what the measure gives by chance at this n and these widths (mean, spread and
  95th percentile over row permutations of ``Y``), so 0.9 can be told from chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from repana.errors import InputError
from repana.progress import progress
from repana.similarity._arrays import check_same_datapoints
from repana.similarity.registry import get_measure
from repana.similarity.representation import as_representation


@dataclass(frozen=True)
class BootstrapResult:
    """``value`` on all datapoints; ``[low, high]`` percentile interval at ``confidence``; ``samples`` (n_resamples,)."""

    value: float
    low: float
    high: float
    confidence: float
    samples: np.ndarray = field(repr=False)  # too long to print


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
                 show_progress: bool | None = None, **options) -> BootstrapResult:
    """Percentile bootstrap interval of ``measure(X, Y)`` over datapoints (rows drawn with replacement)."""
    spec = get_measure(measure)
    _check_count(n_resamples, "n_resamples")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie in (0, 1), got {confidence}")
    rx, ry = _pair(spec, X, Y)
    value = spec(rx, ry, **options)
    rng = np.random.default_rng(seed)
    samples = np.empty(n_resamples)
    for i in progress(range(n_resamples), desc=f"bootstrap {measure}", enabled=show_progress):
        index = torch.from_numpy(rng.integers(0, rx.n, size=rx.n))
        samples[i] = spec(rx.subset(index), ry.subset(index), **options)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return BootstrapResult(value, float(low), float(high), confidence, samples)


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
