"""The head-only path: only the head adapts (ANIL, the test time of the algorithms without an inner loop,
every conv block frozen), on any backbone that declares ``layer_names`` ending in ``"head"``.

Every task's body features are computed once (:func:`repana.meta.inner.tasks.task_features`: on CUDA one
forward pass over ``(tasks, n, C, H, W)`` with per-task batch-norm statistics, see
:class:`repana.models.ConvBlock`; on CPU task by task, or in small 5-D groups for small support sets), and
the heads of all tasks adapt together as ``(tasks, ways, n_features)`` tensors: per-task copies of the head,
so one ``autograd.grad`` of the sum of the tasks' support losses returns every task's own inner gradient
(first-order steps, as in evaluation, write the cross-entropy gradient out instead: no autograd pass per
step). No ``torch.func.vmap`` is used (its batch-norm batching rule gives wrong second-order gradients,
functorch issue 534).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from repana.meta.inner.spec import Plan
from repana.meta.inner.tasks import batched_head_logits, task_features
from repana.models import is_head_parameter

NAME = "head_only"


def can_batch_head_only(model: torch.nn.Module, trainable_names: Sequence[str]) -> bool:
    """True when only head parameters adapt (so the tasks' heads can adapt together on fixed features).

    Any backbone that declares ``layer_names`` ending in ``"head"`` (a Linear whose input is
    ``model(x, stop=len(layer_names) - 1)``): :class:`repana.models.Conv4`, :class:`repana.models.ResNetSmall`.
    """
    layer_names = getattr(model, "layer_names", None)
    return (bool(layer_names) and layer_names[-1] == "head"
            and isinstance(getattr(model, "head", None), torch.nn.Linear)
            and all(is_head_parameter(n) for n in trainable_names))


def adapt_heads(support_features: torch.Tensor, support_y: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, steps: int, lr: float, first_order: bool = False, train_weight: bool = True,
                train_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt one linear head per task on fixed support features, all tasks at once.

    Args:
        support_features: ``(tasks, n_support, F)``; support_y: int64 ``(tasks, n_support)``.
        weight: shared initial head ``(C, F)`` or per task ``(tasks, C, F)``; bias: ``(C,)`` or ``(tasks, C)``.
        steps, first_order: as :func:`repana.meta.inner.adapt`; lr: step size on the mean support loss.
        train_weight, train_bias: which of the two adapt.

    Returns:
        Per-task heads ``(tasks, C, F)``, ``(tasks, C)``; differentiable in the inputs when second order.
    """
    tasks = support_features.shape[0]
    w = weight.expand(tasks, *weight.shape[-2:]) if weight.dim() == 2 else weight
    b = bias.expand(tasks, bias.shape[-1]) if bias.dim() == 1 else bias
    if first_order:  # no graph through the steps: the gradient in closed form, without autograd
        return _adapt_heads_first_order(support_features.detach(), support_y, w, b, steps, lr,
                                        1.0 / support_y.shape[1], train_weight, train_bias)
    labels = support_y.reshape(-1)
    with torch.enable_grad():
        w = w if w.requires_grad else w.detach().requires_grad_(True)
        b = b if b.requires_grad else b.detach().requires_grad_(True)
        for _ in range(steps):
            logits = batched_head_logits(support_features, w, b)
            # Sum of the tasks' losses: its gradient w.r.t. task t's head copy is task t's own gradient.
            per_example = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="none")
            loss = per_example.reshape(tasks, -1).mean(1).sum()
            gw, gb = torch.autograd.grad(loss, [w, b], create_graph=True)
            if train_weight:
                w = w - lr * gw
            if train_bias:
                b = b - lr * gb
    return w, b


def _adapt_heads_first_order(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             steps: int, lr: float, loss_scale: float, train_weight: bool,
                             train_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`adapt_heads` without a graph: gradient steps on each task's cross-entropy of a linear head,
    with the gradient written out, ``d loss / d logits = loss_scale * (softmax(logits) - onehot(labels))``.

    ``features (tasks, n, F)``, ``labels (tasks, n)`` int64, ``weight (tasks, C, F)``, ``bias (tasks, C)``;
    ``loss_scale``: 1/n (the mean loss). The returned head depends on the initial one through the identity
    only, as in first-order MAML. Equal to the autograd steps to
    rounding (float64 test); a handful of kernels per step instead of an autograd pass (evaluation on
    CUDA is bound by launches).
    """
    onehot = F.one_hot(labels, weight.shape[1]).to(features.dtype)
    for _ in range(steps):
        with torch.no_grad():
            logits = batched_head_logits(features, weight.detach(), bias.detach())
            delta = torch.softmax(logits, -1).sub_(onehot).mul_(loss_scale)        # (tasks, n, C)
            grad_weight, grad_bias = torch.bmm(delta.transpose(1, 2), features), delta.sum(1)
        # the steps are constants: the head keeps its identity path to the initial head (first-order MAML)
        if train_weight:
            weight = weight - lr * grad_weight
        if train_bias:
            bias = bias - lr * grad_bias
    return weight, bias


# ----- the path ------------------------------------------------------------------------------------

def tasks_per_part(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> int | None:
    """The whole batch when only head parameters adapt, else None."""
    return support_x.shape[0] if plan.names and can_batch_head_only(model, plan.names) else None


def query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Query logits ``(tasks, n_query, C)`` after adapting the head (only) of every task of a batch;
    ``plan.names`` must be head parameters only (``head.weight`` and/or ``head.bias``)."""
    with torch.set_grad_enabled(plan.graph):  # evaluation: an inference forward (faster layout)
        fs, fq = task_features(model, params, support_x, query_x, plan.together)
    w, b = adapt_heads(fs, support_y, params["head.weight"], params["head.bias"], plan.steps, plan.lr,
                       plan.first_order, train_weight="head.weight" in plan.names,
                       train_bias="head.bias" in plan.names)
    return batched_head_logits(fq, w, b)
