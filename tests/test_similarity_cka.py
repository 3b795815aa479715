"""CKA: hand-derived values, the two exact forms, invariances, precision under mean offsets, inflation warning."""

import math
import warnings

import numpy as np
import pytest
import torch

from repana.similarity import RepanaWarning, chance_level, cka

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


# Columns already centred. X^T X = diag(8, 2); Y^T Y = diag(2, 50) (y2 = 3*(e3-e4) + 4*(e5-e6): 9+9+16+16);
# X^T Y = diag(2*2, 1*3*2) = diag(4, 6).
X_HAND = np.array([[2, 0], [-2, 0], [0, 1], [0, -1], [0, 0], [0, 0]], dtype=float)
Y_HAND = np.array([[1, 0], [-1, 0], [0, 3], [0, -3], [0, 4], [0, -4]], dtype=float)


def test_linear_cka_hand_derived():
    # ||X^T Y||_F^2 = 16 + 36 = 52; ||X^T X||_F = sqrt(64 + 4); ||Y^T Y||_F = sqrt(4 + 2500).
    expected = 52 / math.sqrt(68 * 2504)
    assert cka(X_HAND, Y_HAND) == pytest.approx(expected, rel=1e-12)
    assert cka(X_HAND, Y_HAND, form="gram") == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.126018, abs=1e-6)


def test_linear_cka_hand_derived_scaled_copy():
    # 4 x 2: Y scales X's second column by 2. X^T X = diag(2, 2), Y^T Y = diag(2, 8), X^T Y = diag(2, 4):
    # CKA = (4 + 16) / sqrt(8 * 68) = 20 / sqrt(544).
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
    y = x * np.array([1.0, 2.0])
    assert cka(x, y) == pytest.approx(20 / math.sqrt(544), rel=1e-12)


