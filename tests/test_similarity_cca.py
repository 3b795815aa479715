"""CCA, SVCCA, PWCCA: hand-derived values, rank deficiency, invariances, the sample-size refusal."""

import importlib

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.similarity import Representation, cca, pwcca, similarity, svcca


# With a = (e1 - e2)/sqrt2, b = (e3 - e4)/sqrt2, c = (e5 - e6)/sqrt2 (orthonormal, centred):
# X = [2 sqrt2 a, sqrt2 b], Y = [sqrt2 a, 5 sqrt2 (0.6 b + 0.8 c)].
# span(X) = {a, b}, span(Y) = {a, 0.6 b + 0.8 c}: canonical correlations cos 0 = 1 and <b, 0.6b + 0.8c> = 0.6.
X_HAND = np.array([[2, 0], [-2, 0], [0, 1], [0, -1], [0, 0], [0, 0]], dtype=float)
Y_HAND = np.array([[1, 0], [-1, 0], [0, 3], [0, -3], [0, 4], [0, -4]], dtype=float)


def test_cca_hand_derived():
    result = cca(X_HAND, Y_HAND)
    np.testing.assert_allclose(result.coefficients, [1.0, 0.6], atol=1e-12)
    assert result.mean == pytest.approx(0.8)
    assert result.mean_squared == pytest.approx((1 + 0.36) / 2)
    assert similarity("cca", X_HAND, Y_HAND) == pytest.approx(0.8)
    assert similarity("cca_r2", X_HAND, Y_HAND) == pytest.approx(0.68)


def test_cca_one_dimension_is_absolute_pearson_correlation():
    x = np.array([-2, -1, 0, 1, 2], dtype=float)[:, None]
    y = np.array([-2, 1, 0, -1, 2], dtype=float)[:, None]
    # sum(x y) = 4 - 1 + 0 - 1 + 4 = 6; |x| |y| = 10: correlation 0.6 (and 0.6 for -y too).
    assert cca(x, y).mean == pytest.approx(0.6)
    assert cca(x, -y).mean == pytest.approx(0.6)


def test_pwcca_hand_derived_and_depends_on_weights_from():
    # Canonical variates of X: h1 = a, h2 = b. Loadings on X's units: |<a, 2 sqrt2 a>| = 2 sqrt2,
    # |<b, sqrt2 b>| = sqrt2 -> weights (2/3, 1/3): PWCCA = 2/3 * 1 + 1/3 * 0.6 = 13/15.
    assert pwcca(X_HAND, Y_HAND, weights_from="x") == pytest.approx(13 / 15)
    # Of Y: h1 = a, h2 = 0.6 b + 0.8 c; loadings sqrt2 and 5 sqrt2 -> (1/6, 5/6): 1/6 + 5/6 * 0.6 = 2/3.
    assert pwcca(X_HAND, Y_HAND, weights_from="y") == pytest.approx(2 / 3)
    assert pwcca(Y_HAND, X_HAND, weights_from="y") == pytest.approx(13 / 15)
    with pytest.raises(InputError, match="weights_from"):
        pwcca(X_HAND, Y_HAND, weights_from="smaller")


def test_svcca_keep_rules():
    # keep=1.0 or all directions is plain mean CCA; keep=1 direction keeps X's a and Y's (0.6b+0.8c): 0.
    assert svcca(X_HAND, Y_HAND, keep=1.0) == pytest.approx(0.8)
    assert svcca(X_HAND, Y_HAND, keep=2) == pytest.approx(0.8)
    # X's variances 8 and 2 (80% / 20%), Y's 2 and 50: keep=0.75 keeps one direction each.
    assert svcca(X_HAND, Y_HAND, keep=0.75) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError, match="keep"):
        svcca(X_HAND, Y_HAND, keep=3)
    with pytest.raises(InputError, match="keep"):
        svcca(X_HAND, Y_HAND, keep=1.5)


