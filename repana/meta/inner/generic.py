"""The generic path: gradient steps on one task's support set through ``torch.func.functional_call``, on any
module, parameters as a dict. The reference every other path is tested against.

:func:`adapt` runs ``steps`` steps of plain gradient descent on the support loss of one episode, on the
parameters selected by ``trainable``; it returns a new parameter dict and never modifies the model or the
given tensors.

* second order (``first_order=False``): the returned tensors are differentiable functions of the
  given ones (inner gradients taken with ``create_graph=True``), so a query loss computed with them
  back-propagates the exact MAML meta-gradient;
* first order (``first_order=True``): inner gradients are computed on detached copies, so
  ``d new / d old`` is the identity (FOMAML); this is also what evaluation uses (cheaper, same result).

Frozen layers at the bottom of the network are run once, not once per step: when every parameter
of ``conv1..convk`` is frozen, their output on the support set is computed once and the steps run
``conv(k+1)..head`` only (ANIL: features once, the head's loop on fixed features). With batch-statistic
batch norm this is exact, because a frozen layer sees the same inputs at every step.

As an inner-loop path (:class:`repana.meta.inner.spec.InnerPath`) it runs one task at a time and can run
any batch: the dispatcher's last resort, and its choice for backbones other than Conv4 and for Conv4 with
frozen bottom layers in training.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.errors import InputError
from repana.meta.inner.spec import Params, Plan, mean_loss_lr
from repana.meta.inner.trainable import Trainable, first_trainable_layer, resolve_trainable

NAME = "generic"


def _check_episode(support_x: torch.Tensor, support_y: torch.Tensor) -> None:
    if support_x.dim() == 5 or support_x.dim() < 2:
        raise InputError(f"support_x must be one episode (n, C, H, W) (or (n, n_features) for a model on "
                         f"vectors); got shape {tuple(support_x.shape)}")
    if support_y.dim() != 1 or support_y.shape[0] != support_x.shape[0]:
        raise InputError(f"support_y must be (n,) with n = {support_x.shape[0]}; got {tuple(support_y.shape)}")
    if support_y.dtype != torch.int64:
        raise InputError(f"support_y must be int64 class indices; got {support_y.dtype}")


def adapt(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
          support_y: torch.Tensor, steps: int, lr: float, trainable: Trainable = None,
          first_order: bool = False, inner_loss: str = "mean") -> Params:
    """Adapt ``params`` to one episode with ``steps`` gradient steps of size ``lr`` on the support loss.

    Args:
        model: a module called as ``functional_call(model, params, (x,), {"start": i, "stop": j})``
            (:class:`repana.models.Conv4`); models without ``layer_names`` are run whole every step.
        params: name -> tensor, e.g. ``dict(model.named_parameters())`` (not modified).
        support_x: float ``(n_support, C, H, W)``; support_y: int64 ``(n_support,)`` in ``[0, ways)``.
        steps: inner steps (0 returns a copy of ``params``). lr: step size (in the convention of
            ``inner_loss``).
        trainable: which parameters adapt (see :func:`repana.meta.inner.resolve_trainable`); the rest stay
            the same tensors.
        first_order: drop second-order terms (FOMAML, evaluation).
        inner_loss: "mean" or "sum_over_shots" (converted into the lr by
            :func:`repana.meta.inner.mean_loss_lr`).

    Returns:
        A new dict with the same keys; adapted tensors for trainable names, the given ones otherwise.
    """
    if steps < 0:
        raise InputError(f"steps = {steps} must not be negative")
    _check_episode(support_x, support_y)
    lr = mean_loss_lr(lr, inner_loss, support_y)
    return adapt_steps(model, params, support_x, support_y, steps, lr, resolve_trainable(params, trainable),
                       first_order)


def adapt_steps(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                support_y: torch.Tensor, steps: int, lr: float, names: Sequence[str],
                first_order: bool) -> Params:
    """:func:`adapt` with the convention resolved: ``lr`` on the mean support loss, ``names`` the
    parameters that adapt (in the order of ``params``)."""
    current: Params = dict(params)
    if steps == 0 or not names:
        return current

    has_layers = hasattr(model, "layer_names")
    start = first_trainable_layer(model, names) if has_layers else 0
    with torch.enable_grad():
        if start > 0:  # frozen bottom layers: their output never changes, run them once
            inputs = functional_call(model, current, (support_x,), {"stop": start})
            if first_order:
                inputs = inputs.detach()
        else:
            inputs = support_x
        kwargs = {"start": start} if has_layers else {}
        if not first_order:
            for name in names:  # second order needs a graph from every adapted tensor
                if not current[name].requires_grad:
                    current[name] = current[name].detach().requires_grad_(True)
        for _ in range(steps):
            if first_order:
                leaves = {name: current[name].detach().requires_grad_(True) for name in names}
                logits = functional_call(model, {**current, **leaves}, (inputs,), kwargs)
                loss = F.cross_entropy(logits, support_y)
                grads = torch.autograd.grad(loss, [leaves[n] for n in names])
                grads = [g.detach() for g in grads]
            else:
                logits = functional_call(model, current, (inputs,), kwargs)
                loss = F.cross_entropy(logits, support_y)
                grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=True)
            current = {**current, **{n: current[n] - lr * g for n, g in zip(names, grads)}}
    return current


def episode_query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                         query_x: torch.Tensor, together: bool = False) -> torch.Tensor:
    """Logits ``(n_query, C)`` of one episode's queries under ``params``: the query batch alone (its own
    batch-norm statistics, ``bn_support_query="apart"``), or with ``together`` support and query in one
    forward pass (joint statistics), query rows returned."""
    if together:
        return functional_call(model, params, (torch.cat([support_x, query_x]),))[support_x.shape[0]:]
    return functional_call(model, params, (query_x,))


# ----- the path ------------------------------------------------------------------------------------

def tasks_per_part(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> int:
    """Any module, any batch: one task at a time."""
    return 1


def adapt_episode(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                  support_y: torch.Tensor, plan: Plan) -> Params:
    """One episode's parameters after ``plan``'s steps (see :func:`adapt`)."""
    _check_episode(support_x, support_y)
    return adapt_steps(model, params, support_x, support_y, plan.steps, plan.lr, plan.names, plan.first_order)


def query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Query logits ``(tasks, n_q, C)``, task by task: :func:`adapt_episode`, then the query forward."""
    logits = []
    for t in range(support_x.shape[0]):
        adapted = adapt_episode(model, params, support_x[t], support_y[t], plan)
        with torch.set_grad_enabled(plan.graph):
            if not plan.graph:
                adapted = {n: p.detach() for n, p in adapted.items()}
            logits.append(episode_query_logits(model, adapted, support_x[t], query_x[t], plan.together))
    return torch.stack(logits)
