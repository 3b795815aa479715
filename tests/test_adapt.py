"""The functional inner loop against a per-episode plain-autograd reference, in float64.

The reference below writes Conv4's forward with torch.nn.functional ops on a list of tensors and runs
MAML's inner loop with torch.autograd.grad, one episode at a time: no functional_call, no prefix
caching, no batching. Every fast path of repana.meta must give the same meta-gradients.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from repana.errors import InputError
from repana.meta.inner import adapt, resolve_trainable
from repana.meta.algorithms import get_algorithm
from repana.models import Conv4
import meta_helpers


TASKS, WAYS, SHOTS, QUERIES = 3, 3, 2, 2


def reference_forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = x
    for i in range(1, 5):
        h = F.conv2d(h, params[f"conv{i}.conv.weight"], params[f"conv{i}.conv.bias"], padding=1)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5)
        h = h * params[f"conv{i}.bn.weight"].view(1, -1, 1, 1) + params[f"conv{i}.bn.bias"].view(1, -1, 1, 1)
        h = F.max_pool2d(torch.relu(h), 2)
    return F.linear(h.flatten(1), params["head.weight"], params["head.bias"])


def reference_meta_gradients(model, batch, steps, lr, trainable_names, first_order):
    """:func:`meta_helpers.reference_meta_gradients` through the hand-written Conv4 forward above."""
    return meta_helpers.reference_meta_gradients(model, batch, steps, lr, trainable_names, first_order,
                                                 forward=reference_forward)


def make_batch(generator: torch.Generator, dtype=torch.float64, size=16, channels=1):
    def images(n):
        return torch.rand(TASKS, n, channels, size, size, generator=generator, dtype=dtype)
    labels = torch.stack([torch.randperm(WAYS, generator=generator) for _ in range(TASKS)])
    return SimpleNamespace(support_x=images(WAYS * SHOTS), support_y=labels.repeat_interleave(SHOTS, 1),
                           query_x=images(WAYS * QUERIES), query_y=labels.repeat_interleave(QUERIES, 1))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = Conv4(in_channels=1, n_classes=WAYS, hidden=6, image_size=16).double()
    with torch.no_grad():  # non-trivial batch-norm affine parameters and head
        for name, p in model.named_parameters():
            if "bn" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model, make_batch(torch.Generator().manual_seed(1))


def assert_grads_equal(ours, ref, rtol=1e-9, atol=1e-11):
    assert set(ours) == set(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("algorithm,first_order", [("maml", False), ("fomaml", True)])
def test_maml_meta_gradients_equal_per_episode_reference(setup, algorithm, first_order):
    model, batch = setup
    algo = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3)
    grads, metrics = algo.meta_gradients(model, batch)
    names = [n for n, _ in model.named_parameters()]
    ref = reference_meta_gradients(model, batch, 2, 0.3, names, first_order)
    assert_grads_equal(grads, ref)
    # second order must actually differ from first order (the test can tell them apart)
    other = reference_meta_gradients(model, batch, 2, 0.3, names, not first_order)
    assert not torch.allclose(ref["conv1.conv.weight"], other["conv1.conv.weight"], rtol=1e-4, atol=0)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_tasks"] == TASKS


@pytest.mark.parametrize("algorithm,trainable", [("maml", None), ("anil", "head"), ("boil", "body")])
def test_float32_cpu_path_meta_gradients_match_the_float64_reference(setup, algorithm, trainable):
    """The CPU float32 forward runs channels-last (one-channel conv1 with a zero second channel): the same
    meta-gradients as the float64 reference up to float32 rounding, second order included."""
    model, batch = setup
    model32 = copy.deepcopy(model).float()
    batch32 = SimpleNamespace(**{k: (v.float() if v.is_floating_point() else v) for k, v in vars(batch).items()})
    algo = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3, fold=False)
    grads, _ = algo.meta_gradients(model32, batch32)
    names = [n for n, _ in model.named_parameters()
             if trainable is None or n.startswith("head") == (trainable == "head")]
    ref = reference_meta_gradients(model, batch, 2, 0.3, names, first_order=False)
    scale = max(g.abs().max().item() for g in ref.values())
    assert_grads_equal({n: g.double() for n, g in grads.items()}, ref, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_batched_meta_gradients_equal_reference_restricted_to_head(setup, first_order):
    model, batch = setup
    algo = get_algorithm("anil", inner_steps=3, inner_lr=0.5, first_order=first_order)
    grads, _ = algo.meta_gradients(model, batch)
    ref = reference_meta_gradients(model, batch, 3, 0.5, ["head.weight", "head.bias"], first_order)
    assert_grads_equal(grads, ref)
    # ANIL = MAML with trainable="head"
    loop = get_algorithm("maml", inner_steps=3, inner_lr=0.5, first_order=first_order, trainable=["head"])
    loop_grads, _ = loop.meta_gradients(model, batch)
    assert_grads_equal(loop_grads, ref)


BODY = [f"conv{i}.{part}" for i in range(1, 5) for part in ("conv.weight", "conv.bias", "bn.weight", "bn.bias")]
CONV = [f"conv{i}.conv.{kind}" for i in range(1, 5) for kind in ("weight", "bias")]
BATCH_NORM = [f"conv{i}.bn.{kind}" for i in range(1, 5) for kind in ("weight", "bias")]


@pytest.mark.parametrize("fold", [False, True])
def test_boil_meta_gradients_equal_reference_restricted_to_body(setup, fold):
    """BOIL = second-order MAML adapting the body only; the head gets a meta-gradient through the
    adapted body's query features (outer loop) though it takes no inner step."""
    model, batch = setup
    grads, metrics = get_algorithm("boil", inner_steps=2, inner_lr=0.3, fold=fold).meta_gradients(model, batch)
    ref = reference_meta_gradients(model, batch, 2, 0.3, BODY, first_order=False)
    assert_grads_equal(grads, ref)
    assert grads["head.weight"].abs().max() > 1e-3 and grads["head.bias"].abs().max() > 1e-3
    # it is not MAML: the head's inner steps change every meta-gradient
    maml = reference_meta_gradients(model, batch, 2, 0.3, BODY + ["head.weight", "head.bias"], first_order=False)
    assert not torch.allclose(ref["head.weight"], maml["head.weight"], rtol=1e-4, atol=0)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_tasks"] == TASKS


