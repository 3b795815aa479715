"""Procrustes similarity/distance (Ding et al. 2021) and the explicit reduction of conv activations."""

import math

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.similarity import procrustes_distance, procrustes_similarity, reduce_conv, similarity


X_HAND = np.array([[2, 0], [-2, 0], [0, 1], [0, -1], [0, 0], [0, 0]], dtype=float)
Y_HAND = np.array([[1, 0], [-1, 0], [0, 3], [0, -3], [0, 4], [0, -4]], dtype=float)


def test_procrustes_hand_derived():
    # ||X||_F^2 = 10, ||Y||_F^2 = 52, X^T Y = diag(4, 6) with nuclear norm 10: similarity 10 / sqrt(520).
    expected = 10 / math.sqrt(520)
    assert procrustes_similarity(X_HAND, Y_HAND) == pytest.approx(expected, rel=1e-12)
    assert procrustes_distance(X_HAND, Y_HAND) == pytest.approx(2 - 2 * expected, rel=1e-12)
    assert similarity("procrustes", X_HAND, Y_HAND) == pytest.approx(expected, rel=1e-12)


@pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")  # the wide case is degenerate on purpose
def test_procrustes_invariances_and_wide_inputs(rng):
    x = rng.normal(size=(80, 12))
    y = np.tanh(x @ rng.normal(size=(12, 9))) + 0.3 * rng.normal(size=(80, 9))
    base = procrustes_similarity(x, y)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert procrustes_similarity(3.0 * x @ q + 5.0, y) == pytest.approx(base, rel=1e-10)
    assert procrustes_similarity(y, x) == pytest.approx(base, rel=1e-12)
    assert procrustes_similarity(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    assert abs(procrustes_similarity(x @ np.diag(np.linspace(0.1, 10, 12)), y) - base) > 0.02
    # d > n uses U S instead of the (d, d) cross product: same value as the direct formula.
    wide_x, wide_y = rng.normal(size=(20, 300)), rng.normal(size=(20, 250))
    cx, cy = wide_x - wide_x.mean(0), wide_y - wide_y.mean(0)
    direct = np.linalg.svd(cx.T @ cy, compute_uv=False).sum() / (np.linalg.norm(cx) * np.linalg.norm(cy))
    assert procrustes_similarity(wide_x, wide_y) == pytest.approx(direct, rel=1e-10)


def test_reduce_conv_modes():
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    flat = reduce_conv(acts, "flatten")
    assert flat.shape == (2, 12) and torch.equal(flat[1], acts[1].reshape(-1))
    positions = reduce_conv(acts, "positions")
    assert positions.shape == (8, 3)
    # row 0: image 0, position (0, 0), channels 0..2 are 0, 4, 8; row 5: image 1, position (0, 1).
    assert positions[0].tolist() == [0, 4, 8]
    assert positions[5].tolist() == [13, 17, 21]
    mean = reduce_conv(acts.numpy(), "mean")
    assert isinstance(mean, np.ndarray) and mean.shape == (2, 3)
    np.testing.assert_allclose(mean[0], [1.5, 5.5, 9.5])
    two_d = torch.ones(4, 5)
    assert reduce_conv(two_d, "positions") is two_d
    with pytest.raises(InputError, match="unknown reduction"):
        reduce_conv(acts, "avg")


def test_layouts_are_named_and_sequence_reductions():
    from repana.similarity import reduce_activations

    seq = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # (n=2, T=3, D=4)
    tokens = reduce_activations(seq, "sequence", "tokens")
    assert tokens.shape == (6, 4) and tokens[4].tolist() == seq[1, 1].tolist()  # row 4: sequence 1, token 1
    assert reduce_activations(seq, "sequence", "mean")[0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert reduce_activations(seq, "sequence", "first")[1].tolist() == [12.0, 13.0, 14.0, 15.0]
    assert reduce_activations(seq.numpy(), "sequence", "flatten").shape == (2, 12)
    # the same array as a 1-D conv map (n=2, C=3, L=4): channels are features
    assert reduce_activations(seq, "conv", "mean")[0].tolist() == [1.5, 5.5, 9.5]
    assert reduce_activations(seq, "conv", "positions").shape == (8, 3)
    two_d = torch.ones(4, 5)
    assert reduce_activations(two_d, "sequence", "tokens") is two_d
    with pytest.raises(InputError, match=r"3-D activations of shape \(2, 3, 4\) are either conv maps"):
        reduce_conv(seq, "mean")
    with pytest.raises(InputError, match=r"need a reduction: 'tokens' \(n\*T, D\), 'mean' \(n, D\)"):
        reduce_activations(seq, "sequence", None)
    with pytest.raises(InputError, match=r"'first' does not apply to the conv layout .* 'positions' \(n\*H\*W, C\)"):
        reduce_activations(torch.zeros(2, 3, 4, 4), "conv", "first")
    with pytest.raises(InputError, match=r"not flat \(n, features\)"):
        reduce_activations(seq, "flat", None)


def test_procrustes_is_named_like_cka_and_svcca_and_the_module_import_still_works(rng):
    import repana.similarity as similarity_package
    from repana.similarity import procrustes
    from repana.similarity.procrustes import procrustes_similarity as from_module

    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 5))
    assert procrustes is procrustes_similarity is from_module
    assert "procrustes" in similarity_package.__all__
    assert procrustes(x, y) == similarity("procrustes", x, y)


@pytest.mark.parametrize("shape", [(2, 16), (50, 20000)])
def test_procrustes_on_unrelated_saturated_data_warns_with_the_effective_rank(rng, shape):
    """2 datapoints, or 50 x 20000 Gaussian data: the centred rank is n - 1, unrelated data score near 1."""
    from repana.similarity import RepanaWarning

    x, y = rng.normal(size=shape), rng.normal(size=shape)
    with pytest.warns(RepanaWarning, match=rf"procrustes is degenerate here: X has effective rank {shape[0] - 1} "
                                           rf"= its {shape[0]} distinct datapoints - 1"):
        value = procrustes_similarity(x, y)
    assert value > 0.999


def test_procrustes_on_healthy_data_does_not_warn(rng):
    import warnings

    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert procrustes_similarity(x, y) < 0.5
