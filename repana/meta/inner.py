"""The one inner-loop dispatcher: adapt a batch of tasks and return their query logits, on the fastest
exact path, for training (meta-gradients), evaluation and the analyses alike.

Paths (:func:`choose_path` picks one; every path equals the per-episode reference
:func:`repana.meta.adapt.adapt` + a query forward, values and meta-gradients, float64 tests):

============== ==============================================================================================
path           when
============== ==============================================================================================
unadapted      no step or no trainable parameter (multitask; ``steps=0``): the network as it is
head_only      only the head adapts (ANIL, test time of the non-episodic algorithms), any backbone
               declaring ``layer_names``: body features once, all tasks' heads adapt together
per_episode    one task at a time with :func:`repana.meta.adapt.adapt` (frozen bottom layers run once):
               any backbone; Conv4 with frozen bottom layers (folding would recompute them every step)
conv4_episode  no graph needed (evaluation), CPU, a Conv4 with batch statistics: one task at a time, no
               autograd, a hand-derived backward (:mod:`repana.meta.conv4_episode`)
folded         a Conv4 with batch statistics, tasks folded into channels (:mod:`repana.meta.batched`):
               on CUDA (training: the whole meta-batch; evaluation: groups bounded by ``FOLD_BYTES``),
               with ``fold=True``, and on CPU where it pays (:func:`repana.meta.batched.cpu_fold_pays`)
               in groups of several tasks
============== ==============================================================================================

Whether a graph is needed is read from the parameters: when grad mode is on and a parameter requires
grad (training), the logits are differentiable in ``params`` (second order unless ``first_order``);
otherwise (evaluation: detached parameters or ``torch.no_grad``) the steps are first order and the
logits are constants. The loss convention is handled once, by :func:`repana.meta.adapt.mean_loss_lr`:
every path runs on the mean support loss.

Bad steps are refused on every path: :class:`InnerLoop` takes a finite ``lr`` in ``[0, MAX_INNER_LR]`` and at
most ``MAX_INNER_STEPS`` steps (:mod:`repana.limits`), and logits (or adapted weights) that are not finite, an
inner loop that diverged, raise :class:`InputError` naming lr and steps instead of becoming predictions.

Public API (what training, :mod:`repana.meta.evaluate` and :mod:`repana.analysis` call)::

    query_logits_by_part(model, params, support_x, support_y, query_x, spec) -> Iterator[(slice, logits)]
    adapted_query_logits(model, params, support_x, support_y, query_x, spec) -> logits
    adapt_tasks(model, params, support_x, support_y, spec) -> list[dict]       # per task, detached
    adapt_trajectory(model, params, support_x, support_y, spec) -> list[dict]  # steps + 1 dicts, detached

with ``spec = InnerLoop(steps, lr, trainable=None, first_order=False, inner_loss="mean",
bn_support_query="apart", fold=None)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Mapping

import torch
from torch.func import functional_call

from repana.errors import InputError
from repana.limits import MAX_INNER_STEPS, check_count, check_inner_lr
from repana.meta.adapt import (Trainable, adapt, first_trainable_layer, mean_loss_lr, normalise_inner_loss,
                               resolve_trainable)
from repana.meta.batched import (TRAIN_FOLD_BYTES, can_batch_head_only, can_fold, cpu_fold_pays, fold_group_size,
                                 folded_query_logits, forward_tasks, graph_needed, head_only_query_logits)
from repana.meta.conv4_episode import adapt_conv4_episode, can_run_conv4_episode, conv4_episode_query_logits

Params = dict[str, torch.Tensor]
PATHS = ("unadapted", "head_only", "per_episode", "conv4_episode", "folded")


@dataclass(frozen=True)
class InnerLoop:
    """How tasks adapt: ``steps`` gradient steps of size ``lr`` (in the convention of ``inner_loss``:
    "mean" | "sum_over_shots") on the support loss of the ``trainable`` parameters (see
    :func:`repana.meta.adapt.resolve_trainable`; :func:`repana.meta.adapt.freeze_layers` narrows it);
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


