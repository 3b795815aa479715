"""NIL cosine classifier on features with known structure, against hand-computed probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from repana.errors import InputError
from repana.meta.nil import cosine_similarities, nil_logits, nil_predict


def test_orthogonal_prototypes_are_classified_perfectly(rng):
    ways, shots, queries, dim = 5, 3, 10, 16
    prototypes = torch.eye(dim)[:ways] * 4.0
    labels = torch.arange(ways).repeat_interleave(shots)
    support = prototypes[labels] + 0.3 * torch.as_tensor(rng.standard_normal((ways * shots, dim)), dtype=torch.float32)
    query_y = torch.arange(ways).repeat_interleave(queries)
    query = prototypes[query_y] + 0.3 * torch.as_tensor(rng.standard_normal((ways * queries, dim)), dtype=torch.float32)
    assert torch.equal(nil_predict(support, labels, query), query_y)


def test_hand_computed_probabilities():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    probs = nil_logits(support, labels, query).exp()
    e = math.e
    expected = torch.tensor([[e / (e + 1), 1 / (e + 1)],            # cosines (1, 0)
                             [0.5, 0.5],                            # cosines (0.707, 0.707)
                             [1 / (1 + e ** -1), e ** -1 / (1 + e ** -1)]],  # cosines (0, -1)
                            dtype=torch.float64)
    torch.testing.assert_close(probs, expected, rtol=1e-12, atol=1e-12)
    assert probs.dtype == torch.float64


def test_probabilities_sum_over_shots_of_a_class():
    # two shots of class 0 (cosines 1 and 0), one of class 1 (cosine -1): p0 = (e + 1) / (e + 1 + 1/e)
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    probs = nil_logits(support, labels, torch.tensor([[3.0, 0.0]])).exp()
    e = math.e
    torch.testing.assert_close(probs[0, 0].item(), (e + 1) / (e + 1 + 1 / e), rtol=1e-12, atol=0)
    # temperature divides the cosines: T=0.5 doubles them
    sharp = nil_logits(support, labels, torch.tensor([[3.0, 0.0]]), temperature=0.5).exp()
    torch.testing.assert_close(sharp[0, 0].item(), (e ** 2 + 1) / (e ** 2 + 1 + e ** -2), rtol=1e-12, atol=0)


def test_batched_tasks_equal_one_by_one_and_zero_vectors_are_safe():
    gen = torch.Generator().manual_seed(0)
    support, query = torch.randn(3, 6, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    labels = torch.stack([torch.randperm(3, generator=gen).repeat(2) for _ in range(3)])
    batched = nil_logits(support, labels, query, ways=3)
    for t in range(3):
        torch.testing.assert_close(batched[t], nil_logits(support[t], labels[t], query[t], ways=3))
    cos = cosine_similarities(torch.zeros(1, 4), support[0])
    assert torch.equal(cos, torch.zeros(1, 6, dtype=torch.float64))


def test_shape_errors():
    with pytest.raises(InputError, match="feature"):
        nil_logits(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64), torch.zeros(2, 5))
    with pytest.raises(InputError, match="support_y"):
        nil_logits(torch.zeros(4, 3), torch.zeros(3, dtype=torch.int64), torch.zeros(2, 3))