def test_boil_inner_loop_leaves_the_head_unchanged(setup):
    model, batch = setup
    params = dict(model.named_parameters())
    algo = get_algorithm("boil", inner_steps=3, inner_lr=0.5)
    adapted = adapt(model, params, batch.support_x[0], batch.support_y[0], steps=3, lr=0.5, trainable=algo.trainable)
    assert adapted["head.weight"] is params["head.weight"] and adapted["head.bias"] is params["head.bias"]
    for name in ("conv1.conv.weight", "conv4.conv.weight", "conv2.bn.weight", "conv3.bn.bias"):
        assert not torch.allclose(adapted[name], params[name]), name


@pytest.mark.parametrize("algorithm,trainable", [("maml", BODY + ["head.weight", "head.bias"]), ("boil", BODY)])
def test_without_batch_norm_in_the_inner_loop_equals_reference_and_bn_gets_outer_gradients(setup, algorithm,
                                                                                             trainable):
    """bn_inner_loop=False (Finn et al.'s code): the batch-norm affine parameters take no inner step, and
    still get a meta-gradient (outer loop) that differs from the one when they adapt."""
    model, batch = setup
    grads, _ = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3, bn_inner_loop=False).meta_gradients(model, batch)
    inner = [n for n in trainable if n not in BATCH_NORM]
    ref = reference_meta_gradients(model, batch, 2, 0.3, inner, first_order=False)
    assert_grads_equal(grads, ref)
    adapting = reference_meta_gradients(model, batch, 2, 0.3, trainable, first_order=False)
    for name in BATCH_NORM:
        assert grads[name].abs().max() > 1e-4, name
    assert not torch.allclose(ref["conv2.bn.weight"], adapting["conv2.bn.weight"], rtol=1e-4, atol=0)
    params = dict(model.named_parameters())
    algo = get_algorithm(algorithm, bn_inner_loop=False)
    adapted = adapt(model, params, batch.support_x[0], batch.support_y[0], steps=2, lr=0.3, trainable=algo.trainable)
    assert all(adapted[n] is params[n] for n in BATCH_NORM)
    assert all(not torch.equal(adapted[n], params[n]) for n in CONV if n.endswith("weight"))


