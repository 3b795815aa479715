"""Bad input gets a clear error naming the problem; the registry lists and dispatches the measures."""

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.similarity import get_measure, list_measures, register_measure, registry, similarity


ALL_MEASURES = ["cca", "cca_r2", "svcca", "pwcca", "cka", "cka_debiased", "cka_rbf", "procrustes"]


def test_registry_lists_the_documented_names():
    assert list_measures()[:8] == ALL_MEASURES
    with pytest.raises(InputError, match="unknown similarity measure 'ckaa'.*cka_debiased"):
        similarity("ckaa", np.eye(3), np.eye(3))


@pytest.mark.parametrize("measure", ALL_MEASURES)
def test_every_measure_self_similarity_is_one_and_random_is_lower(rng, measure):
    x = rng.normal(size=(200, 6))
    y = rng.normal(size=(200, 6))
    assert similarity(measure, x, x) == pytest.approx(1.0, abs=1e-10)
    assert similarity(measure, x, y) < 0.5


@pytest.mark.parametrize("measure", ALL_MEASURES)
def test_numpy_and_torch_inputs_agree(rng, measure):
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 4)) + rng.normal(size=(60, 4))).astype(np.float32)
    assert similarity(measure, torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        similarity(measure, x, y), rel=1e-12)


@pytest.mark.parametrize("measure", ALL_MEASURES)
def test_bad_inputs(measure, rng):
    good = rng.normal(size=(20, 3))
    with pytest.raises(InputError, match="20 datapoints but Y has 19"):
        similarity(measure, good, good[:19])
    with pytest.raises(InputError, match="1-D"):
        similarity(measure, good[:, 0], good)
    with pytest.raises(InputError, match="reduce_conv"):
        similarity(measure, good.reshape(20, 3, 1, 1), good)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN or Inf"):
        similarity(measure, good, bad)
    bad[3, 1] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        similarity(measure, torch.from_numpy(bad), good)
    with pytest.raises(InputError, match="constant"):
        similarity(measure, np.full((20, 3), 0.1), good)
    needed = get_measure(measure).min_datapoints
    with pytest.raises(InputError, match=f"has 1 datapoints; at least {needed} are needed"):
        similarity(measure, good[:1], good[:1])


def test_debiased_needs_four_datapoints(rng):
    x = rng.normal(size=(3, 2))
    with pytest.raises(InputError, match="has 3 datapoints; at least 4"):
        similarity("cka_debiased", x, x)


def test_register_custom_measure(rng):
    def mean_abs_correlation_of_first_units(rx, ry):
        a, b = rx.centered[:, 0], ry.centered[:, 0]
        return float(abs(a @ b) / (a.norm() * b.norm()))

    register_measure("first_unit_corr", mean_abs_correlation_of_first_units, description="test")
    try:
        x = rng.normal(size=(50, 2))
        assert similarity("first_unit_corr", x, -2 * x) == pytest.approx(1.0)
        with pytest.raises(InputError, match="already registered"):
            register_measure("first_unit_corr", mean_abs_correlation_of_first_units, description="again")
    finally:
        registry._REGISTRY.pop("first_unit_corr")


def test_inputs_are_never_modified(rng):
    for dtype in (np.float32, np.float64):
        x = rng.normal(size=(30, 4)).astype(dtype) + 5
        y = rng.normal(size=(30, 3)).astype(dtype)
        x_copy, y_copy = x.copy(), y.copy()
        for measure in ALL_MEASURES:
            similarity(measure, x, torch.from_numpy(y))
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(y, y_copy)


def test_reversed_numpy_views_are_accepted_by_every_input_path():
    from repana.similarity import cca, cka, procrustes_distance

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 4))
    x_reversed, y_reversed = x[::-1], y[::-1, ::-1]  # negative strides, which torch.from_numpy refuses
    assert cka(x_reversed, y_reversed) == pytest.approx(cka(x[::-1].copy(), y[::-1, ::-1].copy()), abs=1e-12)
    assert cca(x_reversed, y_reversed).mean == pytest.approx(cca(x, y).mean, abs=1e-10)  # a row order is irrelevant
    assert procrustes_distance(x_reversed, x_reversed) == pytest.approx(0.0, abs=1e-12)


def test_an_unknown_measure_option_is_named(rng):
    x = rng.normal(size=(20, 3))
    with pytest.raises(InputError, match=r"^measure 'cka' has no option 'nope'; it takes kernel, debiased, "
                                         r"sigma_fraction, form, bandwidth$"):
        similarity("cka", x, x, nope=1)
    with pytest.raises(InputError, match=r"^measure 'procrustes' has no option 'keep'; it takes no options$"):
        similarity("procrustes", x, x, keep=2)
    with pytest.raises(InputError, match="measure 'cca' has no option 'keep'; it takes rtol"):
        similarity("cca", x, x, keep=2)
    assert similarity("svcca", x, x, keep=2) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:plain CKA with 2 datapoints:repana.similarity.RepanaWarning")
def test_plain_cka_of_two_datapoints_warns_that_it_is_degenerate(rng):
    from repana.similarity import RepanaWarning, cka

    x, y = rng.normal(size=(2, 16)), rng.normal(size=(2, 16))
    with pytest.warns(RepanaWarning, match="plain CKA is degenerate here: X has effective rank 1 = its 2 distinct"):
        assert cka(x, y) == pytest.approx(1.0)
    with pytest.warns(RepanaWarning, match="cka is degenerate here: X has effective rank 4 = its 5 distinct "
                                           r"datapoints - 1 \(100 rows, 5 distinct\) with 16 features"):
        similarity("cka", np.repeat(rng.normal(size=(5, 16)), 20, axis=0),
                   np.repeat(rng.normal(size=(5, 16)), 20, axis=0))
