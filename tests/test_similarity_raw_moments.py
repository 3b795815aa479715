"""Representation without the centred copy: products from raw moments, values checked by the column-sums pass."""

import importlib

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.similarity import Representation

representation_module = importlib.import_module("repana.similarity.representation")


def centred_reference(x, y):
    """``Xc^T Yc`` in numpy, centring first."""
    return (x - x.mean(axis=0)).T @ (y - y.mean(axis=0))


def assert_products_close(actual, expected, x, y, rtol=1e-12):
    """Entrywise ``|actual - expected| <= rtol * ||Xc[:, j]|| ||Yc[:, k]||`` (the scale rounding works at)."""
    scale = np.outer(np.linalg.norm(x - x.mean(axis=0), axis=0), np.linalg.norm(y - y.mean(axis=0), axis=0))
    np.testing.assert_array_less(np.abs(np.asarray(actual) - np.asarray(expected)), rtol * scale)


def offset_columns(rng, n, d, offsets):
    """``(n, d)`` columns of unit biased variance with mean ``sqrt(offset_j)``: ``n m^2 / ||Xc||^2 = offset_j``."""
    centred = rng.normal(size=(n, d))
    centred -= centred.mean(axis=0)
    centred /= np.sqrt((centred ** 2).mean(axis=0))
    return centred + np.sqrt(np.asarray(offsets, dtype=float))


def test_raw_moment_products_equal_centred_products(rng, monkeypatch):
    # Offsets up to 2.9 (a mean of 1.7 standard deviations): raw moments are used, and agree to 1e-12 with
    # centring first, which the forced centred route (RAW_MOMENTS_MAX_OFFSET < 0) also does.
    x = offset_columns(rng, 3000, 12, np.linspace(0.0, 2.9, 12)) @ np.diag(np.geomspace(1e-3, 1e3, 12))
    y = np.maximum(x[:, :7] @ rng.normal(size=(7, 9)), 0.0) + rng.normal(size=(3000, 9))  # ReLU-like offsets
    rx, ry = Representation(x), Representation(y)
    assert rx._raw_moments and ry._raw_moments and rx._centered is None  # no centred copy was made
    assert_products_close(rx.covariance, centred_reference(x, x), x, x)
    assert_products_close(rx.cross(ry), centred_reference(x, y), x, y)
    assert rx._centered is None and ry._centered is None
    assert rx.sq_norm == pytest.approx(float(((x - x.mean(axis=0)) ** 2).sum()), rel=1e-13)
    monkeypatch.setattr(representation_module, "RAW_MOMENTS_MAX_OFFSET", -1.0)
    cx, cy = Representation(x), Representation(y)
    assert not cx._raw_moments and cx._centered is not None
    assert_products_close(rx.covariance, cx.covariance, x, x)
    assert_products_close(rx.cross(ry), cx.cross(cy), x, y)


def test_offset_limit_decides_the_route(rng):
    below = offset_columns(rng, 500, 3, [0.0, 1.0, 2.9])
    above = offset_columns(rng, 500, 3, [0.0, 1.0, 3.1])
    assert Representation(below)._raw_moments
    assert not Representation(above)._raw_moments  # one feature beyond the limit: centred first
    large = rng.normal(size=(400, 5)) + 1e4  # offset 1e8: raw moments would keep ~8 digits fewer
    rep = Representation(large)
    assert not rep._raw_moments
    assert_products_close(rep.covariance, centred_reference(large, large), large, large)


