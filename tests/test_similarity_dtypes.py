"""Every float dtype and array-like goes in (cast to float64 first); other types get a clear error; any magnitude."""

import importlib

import numpy as np
import pandas as pd
import pytest
import torch

from repana.errors import InputError
from repana.similarity import Representation, bootstrap_ci, cca, cka, null_baseline, permutation_test, pwcca, similarity

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")

ALL_MEASURES = ["cca", "cca_r2", "svcca", "pwcca", "cka", "cka_debiased", "cka_rbf", "procrustes"]
MEASURE_OPTIONS = {"cka_rbf_notebook": ("cka_rbf", {"bandwidth": "median_all_entries", "sigma_fraction": 0.5})}


def related_pair(rng, n=400, dx=6, dy=5):
    x = rng.normal(size=(n, dx)) * np.linspace(0.5, 2.0, dx)
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + 0.5 * rng.normal(size=(n, dy))
    return x, y


HALF_DTYPES = [("numpy float16", lambda a: a.astype(np.float16), lambda a: a.astype(np.float64)),
               ("torch float16", lambda a: torch.from_numpy(a).half(), lambda t: t.double()),
               ("torch bfloat16", lambda a: torch.from_numpy(a).bfloat16(), lambda t: t.double())]


@pytest.mark.parametrize("measure", ALL_MEASURES)
@pytest.mark.parametrize("label, to_half, to_float64", HALF_DTYPES, ids=[h[0] for h in HALF_DTYPES])
def test_half_precision_equals_float64_of_the_same_rounded_data(rng, measure, label, to_half, to_float64):
    # n = 400 > 128: bf16's own epsilon times max(n, d) exceeded 1 and CCA refused as "numerically constant".
    x, y = related_pair(rng)
    x_half, y_half = to_half(x), to_half(y)
    expected = similarity(measure, to_float64(x_half), to_float64(y_half))
    assert similarity(measure, x_half, y_half) == pytest.approx(expected, abs=1e-12)
    assert 0.05 < expected < 1.0


def test_half_precision_rank_tolerance(rng):
    x = rng.normal(size=(2000, 8))
    float32_rule = 2000 * float(np.finfo(np.float32).eps)  # 2.4e-4
    assert Representation(x).rank_rtol() == 2000 * float(np.finfo(np.float64).eps)
    assert Representation(x.astype(np.float32)).rank_rtol() == float32_rule
    assert Representation(x.astype(np.float16)).rank_rtol() == 2 * float(np.finfo(np.float16).eps)  # 2e-3
    assert Representation(torch.from_numpy(x).bfloat16()).rank_rtol() == 2 * 2.0 ** -7  # 1.6e-2
    assert Representation(np.round(x * 10).astype(np.int32)).rank_rtol() == 2000 * float(np.finfo(np.float64).eps)
    assert Representation(x.astype(np.float16)[:, :2]).rank_rtol(rtol=0.5) == 0.5
    # fp16's own rule would be 2000 * 9.8e-4 ~ 2 and keep no direction at all.
    assert cca(x.astype(np.float16), x[:, :4] * 3.0).n_directions_x == 8


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_rank_deficient_half_precision_layer_drops_rounding_noise(rng, half):
    # A 64-unit layer of rank 16 rounded to half precision: 16 canonical correlations of ~1, not 64 with 48
    # directions of rounding noise (bfloat16 noise sits near 8e-4 of the top singular value).
    z = rng.normal(size=(1000, 16))
    x = torch.from_numpy(z @ rng.normal(size=(16, 64))).to(getattr(torch, half))
    y = torch.from_numpy(z @ rng.normal(size=(16, 64))).to(getattr(torch, half))
    result = cca(x, y)
    assert result.n_directions_x == result.n_directions_y == 16
    assert result.mean == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("measure", ALL_MEASURES)
def test_lists_nested_lists_and_dataframes(rng, measure):
    x, y = related_pair(rng, n=60, dx=3, dy=4)
    expected = similarity(measure, x, y)
    assert similarity(measure, x.tolist(), [list(row) for row in y]) == pytest.approx(expected, rel=1e-12)
    frame_x = pd.DataFrame(x, columns=["a", "b", "c"])
    frame_y = pd.DataFrame(y.astype(np.float32))
    assert similarity(measure, frame_x, frame_y) == pytest.approx(
        similarity(measure, x, y.astype(np.float32)), rel=1e-12)
    integers = np.round(10 * x).astype(np.int64)
    assert similarity(measure, integers, y) == pytest.approx(similarity(measure, integers.astype(float), y), rel=1e-12)


def test_functions_and_stats_take_lists_and_frames(rng):
    x, y = related_pair(rng, n=50, dx=3, dy=3)
    frame = pd.DataFrame(x)
    assert cka(frame, y.tolist()) == pytest.approx(cka(x, y), rel=1e-12)
    np.testing.assert_allclose(cca(frame, y.tolist()).coefficients, cca(x, y).coefficients, atol=1e-12)
    assert pwcca(x.tolist(), torch.from_numpy(y).half()) == pytest.approx(
        pwcca(x, torch.from_numpy(y).half().double()), abs=1e-12)
    assert bootstrap_ci("cka", frame, y.tolist(), n_resamples=20, method="percentile").value == pytest.approx(cka(x, y))
    assert permutation_test("cka", frame, y.tolist(), n_permutations=9).value == pytest.approx(cka(x, y))
    assert null_baseline("cka", x.tolist(), pd.DataFrame(y), n_permutations=5).samples.shape == (5,)


