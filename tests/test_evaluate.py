"""Evaluation: CI formula, equivalence of the fast paths with a plain per-episode loop, NIL, predict."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.meta.inner import adapt
from repana.meta.evaluate import EvaluationResult, confidence_interval95, evaluate, predict
from repana.meta.nil import nil_predict
from repana.models import Conv4


def episodes(seed, tasks=5, ways=3, shots=2, queries=4, size=16):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.stack([torch.randperm(ways, generator=gen) for _ in range(tasks)])
    return SimpleNamespace(support_x=torch.rand(tasks, ways * shots, 1, size, size, generator=gen),
                           support_y=labels.repeat_interleave(shots, 1),
                           query_x=torch.rand(tasks, ways * queries, 1, size, size, generator=gen),
                           query_y=labels.repeat_interleave(queries, 1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return Conv4(n_classes=3, hidden=8, image_size=16)


def loop_accuracies(model, batch, steps, lr, trainable):
    """Plain per-episode reference: adapt, forward the query batch alone, compare."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = []
    for t in range(batch.support_x.shape[0]):
        adapted = adapt(model, params, batch.support_x[t], batch.support_y[t], steps, lr, trainable, True)
        with torch.no_grad():
            predicted = torch.func.functional_call(model, adapted, (batch.query_x[t],)).argmax(-1)
        out.append((predicted == batch.query_y[t]).float().mean().item())
    return np.array(out)


def test_confidence_interval_formula():
    values = np.array([0.2, 0.4, 0.6, 0.8])
    # population std of these is sqrt(0.05); 1.96 * sqrt(0.05) / 2
    assert confidence_interval95(values) == pytest.approx(1.96 * np.sqrt(0.05) / 2, rel=1e-12)
    assert confidence_interval95(np.full(10, 0.7)) == 0.0
    with pytest.raises(InputError):
        confidence_interval95(np.array([]))


@pytest.mark.parametrize("trainable", [None, "head", {"conv4", "head"}])
def test_evaluate_equals_a_per_episode_loop_and_is_chunk_invariant(model, trainable):
    batch = episodes(1)
    result = evaluate(model, batch, steps=3, lr=0.5, trainable=trainable, chunk_size=2)
    expected = loop_accuracies(model, batch, 3, 0.5, trainable)
    np.testing.assert_allclose(result.per_episode, expected, atol=1e-6)
    assert isinstance(result, EvaluationResult) and result.n_episodes == 5
    assert result.accuracy == pytest.approx(expected.mean())
    assert result.ci95 == pytest.approx(1.96 * expected.std() / np.sqrt(5))
    whole = evaluate(model, [batch], steps=3, lr=0.5, trainable=trainable, chunk_size=None)
    np.testing.assert_allclose(whole.per_episode, result.per_episode)


def test_freezing_every_layer_is_no_adaptation(model):
    batch = episodes(2)
    frozen = evaluate(model, batch, steps=5, lr=0.5, trainable=set())
    zero_steps = evaluate(model, batch, steps=0)
    adapted = evaluate(model, batch, steps=5, lr=0.5)
    np.testing.assert_array_equal(frozen.per_episode, zero_steps.per_episode)
    assert not np.array_equal(adapted.per_episode, frozen.per_episode)


def test_evaluate_leaves_model_untouched(model):
    before = copy.deepcopy(model.state_dict())
    model.train()
    evaluate(model, episodes(3), steps=2, lr=0.5)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_nil_method_matches_cosine_classifier_on_features(model):
    batch = episodes(4)
    result = evaluate(model, batch, method="nil")
    with torch.no_grad():
        expected = [(nil_predict(model.features(batch.support_x[t]), batch.support_y[t],
                                 model.features(batch.query_x[t])) == batch.query_y[t]).float().mean().item()
                    for t in range(5)]
    np.testing.assert_allclose(result.per_episode, expected, atol=1e-6)


def test_predict_and_head_of_another_size(model):
    batch = episodes(5)
    labels = predict(model, batch.support_x[0], batch.support_y[0], batch.query_x[0], steps=3, lr=0.5)
    assert labels.dtype == torch.int64 and labels.shape == (12,)
    accuracy = (labels == batch.query_y[0]).float().mean().item()
    assert accuracy == pytest.approx(evaluate(model, batch, steps=3, lr=0.5).per_episode[0])
    wide = Conv4(n_classes=10, hidden=8, image_size=16)    # e.g. multiclass-trained over 10 classes
    with pytest.raises(InputError, match="head='zero'"):
        evaluate(wide, batch, steps=1, head="keep")
    # a zero head adapts from scratch; with zero steps it predicts class 0 for every query
    zero = evaluate(wide, batch, steps=0, head="auto")
    np.testing.assert_allclose(zero.per_episode, 1 / 3)