def test_conv_bias_meta_gradient_is_zero_under_batch_norm(setup):
    model, batch = setup
    grads, _ = get_algorithm("maml", inner_steps=2, inner_lr=0.3).meta_gradients(model, batch)
    for i in range(1, 5):
        bias_grad = grads[f"conv{i}.conv.bias"].abs().max().item()
        weight_grad = grads[f"conv{i}.conv.weight"].abs().max().item()
        assert bias_grad < 1e-12 * max(1.0, weight_grad), f"conv{i}.conv.bias meta-gradient {bias_grad}"
        assert weight_grad > 1e-6
    assert grads["head.bias"].abs().max() > 1e-6  # the head bias is not followed by batch norm


def test_anil_inner_loop_leaves_body_unchanged_and_matches_full_forward(setup):
    model, batch = setup
    params = dict(model.named_parameters())
    adapted = adapt(model, params, batch.support_x[0], batch.support_y[0], steps=4, lr=0.5, trainable="head")
    for name, p in params.items():
        if not name.startswith("head"):
            assert adapted[name] is p
    assert not torch.allclose(adapted["head.weight"], params["head.weight"])
    # the same steps written out with a full forward every step (no feature caching)
    current = {n: p.detach() for n, p in params.items()}
    for _ in range(4):
        w = current["head.weight"].clone().requires_grad_(True)
        b = current["head.bias"].clone().requires_grad_(True)
        loss = F.cross_entropy(reference_forward({**current, "head.weight": w, "head.bias": b},
                                                 batch.support_x[0]), batch.support_y[0])
        gw, gb = torch.autograd.grad(loss, [w, b])
        current = {**current, "head.weight": w.detach() - 0.5 * gw, "head.bias": b.detach() - 0.5 * gb}
    torch.testing.assert_close(adapted["head.weight"].detach(), current["head.weight"], rtol=1e-10, atol=1e-12)


def test_frozen_prefix_caching_is_exact(setup):
    model, batch = setup
    params = {n: p.detach() for n, p in model.named_parameters()}
    trainable = ["conv3", "conv4", "head"]
    adapted = adapt(model, params, batch.support_x[1], batch.support_y[1], steps=3, lr=0.2, trainable=trainable,
                    first_order=True)
    names = resolve_trainable(params, trainable)
    current = dict(params)
    for _ in range(3):
        leaves = {n: current[n].clone().requires_grad_(True) for n in names}
        loss = F.cross_entropy(reference_forward({**current, **leaves}, batch.support_x[1]), batch.support_y[1])
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        current = {**current, **{n: leaves[n].detach() - 0.2 * g for n, g in zip(names, grads)}}
    for n in params:
        torch.testing.assert_close(adapted[n], current[n], rtol=1e-10, atol=1e-12)
    assert adapted["conv1.conv.weight"] is params["conv1.conv.weight"]


def test_freezing_everything_or_zero_steps_means_no_adaptation(setup):
    model, batch = setup
    params = dict(model.named_parameters())
    for kwargs in ({"steps": 3, "trainable": set()}, {"steps": 0, "trainable": None}):
        adapted = adapt(model, params, batch.support_x[0], batch.support_y[0], lr=0.5, **kwargs)
        assert all(adapted[n] is p for n, p in params.items())


def test_sum_over_shots_equals_mean_loss_with_n_times_the_lr(setup):
    model, batch = setup
    params = {n: p.detach() for n, p in model.named_parameters()}
    summed = adapt(model, params, batch.support_x[0], batch.support_y[0], steps=2, lr=0.1, first_order=True,
                   inner_loss="sum_over_shots")
    mean = adapt(model, params, batch.support_x[0], batch.support_y[0], steps=2, lr=0.1 * WAYS, first_order=True)
    for n in params:
        torch.testing.assert_close(summed[n], mean[n], rtol=1e-9, atol=1e-12)