def choose_path(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                query_x: torch.Tensor, spec: InnerLoop, graph: bool | None = None) -> tuple[str, int]:
    """``(path, tasks per part)`` for a batch ``support_x (tasks, n_s, C, H, W)``, ``query_x``: the one
    place the fast path is chosen (see the module table)."""
    tasks = support_x.shape[0]
    graph = graph_needed(params) if graph is None else graph
    names = resolve_trainable(params, spec.trainable) if spec.steps > 0 else []
    if not names:
        return "unadapted", tasks
    if can_batch_head_only(model, names):
        return "head_only", tasks
    device = support_x.device
    if spec.fold is not True and first_trainable_layer(model, names) > 0:
        # frozen bottom layers: folding would recompute them at every step; one task at a time runs them once
        return ("per_episode" if graph or not can_run_conv4_episode(model) or device.type != "cpu"
                else "conv4_episode"), 1
    if graph:
        if can_fold(model, device, spec.fold):                   # CUDA or fold=True: the whole meta-batch
            return "folded", tasks
        if spec.fold is None and cpu_fold_pays(model, support_x) and can_fold(model, device, None, True):
            group = fold_group_size(model, query_x, TRAIN_FOLD_BYTES, maps_per_task=1)
            if group >= 2:
                return "folded", group
        return "per_episode", 1
    cpu_default = tasks > 1 and cpu_fold_pays(model, support_x)
    if can_fold(model, device, spec.fold, default_on_cpu=cpu_default):
        return "folded", fold_group_size(model, support_x)
    if device.type == "cpu" and can_run_conv4_episode(model) and spec.fold is not True:
        return "conv4_episode", 1
    return "per_episode", 1


def _unadapted_logits(model, params, support_x, query_x, together: bool) -> torch.Tensor:
    if together:
        return forward_tasks(model, params, torch.cat([support_x, query_x], 1))[:, support_x.shape[1]:]
    return forward_tasks(model, params, query_x)


def _episode_query_logits(model, params, support_x, query_x, together: bool) -> torch.Tensor:
    """Logits ``(n_query, C)`` of one episode's queries under ``params`` (see ``bn_support_query``)."""
    if together:
        return functional_call(model, params, (torch.cat([support_x, query_x]),))[support_x.shape[0]:]
    return functional_call(model, params, (query_x,))


def query_logits_by_part(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         spec: InnerLoop) -> Iterator[tuple[slice, torch.Tensor]]:
    """Query logits after adapting each task, part by part: ``(tasks slice, logits (part_tasks, n_q, C))``.

    ``support_x (tasks, n_s, C, H, W)`` float, ``support_y (tasks, n_s)`` int64, ``query_x (tasks, n_q, ...)``.
    With a graph (training), back-propagate each part before asking for the next to free its graph.
    """
    params = dict(params)
    graph = graph_needed(params)
    path, group = choose_path(model, params, support_x, query_x, spec, graph)
    together = spec.bn_support_query == "together"
    tasks = support_x.shape[0]
    first_order = spec.first_order or not graph
    if path == "unadapted":
        with torch.set_grad_enabled(graph):
            logits = _unadapted_logits(model, params, support_x, query_x, together)
        yield slice(0, tasks), check_finite_logits(logits, spec)  # outside the `with`: grad mode is the caller's while it holds the part
        return
    lr = mean_loss_lr(spec.lr, spec.inner_loss, support_y)
    if path == "head_only":
        logits = head_only_query_logits(model, params, support_x, support_y, query_x, spec.steps, lr,
                                        spec.trainable, first_order, "mean", together)
        yield slice(0, tasks), check_finite_logits(logits, spec)
        return
    for start in range(0, tasks, group):
        part = slice(start, start + group)
        if path == "folded":
            logits = folded_query_logits(model, params, support_x[part], support_y[part], query_x[part], spec.steps,
                                         lr, spec.trainable, first_order, "mean", together)
        elif path == "conv4_episode":
            logits = conv4_episode_query_logits(model, params, support_x[start], support_y[start], query_x[start],
                                                spec.steps, lr, spec.trainable, "mean", together).unsqueeze(0)
        else:
            adapted = adapt(model, params, support_x[start], support_y[start], spec.steps, lr, spec.trainable,
                            first_order)
            with torch.set_grad_enabled(graph):
                if not graph:
                    adapted = {n: p.detach() for n, p in adapted.items()}
                logits = _episode_query_logits(model, adapted, support_x[start], query_x[start], together)
            logits = logits.unsqueeze(0)
        yield part, check_finite_logits(logits, spec)


