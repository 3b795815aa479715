"""One Conv4 episode without a graph (evaluation): first-order inner steps with a hand-derived backward.

Evaluation needs no meta-gradient, so its inner steps are first order and the adapted parameters are
private copies updated in place. This module runs them on a :class:`repana.models.Conv4` with batch
statistics (``bn_stats="batch"``) without autograd: each step is one forward that keeps what its
backward needs (each block's input, conv output, batch-norm statistics, pooling indices and ReLU output)
and a backward written out with the kernels autograd runs for the same ops, on the same tensors in the same
layouts, so the logits and adapted parameters are autograd's to the bit. Those kernels are private ATen
API; they are called only through :mod:`repana.meta.inner.aten_kernels`, which tests/test_aten_kernels.py
checks against the installed torch. The path equals :func:`repana.meta.inner.adapt` + a query forward to
rounding (float64 tests, 1e-10). What it saves over autograd or a clone-and-adapt loop: the graph and the
engine's bookkeeping at every step (about 25 nodes), module and ``functional_call`` dispatch, the gradient
of conv1's input, per-step lookups, and layout conversions (below).

Layout (CPU float32): conv weights in channels-last memory, which is what oneDNN computes with (an NCHW
weight is reordered at every forward and backward); images converted to channels-last once per episode,
a one-channel conv1 on images and a weight padded with an all-zero second channel (see
:func:`repana.models._one_channel_conv3x3`: exact zeros, a true channels-last input). float64 and other
devices run the same ops on the tensors as they are.

What is left is the kernels a clone-and-adapt loop runs too, on the same shapes: the networks where they
dominate gain little. Profiled (one thread, 10 steps, 5-way 1-shot, 15 queries per class), conv, batch-norm
and max-pool kernels take ~90% of a MiniImageNet Conv4-32 episode in both (the loop's remaining 8% of
autograd, dispatch and copies is 3% here), so ~1.05x is the ceiling there without changing the
arithmetic; ~85% of the max-pool Omniglot Conv4-64's. The stride-2 Omniglot nets have small maps, where
fixed per-call costs weigh more (oneDNN spends ~50 us per conv forward and ~150 us per conv backward call
even on tiny maps). Convolutions as im2col matrix products for the smallest maps were 3-10% faster on
the stride nets but rounded differently (logits moved by 1e-3 on a trained checkpoint, through 10 steps
at lr 2.0), so they are not used. Measured speed-ups: ``python benchmarks/meta_train.py --single-episode
--threads 1`` and docs/meta.md. As an inner-loop path (:class:`repana.meta.inner.spec.InnerPath`) it runs
one task at a time, without a graph, on CPU; :func:`repana.meta.inner.dispatch.choose_path` prefers it for
evaluation where the folded path does not pay.
"""

from __future__ import annotations

from typing import Collection, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.meta.inner import aten_kernels as kernels
from repana.meta.inner.spec import Params, Plan
from repana.meta.inner.trainable import first_trainable_layer
from repana.models import is_conv4

NAME = "conv4_episode"


def _prepare(model: torch.nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> tuple[Params, bool]:
    """Private copies of ``params`` laid out for this module's ops on inputs like ``x``, and whether conv1
    runs on two-channel (zero-padded) images (CPU float32 one-channel nets)."""
    cpu32 = x.device.type == "cpu" and x.dtype == torch.float32
    two_channel = cpu32 and model.conv1.conv.in_channels == 1
    prepared = {}
    for name, p in params.items():
        p = p.detach()
        if name == "conv1.conv.weight" and two_channel:
            p = F.pad(p, (0, 0, 0, 0, 0, 1))
        prepared[name] = p.clone(memory_format=torch.channels_last) if cpu32 and p.dim() == 4 else p.clone()
    return prepared, two_channel


def _network_input(x: torch.Tensor, two_channel: bool) -> torch.Tensor:
    """Images ``(n, C, H, W)`` as conv1 takes them (see :func:`_prepare`): channels-last on CPU float32
    (converted once, not by oneDNN at every step)."""
    if two_channel:
        x = F.pad(x, (0, 0, 0, 0, 0, 1))
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format)


class _Block(NamedTuple):
    """What one block's forward and backward need, looked up once per episode."""

    index: int
    weight: str        # parameter names
    bias: str
    gamma: str
    beta: str
    stride: list[int]
    eps: float
    max_pool: bool
    bn_mask: list[bool]      # which of (input, gamma, beta) gradients batch norm's backward returns
    conv_mask: list[bool]    # which of (input, weight, bias) gradients the conv's backward returns


