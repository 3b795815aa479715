"""The folded path: every task of a batch adapts at once, tasks folded into channels (Conv4 with batch
statistics only: it knows Conv4's blocks ``conv{i}.conv``, ``conv{i}.bn``; :func:`repana.models.is_conv4`).

Layout: a batch of tasks x (tasks, n, C, H, W) becomes (n, tasks*C, H, W); each task has its own copy
of every parameter (tensors (tasks, *shape)), convolutions are grouped (groups=tasks), batch norm runs
over tasks x channels (so every task gets its own statistics) and the head is a batched matmul. One
autograd.grad of the sum of the tasks' losses w.r.t. the per-task copies is every task's own inner
gradient. Exact (float64 tests against the per-episode reference).

Where it pays (benchmarks/meta_train.py; the loop runs channels-last maps, see repana.models): on
CUDA everywhere; on CPU when each task's conv1 maps are small (cpu_fold_pays: Omniglot stride 1-shot),
where one grouped conv beats many tiny ones. Evaluation then folds the 10 first-order test steps of
up to ~130 tasks (measured 1.26x faster than a loop) and runs each task's query set on its own (75+
images per task stay in cache; folded, they measured slower); training folds groups of tasks whose
query maps fit TRAIN_FOLD_BYTES (8 tasks): 1.04x (1 step) to 1.21x (5 steps) faster than a loop for
MAML, 1.05-1.15x for FOMAML. Whole meta-batches of 32 folded at once measured the same as the loop;
with larger maps (max-pool, 5-shot, MiniImageNet) folding measured 0.8-1.0x, so the loop runs there.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.errors import InputError
from repana.meta.inner.spec import Plan
from repana.meta.inner.tasks import batched_head_logits
from repana.models import is_conv4, rectify_and_pool

NAME = "folded"

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
                 support_y: torch.Tensor, steps: int, lr: float, names: Sequence[str],
                 first_order: bool = False) -> dict[str, torch.Tensor]:
    """:func:`repana.meta.inner.generic.adapt_steps` for a batch of tasks at once: per-task parameters
    ``(tasks, *shape)``. ``support_x (tasks, n, C, H, W)``, ``support_y (tasks, n)`` int64; ``lr`` on the
    mean support loss; ``names``: the parameters that adapt.
    """
    tasks = support_x.shape[0]
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


# ----- the path ------------------------------------------------------------------------------------

def tasks_per_part(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> int | None:
    """Tasks folded per call for ``support_x (tasks, n, C, H, W)``, or None when this path does not run.

    ``plan.fold``: False never folds; True always (an :class:`InputError` when the model cannot: it needs a
    Conv4 with ``bn_stats="batch"``, folded batch norm has no running statistics); None folds on CUDA
    (training: the whole meta-batch; evaluation: groups of :func:`fold_group_size`) and on CPU where it pays
    (:func:`cpu_fold_pays`: training in groups of at least 2 within :data:`TRAIN_FOLD_BYTES`, evaluation of
    more than one task in groups of :func:`fold_group_size`).
    """
    if plan.fold is False:
        return None
    possible = is_conv4(model) and model.bn_stats == "batch"
    if plan.fold and not possible:
        raise InputError("fold=True needs a Conv4 with bn_stats='batch'; use fold=None or False")
    if not possible:
        return None
    tasks, on_cuda = support_x.shape[0], support_x.device.type == "cuda"
    if plan.graph:
        if plan.fold or on_cuda:
            return tasks
        if cpu_fold_pays(model, support_x):
            group = fold_group_size(model, query_x, TRAIN_FOLD_BYTES, maps_per_task=1)
            return group if group >= 2 else None
        return None
    if plan.fold or on_cuda or (tasks > 1 and cpu_fold_pays(model, support_x)):
        return fold_group_size(model, support_x)
    return None


def query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Query logits ``(tasks, n_query, C)`` after adapting every task of a batch in the folded layout."""
    adapted = adapt_folded(model, params, support_x, support_y, plan.steps, plan.lr, plan.names, plan.first_order)
    inputs = torch.cat([support_x, query_x], 1) if plan.together else query_x
    with torch.set_grad_enabled(plan.graph):  # evaluation: an inference forward (faster layout)
        if inputs.is_cuda:
            logits = folded_forward(model, adapted, inputs)
        else:  # one task at a time: its query activations stay in cache (see the layout note above)
            logits = torch.stack([functional_call(model, {n: p[t] for n, p in adapted.items()}, (inputs[t],))
                                  for t in range(inputs.shape[0])])
    return logits[:, support_x.shape[1]:] if plan.together else logits
