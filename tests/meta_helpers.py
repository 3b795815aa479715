"""The per-episode MAML meta-gradient, written out plainly: the oracle of the inner-loop tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call


def reference_meta_gradients(model, batch, steps, lr, trainable_names, first_order, forward=None):
    """Mean over episodes of the query loss after ``steps`` SGD steps (lr ``lr``) on the support set, adapting
    ``trainable_names``, differentiated w.r.t. every parameter of ``model`` (zeros where unused).

    ``forward(params, x) -> logits``: default ``functional_call(model, params, (x,))`` (any backbone); the
    Conv4 tests pass a hand-written forward, an oracle independent of the model's own code."""
    if forward is None:
        def forward(params, x):
            return functional_call(model, params, (x,))
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    total = 0.0
    for t in range(batch.support_x.shape[0]):
        current = dict(leaves)
        for _ in range(steps):
            loss = F.cross_entropy(forward(current, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, [current[n] for n in trainable_names], create_graph=not first_order)
            for n, g in zip(trainable_names, grads):
                current[n] = current[n] - lr * (g.detach() if first_order else g)
        total = total + F.cross_entropy(forward(current, batch.query_x[t]), batch.query_y[t])
    grads = torch.autograd.grad(total / batch.support_x.shape[0], list(leaves.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g) for (n, p), g in zip(leaves.items(), grads)}
