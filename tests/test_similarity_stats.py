"""Bootstrap intervals, permutation tests and null baselines over datapoints."""

import numpy as np
import pytest

from repana.errors import InputError
from repana.similarity import bootstrap_ci, cka, null_baseline, permutation_test, svcca

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


@pytest.fixture
def related(rng):
    x = rng.normal(size=(150, 8))
    y = np.tanh(x @ rng.normal(size=(8, 10))) + 0.8 * rng.normal(size=(150, 10))
    return x, y


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded(related):
    x, y = related
    result = bootstrap_ci("cka", x, y, n_resamples=200, seed=3)
    assert result.method == "BCa"
    assert result.value == pytest.approx(cka(x, y))
    assert result.low < result.value < result.high
    assert 0.01 < result.high - result.low < 0.3
    again = bootstrap_ci("cka", x, y, n_resamples=200, seed=3)
    np.testing.assert_array_equal(result.samples, again.samples)
    assert (again.low, again.high) == (result.low, result.high)
    other_seed = bootstrap_ci("cka", x, y, n_resamples=200, seed=4)
    assert other_seed.low != result.low
    assert result.standard_error == pytest.approx(result.samples.std(ddof=1))
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci("cka", x, y, confidence=95)
    with pytest.raises(InputError, match="bootstrap method 'bca'"):
        bootstrap_ci("cka", x, y, method="bca")


def test_percentile_interval_is_the_quantiles_and_bca_corrects_the_resampling_bias(related):
    x, y = related
    percentile = bootstrap_ci("cka", x, y, n_resamples=200, seed=3, method="percentile")
    bca = bootstrap_ci("cka", x, y, n_resamples=200, seed=3)
    # Same resamples (same seed), different intervals.
    np.testing.assert_array_equal(percentile.samples, bca.samples)
    assert percentile.low == pytest.approx(np.percentile(percentile.samples, 2.5), rel=1e-12)
    assert percentile.high == pytest.approx(np.percentile(percentile.samples, 97.5), rel=1e-12)
    # Duplicated datapoints inflate plain CKA: the resampled values sit above the full-data value, and the
    # percentile interval with them; BCa moves the interval back down around the estimate.
    assert np.median(bca.samples) > bca.value
    assert bca.low < percentile.low and bca.high < percentile.high
    assert bca.low < bca.value < bca.high


def test_degenerate_bootstrap_gives_the_constant_value(rng):
    x = rng.normal(size=(40, 3))
    result = bootstrap_ci("cka", x, 2.0 * x, n_resamples=30)
    assert result.value == pytest.approx(1.0) and result.low == result.high == pytest.approx(1.0)


def test_bootstrap_intervals_cover_the_population_value():
    # 1-D Gaussian pairs with correlation 0.6: linear CKA is the squared sample correlation, whose population
    # value is 0.36. Over 30 independent datasets the 90% intervals must cover it most of the time
    # (expected 27; binomial sd 1.6): a broken interval (e.g. centred on the wrong value) covers far less.
    rho, n = 0.6, 120
    generator = np.random.default_rng(2024)
    covered = {"BCa": 0, "percentile": 0}
    for trial in range(30):
        z = generator.normal(size=(n, 2))
        x = z[:, :1]
        y = rho * z[:, :1] + np.sqrt(1 - rho ** 2) * z[:, 1:]
        for method in covered:
            result = bootstrap_ci("cka", x, y, n_resamples=200, confidence=0.9, seed=trial, method=method)
            covered[method] += result.low <= rho ** 2 <= result.high
    assert covered["BCa"] >= 23 and covered["percentile"] >= 23, covered


def test_permutation_test_separates_related_from_independent(related, rng):
    x, y = related
    assert permutation_test("cka", x, y, n_permutations=99).p_value == pytest.approx(0.01)
    independent = permutation_test("cka", x, rng.normal(size=(150, 10)), n_permutations=99, seed=1)
    assert independent.p_value > 0.05
    assert independent.null.shape == (99,)


def test_null_baseline_matches_chance_level_of_shape(rng):
    # Plain linear CKA of independent 100 x 50 data is about d / (n + d) = 1/3 (see cka.chance_level).
    x, y = rng.normal(size=(100, 50)), rng.normal(size=(100, 50))
    baseline = null_baseline("cka", x, y, n_permutations=50)
    assert baseline.mean == pytest.approx(1 / 3, abs=0.04)
    assert 0 < baseline.std < 0.03
    assert baseline.quantile_95 > baseline.mean
    debiased = null_baseline("cka_debiased", x, y, n_permutations=50)
    assert abs(debiased.mean) < 0.02


def test_null_baseline_with_measure_options(related):
    x, y = related
    baseline = null_baseline("svcca", x, y, n_permutations=30, keep=3)
    assert baseline.mean < svcca(x, y, keep=3)