def _blocks(model: torch.nn.Module, start: int, names: Collection[str] = ()) -> list[_Block]:
    """The conv blocks from layer ``start`` on; gradients asked for the parameters in ``names``."""
    blocks = []
    for i, layer in enumerate(model.layer_names[:-1]):
        if i < start:
            continue
        module = getattr(model, layer)
        weight, bias, gamma, beta = (f"{layer}.conv.weight", f"{layer}.conv.bias", f"{layer}.bn.weight",
                                     f"{layer}.bn.bias")
        blocks.append(_Block(i, weight, bias, gamma, beta, list(module.conv.stride), module.bn.eps,
                             module.pooling == "max", [True, gamma in names, beta in names],
                             [i > start, weight in names, bias in names]))
    return blocks


def _head_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], h: torch.Tensor,
                 start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(n, C)`` and the head's input: ``h`` is conv4's map, or the features when ``start`` is the head."""
    features = h if start == len(model.layer_names) - 1 else model.head_features(h)
    return torch.addmm(params["head.bias"], features, params["head.weight"].t()), features


def forward_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], h: torch.Tensor,
                   start: int = 0) -> torch.Tensor:
    """Conv4 logits ``(n, C)`` of ``h`` (the input of layer ``start``: images as :func:`_network_input` gives
    them when ``start == 0``) with batch statistics, no graph (call under ``torch.no_grad``)."""
    for block in _blocks(model, start):
        h = F.conv2d(h, params[block.weight], params[block.bias], block.stride, 1)
        h = F.batch_norm(h, None, None, params[block.gamma], params[block.beta], True, 0.0, block.eps)
        h = torch.relu_(F.max_pool2d(h, 2) if block.max_pool else h)  # relu after the pool: see rectify_and_pool
    return _head_logits(model, params, h, start)[0]


def loss_gradient_target(labels: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``d mean(nll) / d log_probs`` for int64 ``labels (n,)``: ``-onehot / n``, ``(n, n_classes)``."""
    return F.one_hot(labels, n_classes).to(dtype).mul_(-1.0 / labels.shape[0])


def support_gradients(model: torch.nn.Module, params: Mapping[str, torch.Tensor], h: torch.Tensor,
                      labels: torch.Tensor, names: Collection[str], start: int = 0,
                      blocks: list[_Block] | None = None, target: torch.Tensor | None = None) -> Params:
    """Gradients of the mean cross-entropy of the Conv4 logits of ``h`` (the input of layer ``start``,
    ``(n, C, H, W)``) w.r.t. the parameters in ``names`` (all in layers ``>= start``): one forward and a
    hand-derived backward, no graph. ``labels`` int64 ``(n,)``; ``blocks`` (``_blocks(model, start,
    names)``) and ``target`` (:func:`loss_gradient_target`) may be given, computed once per episode.
    Returns ``{name: gradient}``."""
    blocks = _blocks(model, start, names) if blocks is None else blocks
    saved = []
    for block in blocks:
        z = F.conv2d(h, params[block.weight], params[block.bias], block.stride, 1)
        y, mean, invstd = kernels.batch_norm_with_statistics(z, params[block.gamma], params[block.beta], block.eps)
        indices = pool_input = None
        if block.max_pool:  # relu after the pool, as rectify_and_pool (the pooled map is this step's own)
            pool_input = y
            y, indices = kernels.max_pool_2x2(y)
        activation = torch.relu_(y)  # in place: batch norm's backward reads its input z, not its output
        saved.append((block, h, z, mean, invstd, indices, pool_input, activation))
        h = activation
    logits, features = _head_logits(model, params, h, start)
    log_probs = torch.log_softmax(logits, 1)
    if target is None:
        target = loss_gradient_target(labels, logits.shape[1], logits.dtype)
    # through log_softmax, then the head: what autograd runs for F.cross_entropy and F.linear
    grad_logits = kernels.cross_entropy_logits_gradient(target, log_probs)
    grads = {"head.weight": grad_logits.t().mm(features), "head.bias": grad_logits.sum(0)}
    if not saved:
        return {n: grads[n] for n in names}
    grad_features = grad_logits.mm(params["head.weight"])
    if model.head_input == "spatial_mean":
        grad = (grad_features / (h.shape[2] * h.shape[3]))[:, :, None, None].expand(h.shape)
    else:
        grad = grad_features.view(h.shape)
    grad = grad.contiguous(memory_format=_memory_format(h))
    for block, h_in, z, mean, invstd, indices, pool_input, activation in reversed(saved):
        grad = kernels.relu_backward(grad, activation)
        if indices is not None:
            grad = kernels.max_pool_2x2_backward(grad, pool_input, indices)
        grad, grads[block.gamma], grads[block.beta] = kernels.batch_norm_backward(
            grad, z, params[block.gamma], mean, invstd, block.eps, block.bn_mask)
        grad, grads[block.weight], grads[block.bias] = kernels.conv3x3_backward(
            grad, h_in, params[block.weight], block.stride, block.conv_mask)
    return {n: grads[n] for n in names}