def test_mixed_operands_and_private_copies(rng):
    # A raw-moment layer against a centred one (no correction needed: Xc^T 1 = 0); a float32 layer whose
    # private float64 copy is centred in place once a measure needs the centred data.
    x = rng.normal(size=(800, 6)) + 0.5
    y = rng.normal(size=(800, 4)) + 300.0
    rx, ry = Representation(x), Representation(y)
    assert rx._raw_moments and not ry._raw_moments
    assert_products_close(rx.cross(ry), centred_reference(x, y), x, y)
    x32 = x.astype(np.float32)
    r32 = Representation(x32)
    expected = centred_reference(x32.astype(np.float64), y)
    before = r32.cross(ry).clone()
    centred = r32.centered  # made in place in the private copy: the raw data are gone
    assert r32._raw is None
    np.testing.assert_allclose(centred.numpy(), x32 - x32.astype(np.float64).mean(axis=0), rtol=0, atol=1e-12)
    after = Representation(x32)
    after.centered
    assert_products_close(before, expected, x32.astype(np.float64), y)
    assert_products_close(after.cross(ry), expected, x32.astype(np.float64), y)
    assert_products_close(r32.covariance, centred_reference(x32.astype(np.float64), x32.astype(np.float64)),
                          x32.astype(np.float64), x32.astype(np.float64))
    np.testing.assert_array_equal(x32, x.astype(np.float32))  # the caller's array untouched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("where", [(0, 0), (211, 3), (399, 4)])
def test_non_finite_values_found_by_the_sums_pass(rng, dtype, where):
    good = rng.normal(size=(400, 5))
    for values, count in (([np.nan], 1), ([np.inf], 1), ([-np.inf], 1), ([np.nan, np.inf], 2)):
        bad = good.astype(dtype)
        bad[where] = values[0]
        if len(values) > 1:
            bad[(where[0] + 1) % 400, 0] = values[1]
        for array in (bad, torch.from_numpy(bad)):
            with pytest.raises(InputError, match=rf"^X contains {count} NaN or Inf value\(s\) out of 2000;"):
                Representation(array, "X")


def test_magnitudes_at_the_edges_of_the_safe_range(rng):
    # The column sums vouch for the magnitude only well inside [2**-64, 2**64]; near the edges the exact check
    # decides, so the rescaling is exactly the documented rule of the largest |value|.
    base = rng.normal(size=(300, 4))
    for exponent in (-70, -65, -64, -63.5, -63, -60, 0, 60, 63, 63.5, 64, 65, 70, 600, -600):
        x = base * 2.0 ** exponent
        largest = float(np.abs(x).max())
        assert Representation(x).scale_exponent == representation_module._rescaling_exponent(largest), exponent
    overflowing = base * 1e160  # finite, but the squares overflow: the sums pass cannot vouch
    with np.errstate(over="ignore"):
        sq_sums = torch.from_numpy((overflowing ** 2).sum(axis=0))
    assert representation_module._magnitude_bound(sq_sums, 300) is None
    rep = Representation(overflowing)
    assert rep.scale_exponent != 0 and np.isfinite(rep.covariance.numpy()).all()


def test_constant_inputs_still_refused(rng):
    message = r"^X is constant across its 50 datapoints \(zero variance in every feature\)"
    for constant in (np.zeros((50, 3)), np.full((50, 3), 0.1), np.full((50, 3), -7e-200), np.full((50, 3), 3e250)):
        with pytest.raises(InputError, match=message):
            Representation(constant, "X")
    nearly = np.full((50, 3), 1.0)
    nearly[7, 1] += 2e-16  # one ulp apart: centred norm 2e-16 <= 8 n eps max|x| sqrt(n d) = 1.1e-12
    with pytest.raises(InputError, match=message):
        Representation(nearly, "X")
    one_varying = np.zeros((50, 3))
    one_varying[:, 2] = rng.normal(size=50)  # two constant (zero) features, one varying: not constant
    assert Representation(one_varying)._raw_moments


def test_non_contiguous_float64_inputs_read_in_place(rng):
    # Column sums and raw products on strided memory (Fortran order, every other column, a transposed tensor).
    from repana.similarity import cca, pwcca
    x = rng.normal(size=(500, 12)) + 0.5
    y = x[:, :6] @ rng.normal(size=(6, 8)) + rng.normal(size=(500, 8))
    expected = cca(x, y).coefficients, pwcca(x, y)
    for view in (np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2], torch.from_numpy(x).T.contiguous().T):
        assert Representation(view)._raw_moments
        np.testing.assert_allclose(cca(view, y).coefficients, expected[0], rtol=0, atol=1e-12)
        assert pwcca(view, y) == pytest.approx(expected[1], abs=1e-12)
