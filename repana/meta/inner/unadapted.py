"""The unadapted path: no inner step or no parameter that adapts (multitask training, ``steps=0``): the
network as it is, every task with its own batch statistics."""

from __future__ import annotations

from typing import Mapping

import torch

from repana.meta.inner.spec import Params, Plan
from repana.meta.inner.tasks import forward_tasks

NAME = "unadapted"


def tasks_per_part(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> int | None:
    """The whole batch when nothing adapts, else None."""
    return None if plan.names else support_x.shape[0]


def adapt_episode(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                  support_y: torch.Tensor, plan: Plan) -> Params:
    """The parameters as given."""
    return dict(params)


def query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Query logits ``(tasks, n_q, C)`` of the network under ``params``."""
    with torch.set_grad_enabled(plan.graph):
        if plan.together:
            return forward_tasks(model, params, torch.cat([support_x, query_x], 1))[:, support_x.shape[1]:]
        return forward_tasks(model, params, query_x)
