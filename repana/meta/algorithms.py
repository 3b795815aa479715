"""Meta-learning algorithms as data: a trainable set, an order, and an inner/outer objective.

``get_algorithm(name, **hyperparameters)`` returns an :class:`Algorithm`; the trainer only uses::

    algo.batch_kind                         # "episodes" or "classification"
    grads, metrics = algo.meta_gradients(model, batch)
    # grads: {parameter name: Tensor} for every model parameter, averaged over the tasks (or examples)
    #        of the batch, so ranks can all-reduce them weighted by metrics["n_tasks"] and call
    #        optimizer.step() after writing them into .grad
    # metrics: {"loss", "accuracy", "n_tasks"} floats (query loss/accuracy after adaptation)

Registered names (``list_algorithms()``):

========== ============== =======================================================================
name       batch          meta-objective (per task, averaged over the meta-batch)
========== ============== =======================================================================
maml       episodes       query loss after ``inner_steps`` steps on every parameter, second order
fomaml     episodes       the same, first order (inner gradients treated as constants)
anil       episodes       the same with only the head adapting (body features computed once)
boil       episodes       the same with only the body adapting (the head frozen in the inner loop)
reptile    episodes       direction ``params - adapted params`` (SGD with lr eps = Reptile's step)
multitask  episodes       query loss of the unadapted network (MAML's setup with no inner loop)
nil_training episodes     query NLL of the cosine classifier on support features (no head)
multiclass classification cross-entropy of a classifier over all meta-training classes
========== ============== =======================================================================

Aliases used by the training config: ``pretrain`` = multiclass, ``nil`` = nil_training.

BOIL (Oh, Yoo, Kim, Yun, "BOIL: Towards Representation Change for Few-shot Learning", ICLR 2021,
arXiv 2008.08882) is second-order MAML whose inner loop (training and test time) updates the body only:
the head gets no inner step (the paper's head inner lr is 0) but is meta-learned in the outer loop. Its
batch-norm affine parameters are body parameters and adapt in the inner loop (the authors' code,
github.com/HJ-Yoo/BOIL, ``maml/utils.py`` ``update_parameters``: every meta-parameter whose name lacks
"classifier" takes the extractor step, and its Conv4 uses affine ``MetaBatchNorm2d``); its inner lr is
0.5 on the mean support loss for the 4-conv network (``run_4conv.sh``: ``--extractor-step-size=0.5
--classifier-step-size=0.0``, the same 0.5 as its MAML runs). repana uses the run's own ``inner_lr``.

Hyperparameters: ``inner_steps`` (int), ``inner_lr`` (float, in the convention of
``inner_loss``), ``first_order`` (bool), ``inner_loss`` ("mean" | "sum_over_shots"), ``bn_inner_loop``
(bool, default True: the batch-norm affine parameters adapt with the other ``trainable`` ones; False:
they are left out of the inner loop and of test-time adaptation and learned by the outer loop only, as
in Finn et al.'s code, :func:`repana.meta.inner.without_batch_norm`),
``bn_support_query`` ("apart": the query batch normalised alone, as in MAML's code; "together": the
query normalised jointly with the support, one forward of their concatenation with the adapted
parameters; the inner loop always sees the support batch alone), ``trainable`` (inner-loop parameter subset, see
:func:`repana.meta.inner.resolve_trainable`), ``temperature`` (nil_training only), ``fold``
(bool or None: process the tasks of a meta-batch together with tasks folded into channels; None = on
CUDA the whole meta-batch, on CPU groups of tasks sized by :func:`repana.meta.inner.folded.fold_group_size`
when the conv1 maps are small enough for that to pay, else a loop over tasks; False = always the loop;
Conv4 only, see :mod:`repana.meta.inner.folded`). The inner loop itself is :mod:`repana.meta.inner`, shared
with evaluation and the analyses; what adapts at test time is :func:`adapted_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from repana.errors import ConfigError, InputError
from repana.meta.inner import (InnerLoop, Trainable, adapt, head_parameters, normalise_inner_loss,
                               query_logits_by_part, task_features, trainable_predicate, without_batch_norm)
from repana.meta.inner.generic import episode_query_logits
from repana.meta.nil import nil_logits

Grads = dict[str, torch.Tensor]
Metrics = dict[str, float]

BN_SUPPORT_QUERY = ("apart", "together")


@dataclass(frozen=True)
class Algorithm:
    """One meta-learning algorithm: which parameters adapt, in what order, toward which objective."""

    name: str
    batch_kind: str                      # "episodes" | "classification"
    objective: str                       # "query" | "reptile" | "nil" | "classify"
    inner_steps: int = 1
    inner_lr: float = 0.4
    first_order: bool = False
    trainable: Trainable = None          # None: every parameter (without batch norm when not bn_inner_loop)
    bn_inner_loop: bool = True           # False: batch-norm affine parameters never adapt (outer loop only)
    inner_loss: str = "mean"
    bn_support_query: str = "apart"
    temperature: float = 1.0
    fold: bool | None = None             # tasks folded into channels: None = CUDA, CPU where it pays (inner/folded.py)
    test_time: str = "inner"             # what adapts at test time: "inner" (= trainable) or "head"
    hyperparameters: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def test_time_trainable(self) -> Callable[[str], bool]:
        """Predicate ``parameter name -> bool`` of what adapts at test time (evaluation, predict, the
        analyses): the algorithm's own inner-loop choice, or the head for the algorithms without an
        inner loop (multitask, nil_training, multiclass). See :func:`adapted_parameters`."""
        if self.test_time == "head":
            return head_parameters
        return trainable_predicate(self.trainable)

    def meta_gradients(self, model: torch.nn.Module, batch: Any) -> tuple[Grads, Metrics]:
        """Gradient of the meta-objective averaged over the batch, and its metrics (see module doc)."""
        if self.objective == "classify":
            return _classification_gradients(model, batch)
        episodes = _check_episodes(batch)
        if self.objective == "query":
            return _query_gradients(self, model, episodes)
        if self.objective == "reptile":
            return _reptile_direction(self, model, episodes)
        if self.objective == "nil":
            return _nil_gradients(self, model, episodes)
        raise AssertionError(self.objective)


# ----- batches -----------------------------------------------------------------------------------

def _check_episodes(batch: Any):
    for key in ("support_x", "support_y", "query_x", "query_y"):
        if not hasattr(batch, key):
            raise InputError(f"an episodes batch needs .support_x, .support_y, .query_x, .query_y; "
                             f"{type(batch).__name__} has no .{key}")
    sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
    if sx.dim() < 3 or qx.dim() != sx.dim():
        raise InputError(f"support_x and query_x must be (tasks, n, C, H, W); got {tuple(sx.shape)} and "
                         f"{tuple(qx.shape)}")
    if sy.shape != sx.shape[:2] or qy.shape != qx.shape[:2] or sx.shape[0] != qx.shape[0]:
        raise InputError(f"labels {tuple(sy.shape)}, {tuple(qy.shape)} do not match images "
                         f"{tuple(sx.shape[:2])}, {tuple(qx.shape[:2])}")
    return batch


def _zero_missing(params: dict[str, torch.Tensor], grads: list[torch.Tensor | None]) -> Grads:
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}


# ----- objectives --------------------------------------------------------------------------------

def inner_loop(algo: Algorithm) -> InnerLoop:
    """The training inner loop of ``algo`` (an :class:`repana.meta.inner.InnerLoop`)."""
    return InnerLoop(algo.inner_steps, algo.inner_lr, algo.trainable, algo.first_order, algo.inner_loss,
                     algo.bn_support_query, algo.fold)


def _query_gradients(algo: Algorithm, model, batch) -> tuple[Grads, Metrics]:
    """Meta-gradient of the mean query loss after adaptation, part by part as the dispatcher yields
    them (one backward per part: a part's graph is freed before the next is built)."""
    params = dict(model.named_parameters())
    tasks = batch.support_x.shape[0]
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    loss_sum, correct_sum = 0.0, 0.0
    for part, logits in query_logits_by_part(model, params, batch.support_x, batch.support_y, batch.query_x,
                                             inner_loop(algo)):
        query_y = batch.query_y[part]
        per_task = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), query_y.reshape(-1),
                                   reduction="none").reshape(query_y.shape).mean(1)
        grads = torch.autograd.grad(per_task.sum() / tasks, list(params.values()), allow_unused=True)
        for (n, _), g in zip(params.items(), grads):
            if g is not None:
                total[n] += g
        loss_sum += per_task.sum().item()
        correct_sum += (logits.argmax(-1) == query_y).double().mean(1).sum().item()
    return total, {"loss": loss_sum / tasks, "accuracy": correct_sum / tasks, "n_tasks": float(tasks)}