def test_resolve_trainable_forms_and_errors():
    names = ["conv1.conv.weight", "conv1.bn.bias", "head.weight", "head.bias"]
    assert resolve_trainable(names, None) == names
    assert resolve_trainable(names, "head") == ["head.weight", "head.bias"]
    assert resolve_trainable(names, "body") == ["conv1.conv.weight", "conv1.bn.bias"]
    assert resolve_trainable(names, {"conv1"}) == ["conv1.conv.weight", "conv1.bn.bias"]
    assert resolve_trainable(names, lambda n: n.endswith("bias")) == ["conv1.bn.bias", "head.bias"]
    assert resolve_trainable(names, {"head.bias"}) == ["head.bias"]
    with pytest.raises(InputError, match="conv9"):
        resolve_trainable(names, {"conv9"})


def test_bad_inputs_raise_clear_errors(setup):
    model, batch = setup
    params = dict(model.named_parameters())
    with pytest.raises(InputError, match="one episode"):
        adapt(model, params, batch.support_x, batch.support_y, steps=1, lr=0.1)
    with pytest.raises(InputError, match="int64"):
        adapt(model, params, batch.support_x[0], batch.support_y[0].float(), steps=1, lr=0.1)
    with pytest.raises(InputError, match="inner_loss"):
        adapt(model, params, batch.support_x[0], batch.support_y[0], steps=1, lr=0.1, inner_loss="sum")
    with pytest.raises(InputError, match="negative"):
        adapt(model, params, batch.support_x[0], batch.support_y[0], steps=-1, lr=0.1)


@pytest.mark.parametrize("algorithm,first_order,trainable", [
    ("maml", False, None), ("fomaml", True, None), ("maml", False, ["conv2", "conv4", "head"])])
def test_folded_task_batch_equals_per_episode_reference(setup, algorithm, first_order, trainable):
    """Tasks folded into channels (grouped convs, per-task parameter copies): the layout used on CUDA."""
    model, batch = setup
    algo = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3, trainable=trainable, fold=True)
    grads, metrics = algo.meta_gradients(model, batch)
    names = resolve_trainable(dict(model.named_parameters()), trainable)
    ref = reference_meta_gradients(model, batch, 2, 0.3, names, first_order)
    assert_grads_equal(grads, ref)
    if not first_order:
        assert grads["conv1.conv.bias"].abs().max() < 1e-12 * max(1.0, grads["conv1.conv.weight"].abs().max())


def test_folded_layout_with_stride_pooling_and_sum_over_shots(setup):
    torch.manual_seed(1)
    model = Conv4(in_channels=1, n_classes=WAYS, hidden=4, image_size=16, pooling="stride").double()
    _, batch = setup
    folded, _ = get_algorithm("maml", inner_steps=1, inner_lr=0.1, inner_loss="sum_over_shots",
                              fold=True).meta_gradients(model, batch)
    loop, _ = get_algorithm("maml", inner_steps=1, inner_lr=0.1, inner_loss="sum_over_shots",
                            fold=False).meta_gradients(model, batch)
    assert_grads_equal(folded, loop)
    with pytest.raises(InputError, match="fold=True"):
        get_algorithm("maml", fold=True).meta_gradients(Conv4(hidden=4, image_size=16, bn_stats="running"), batch)