def test_rank_deficient_layer_drops_null_directions(rng):
    # A 64-unit float32 layer of rank 16: 16 coefficients of 1, not 64 with 48 near zero.
    z = rng.normal(size=(400, 16))
    x = (z @ rng.normal(size=(16, 64))).astype(np.float32)
    y = (z @ rng.normal(size=(16, 64))).astype(np.float32)
    result = cca(x, y)
    assert result.n_directions_x == result.n_directions_y == 16
    assert result.coefficients.shape == (16,)
    assert result.mean == pytest.approx(1.0, abs=1e-4)
    assert svcca(x, y) == pytest.approx(1.0, abs=1e-4)
    assert pwcca(x, y) == pytest.approx(1.0, abs=1e-4)


def test_refuses_when_datapoints_do_not_exceed_kept_directions(rng):
    x, y = rng.normal(size=(75, 1600)), rng.normal(size=(75, 1600))
    for measure in ("cca", "svcca", "pwcca"):
        with pytest.raises(InputError, match=r"75 datapoints.*74 \+ 74.*more than 148") as info:
            similarity(measure, x, y, **({"keep": 1.0} if measure == "svcca" else {}))
        assert "positions" in str(info.value)
    # Fewer directions make it well posed: 10 + 10 < 75.
    assert 0.0 < svcca(x, y, keep=10) < 0.6


def test_invariant_to_invertible_linear_maps(rng):
    x = rng.normal(size=(300, 8))
    y = np.tanh(x @ rng.normal(size=(8, 6))) + 0.5 * rng.normal(size=(300, 6))
    map_x = rng.normal(size=(8, 8)) @ np.diag(np.linspace(0.1, 10, 8))
    map_y = rng.normal(size=(6, 6))
    for measure, kwargs in (("cca", {}), ("cca_r2", {}), ("svcca", {"keep": 1.0})):
        base = similarity(measure, x, y, **kwargs)
        assert similarity(measure, x @ map_x + 3.0, y @ map_y, **kwargs) == pytest.approx(base, rel=1e-9)


def test_symmetry_self_similarity_and_torch(rng):
    x, y = rng.normal(size=(120, 5)), rng.normal(size=(120, 7))
    np.testing.assert_allclose(cca(x, y).coefficients, cca(y, x).coefficients, atol=1e-12)
    assert svcca(x, y) == pytest.approx(svcca(y, x))
    assert cca(x, x).mean == pytest.approx(1.0)
    assert pwcca(x, x) == pytest.approx(1.0)
    assert svcca(torch.from_numpy(x).float(), y) == pytest.approx(svcca(x.astype(np.float32), y), rel=1e-12)
    assert cca(x, y).mean < 0.4  # independent data


def test_eigh_route_for_float32_matches_direct_svd(rng):
    # float32 input -> default tolerance max(n, d) * 1.2e-7 >= 1e-6: SVD from the float64 eigendecomposition
    # of X^T X (tall) or X X^T (wide); rtol=1e-7 forces LAPACK's direct SVD. Same numbers.
    tall_x = (rng.normal(size=(400, 12)) * np.linspace(0.01, 5, 12)).astype(np.float32)
    tall_y = (tall_x @ rng.normal(size=(12, 9)) + rng.normal(size=(400, 9))).astype(np.float32)
    np.testing.assert_allclose(cca(tall_x, tall_y).coefficients, cca(tall_x, tall_y, rtol=1e-7).coefficients,
                               atol=1e-9)
    assert pwcca(tall_x, tall_y) == pytest.approx(pwcca(tall_x, tall_y, rtol=1e-7), abs=1e-9)
    wide_x = rng.normal(size=(60, 300)).astype(np.float32)
    wide_y = (wide_x @ rng.normal(size=(300, 200))).astype(np.float32)
    assert svcca(wide_x, wide_y, keep=10) == pytest.approx(svcca(wide_x, wide_y, keep=10, rtol=1e-7), abs=1e-9)
    assert pwcca(wide_x[:, :20], wide_y[:, :25]) == pytest.approx(
        pwcca(wide_x[:, :20], wide_y[:, :25], rtol=1e-7), abs=1e-9)