def _reptile_direction(algo: Algorithm, model, batch) -> tuple[Grads, Metrics]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    tasks = batch.support_x.shape[0]
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    loss_sum, acc_sum = 0.0, 0.0
    for t in range(tasks):
        adapted = adapt(model, params, batch.support_x[t], batch.support_y[t], algo.inner_steps, algo.inner_lr,
                        algo.trainable, first_order=True, inner_loss=algo.inner_loss)
        for n in params:
            total[n] += (params[n] - adapted[n].detach()) / tasks
        with torch.no_grad():
            logits = episode_query_logits(model, adapted, batch.support_x[t], batch.query_x[t],
                                          algo.bn_support_query == "together")
            loss_sum += F.cross_entropy(logits, batch.query_y[t]).item()
            acc_sum += (logits.argmax(-1) == batch.query_y[t]).double().mean().item()
    return total, {"loss": loss_sum / tasks, "accuracy": acc_sum / tasks, "n_tasks": float(tasks)}


def _nil_gradients(algo: Algorithm, model, batch) -> tuple[Grads, Metrics]:
    params = dict(model.named_parameters())
    tasks = batch.support_x.shape[0]
    ways = int(batch.support_y.max()) + 1
    together = algo.bn_support_query == "together"
    fs, fq = task_features(model, params, batch.support_x, batch.query_x, together)
    log_probs = nil_logits(fs, batch.support_y, fq, ways, algo.temperature)
    loss = F.nll_loss(log_probs.reshape(-1, ways), batch.query_y.reshape(-1))
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    accuracy = (log_probs.argmax(-1) == batch.query_y).double().mean().item()
    return _zero_missing(params, grads), {"loss": loss.item(), "accuracy": accuracy, "n_tasks": float(tasks)}