@pytest.mark.parametrize("algorithm,first_order", [("maml", False), ("fomaml", True)])
def test_cpu_training_in_folded_groups_equals_reference_and_loop(setup, algorithm, first_order, monkeypatch):
    """CPU default: tasks folded in groups bounded by TRAIN_FOLD_BYTES (here 2 + 1 tasks), one backward
    per group; equal to the reference and to the per-episode loop (fold=False), metrics included."""
    from repana.meta.inner import dispatch, folded

    model, batch = setup
    per_task_bytes = WAYS * QUERIES * model.conv1.conv.out_channels * 16 * 16 * 8  # float64 conv1 query map (max-pool net)
    monkeypatch.setattr(folded, "TRAIN_FOLD_BYTES", 2 * per_task_bytes + 1)
    assert folded.fold_group_size(model, batch.query_x, folded.TRAIN_FOLD_BYTES, maps_per_task=1) == 2
    groups = []
    choose = dispatch.choose_path
    monkeypatch.setattr(dispatch, "choose_path", lambda *args, **kwargs: (
        lambda chosen: (chosen[0] == "folded" and groups.append(chosen[1])) or chosen)(choose(*args, **kwargs)))
    grads, metrics = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3).meta_gradients(model, batch)
    loop_grads, loop_metrics = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3,
                                             fold=False).meta_gradients(model, batch)
    names = list(dict(model.named_parameters()))
    assert_grads_equal(grads, reference_meta_gradients(model, batch, 2, 0.3, names, first_order))
    assert_grads_equal(grads, loop_grads)
    assert metrics == pytest.approx(loop_metrics, rel=1e-12)
    assert groups == [2]


def test_cpu_folds_tasks_only_where_it_pays(monkeypatch):
    """CPU default (fold=None): folded layout for small support maps, per-episode loop for larger ones,
    in training and in evaluation; fold=True still forces it."""
    import importlib

    from repana.meta.inner import folded

    evaluation = importlib.import_module("repana.meta.evaluate")  # the package re-exports evaluate()
    stride = Conv4(n_classes=WAYS, hidden=4, image_size=28, pooling="stride")
    max_pool = Conv4(n_classes=WAYS, hidden=4, image_size=28, pooling="max")
    one_shot, five_shot = torch.zeros(2, 5, 1, 28, 28), torch.zeros(2, 25, 1, 28, 28)
    assert folded.cpu_fold_pays(stride, one_shot)            # 5 x 14 x 14 = 980 conv1 pixels per task
    assert not folded.cpu_fold_pays(max_pool, one_shot)      # 5 x 28 x 28 = 3920
    assert not folded.cpu_fold_pays(stride, five_shot)       # 25 x 14 x 14 = 4900

    calls = []
    original = folded.query_logits
    monkeypatch.setattr(folded, "query_logits",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    batch = make_batch(torch.Generator().manual_seed(2), dtype=torch.float32, size=28)
    for model, folds in ((stride, True), (max_pool, False)):
        for run in (lambda: get_algorithm("fomaml", inner_steps=1).meta_gradients(model, batch),
                    lambda: evaluation.evaluate(model, batch, steps=1)):
            calls.clear()
            run()
            assert bool(calls) == folds
    calls.clear()
    evaluation.evaluate(max_pool, batch, steps=1, fold=True)
    assert calls


@pytest.mark.parametrize("lr", [0.7, 2.1])
@pytest.mark.parametrize("train_weight,train_bias", [(True, True), (True, False), (False, True)])
def test_first_order_head_steps_in_closed_form_equal_the_autograd_steps(lr, train_weight, train_bias):
    """First-order head adaptation writes the cross-entropy gradient out; the second-order path takes
    autograd steps: the adapted heads must be the same numbers (float64)."""
    from repana.meta.inner.head_only import adapt_heads

    gen = torch.Generator().manual_seed(5)
    tasks, ways, shots, n_features = 4, 3, 2, 7
    features = torch.randn(tasks, ways * shots, n_features, generator=gen, dtype=torch.float64)
    labels = torch.stack([torch.randperm(ways, generator=gen) for _ in range(tasks)]).repeat_interleave(shots, 1)
    weight = torch.randn(ways, n_features, generator=gen, dtype=torch.float64)
    bias = torch.randn(ways, generator=gen, dtype=torch.float64)
    options = dict(steps=3, lr=lr, train_weight=train_weight, train_bias=train_bias)
    closed = adapt_heads(features, labels, weight, bias, first_order=True, **options)
    autograd = adapt_heads(features, labels, weight, bias, first_order=False, **options)
    for ours, ref, trained, initial in zip(closed, autograd, (train_weight, train_bias), (weight, bias)):
        torch.testing.assert_close(ours, ref.detach().expand_as(ours), rtol=1e-12, atol=1e-12)
        assert trained == (not torch.allclose(ours, initial.expand_as(ours)))