def _adapted(model, params, support_x, support_y, steps, lr, names) -> tuple[Params, bool]:
    """Prepared parameters (see :func:`_prepare`) after ``steps`` first-order steps, and the two-channel flag."""
    prepared, two_channel = _prepare(model, params, support_x)
    start = first_trainable_layer(model, names)
    order = [n for n in prepared if n in set(names)]
    if not order:
        return prepared, two_channel
    with torch.no_grad():
        if start > 0:  # frozen bottom layers: run once (exact with batch statistics)
            h = functional_call(model, dict(params), (support_x,), {"stop": start})
        else:
            h = _network_input(support_x, two_channel)
        leaves = [prepared[n] for n in order]
        blocks = _blocks(model, start, order)
        target = loss_gradient_target(support_y, prepared["head.weight"].shape[0], prepared["head.weight"].dtype)
        for _ in range(steps):
            grads = support_gradients(model, prepared, h, support_y, order, start, blocks, target)
            kernels.subtract_scaled_(leaves, [grads[n] for n in order], lr)
    return prepared, two_channel


def adapted_episode_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                           support_y: torch.Tensor, query_x: torch.Tensor, steps: int, lr: float,
                           names: Collection[str], together: bool = False) -> torch.Tensor:
    """Query logits ``(n_query, C)`` (no graph) of one episode after ``steps`` first-order steps of size
    ``lr`` (on the mean support loss) on the parameters ``names`` of a Conv4 with batch statistics.

    ``support_x (n_s, C, H, W)``, ``support_y (n_s,)`` int64, ``query_x (n_q, C, H, W)``. Equal to
    :func:`repana.meta.inner.adapt` (first order) + a forward of the query set, to rounding.
    """
    prepared, two_channel = _adapted(model, params, support_x, support_y, steps, lr, names)
    inputs = torch.cat([support_x, query_x]) if together else query_x
    with torch.no_grad():
        logits = forward_logits(model, prepared, _network_input(inputs, two_channel))
    return logits[support_x.shape[0]:] if together else logits


def adapted_parameters(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                       support_y: torch.Tensor, steps: int, lr: float, names: Collection[str]) -> Params:
    """The adapted parameters (detached, the model's shapes) of :func:`adapted_episode_logits`."""
    prepared, two_channel = _adapted(model, params, support_x, support_y, steps, lr, names)
    if two_channel:
        prepared["conv1.conv.weight"] = prepared["conv1.conv.weight"][:, :1]
    return {n: prepared[n].contiguous() if n in names else params[n].detach() for n in params}


# ----- the path ------------------------------------------------------------------------------------

def tasks_per_part(model: torch.nn.Module, support_x: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> int | None:
    """One task at a time for a Conv4 with batch statistics on CPU when no graph is needed, else None."""
    runs = not plan.graph and support_x.device.type == "cpu" and is_conv4(model) and model.bn_stats == "batch"
    return 1 if runs else None


def adapt_episode(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                  support_y: torch.Tensor, plan: Plan) -> Params:
    """One episode's parameters after ``plan``'s steps (:func:`adapted_parameters`)."""
    return adapted_parameters(model, params, support_x, support_y, plan.steps, plan.lr, plan.names)


def query_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
                 support_y: torch.Tensor, query_x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Query logits ``(tasks, n_q, C)``, task by task (:func:`adapted_episode_logits`)."""
    return torch.stack([adapted_episode_logits(model, params, support_x[t], support_y[t], query_x[t], plan.steps,
                                               plan.lr, plan.names, plan.together)
                        for t in range(support_x.shape[0])])
