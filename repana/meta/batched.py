"""Episodes of a meta-batch processed together, for the case where it is exact and pays: a frozen body.

When only the head adapts (ANIL, NIL-style evaluation of the head, the "freeze conv1..conv4" ablation),
every task's body features are computed once (:func:`forward_tasks`: on CUDA one forward pass over
``(tasks, n, C, H, W)`` with per-task batch-norm statistics, see :class:`repana.models.ConvBlock`; on CPU
task by task, or in small 5-D groups for small support sets), and the heads of all tasks adapt together
as ``(tasks, ways, n_features)`` tensors: per-task copies of the head, so one ``autograd.grad`` of the
sum of the tasks' support losses returns every task's own inner gradient (first-order steps, as in
evaluation, write the cross-entropy gradient out instead: no autograd pass per step). No ``torch.func.vmap`` is used
(its batch-norm batching rule gives wrong second-order gradients, functorch issue 534).

When conv layers adapt, tasks are folded into channels (see the layout note further down); evaluation of
one episode at a time without a graph is :mod:`repana.meta.conv4_episode`. Both
know Conv4's blocks (``conv{i}.conv``, ``conv{i}.bn``) and sit behind an explicit check
(:func:`repana.models.is_conv4`); every other backbone, and ``fold=False`` in training, takes the
generic per-episode loop of :func:`repana.meta.adapt.adapt`. The head-only path works for any backbone
that declares ``layer_names`` ending in ``"head"``. Which path runs is decided in one place,
:func:`repana.meta.inner.choose_path`. The float64 tests compare every path against a per-episode reference.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.errors import InputError
from repana.meta.adapt import mean_loss_lr, resolve_trainable
from repana.models import is_conv4, is_head_parameter, rectify_and_pool


def can_batch_head_only(model: torch.nn.Module, trainable_names: list[str]) -> bool:
    """True when only head parameters adapt (so the tasks' heads can adapt together on fixed features).

    Any backbone that declares ``layer_names`` ending in ``"head"`` (a Linear whose input is
    ``model(x, stop=len(layer_names) - 1)``): :class:`repana.models.Conv4`, :class:`repana.models.ResNetSmall`.
    """
    layer_names = getattr(model, "layer_names", None)
    return (bool(layer_names) and layer_names[-1] == "head" and isinstance(getattr(model, "head", None), torch.nn.Linear)
            and all(is_head_parameter(n) for n in trainable_names))


def penultimate_stop(model: torch.nn.Module) -> int:
    """``stop`` index whose output is the head's input: ``len(model.layer_names) - 1``."""
    return len(model.layer_names) - 1


CPU_IMAGES_PER_CALL = 64  # see forward_tasks


def forward_tasks(model: torch.nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                  stop: int | None = None) -> torch.Tensor:
    """``model`` on every task of ``x (tasks, n, C, H, W)`` with per-task batch statistics -> ``(tasks, n, ...)``.

    CUDA: one 5-D forward (see :class:`repana.models.ConvBlock`). CPU: a loop over tasks (measured 1.3x
    faster than one 5-D forward: one task's activations stay in cache), in 5-D groups of tasks when each
    has fewer than ``CPU_IMAGES_PER_CALL`` images. Running batch-norm statistics in train mode: one task
    at a time.
    """
    params = dict(params)
    kwargs = {} if stop is None else {"stop": stop}
    # 5-D calls: Conv4's blocks take a batch of tasks natively; other backbones loop over tasks.
    five_d_exact = is_conv4(model) and (model.bn_stats == "batch" or not model.training)
    if x.is_cuda and five_d_exact:
        return functional_call(model, params, (x,), kwargs)
    # CPU: tasks with few images (support sets) in 5-D groups of >= CPU_IMAGES_PER_CALL images, per-call
    # overhead shared (5-shot support sets of 16 tasks: 2.3 -> 1.6 ms per task); larger sets one by one.
    group = max(1, CPU_IMAGES_PER_CALL // max(1, x.shape[1])) if five_d_exact else 1
    if group == 1:
        return torch.stack([functional_call(model, params, (x[t],), kwargs) for t in range(x.shape[0])])
    return torch.cat([functional_call(model, params, (x[t:t + group],), kwargs)
                      for t in range(0, x.shape[0], group)])


def task_features(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                  query_x: torch.Tensor, bn_together: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features of a batch of tasks.

    Args:
        support_x: float ``(tasks, n_support, C, H, W)``; query_x: ``(tasks, n_query, C, H, W)``.
        bn_together: query features from one forward of the concatenation (support; query), i.e.
            with joint batch statistics, instead of the query batch alone (the default, as in MAML's
            code). Support features always come from the support batch alone (what the inner loop sees).

    Returns:
        ``(tasks, n_support, n_features)``, ``(tasks, n_query, n_features)``.
    """
    stop = penultimate_stop(model)
    support_features = forward_tasks(model, params, support_x, stop=stop)
    if bn_together:
        both = forward_tasks(model, params, torch.cat([support_x, query_x], 1), stop=stop)
        return support_features, both[:, support_x.shape[1]:]
    return support_features, forward_tasks(model, params, query_x, stop=stop)


def graph_needed(params: Mapping[str, torch.Tensor]) -> bool:
    """Whether a forward with ``params`` must record autograd: grad mode on and a parameter requiring
    grad (training); off (evaluation), the no-graph paths and faster inference layouts apply."""
    return torch.is_grad_enabled() and any(p.requires_grad for p in params.values())


def batched_head_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``features (tasks, n, F)``, ``weight (tasks, C, F)``, ``bias (tasks, C)`` -> logits ``(tasks, n, C)``."""
    return torch.baddbmm(bias.unsqueeze(1), features, weight.transpose(1, 2))


def adapt_heads(support_features: torch.Tensor, support_y: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor, steps: int, lr: float, first_order: bool = False,
                inner_loss: str = "mean", train_weight: bool = True,
                train_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt one linear head per task on fixed support features, all tasks at once.

    Args:
        support_features: ``(tasks, n_support, F)``; support_y: int64 ``(tasks, n_support)``.
        weight: shared initial head ``(C, F)`` or per task ``(tasks, C, F)``; bias: ``(C,)`` or ``(tasks, C)``.
        steps, lr, first_order, inner_loss: as :func:`repana.meta.adapt.adapt`.

    Returns:
        Per-task heads ``(tasks, C, F)``, ``(tasks, C)``; differentiable in the inputs when second order.
    """
    lr = mean_loss_lr(lr, inner_loss, support_y)
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
    ``loss_scale``: 1/n (the mean loss; :func:`adapt_heads` converts other conventions into the lr). The returned head depends on the
    initial one through the identity only, as in first-order MAML. Equal to the autograd steps to
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


def head_only_query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                           support_y: torch.Tensor, query_x: torch.Tensor, steps: int, lr: float,
                           trainable=None, first_order: bool = False, inner_loss: str = "mean",
                           bn_together: bool = False) -> torch.Tensor:
    """Query logits ``(tasks, n_query, C)`` after adapting the head (only) of every task of a batch.

    ``trainable`` must select head parameters only (``head.weight`` and/or ``head.bias``).
    """
    names = resolve_trainable(params, trainable)
    with torch.set_grad_enabled(graph_needed(params)):  # evaluation: an inference forward (faster layout)
        fs, fq = task_features(model, params, support_x, query_x, bn_together)
    weight, bias = params["head.weight"], params["head.bias"]
    w, b = adapt_heads(fs, support_y, weight, bias, steps, lr, first_order, inner_loss,
                       train_weight="head.weight" in names, train_bias="head.bias" in names)
    if w.dim() == 2:
        w, b = w.expand(fq.shape[0], *w.shape), b.expand(fq.shape[0], *b.shape)
    return batched_head_logits(fq, w, b)


# ----- every parameter adapting: tasks folded into channels -----------------------------------------
#
# Layout: a batch of tasks x (tasks, n, C, H, W) becomes (n, tasks*C, H, W); each task has its own copy
# of every parameter (tensors (tasks, *shape)), convolutions are grouped (groups=tasks), batch norm runs
# over tasks x channels (so every task gets its own statistics) and the head is a batched matmul. One
# autograd.grad of the sum of the tasks' losses w.r.t. the per-task copies is every task's own inner
# gradient. Exact (float64 tests against the per-episode reference).
#
# Where it pays (benchmarks/meta_train.py; the loop runs channels-last maps, see repana.models): on
# CUDA everywhere; on CPU when each task's conv1 maps are small (cpu_fold_pays: Omniglot stride 1-shot),
# where one grouped conv beats many tiny ones. Evaluation then folds the 10 first-order test steps of
# up to ~130 tasks (measured 1.26x faster than a loop) and runs each task's query set on its own (75+
# images per task stay in cache; folded, they measured slower); training folds groups of tasks whose
# query maps fit TRAIN_FOLD_BYTES (8 tasks): 1.04x (1 step) to 1.21x (5 steps) faster than a loop for
# MAML, 1.05-1.15x for FOMAML. Whole meta-batches of 32 folded at once measured the same as the loop;
# with larger maps (max-pool, 5-shot, MiniImageNet) folding measured 0.8-1.0x, so the loop runs there.

def can_fold(model: torch.nn.Module, device: torch.device | str, requested: bool | None = None,
             default_on_cpu: bool = False) -> bool:
    """Whether to use the folded layout: ``requested`` True/False, or None = on CUDA (and on CPU too
    when ``default_on_cpu``, e.g. :func:`cpu_fold_pays`).

    Needs a Conv4 with ``bn_stats="batch"`` (folded batch norm has no running statistics).
    """
    if requested is False:
        return False
    possible = is_conv4(model) and model.bn_stats == "batch"
    if requested and not possible:
        raise InputError("fold=True needs a Conv4 with bn_stats='batch'; use fold=None or False")
    return possible and (bool(requested) or torch.device(device).type == "cuda" or default_on_cpu)


FOLD_BYTES = 256 * 2**20        # evaluation: inner-loop activations of one folded group (8 maps per task)
TRAIN_FOLD_BYTES = 32 * 2**20   # CPU training: conv1 query maps of one folded group (1 map per task)
CPU_FOLD_MAX_SUPPORT_PIXELS = 2048  # see cpu_fold_pays


def _conv1_pixels(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Pixels of conv1's output maps for one task's ``images`` ``(tasks, n, C, H, W)``: n * H' * W'."""
    n_images, _, height, width = images.shape[1:]
    stride = model.conv1.conv.stride[0]
    return n_images * ((height - 1) // stride + 1) * ((width - 1) // stride + 1)


def cpu_fold_pays(model: torch.nn.Module, support_x: torch.Tensor) -> bool:
    """Whether folding tasks into channels beats the per-episode loop on CPU for support sets like
    ``support_x (tasks, n, C, H, W)``: when each task's conv1 maps are small (at most
    :data:`CPU_FOLD_MAX_SUPPORT_PIXELS` pixels over its support images), so that one grouped conv beats
    many tiny ones. Measured (one thread, Conv4-64, 10 test steps / 5 training steps): Omniglot stride
    5-way 1-shot (980 pixels) evaluation 1.26x, MAML training 1.04-1.22x; max-pool 1-shot (3920)
    evaluation 1.0x, FOMAML training 0.95-0.99x; stride 5-shot (4900) evaluation 0.80x, training 0.98x.
    """
    return is_conv4(model) and _conv1_pixels(model, support_x) <= CPU_FOLD_MAX_SUPPORT_PIXELS


def fold_group_size(model: torch.nn.Module, images: torch.Tensor, budget_bytes: int | None = None,
                    maps_per_task: int = 8) -> int:
    """How many tasks to fold together so that ``maps_per_task`` copies of conv1's output on ``images``
    ``(tasks, n, C, H, W)`` (the largest map) stay within ``budget_bytes`` (default :data:`FOLD_BYTES`).

    Evaluation (support images, 8 maps: what the blocks keep for backward): Omniglot 5-way 1-shot
    Conv4-64 ~130 tasks (stride) / ~30 (max-pool); MiniImageNet Conv4-32 84x84 ~7. CPU training (query
    images, 1 map, :data:`TRAIN_FOLD_BYTES`): 8 tasks for Omniglot stride, 2 max-pool, 1 MiniImageNet.
    """
    per_task = _conv1_pixels(model, images) * model.conv1.conv.out_channels * images.element_size() * maps_per_task
    budget = FOLD_BYTES if budget_bytes is None else budget_bytes
    return max(1, int(budget // max(per_task, 1)))


def folded_forward(model: torch.nn.Module, task_params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Conv4 logits ``(tasks, n, C)`` for ``x (tasks, n, C_in, H, W)`` with per-task parameters ``(tasks, *shape)``.

    Batch statistics per task (``bn_stats="batch"`` semantics); forward hooks do not fire.
    """
    tasks, n = x.shape[:2]
    h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:])
    for layer in model.layer_names[:-1]:
        block = getattr(model, layer)
        weight = task_params[f"{layer}.conv.weight"]
        h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), task_params[f"{layer}.conv.bias"].reshape(-1),
                     stride=block.conv.stride, padding=block.conv.padding, groups=tasks)
        h = F.batch_norm(h, None, None, task_params[f"{layer}.bn.weight"].reshape(-1),
                         task_params[f"{layer}.bn.bias"].reshape(-1), training=True, eps=block.bn.eps)
        h = rectify_and_pool(h, block.pooling)
    h = h.reshape(n, tasks, -1, *h.shape[2:]).transpose(0, 1)   # (tasks, n, C, H', W')
    features = model.head_features(h)                            # (tasks, n, n_features)
    return batched_head_logits(features, task_params["head.weight"], task_params["head.bias"])


def adapt_folded(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, steps: int, lr: float, trainable=None, first_order: bool = False,
                 inner_loss: str = "mean") -> dict[str, torch.Tensor]:
    """:func:`repana.meta.adapt.adapt` for a batch of tasks at once: per-task parameters ``(tasks, *shape)``.

    ``support_x (tasks, n, C, H, W)``, ``support_y (tasks, n)`` int64; other arguments as ``adapt``.
    """
    lr = mean_loss_lr(lr, inner_loss, support_y)
    tasks = support_x.shape[0]
    names = resolve_trainable(params, trainable)
    current = {n: p.expand(tasks, *p.shape) for n, p in params.items()}
    labels = support_y.reshape(-1)
    with torch.enable_grad():
        if not first_order:
            for n in names:
                if not current[n].requires_grad:
                    current[n] = current[n].detach().requires_grad_(True)
        for _ in range(steps):
            if first_order:
                inputs = {**current, **{n: current[n].detach().requires_grad_(True) for n in names}}
            else:
                inputs = current
            logits = folded_forward(model, inputs, support_x)
            per_task = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels,
                                       reduction="none").reshape(tasks, -1)
            grads = torch.autograd.grad(per_task.mean(1).sum(), [inputs[n] for n in names],
                                        create_graph=not first_order)
            current = {**current, **{n: current[n] - lr * (g.detach() if first_order else g)
                                     for n, g in zip(names, grads)}}
    return current


def folded_query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                        support_y: torch.Tensor, query_x: torch.Tensor, steps: int, lr: float, trainable=None,
                        first_order: bool = False, inner_loss: str = "mean",
                        bn_together: bool = False) -> torch.Tensor:
    """Query logits ``(tasks, n_query, C)`` after adapting every task of a batch in the folded layout."""
    adapted = adapt_folded(model, params, support_x, support_y, steps, lr, trainable, first_order, inner_loss)
    inputs = torch.cat([support_x, query_x], 1) if bn_together else query_x
    with torch.set_grad_enabled(graph_needed(adapted)):  # evaluation: an inference forward (faster layout)
        if inputs.is_cuda:
            logits = folded_forward(model, adapted, inputs)
        else:  # one task at a time: its query activations stay in cache (see the layout note above)
            logits = torch.stack([functional_call(model, {n: p[t] for n, p in adapted.items()}, (inputs[t],))
                                  for t in range(inputs.shape[0])])
    return logits[:, support_x.shape[1]:] if bn_together else logits