def unbiased_hsic_reference(K, L):
    """Song et al. (2012), Eq. 5, written literally."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def test_debiased_matches_literal_song_formula(rng):
    x = rng.normal(size=(30, 5)) + 3.0  # uncentred on purpose: the estimator must not care
    y = x @ rng.normal(size=(5, 7)) + rng.normal(size=(30, 7))
    K, L = x @ x.T, y @ y.T
    expected = unbiased_hsic_reference(K, L) / math.sqrt(unbiased_hsic_reference(K, K) * unbiased_hsic_reference(L, L))
    assert cka(x, y, debiased=True, form="feature") == pytest.approx(expected, rel=1e-10)
    assert cka(x, y, debiased=True, form="gram") == pytest.approx(expected, rel=1e-10)


def test_rbf_matches_direct_computation(rng):
    x, y = rng.normal(size=(25, 4)), rng.normal(size=(25, 6))

    def centred_rbf(a, fraction):
        sq = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        median = np.median(np.sqrt(sq[np.triu_indices(len(a), 1)]))
        K = np.exp(-sq / (2 * (fraction * median) ** 2))
        H = np.eye(len(a)) - 1 / len(a)
        return H @ K @ H

    for fraction in (0.4, 0.8):
        K, L = centred_rbf(x, fraction), centred_rbf(y, fraction)
        expected = (K * L).sum() / math.sqrt((K * K).sum() * (L * L).sum())
        assert cka(x, y, kernel="rbf", sigma_fraction=fraction) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n, dx, dy", [(200, 10, 30), (40, 100, 60)])
def test_gram_and_feature_forms_agree(rng, n, dx, dy):
    x = rng.normal(size=(n, dx))
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + 0.3 * rng.normal(size=(n, dy))
    for debiased in (False, True):
        feature = cka(x, y, debiased=debiased, form="feature")
        gram = cka(x, y, debiased=debiased, form="gram")
        assert feature == pytest.approx(gram, rel=1e-10, abs=1e-12)
        assert cka(x, y, debiased=debiased) == pytest.approx(feature, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kernel, debiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_symmetry_and_self_similarity(rng, kernel, debiased):
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 12))
    assert cka(x, y, kernel=kernel, debiased=debiased) == pytest.approx(
        cka(y, x, kernel=kernel, debiased=debiased), rel=1e-12)
    assert cka(x, x, kernel=kernel, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("offset_stds", [18, 180])
@pytest.mark.parametrize("debiased", [False, True])
def test_mean_offset_in_float32_leaves_cka_unchanged(rng, offset_stds, debiased):
    x = rng.normal(size=(500, 20)).astype(np.float32)
    y = (x @ rng.normal(size=(20, 30)) + rng.normal(size=(500, 30))).astype(np.float32)
    reference = cka(x, y, debiased=debiased)
    shifted_x = x + np.float32(offset_stds * x.std())
    shifted_y = y + np.float32(offset_stds * y.std())
    assert shifted_x.dtype == np.float32
    # float32 cannot represent x + 180 std exactly (relative rounding ~1e-5 of the signal): allow 1e-4.
    assert cka(shifted_x, shifted_y, debiased=debiased) == pytest.approx(reference, abs=1e-4)
    assert cka(torch.from_numpy(shifted_x), torch.from_numpy(shifted_y), debiased=debiased) == pytest.approx(
        reference, abs=1e-4)


def test_invariant_to_orthogonal_and_isotropic_scaling_not_to_linear_maps(rng):
    x = rng.normal(size=(300, 10)) * np.linspace(0.2, 3, 10)
    y = np.tanh(x @ rng.normal(size=(10, 10))) + 0.5 * rng.normal(size=(300, 10))
    base = cka(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert cka(x @ q * 7.5, y) == pytest.approx(base, rel=1e-10)
    assert cka(x, y @ q - 4.0) == pytest.approx(base, rel=1e-10)
    stretch = np.diag(np.linspace(0.1, 10.0, 10)) @ rng.normal(size=(10, 10))
    assert abs(cka(x @ stretch, y) - base) > 0.02


def test_plain_cka_inflated_with_few_datapoints_and_warns(rng):
    x, y = rng.normal(size=(75, 1600)), rng.normal(size=(75, 1600))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = cka(x, y)
    assert 0.93 < value < 0.97  # independent data, yet ~0.95
    assert chance_level(75, 1600, 1600) == pytest.approx(1600 / 1675)
    assert any(issubclass(w.category, RepanaWarning) and "debiased" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(cka(x, y, debiased=True)) < 0.05  # the debiased estimator stays near 0, without warning


def test_numpy_and_torch_give_the_same_value(rng):
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.normal(size=(50, 9)).astype(np.float32)
    for kwargs in ({}, {"debiased": True}, {"kernel": "rbf"}):
        assert cka(torch.from_numpy(x), torch.from_numpy(y), **kwargs) == pytest.approx(cka(x, y, **kwargs), rel=1e-12)
    assert isinstance(cka(torch.from_numpy(x), y), float)


# --- Kornblith et al.'s demo notebook (google-research/representation_similarity/Demo.ipynb) -------------------
# Its tutorial seeds numpy's legacy generator with 1337, draws X = randn(100, 10), Y = randn(100, 10) + X and
# prints (5 decimals): linear CKA 0.55761, RBF CKA with threshold 0.5 0.65483, debiased linear CKA 0.51346.
NOTEBOOK_PUBLISHED = {"linear": 0.55761, "rbf_0.5": 0.65483, "linear_debiased": 0.51346}


def notebook_data():
    legacy = np.random.RandomState(1337)  # np.random.seed(1337) followed by np.random.randn draws
    x = legacy.randn(100, 10)
    y = legacy.randn(100, 10) + x
    return x, y


def notebook_style_cka(x, y, kernel, threshold=1.0, debiased=False):
    """The notebook's recipe, restated: kernel matrices of the raw data, its RBF bandwidth (threshold**2 times
    the median of ALL n^2 squared distances, diagonal zeros included), biased or U-centring, cosine."""
    def gram(a):
        products = a @ a.T
        if kernel == "linear":
            return products
        norms = np.diag(products)
        sq_distances = norms[:, None] + norms[None, :] - 2 * products
        return np.exp(-sq_distances / (2 * threshold ** 2 * np.median(sq_distances)))

    def centre(k):
        k = k.copy()
        n = k.shape[0]
        if debiased:
            np.fill_diagonal(k, 0)
            column_means = k.sum(axis=0) / (n - 2)
            column_means -= column_means.sum() / (2 * (n - 1))
            k -= column_means[:, None] + column_means[None, :]
            np.fill_diagonal(k, 0)
            return k
        column_means = k.mean(axis=0)
        column_means -= column_means.mean() / 2
        return k - column_means[:, None] - column_means[None, :]

    kx, ky = centre(gram(x)), centre(gram(y))
    return float((kx * ky).sum() / (np.linalg.norm(kx) * np.linalg.norm(ky)))


def test_notebook_published_demo_values_reproduced():
    x, y = notebook_data()
    linear = cka(x, y)
    rbf = cka(x, y, kernel="rbf", sigma_fraction=0.5, bandwidth="median_all_entries")
    debiased = cka(x, y, debiased=True)
    assert round(linear, 5) == NOTEBOOK_PUBLISHED["linear"]
    assert round(rbf, 5) == NOTEBOOK_PUBLISHED["rbf_0.5"]
    assert round(debiased, 5) == NOTEBOOK_PUBLISHED["linear_debiased"]
    # The default bandwidth (median over distinct pairs) differs in the fourth decimal on this data.
    assert round(cka(x, y, kernel="rbf", sigma_fraction=0.5), 5) == 0.65401
    # Beyond the printed digits: the notebook's recipe on the same data, to 1e-12.
    assert linear == pytest.approx(notebook_style_cka(x, y, "linear"), abs=1e-12)
    assert rbf == pytest.approx(notebook_style_cka(x, y, "rbf", 0.5), abs=1e-12)
    assert debiased == pytest.approx(notebook_style_cka(x, y, "linear", debiased=True), abs=1e-12)


@pytest.mark.parametrize("n", [7, 40, 101])
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_notebook_rbf_convention_matches_its_recipe(rng, n, threshold):
    x = rng.normal(size=(n, 6)) + 2.0
    y = np.tanh(x @ rng.normal(size=(6, 4))) + 0.3 * rng.normal(size=(n, 4))
    for debiased in (False, True):
        ours = cka(x, y, kernel="rbf", sigma_fraction=threshold, bandwidth="median_all_entries", debiased=debiased)
        assert ours == pytest.approx(notebook_style_cka(x, y, "rbf", threshold, debiased), abs=1e-12)


def test_unknown_bandwidth_is_refused(rng):
    from repana.errors import InputError

    x = rng.normal(size=(10, 2))
    with pytest.raises(InputError, match="bandwidth 'median'.*median_distinct_pairs.*median_all_entries"):
        cka(x, x, kernel="rbf", bandwidth="median")