def centred_orthonormal(rng, n, d):
    """``(n, d)`` orthonormal columns, each summing to 0 (a basis of centred data)."""
    block = rng.normal(size=(n, d))
    basis, _ = np.linalg.qr(block - block.mean(axis=0))
    return basis


def layer_with_singular_values(rng, singular_values, n=600, offset=0.0):
    """Centred singular values exactly ``singular_values`` (to rounding), plus a constant ``offset``."""
    d = len(singular_values)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return centred_orthonormal(rng, n, d) @ np.diag(singular_values) @ rotation.T + offset


@pytest.mark.parametrize("offset", [0.0, 0.002, 10.0])  # raw moments (first two) or centred first (last)
def test_cholesky_route_taken_exactly_by_the_documented_rule(rng, offset, monkeypatch):
    # Every centred singular value above CHOLESKY_MIN_SINGULAR_RATIO (1e-3) of the largest: Cholesky route.
    # Within a factor d**1.5 of the limit the cheap bound (||L^-1||_F, ||C||_F) cannot prove it and the
    # eigenvalues decide; 1% either side of the limit falls on the documented side.
    cca_impl = importlib.import_module("repana.similarity.cca")
    ratio = cca_impl.CHOLESKY_MIN_SINGULAR_RATIO
    inside = layer_with_singular_values(rng, np.geomspace(1.0, 1.01 * ratio, 10), offset=offset)
    outside = layer_with_singular_values(rng, np.geomspace(1.0, 0.99 * ratio, 10), offset=offset)
    comfortable = layer_with_singular_values(rng, np.geomspace(1.0, 0.5, 10), offset=offset)
    rank_deficient = layer_with_singular_values(rng, [1.0, 0.7, 0.3, 0.1, 0.05, 0, 0, 0, 0, 0], offset=offset)
    reps = {name: Representation(x) for name, x in
            (("inside", inside), ("outside", outside), ("comfortable", comfortable), ("rank", rank_deficient))}
    assert reps["inside"]._raw_moments == (offset < 1.0)
    assert cca_impl._well_conditioned(reps["inside"], None)
    assert "covariance_eigenvalues" in reps["inside"]._cache  # decided by the eigenvalues
    assert not cca_impl._well_conditioned(reps["outside"], None)
    assert cca_impl._well_conditioned(reps["comfortable"], None)
    assert "covariance_eigenvalues" not in reps["comfortable"]._cache  # proved by the bound alone
    assert not cca_impl._well_conditioned(reps["rank"], None)
    y = inside @ rng.normal(size=(10, 8)) + 0.05 * rng.normal(size=(600, 8))
    assert cca_impl._whitened_cross(Representation(inside), Representation(y), None, "cca") is not None
    fast = cca(inside, y).coefficients, pwcca(inside, y), pwcca(inside, y, weights_from="y")
    result = cca(rank_deficient, y)
    assert (result.n_directions_x, result.n_directions_y) == (5, 8)  # SVD route: null directions dropped
    monkeypatch.setattr(cca_impl, "CHOLESKY_MIN_SINGULAR_RATIO", 1.0)  # the SVD route for every layer
    slow = cca(inside, y).coefficients, pwcca(inside, y), pwcca(inside, y, weights_from="y")
    np.testing.assert_allclose(fast[0], slow[0], rtol=0, atol=1e-10)
    assert fast[1] == pytest.approx(slow[1], abs=1e-10)
    assert fast[2] == pytest.approx(slow[2], abs=1e-10)


