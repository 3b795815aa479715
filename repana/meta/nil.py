"""NIL ("No Inner Loop", Raghu et al. 2020, Section 5): the head is dropped and a query is classified by
its cosine similarities to the support examples' penultimate features.

For a query feature ``q`` and support features ``s_i`` with labels ``y_i``::

    a_i(q)   = softmax_i( cos(q, s_i) )                  # attention over the n_support examples
    p(c | q) = sum_{i : y_i = c} a_i(q)                  # class probability (Matching-Networks style)
    y_hat(q) = argmax_c p(c | q)

(With one shot per class, ``y_hat`` is the class of the most similar support example.) The softmax
has no temperature in the paper; ``temperature`` scales the cosines (``softmax(cos / temperature)``)
for NIL *training*, where larger logits train faster; it never changes the 1-shot prediction.
All similarity math runs in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from repana.errors import InputError


def cosine_similarities(query_features: torch.Tensor, support_features: torch.Tensor) -> torch.Tensor:
    """``(..., n_query, F)``, ``(..., n_support, F)`` -> float64 cosines ``(..., n_query, n_support)``.

    A zero feature vector has cosine 0 with everything (not NaN).
    """
    q = F.normalize(query_features.double(), dim=-1, eps=1e-12)
    s = F.normalize(support_features.double(), dim=-1, eps=1e-12)
    return q @ s.transpose(-1, -2)


def nil_logits(support_features: torch.Tensor, support_y: torch.Tensor, query_features: torch.Tensor,
               ways: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Log class probabilities of the NIL classifier, float64 ``(..., n_query, ways)``.

    Args:
        support_features: ``(n_support, F)`` or per task ``(tasks, n_support, F)``.
        support_y: int64 ``(n_support,)`` or ``(tasks, n_support)`` in ``[0, ways)``.
        query_features: ``(n_query, F)`` or ``(tasks, n_query, F)``.
        ways: number of classes (default: ``support_y.max() + 1``).
        temperature: cosines are divided by it before the softmax (1.0 = the paper's definition).

    ``exp`` of the result is ``p(c | q)``; ``argmax`` over the last axis is the NIL prediction; it can be
    used as logits in a cross-entropy (``nil_training``). A class without support examples gets -inf.
    """
    if support_features.shape[:-2] != query_features.shape[:-2] or support_features.shape[-1] != query_features.shape[-1]:
        raise InputError(f"support features {tuple(support_features.shape)} and query features "
                         f"{tuple(query_features.shape)} must share leading (task) and feature dimensions")
    if support_y.shape != support_features.shape[:-1]:
        raise InputError(f"support_y {tuple(support_y.shape)} must match support features "
                         f"{tuple(support_features.shape[:-1])}")
    if temperature <= 0:
        raise InputError(f"temperature = {temperature} must be positive")
    ways = int(support_y.max()) + 1 if ways is None else int(ways)
    scores = cosine_similarities(query_features, support_features) / temperature   # (..., nq, ns)
    log_attention = torch.log_softmax(scores, dim=-1)
    members = F.one_hot(support_y, ways).to(torch.float64)                        # (..., ns, ways)
    # log p(c|q) = logsumexp over the support examples of class c of log a_i(q)
    log_members = torch.log(members).unsqueeze(-3)                                 # (..., 1, ns, ways)
    return torch.logsumexp(log_attention.unsqueeze(-1) + log_members, dim=-2)


def nil_predict(support_features: torch.Tensor, support_y: torch.Tensor, query_features: torch.Tensor,
                ways: int | None = None) -> torch.Tensor:
    """NIL predicted labels, int64 ``(..., n_query)``."""
    return nil_logits(support_features, support_y, query_features, ways).argmax(-1)
