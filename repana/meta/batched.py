"""Episodes of a meta-batch processed together, for the case where it is exact and pays: a frozen body.

When only the head adapts (ANIL, NIL-style evaluation of the head, the "freeze conv1..conv4" ablation),
every task's body features come from one forward pass over ``(tasks, n, C, H, W)`` (per-task batch-norm
statistics, see :class:`repana.models.ConvBlock`), and the heads of all tasks adapt together as
``(tasks, ways, n_features)`` tensors: per-task copies of the head, so one ``autograd.grad`` of the sum
of the tasks' support losses returns every task's own inner gradient. No ``torch.func.vmap`` is used
(its batch-norm batching rule gives wrong second-order gradients, functorch issue 534).

When conv layers adapt, :mod:`repana.meta.algorithms` and :mod:`repana.meta.evaluate` loop over the
episodes with :func:`repana.meta.adapt.adapt`: on CPU the loop is as fast as a batched layout, and it is
exact by construction. The float64 tests compare both paths against a per-episode reference.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.meta.adapt import normalise_loss_reduction, resolve_trainable, shots_of
from repana.models import is_head_parameter


def can_batch_head_only(model: torch.nn.Module, trainable_names: list[str]) -> bool:
    """True when only head parameters adapt and the body can run a batch of tasks exactly."""
    if not all(is_head_parameter(n) for n in trainable_names):
        return False
    if not hasattr(model, "layer_names"):
        return False
    bn_stats = getattr(model, "bn_stats", "batch")
    return bn_stats == "batch" or not model.training


def task_features(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                  query_x: torch.Tensor, bn_together: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features of a batch of tasks.

    Args:
        support_x: float ``(tasks, n_support, C, H, W)``; query_x: ``(tasks, n_query, C, H, W)``.
        bn_together: normalise each task's support and query with joint batch statistics (one
            forward of their concatenation) instead of apart (the default, as in MAML's code).

    Returns:
        ``(tasks, n_support, n_features)``, ``(tasks, n_query, n_features)``.
    """
    if bn_together:
        both = functional_call(model, dict(params), (torch.cat([support_x, query_x], 1),), {"stop": 4})
        return both[:, :support_x.shape[1]], both[:, support_x.shape[1]:]
    fs = functional_call(model, dict(params), (support_x,), {"stop": 4})
    fq = functional_call(model, dict(params), (query_x,), {"stop": 4})
    return fs, fq


def batched_head_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``features (tasks, n, F)``, ``weight (tasks, C, F)``, ``bias (tasks, C)`` -> logits ``(tasks, n, C)``."""
    return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


def adapt_heads(support_features: torch.Tensor, support_y: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, steps: int, lr: float, first_order: bool = False,
                loss_reduction: str = "mean", train_weight: bool = True,
                train_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt one linear head per task on fixed support features, all tasks at once.

    Args:
        support_features: ``(tasks, n_support, F)``; support_y: int64 ``(tasks, n_support)``.
        weight: shared initial head ``(C, F)`` or per task ``(tasks, C, F)``; bias: ``(C,)`` or ``(tasks, C)``.
        steps, lr, first_order, loss_reduction: as :func:`repana.meta.adapt.adapt`.

    Returns:
        Per-task heads ``(tasks, C, F)``, ``(tasks, C)``; differentiable in the inputs when second order.
    """
    loss_reduction = normalise_loss_reduction(loss_reduction)
    tasks = support_features.shape[0]
    w = weight.expand(tasks, *weight.shape[-2:]) if weight.dim() == 2 else weight
    b = bias.expand(tasks, bias.shape[-1]) if bias.dim() == 1 else bias
    shots = shots_of(support_y[0]) if loss_reduction == "sum_div_k" else None
    feats = support_features.detach() if first_order else support_features
    labels = support_y.reshape(-1)
    with torch.enable_grad():
        for _ in range(steps):
            if first_order:
                w_in, b_in = w.detach().requires_grad_(True), b.detach().requires_grad_(True)
            else:
                w_in = w if w.requires_grad else w.detach().requires_grad_(True)
                b_in = b if b.requires_grad else b.detach().requires_grad_(True)
                w, b = w_in, b_in
            logits = batched_head_logits(feats, w_in, b_in)
            # Sum of the tasks' losses: its gradient w.r.t. task t's head copy is task t's own gradient.
            per_example = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="none")
            per_task = per_example.reshape(tasks, -1)
            loss = per_task.mean(1).sum() if shots is None else (per_task.sum(1) / shots).sum()
            gw, gb = torch.autograd.grad(loss, [w_in, b_in], create_graph=not first_order)
            if first_order:
                gw, gb = gw.detach(), gb.detach()
            if train_weight:
                w = w - lr * gw
            if train_bias:
                b = b - lr * gb
    return w, b


def head_only_query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                           support_y: torch.Tensor, query_x: torch.Tensor, steps: int, lr: float,
                           trainable=None, first_order: bool = False, loss_reduction: str = "mean",
                           bn_together: bool = False, head_init: tuple[torch.Tensor, torch.Tensor] | None = None,
                           ) -> torch.Tensor:
    """Query logits ``(tasks, n_query, C)`` after adapting the head (only) of every task of a batch.

    ``trainable`` must select head parameters only (``head.weight`` and/or ``head.bias``).
    ``head_init``: initial ``(weight (C, F), bias (C,))`` to use instead of ``params``' head (e.g. zeros).
    """
    names = resolve_trainable(params, trainable)
    fs, fq = task_features(model, params, support_x, query_x, bn_together)
    weight, bias = head_init if head_init is not None else (params["head.weight"], params["head.bias"])
    w, b = adapt_heads(fs, support_y, weight, bias, steps, lr, first_order, loss_reduction,
                       train_weight="head.weight" in names, train_bias="head.bias" in names)
    if w.dim() == 2:
        w, b = w.expand(fq.shape[0], *w.shape), b.expand(fq.shape[0], *b.shape)
    return batched_head_logits(fq, w, b)