@pytest.mark.parametrize("bad, names", [
    (["a", "b", "c", "d"], r"list of strings"),
    (np.array([["1.0", "2.0"], ["3.0", "4.0"], ["5", "6"]]), r"ndarray of strings"),
    (pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), r"DataFrame of Python objects"),
    (np.array([[1, None], [2, 3], [4, 5]], dtype=object), r"ndarray of Python objects"),
    (np.ones((4, 2)) * (1 + 1j), r"ndarray of complex numbers"),
    (torch.ones(4, 2, dtype=torch.complex64), r"torch tensor of dtype torch.complex64"),
    ([[1.0, 2.0], [3.0]], r"rectangular array.*got list"),
    (np.ones((4, 2), dtype=bool), r"ndarray of booleans"),
    (torch.ones(4, 2, dtype=torch.bool), r"torch tensor of dtype torch.bool"),
    ({"a": 1}, r"dict"),
])
def test_unsupported_types_name_the_type(rng, bad, names):
    good = rng.normal(size=(len(bad) if len(bad) >= 2 else 4, 2))
    for measure in ("cka", "cca", "procrustes"):
        with pytest.raises(InputError, match=names):
            similarity(measure, bad, good)
        with pytest.raises(InputError, match=names):
            similarity(measure, good, bad)


SCALES = [1e200, 1e-200, 1e160, 1e-160, 1e300]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("measure", ALL_MEASURES + ["cka_rbf_notebook"])
def test_any_magnitude_gives_the_unit_scale_value(rng, measure, scale):
    # 1e160: squares overflow float64; 1e200 gave NaN (CKA) and 0.0 (Procrustes) before the rescaling.
    name, options = MEASURE_OPTIONS.get(measure, (measure, {}))
    x, y = related_pair(rng, n=120, dx=4, dy=3)
    expected = similarity(name, x, y, **options)
    assert similarity(name, x * scale, y, **options) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert similarity(name, x * scale, y * scale, **options) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert similarity(name, torch.from_numpy(x * scale), y / scale, **options) == pytest.approx(
        expected, rel=1e-10, abs=1e-12)


def test_extreme_magnitudes_for_each_function(rng):
    x, y = related_pair(rng, n=200, dx=5, dy=5)
    for kwargs in ({}, {"debiased": True}, {"kernel": "rbf"}, {"kernel": "rbf", "debiased": True}):
        assert cka(x * 1e200, y, **kwargs) == pytest.approx(cka(x, y, **kwargs), rel=1e-10)
    np.testing.assert_allclose(cca(x * 1e200, y * 1e-200).coefficients, cca(x, y).coefficients, atol=1e-12)
    big = x.copy()
    big[:, 0] *= 1e250  # one huge unit: the others fall below the rank tolerance (1e-250 of it) and are dropped
    result = cca(big, y)
    assert result.n_directions_x == 1 and np.isfinite(result.coefficients).all()
    assert Representation(x * 1e200).scale_exponent != 0
    assert Representation(x).scale_exponent == 0
    subnormal = x * 1e-310
    assert cka(subnormal, y) == pytest.approx(cka(x, y), rel=1e-6)  # subnormals carry fewer digits


def test_cholesky_route_matches_svd_route(rng, monkeypatch):
    # The fast route (Cholesky of X^T X) against the thin-SVD route, at the worst conditioning it accepts.
    cca_impl = importlib.import_module("repana.similarity.cca")  # the module (the package exports the function)

    x = rng.normal(size=(500, 12)) * np.geomspace(1.0, 1.5e-3, 12)  # condition number ~ 700 < 1e3
    y = x @ rng.normal(size=(12, 9)) + rng.normal(size=(500, 9))
    assert cca_impl._whitened_cross(Representation(x), Representation(y), None, "cca") is not None  # fast route
    fast = cca(x, y).coefficients, pwcca(x, y), pwcca(x, y, weights_from="y")
    monkeypatch.setattr(cca_impl, "CHOLESKY_MIN_SINGULAR_RATIO", 1.0)  # every representation takes the SVD route
    assert cca_impl._whitened_cross(Representation(x), Representation(y), None, "cca") is None
    slow = cca(x, y).coefficients, pwcca(x, y), pwcca(x, y, weights_from="y")
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-10)
    assert fast[1] == pytest.approx(slow[1], abs=1e-10)
    assert fast[2] == pytest.approx(slow[2], abs=1e-10)
    for measure in ("cca", "cca_r2", "pwcca"):  # float32 input: fast route again against the eigh-based SVD
        x32, y32 = x.astype(np.float32), y.astype(np.float32)
        value = similarity(measure, x32, y32)
        monkeypatch.setattr(cca_impl, "CHOLESKY_MIN_SINGULAR_RATIO", 1e-3)
        assert similarity(measure, x32, y32) == pytest.approx(value, abs=1e-9)
        monkeypatch.setattr(cca_impl, "CHOLESKY_MIN_SINGULAR_RATIO", 1.0)