def test_bad_options(model):
    batch = episodes(6)
    with pytest.raises(InputError, match="method"):
        evaluate(model, batch, method="knn")
    with pytest.raises(InputError, match="support_x"):
        evaluate(model, {"x": 1})
    with pytest.raises(InputError, match="do not match"):
        evaluate(model, SimpleNamespace(support_x=batch.support_x, support_y=batch.support_y[:, :1],
                                        query_x=batch.query_x, query_y=batch.query_y))


def test_folded_evaluation_equals_the_loop(model):
    batch = episodes(7)
    folded = evaluate(model, batch, steps=3, lr=0.5, fold=True)
    np.testing.assert_allclose(folded.per_episode, loop_accuracies(model, batch, 3, 0.5, None), atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "stride"])
@pytest.mark.parametrize("bn_support_query", ["apart", "together"])
def test_folded_evaluation_logits_equal_the_per_episode_loop_in_float64(pooling, bn_support_query, monkeypatch):
    """Evaluation folds the tasks' inner loops into channels on CPU too (groups bounded in memory)."""
    from repana.meta.inner import InnerLoop, folded, resolve_plan
    from repana.meta.inner.generic import episode_query_logits

    torch.manual_seed(3)
    model = Conv4(n_classes=3, hidden=6, image_size=16, pooling=pooling).double()
    batch = episodes(7, tasks=5)
    batch.support_x, batch.query_x = batch.support_x.double(), batch.query_x.double()
    params = {n: p.detach() for n, p in model.named_parameters()}
    plan = resolve_plan(InnerLoop(4, 0.5, None, True, bn_support_query=bn_support_query), params, batch.support_y)
    logits = folded.query_logits(model, params, batch.support_x, batch.support_y, batch.query_x, plan)
    for t in range(5):
        adapted = adapt(model, params, batch.support_x[t], batch.support_y[t], 4, 0.5, None, True)
        expected = episode_query_logits(model, adapted, batch.support_x[t], batch.query_x[t],
                                        bn_support_query == "together")
        torch.testing.assert_close(logits[t], expected, rtol=1e-10, atol=1e-12)
    # evaluate() splits a chunk into folded groups: a 2-task budget gives groups of 2, 2, 1
    side = 8 if pooling == "stride" else 16
    values_per_task = 6 * 6 * side * side * 8            # n_support x hidden x conv1 map x 8 saved tensors
    assert folded.fold_group_size(model, batch.support_x.float(), budget_bytes=2 * values_per_task * 4) == 2
    assert folded.fold_group_size(model, batch.support_x, budget_bytes=2 * values_per_task * 4) == 1  # float64
    monkeypatch.setattr(folded, "FOLD_BYTES", 2 * values_per_task * 8)
    grouped = evaluate(model, batch, steps=4, lr=0.5, bn_support_query=bn_support_query)
    looped = evaluate(model, batch, steps=4, lr=0.5, bn_support_query=bn_support_query, fold=False)
    np.testing.assert_array_equal(grouped.per_episode, looped.per_episode)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 1e308, -0.5])
def test_a_non_finite_negative_or_absurd_lr_is_refused_before_any_episode(model, lr):
    from repana.meta.inner import InnerLoop

    batch = episodes(0)
    with pytest.raises(InputError, match="lr"):
        evaluate(model, batch, steps=3, lr=lr)
    with pytest.raises(InputError, match="lr"):
        predict(model, batch.support_x[0], batch.support_y[0], batch.query_x[0], steps=3, lr=lr)
    with pytest.raises(InputError, match="lr"):   # every caller of the inner-loop dispatcher
        InnerLoop(3, lr)


def test_too_many_inner_steps_are_refused_with_the_limit(model):
    from repana.limits import MAX_INNER_STEPS

    with pytest.raises(InputError, match=f"above the limit of {MAX_INNER_STEPS:,}"):
        evaluate(model, episodes(0), steps=100_000_000, lr=0.4)


def _diverging_model(model):
    """``model`` with its head scaled by 1e30: one inner step of lr 0.4 sends the adapted weights to inf."""
    diverging = copy.deepcopy(model)
    with torch.no_grad():
        diverging.head.weight.mul_(1e30)
    return diverging


@pytest.mark.parametrize("fold", [None, True, False])
def test_an_inner_loop_that_diverges_is_an_error_naming_lr_and_steps(model, fold):
    from repana.meta.inner import InnerLoop, adapt_tasks

    diverging, batch = _diverging_model(model), episodes(0)
    with pytest.raises(InputError, match="diverged after 2 steps of lr 0.4: non-finite query logits"):
        evaluate(diverging, batch, steps=2, lr=0.4, fold=fold)
    params = {n: p.detach() for n, p in diverging.named_parameters()}
    with pytest.raises(InputError, match="diverged after 2 steps of lr 0.4: non-finite adapted weights"):
        adapt_tasks(diverging, params, batch.support_x, batch.support_y, InnerLoop(2, 0.4))
    # the same network with a sane head is evaluated as before
    assert 0 <= evaluate(model, batch, steps=2, lr=0.4, fold=fold).accuracy <= 1
