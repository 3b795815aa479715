"""The one inner-loop dispatcher: adapt a batch of tasks and return their query logits, on the fastest
exact path, for training (meta-gradients), evaluation and the analyses alike.

The caller's :class:`repana.meta.inner.spec.InnerLoop` is resolved once into a
:class:`repana.meta.inner.spec.Plan` (trainable names, graph or not, the lr on the mean support loss); then
:func:`choose_path`, the only place a path is chosen, asks the paths in its order of preference whether they
can run the batch and takes the first that can. Every path equals the generic one (values and
meta-gradients, float64 tests):

============== ==============================================================================================
path           runs when
============== ==============================================================================================
unadapted      no step or no trainable parameter (multitask; ``steps=0``): the network as it is
head_only      only the head adapts (ANIL, test time of the non-episodic algorithms), any backbone
               declaring ``layer_names``: body features once, all tasks' heads adapt together
folded         a Conv4 with batch statistics, tasks folded into channels: on CUDA (training: the whole
               meta-batch; evaluation: groups bounded by ``folded.FOLD_BYTES``), with ``fold=True``, and on
               CPU where it pays (:func:`repana.meta.inner.folded.cpu_fold_pays`) in groups of several tasks
conv4_episode  no graph needed (evaluation), CPU, a Conv4 with batch statistics: one task at a time, no
               autograd, a hand-derived backward
generic        one task at a time with :func:`repana.meta.inner.adapt` (frozen bottom layers run once):
               any backbone, any batch
============== ==============================================================================================

Preference: unadapted, head_only, folded, conv4_episode, generic; with frozen bottom layers (and ``fold``
not True) folded is skipped: it would recompute them at every step, one task at a time runs them once.

Whether a graph is needed is read from the parameters: when grad mode is on and a parameter requires
grad (training), the logits are differentiable in ``params`` (second order unless ``first_order``);
otherwise (evaluation: detached parameters or ``torch.no_grad``) the steps are first order and the
logits are constants.

Bad steps are refused on every path: :class:`InnerLoop` takes a finite ``lr`` in ``[0, MAX_INNER_LR]`` and at
most ``MAX_INNER_STEPS`` steps (:mod:`repana.limits`), and logits (or adapted weights) that are not finite, an
inner loop that diverged, raise :class:`InputError` naming lr and steps instead of becoming predictions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Mapping, Sequence

import torch

from repana.errors import InputError
from repana.meta.inner import conv4_episode, folded, generic, head_only, unadapted
from repana.meta.inner.spec import EpisodePath, InnerLoop, InnerPath, Params, Plan, resolve_plan
from repana.meta.inner.trainable import first_trainable_layer

PATHS: dict[str, InnerPath] = {path.NAME: path for path in (unadapted, head_only, folded, conv4_episode, generic)}
# the paths that return one episode's adapted parameters, in order of preference
EPISODE_PATHS: tuple[EpisodePath, ...] = (unadapted, conv4_episode, generic)


def choose_path(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor,
                plan: Plan) -> tuple[str, int]:
    """``(path name, tasks per part)`` for a batch ``support_x (tasks, n_s, C, H, W)``, ``query_x``: the
    one place the path is chosen (see the module table)."""
    if plan.fold is not True and first_trainable_layer(model, plan.names) > 0:
        order = (unadapted, head_only, conv4_episode, generic)   # frozen bottom layers: never folded
    else:
        order = (unadapted, head_only, folded, conv4_episode, generic)
    return _first_that_runs(order, model, support_x, query_x, plan)


def choose_episode_path(model: torch.nn.Module, support_x: torch.Tensor, plan: Plan) -> str:
    """The path that adapts the episodes of ``support_x (tasks, n_s, C, H, W)`` one at a time and returns
    their parameters (:func:`adapt_tasks`, :func:`adapt_trajectory`)."""
    return _first_that_runs(EPISODE_PATHS, model, support_x, support_x, plan)[0]


def _first_that_runs(order: Sequence[InnerPath], model, support_x, query_x, plan) -> tuple[str, int]:
    for path in order:
        tasks = path.tasks_per_part(model, support_x, query_x, plan)
        if tasks:
            return path.NAME, tasks
    raise AssertionError("the generic path runs every batch")


def query_logits_by_part(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         spec: InnerLoop) -> Iterator[tuple[slice, torch.Tensor]]:
    """Query logits after adapting each task, part by part: ``(tasks slice, logits (part_tasks, n_q, C))``.

    ``support_x (tasks, n_s, C, H, W)`` float, ``support_y (tasks, n_s)`` int64, ``query_x (tasks, n_q, ...)``.
    With a graph (training), back-propagate each part before asking for the next to free its graph.
    """
    params = dict(params)
    plan = resolve_plan(spec, params, support_y)
    name, group = choose_path(model, support_x, query_x, plan)
    path = PATHS[name]
    for start in range(0, support_x.shape[0], group):
        part = slice(start, start + group)
        logits = path.query_logits(model, params, support_x[part], support_y[part], query_x[part], plan)
        yield part, check_finite_logits(logits, spec)


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
    adapted = _adapt_each(model, params, support_x, support_y, resolve_plan(spec, params, support_y, graph=False),
                          spec)
    return adapted[0] if single else adapted


def adapt_trajectory(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                     support_y: torch.Tensor, spec: InnerLoop) -> list[Params]:
    """Parameters after 0, 1, ..., ``spec.steps`` inner steps on one episode (first order, detached):
    ``steps + 1`` dicts, the first the given parameters (what the inner-loop similarity analysis follows).

    ``support_x (n_s, C, H, W)``, ``support_y (n_s,)`` int64. Plain SGD, so step k of this trajectory is
    :func:`adapt_tasks` with ``steps = k``.
    """
    current = {n: p.detach() for n, p in params.items()}
    support_x, support_y = support_x.unsqueeze(0), support_y.unsqueeze(0)
    one_step = replace(resolve_plan(spec, current, support_y, graph=False), steps=1)
    trajectory = [current]
    for _ in range(spec.steps):
        current = _adapt_each(model, current, support_x, support_y, one_step, spec)[0]
        trajectory.append(current)
    return trajectory


def _adapt_each(model: torch.nn.Module, params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                plan: Plan, spec: InnerLoop) -> list[Params]:
    """Each task's adapted parameters (detached, checked finite) on the path :func:`choose_episode_path` picks."""
    path = PATHS[choose_episode_path(model, support_x, plan)]
    out = []
    for t in range(support_x.shape[0]):
        adapted = {n: p.detach() for n, p in path.adapt_episode(model, params, support_x[t], support_y[t],
                                                                plan).items()}
        check_finite_params(adapted, spec)
        out.append(adapted)
    return out


def _as_batch(support_x, support_y, query_x=None):
    single = support_x.dim() == 4 or (support_x.dim() == 2 and support_y.dim() == 1)
    if single:
        support_x, support_y = support_x.unsqueeze(0), support_y.unsqueeze(0)
        query_x = None if query_x is None else query_x.unsqueeze(0)
    return single, support_x, support_y, query_x


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
