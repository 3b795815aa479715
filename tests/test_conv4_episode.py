"""The evaluation path of one Conv4 episode without autograd (repana.meta.inner.conv4_episode): equal to the generic
per-episode reference (adapt() + a query forward) in float64 on the three benchmark networks, and only the
chosen parameters adapt."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from repana.meta.evaluate import predict
from repana.meta.inner import (InnerLoop, adapt, adapt_tasks, adapted_query_logits, choose_path, conv4_episode,
                               resolve_plan, resolve_trainable)
from repana.models import Conv4

WAYS, SHOTS, QUERIES, STEPS, LR = 5, 1, 3, 10, 0.4

# (in_channels, image_size, hidden, pooling, head_input): Finn et al.'s Omniglot net (the Omniglot
# presets), the max-pool Omniglot net, MiniImageNet's Conv4-32 on 84x84 images
NETWORKS = {"omniglot-stride-mean": (1, 28, 64, "stride", "spatial_mean"),
            "omniglot-max-pool": (1, 28, 64, "max", "flatten"),
            "miniimagenet": (3, 84, 32, "max", "flatten")}


def network(name: str, dtype=torch.float64) -> Conv4:
    channels, size, hidden, pooling, head_input = NETWORKS[name]
    torch.manual_seed(0)
    model = Conv4(in_channels=channels, n_classes=WAYS, hidden=hidden, image_size=size, pooling=pooling,
                  head_input=head_input).to(dtype)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # batch-norm scales of both signs and non-zero shifts
        for name_, p in model.named_parameters():
            if "bn" in name_:
                p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def episode(model: Conv4, seed: int = 0, dtype=torch.float64):
    channels, size = model.config["in_channels"], model.config["image_size"]
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(WAYS, generator=gen)
    support_x = torch.rand(WAYS * SHOTS, channels, size, size, generator=gen, dtype=dtype)
    query_x = torch.rand(WAYS * QUERIES, channels, size, size, generator=gen, dtype=dtype)
    return support_x, labels.repeat_interleave(SHOTS), query_x


def reference_logits(model, params, support_x, support_y, query_x, steps, trainable=None):
    """The generic path: adapt() (autograd on the modules, first order) + functional_call on the queries."""
    adapted = adapt(model, params, support_x, support_y, steps, LR, trainable, first_order=True)
    with torch.no_grad():
        return functional_call(model, {n: p.detach() for n, p in adapted.items()}, (query_x,))


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_single_episode_path_equals_the_reference_on_each_network(name):
    model = network(name)
    support_x, support_y, query_x = episode(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    spec = InnerLoop(STEPS, LR)
    with torch.no_grad():  # what evaluate() and predict() do
        plan = resolve_plan(spec, params, support_y[None])
        assert choose_path(model, support_x[None], query_x[None], plan) == ("conv4_episode", 1)
        ours = adapted_query_logits(model, params, support_x, support_y, query_x, spec)
    ref = reference_logits(model, params, support_x, support_y, query_x, STEPS)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    unadapted = functional_call(model, params, (query_x,))
    assert (ref - unadapted).abs().max() > 1e-2          # the steps changed the logits
    labels = predict(model, support_x, support_y, query_x, steps=STEPS, lr=LR)
    assert torch.equal(labels, ref.argmax(-1))


@pytest.mark.parametrize("trainable", [["conv2.conv.weight", "conv4.bn.bias", "head.bias"], ["conv3"],
                                       ["conv1.bn.weight"], "head"])
def test_only_the_chosen_parameters_adapt_as_in_the_reference(trainable):
    model = network("omniglot-max-pool")
    support_x, support_y, query_x = episode(model, seed=1)
    params = {n: p.detach() for n, p in model.named_parameters()}
    adapted = adapt_tasks(model, params, support_x, support_y, InnerLoop(3, LR, trainable))
    expected = adapt(model, params, support_x, support_y, 3, LR, trainable, first_order=True)
    for name, value in expected.items():
        torch.testing.assert_close(adapted[name], value.detach(), rtol=1e-10, atol=1e-12, msg=name)
    chosen = {n for n in params if any(n == t or n.startswith(t + ".") for t in trainable)} \
        if trainable != "head" else {"head.weight", "head.bias"}
    assert {n for n in params if not torch.equal(adapted[n], params[n])} == chosen
    logits = conv4_episode.adapted_episode_logits(model, params, support_x, support_y, query_x, 3, LR,
                                                  resolve_trainable(params, trainable))
    torch.testing.assert_close(logits, reference_logits(model, params, support_x, support_y, query_x, 3, trainable),
                               rtol=1e-10, atol=1e-10)


def test_float32_logits_agree_with_the_reference_on_each_network():
    """CPU float32 (channels-last weights, a two-channel conv1): the reference's logits to float32 rounding."""
    for name in NETWORKS:
        model = network(name, torch.float32)
        support_x, support_y, query_x = episode(model, seed=2, dtype=torch.float32)
        params = {n: p.detach() for n, p in model.named_parameters()}
        ours = conv4_episode.adapted_episode_logits(model, params, support_x, support_y, query_x, 3, LR, list(params))
        ref = reference_logits(model, params, support_x, support_y, query_x, 3)
        # float32 through 3 adaptation steps of a Conv4: errors of ~1e-4 relative to the logits' scale, and the
        # exact size depends on the CPU's convolution kernels (AVX2 vs AVX-512): judged against that scale
        scale = float(ref.abs().max())
        torch.testing.assert_close(ours, ref, rtol=2e-4, atol=2e-4 * scale, msg=name)
