"""Bootstrap intervals, permutation tests and null baselines over datapoints."""

import numpy as np
import pytest
import torch

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
    assert result.value == pytest.approx(cka(x, y))
    assert result.low < result.value < result.high
    assert 0.01 < result.high - result.low < 0.3
    np.testing.assert_allclose(result.samples[[0, -1]],
                               bootstrap_ci("cka", x, y, n_resamples=200, seed=3).samples[[0, -1]])
    assert np.percentile(result.samples, 2.5) == pytest.approx(result.low)
    with pytest.raises(InputError, match="confidence"):
        bootstrap_ci("cka", x, y, confidence=95)


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