def _classification_gradients(model, batch) -> tuple[Grads, Metrics]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
    elif hasattr(batch, "x") and hasattr(batch, "y"):
        x, y = batch.x, batch.y
    else:
        raise InputError("a classification batch is (x, y) or has .x (n, C, H, W) and .y (n,) int64; "
                         f"got {type(batch).__name__}")
    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise InputError(f"classification batch: x must be (n, C, H, W) and y (n,); got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    params = dict(model.named_parameters())
    logits = model(x)
    if int(y.max()) >= logits.shape[-1]:
        raise InputError(f"label {int(y.max())} is outside the head's {logits.shape[-1]} classes: build the "
                         "model with n_classes = number of meta-training classes")
    loss = F.cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    accuracy = (logits.argmax(-1) == y).double().mean().item()
    return _zero_missing(params, grads), {"loss": loss.item(), "accuracy": accuracy, "n_tasks": float(x.shape[0])}


# ----- registry ----------------------------------------------------------------------------------

_INNER = {"inner_steps", "inner_lr", "first_order", "inner_loss", "bn_support_query", "trainable", "fold",
          "bn_inner_loop"}
# "test_time": what adapts at test time (evaluation, predict, the analyses): "inner" = the parameters
# the algorithm's own inner loop adapts (its ``trainable``, every parameter by default); "head" = the
# head only (algorithms with no inner loop in training: their body is used as a fixed feature extractor).
_SPECS: dict[str, dict[str, Any]] = {
    "maml": {"batch_kind": "episodes", "objective": "query", "defaults": {}, "allowed": _INNER,
             "test_time": "inner"},
    "fomaml": {"batch_kind": "episodes", "objective": "query", "defaults": {"first_order": True},
               "allowed": _INNER, "test_time": "inner"},
    "anil": {"batch_kind": "episodes", "objective": "query", "defaults": {"trainable": "head"},
             "allowed": _INNER, "test_time": "inner"},
    "boil": {"batch_kind": "episodes", "objective": "query", "defaults": {"trainable": "body"},
             "allowed": _INNER, "test_time": "inner"},
    "reptile": {"batch_kind": "episodes", "objective": "reptile", "defaults": {"first_order": True},
                "allowed": _INNER, "test_time": "inner"},
    "multitask": {"batch_kind": "episodes", "objective": "query", "defaults": {"inner_steps": 0},
                  "allowed": {"bn_support_query"}, "test_time": "head"},
    "nil_training": {"batch_kind": "episodes", "objective": "nil", "defaults": {"inner_steps": 0},
                     "allowed": {"bn_support_query", "temperature"}, "test_time": "head"},
    "multiclass": {"batch_kind": "classification", "objective": "classify", "defaults": {"inner_steps": 0},
                   "allowed": set(), "test_time": "head"},
}
ALIASES = {"pretrain": "multiclass", "nil": "nil_training"}


def list_algorithms() -> list[str]:
    """Registered algorithm names (aliases not included)."""
    return sorted(_SPECS)


def get_algorithm(name: str, *, ignore_unused: bool = False, **hyperparameters) -> Algorithm:
    """The algorithm ``name`` with ``hyperparameters`` (see module doc); bad values raise ConfigError.

    ``ignore_unused=True`` drops hyperparameters the algorithm has no use for (e.g. ``inner_lr`` for
    multiclass) instead of raising, so one training config can build any algorithm.
    """
    canonical = ALIASES.get(name, name)
    if canonical not in _SPECS:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of {list_algorithms()} "
                          f"(aliases {sorted(ALIASES)})")
    spec = _SPECS[canonical]
    unknown = set(hyperparameters) - spec["allowed"]
    if unknown and not ignore_unused:
        raise ConfigError(f"algorithm {canonical!r} takes no hyperparameter(s) {sorted(unknown)}; "
                          f"it takes {sorted(spec['allowed'])}")
    values = {**spec["defaults"], **{k: v for k, v in hyperparameters.items() if k in spec["allowed"]}}
    if canonical == "fomaml" and values.get("first_order") is False:
        raise ConfigError("fomaml is first order by definition: use 'maml' for second order")
    steps = int(values.get("inner_steps", 1))
    if spec["objective"] in ("query", "reptile") and canonical != "multitask" and steps < 1:
        raise ConfigError(f"inner_steps = {steps}: {canonical} needs at least 1 inner step")
    lr = float(values.get("inner_lr", 0.4))
    if lr <= 0:
        raise ConfigError(f"inner_lr = {lr} must be positive")
    bn = values.get("bn_support_query", "apart")
    if bn not in BN_SUPPORT_QUERY:
        raise ConfigError(f"bn_support_query = {bn!r} is not one of {BN_SUPPORT_QUERY}")
    temperature = float(values.get("temperature", 1.0))
    if temperature <= 0:
        raise ConfigError(f"temperature = {temperature} must be positive")
    try:
        reduction = normalise_inner_loss(values.get("inner_loss", "mean"))
    except InputError as err:
        raise ConfigError(str(err)) from None
    bn_inner_loop = values.get("bn_inner_loop", True)
    if not isinstance(bn_inner_loop, bool):
        raise ConfigError(f"bn_inner_loop = {bn_inner_loop!r} must be true or false")
    trainable = values.get("trainable")
    if not bn_inner_loop:
        trainable = without_batch_norm(trainable)
    return Algorithm(name=canonical, batch_kind=spec["batch_kind"], objective=spec["objective"],
                     inner_steps=steps, inner_lr=lr, first_order=bool(values.get("first_order", False)),
                     trainable=trainable, bn_inner_loop=bn_inner_loop, inner_loss=reduction,
                     bn_support_query=bn,
                     temperature=temperature, fold=values.get("fold"), test_time=spec["test_time"],
                     hyperparameters=dict(hyperparameters))


def adapted_parameters(algorithm: str, **hyperparameters) -> Callable[[str], bool]:
    """What adapts at test time for a model trained with ``algorithm`` (a registered name or an alias:
    ``pretrain``, ``nil``), as a predicate ``parameter name -> bool``: the one rule that training's
    validation, evaluation, ``predict`` and the analyses share.

    ========================= =================================================
    maml, fomaml, reptile     every parameter (:func:`repana.meta.inner.all_parameters`)
    anil                      the head (its inner loop's ``trainable="head"``)
    boil                      the body (its inner loop's ``trainable="body"``)
    multitask, nil_training,  the head (:func:`repana.meta.inner.head_parameters`): no inner loop
    multiclass                in training, the body is a fixed feature extractor
    ========================= =================================================

    ``hyperparameters`` (e.g. a custom ``trainable``, ``bn_inner_loop=False`` to leave batch norm out) are
    those of :func:`get_algorithm`; unused ones are ignored. Combine with
    :func:`repana.meta.inner.freeze_layers` to freeze layers further.
    """
    return get_algorithm(algorithm, ignore_unused=True, **hyperparameters).test_time_trainable
