"""TRPO pieces: conjugate gradient, Hessian-vector products, the KL-constrained backtracking step.

The Hessian-vector product differentiates twice through whatever graph produced the scalar: for
MAML that graph contains the inner adaptation step, so the product is exact through adaptation
(third derivatives of the policy appear; autograd handles them).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def assign_flat(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Copy ``vector`` into ``params`` (in place, outside autograd)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vector[offset:offset + n].view_as(p))
            offset += n


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Approximate ``A^{-1} b`` for a symmetric positive definite ``A`` given as ``matvec``
    (``iters`` iterations at most; exact after ``len(b)`` in exact arithmetic)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = r @ r
    for _ in range(iters):
        if rdotr <= residual_tol:
            break
        z = matvec(p)
        alpha = rdotr / (p @ z)
        x = x + alpha * p
        r = r - alpha * z
        new_rdotr = r @ r
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return x.detach()


def hessian_vector_product(scalar: torch.Tensor, params: Sequence[torch.Tensor], damping: float = 0.0
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (d^2 scalar / d params^2) v + damping v`` (flat vectors), reusing one first-order graph."""
    grads = flatten(torch.autograd.grad(scalar, params, create_graph=True))

    def product(vector: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(grads @ vector, params, retain_graph=True)
        return flatten(hv).detach() + damping * vector

    return product


def trpo_step(params: Sequence[torch.Tensor], loss: torch.Tensor, kl: torch.Tensor,
              evaluate: Callable[[], tuple[float, float]], max_kl: float = 1e-2, cg_iters: int = 10,
              cg_damping: float = 1e-5, ls_max_steps: int = 15, ls_backtrack_ratio: float = 0.8) -> dict:
    """One TRPO update of ``params`` in place.

    ``loss`` and ``kl`` (KL of the current policy from a detached copy of itself, so 0 with a zero
    gradient) carry graphs to ``params``. The natural-gradient direction ``s = H^{-1} g`` (conjugate
    gradient on the KL's Hessian) is scaled to ``0.5 s^T H s = max_kl``; the step is halved by
    ``ls_backtrack_ratio`` until ``evaluate() -> (loss, kl)`` shows a lower loss with ``kl < max_kl``.
    Returns ``{"loss_before", "loss_after", "kl_after", "step_fraction"}`` (step_fraction 0: rejected,
    parameters restored).
    """
    params = list(params)
    grads = flatten(torch.autograd.grad(loss, params, retain_graph=True)).detach()
    hvp = hessian_vector_product(kl, params, damping=cg_damping)
    direction = conjugate_gradient(hvp, grads, iters=cg_iters)
    shs = 0.5 * (direction @ hvp(direction))
    if not torch.isfinite(shs) or shs <= 0:
        return {"loss_before": float(loss.detach()), "loss_after": float(loss.detach()), "kl_after": 0.0, "step_fraction": 0.0}
    full_step = direction / torch.sqrt(shs / max_kl)
    old = flatten([p.detach() for p in params]).clone()
    old_loss = float(loss.detach())
    fraction = 1.0
    for _ in range(ls_max_steps):
        assign_flat(params, old - fraction * full_step)
        new_loss, new_kl = evaluate()
        if new_loss < old_loss and new_kl < max_kl:
            return {"loss_before": old_loss, "loss_after": new_loss, "kl_after": new_kl,
                    "step_fraction": fraction}
        fraction *= ls_backtrack_ratio
    assign_flat(params, old)
    return {"loss_before": old_loss, "loss_after": old_loss, "kl_after": 0.0, "step_fraction": 0.0}
