"""What an inner loop is: the caller's settings (:class:`InnerLoop`), the support-loss convention, the
:class:`Plan` they resolve to for one batch, and the :class:`InnerPath` protocol every path implements.

The dispatcher (:mod:`repana.meta.inner.dispatch`) resolves an :class:`InnerLoop` into a :class:`Plan` once,
before it chooses a path: the trainable parameter names, whether a graph is recorded, and the learning rate
in the mean-loss convention (:func:`mean_loss_lr`). The paths receive the plan as data and never see the
loss convention: every path runs on the mean support loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

import torch

from repana.errors import InputError
from repana.limits import MAX_INNER_STEPS, check_count, check_inner_lr
from repana.meta.inner.trainable import Trainable, resolve_trainable

Params = dict[str, torch.Tensor]

INNER_LOSSES = ("mean", "sum_over_shots")   # the values of TrainConfig.inner_loss, the one vocabulary
_INNER_LOSS_ALIASES = {"sum_div_k": "sum_over_shots"}   # another spelling, accepted


def normalise_inner_loss(inner_loss: str) -> str:
    """``"mean"`` or ``"sum_over_shots"`` (``"sum_div_k"`` is accepted as an alias of the latter)."""
    value = _INNER_LOSS_ALIASES.get(inner_loss, inner_loss)
    if value not in INNER_LOSSES:
        raise InputError(f"inner_loss = {inner_loss!r} is not one of {INNER_LOSSES}: 'mean' averages "
                         "the support loss over examples; 'sum_over_shots' sums it and divides by the shots K "
                         "(original MAML code; its inner lr is N times a 'mean' lr)")
    return value


def mean_loss_lr(lr: float, inner_loss: str, support_y: torch.Tensor) -> float:
    """The step size that, on the mean support loss, takes the same steps as ``lr`` on the ``inner_loss``
    loss: the one conversion of the loss convention (every inner loop of repana runs on the mean loss).

    "sum_over_shots" (the loss summed over the n support examples and divided by the shots K) is n / K
    (= ways, for balanced episodes) times the mean, so its steps are those of ``lr * n / K`` on the
    mean. ``support_y``: int64 ``(n,)`` or ``(tasks, n)`` (balanced episodes: the first task's K).
    """
    inner_loss = normalise_inner_loss(inner_loss)
    if inner_loss == "mean":
        return float(lr)
    labels = support_y[0] if support_y.dim() == 2 else support_y
    return float(lr) * labels.numel() / shots_of(labels)


def shots_of(support_y: torch.Tensor) -> int:
    """Shots K of an episode's labels ``(n,)`` = n / number of distinct labels (balanced episodes)."""
    ways = int(torch.unique(support_y).numel())
    return max(1, support_y.numel() // max(ways, 1))


@dataclass(frozen=True)
class InnerLoop:
    """How tasks adapt: ``steps`` gradient steps of size ``lr`` (in the convention of ``inner_loss``:
    "mean" | "sum_over_shots") on the support loss of the ``trainable`` parameters (see
    :func:`repana.meta.inner.resolve_trainable`; :func:`repana.meta.inner.freeze_layers` narrows it);
    ``first_order`` drops second-order terms (training only: without a graph steps are first order);
    ``bn_support_query``: "apart" | "together" (query normalised with the support); ``fold``: None
    (choose), True (fold tasks into channels), False (never fold)."""

    steps: int
    lr: float
    trainable: Trainable = None
    first_order: bool = False
    inner_loss: str = "mean"
    bn_support_query: str = "apart"
    fold: bool | None = None

    def __post_init__(self):
        check_count(self.steps, "inner steps", MAX_INNER_STEPS, minimum=0, what="100x the paper's 10 test steps")
        check_inner_lr(self.lr, self.steps)
        if self.bn_support_query not in ("apart", "together"):
            raise InputError(f"bn_support_query = {self.bn_support_query!r} is not 'apart' or 'together'")
        normalise_inner_loss(self.inner_loss)


@dataclass(frozen=True)
class Plan:
    """An :class:`InnerLoop` resolved for one batch: what every path receives.

    ``lr`` is in the mean-loss convention; ``names`` are the parameters that adapt, in the order of the
    parameter dict (empty when nothing adapts or ``steps`` is 0); ``graph``: the logits must be
    differentiable in the parameters (training); ``first_order`` is True whenever ``graph`` is False;
    ``together``: the query batch is normalised with the support (``bn_support_query="together"``).
    """

    steps: int
    lr: float
    names: tuple[str, ...]
    first_order: bool
    graph: bool
    together: bool
    fold: bool | None


def graph_needed(params: Mapping[str, torch.Tensor]) -> bool:
    """Whether a forward with ``params`` must record autograd: grad mode on and a parameter requiring
    grad (training); off (evaluation), the no-graph paths and faster inference layouts apply."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in params.values())


def resolve_plan(spec: InnerLoop, params: Mapping[str, torch.Tensor], support_y: torch.Tensor,
                 graph: bool | None = None) -> Plan:
    """The :class:`Plan` of ``spec`` for a batch with labels ``support_y`` int64 ``(tasks, n)`` (or ``(n,)``)
    and parameters ``params``; ``graph`` defaults to :func:`graph_needed` of ``params``."""
    graph = graph_needed(params) if graph is None else graph
    names = tuple(resolve_trainable(params, spec.trainable)) if spec.steps > 0 else ()
    lr = mean_loss_lr(spec.lr, spec.inner_loss, support_y) if names else float(spec.lr)
    return Plan(steps=spec.steps, lr=lr, names=names, first_order=spec.first_order or not graph, graph=graph,
                together=spec.bn_support_query == "together", fold=spec.fold)


@runtime_checkable
class InnerPath(Protocol):
    """One way of adapting a batch of tasks and computing their query logits. Each path is a module of
    :mod:`repana.meta.inner` (``unadapted``, ``head_only``, ``folded``, ``conv4_episode``, ``generic``)
    that defines these names; the dispatcher asks them in its order of preference and runs the first that
    can run the batch. Every path equals the generic one (values and meta-gradients, float64 tests)."""

    NAME: str

    def tasks_per_part(self, model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor,
                       plan: Plan) -> int | None:
        """How many tasks of ``support_x (tasks, n_s, C, H, W)`` one call of :meth:`query_logits` takes
        on this path, or None when the path cannot (or should not) run this batch."""

    def query_logits(self, model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                     support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Query logits ``(part_tasks, n_q, C)`` after adapting each task of the part: ``support_x
        (part_tasks, n_s, C, H, W)`` float, ``support_y (part_tasks, n_s)`` int64, ``query_x (part_tasks,
        n_q, C, H, W)``; differentiable in ``params`` when ``plan.graph``."""


@runtime_checkable
class EpisodePath(InnerPath, Protocol):
    """A path that also returns one episode's adapted parameters (``unadapted``, ``conv4_episode``,
    ``generic``): what :func:`repana.meta.inner.adapt_tasks` and the trajectories use."""

    def adapt_episode(self, model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                      support_y: torch.Tensor, plan: Plan) -> Params:
        """Parameters (the model's names and shapes) after ``plan.steps`` steps on one episode
        ``support_x (n_s, C, H, W)``, ``support_y (n_s,)`` int64."""