def test_route_decision_matches_the_singular_values(rng):
    # Random layers around the limit: the decision equals the rule applied to numpy's singular values.
    cca_impl = importlib.import_module("repana.similarity.cca")
    ratio = cca_impl.CHOLESKY_MIN_SINGULAR_RATIO
    decisions = []
    for _ in range(40):
        d = int(rng.integers(2, 24))
        smallest = ratio * 10.0 ** rng.uniform(-1.0, 1.0)
        values = np.sort(np.concatenate([[1.0, smallest], rng.uniform(smallest, 1.0, size=d - 2)]))[::-1]
        x = layer_with_singular_values(rng, values, n=300, offset=rng.choice([0.0, 0.002, 50.0]))
        s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
        if abs(s[-1] / s[0] / ratio - 1.0) < 1e-6:
            continue
        decisions.append(bool(s[-1] > ratio * s[0]))
        assert cca_impl._well_conditioned(Representation(x), None) == decisions[-1]
    assert 10 < sum(decisions) < len(decisions) - 10  # both sides covered


def test_cholesky_route_against_the_covariance_reference_with_offsets(rng):
    # ReLU-like layers with mean offsets inside the raw-moment limit: the fast route against canonical
    # correlations computed in numpy from centred data (inverse square roots by eigh, as the reference does).
    latent = rng.normal(size=(4000, 6))
    x = np.maximum(latent @ rng.normal(size=(6, 20)) + 0.3, 0.0) + 0.2 * rng.normal(size=(4000, 20))
    y = np.tanh(latent @ rng.normal(size=(6, 15))) + 0.4 + 0.3 * rng.normal(size=(4000, 15))
    rx, ry = Representation(x), Representation(y)
    assert rx._raw_moments and ry._raw_moments
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)

    def inverse_sqrt(sigma):
        values, vectors = np.linalg.eigh(sigma)
        return (vectors / np.sqrt(values)) @ vectors.T
    expected = np.linalg.svd(inverse_sqrt(xc.T @ xc) @ (xc.T @ yc) @ inverse_sqrt(yc.T @ yc), compute_uv=False)
    np.testing.assert_allclose(cca(x, y).coefficients, expected, rtol=0, atol=1e-10)
    assert cca(x, y).mean == pytest.approx(expected.mean(), abs=1e-12)


@pytest.mark.parametrize("measure", ["cca", "svcca", "pwcca"])
def test_repeated_rows_count_once_in_the_sample_size_rule(rng, measure):
    """5 distinct rows repeated 20 times span 4 centred directions: every canonical correlation is 1 by
    construction, so the CCA family refuses them as it refuses 5 rows."""
    x, y = np.repeat(rng.normal(size=(5, 6)), 20, axis=0), np.repeat(rng.normal(size=(5, 6)), 20, axis=0)
    with pytest.raises(InputError, match=r"100 datapoints but only 5 distinct ones and 4 \+ [34] = [78] directions"):
        similarity(measure, x, y)
    # 40 distinct rows repeated twice: 6 + 6 directions fit, and the value is the one of the 40 rows once
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    assert similarity(measure, np.repeat(x, 2, axis=0), np.repeat(y, 2, axis=0)) == pytest.approx(
        similarity(measure, x, y), abs=1e-10)


def test_distinct_datapoints_counts_rows_by_value_and_stops_early(rng):
    """The count is exact across blocks of rows (1200 rows: 300 distinct, each 4 times, shuffled), pairs count
    a row once only when both sides repeat it, -0.0 equals 0.0, and ``stop_at`` returns as soon as it is reached."""
    from repana.similarity.datapoints import distinct_datapoints
    from repana.similarity.representation import as_representation

    base = rng.normal(size=(300, 3))
    order = rng.permutation(1200)
    x = np.repeat(base, 4, axis=0)[order]
    rx = as_representation(x, "X")
    assert distinct_datapoints(rx) == 300
    assert distinct_datapoints(rx, stop_at=41) == 41
    assert distinct_datapoints(rx, stop_at=5000) == 300
    # beside a side whose rows all differ, every row of the pair is distinct
    assert distinct_datapoints(rx, as_representation(rng.normal(size=(1200, 2)), "Y")) == 1200
    # column 0 centres to -0.0 in the first row and 0.0 in the second: the same value
    signed = np.array([[-0.0, 1.0], [0.0, 1.0], [0.0, 3.0]])
    assert np.signbit(signed[0, 0] - signed[:, 0].mean())
    assert distinct_datapoints(as_representation(signed, "X")) == 2