def check_finite_logits(logits: torch.Tensor, spec: InnerLoop) -> torch.Tensor:
    """``logits`` when every value is finite, else an :class:`InputError` naming ``spec``'s lr and steps
    (the inner loop diverged: a step too large for these weights, or non-finite weights)."""
    if not bool(torch.isfinite(logits.detach()).all()):
        if spec.steps == 0:
            raise InputError("the network gives non-finite query logits before any inner step (non-finite "
                             "weights or inputs)")
        raise InputError(f"the inner loop diverged after {_steps_of(spec)}: non-finite query logits; use a "
                         "smaller lr or fewer steps")
    return logits


def check_finite_params(params: Mapping[str, torch.Tensor], spec: InnerLoop) -> None:
    """Raise :class:`InputError` naming ``spec``'s lr and steps when an adapted weight is not finite."""
    bad = next((n for n, p in params.items() if not bool(torch.isfinite(p.detach()).all())), None)
    if bad is not None:
        raise InputError(f"the inner loop diverged after {_steps_of(spec)}: non-finite adapted weights ({bad}); "
                         "use a smaller lr or fewer steps")


def _steps_of(spec: InnerLoop) -> str:
    return f"{spec.steps} step{'' if spec.steps == 1 else 's'} of lr {spec.lr:g}"


def _as_batch(support_x, support_y, query_x=None):
    single = support_x.dim() == 4 or (support_x.dim() == 2 and support_y.dim() == 1)
    if single:
        support_x, support_y = support_x.unsqueeze(0), support_y.unsqueeze(0)
        query_x = None if query_x is None else query_x.unsqueeze(0)
    return single, support_x, support_y, query_x


def adapted_query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor, spec: InnerLoop) -> torch.Tensor:
    """Query logits ``(tasks, n_q, C)`` after adapting every task (``(n_q, C)`` for one episode given as
    ``support_x (n_s, C, H, W)``, ``support_y (n_s,)``, ``query_x (n_q, C, H, W)``)."""
    single, support_x, support_y, query_x = _as_batch(support_x, support_y, query_x)
    logits = torch.cat([part for _, part in query_logits_by_part(model, params, support_x, support_y, query_x,
                                                                   spec)])
    return logits[0] if single else logits


def adapt_tasks(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                support_y: torch.Tensor, spec: InnerLoop) -> list[Params] | Params:
    """Adapted parameters of every task (first order, detached): a list of dicts with the model's
    parameter names and shapes (one dict for one episode given as ``(n_s, C, H, W)``, ``(n_s,)``)."""
    single, support_x, support_y, _ = _as_batch(support_x, support_y)
    params = {n: p.detach() for n, p in params.items()}
    out = []
    for t in range(support_x.shape[0]):
        if support_x.device.type == "cpu" and can_run_conv4_episode(model) and spec.steps > 0:
            adapted = adapt_conv4_episode(model, params, support_x[t], support_y[t], spec.steps, spec.lr,
                                          spec.trainable, spec.inner_loss)
        else:
            adapted = adapt(model, params, support_x[t], support_y[t], spec.steps, spec.lr, spec.trainable,
                            first_order=True, inner_loss=spec.inner_loss)
        adapted = {n: p.detach() for n, p in adapted.items()}
        check_finite_params(adapted, spec)
        out.append(adapted)
    return out[0] if single else out


def adapt_trajectory(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                     support_y: torch.Tensor, spec: InnerLoop) -> list[Params]:
    """Parameters after 0, 1, ..., ``spec.steps`` inner steps on one episode (first order, detached):
    ``steps + 1`` dicts, the first the given parameters (what the inner-loop similarity analysis follows).

    ``support_x (n_s, C, H, W)``, ``support_y (n_s,)`` int64. Plain SGD, so step k of this trajectory is
    :func:`adapt_tasks` with ``steps = k``.
    """
    current = {n: p.detach() for n, p in params.items()}
    trajectory = [current]
    one_step = replace(spec, steps=1)
    lr = mean_loss_lr(spec.lr, spec.inner_loss, support_y)
    one_step = replace(one_step, lr=lr, inner_loss="mean")
    for _ in range(spec.steps):
        current = adapt_tasks(model, current, support_x, support_y, one_step)
        trajectory.append(current)
    return trajectory
