"""The algorithm registry and each algorithm's meta-gradient against a hand-written equivalent."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repana.errors import ConfigError, InputError
from repana.meta.algorithms import get_algorithm, list_algorithms
from repana.meta.inner import adapt
from repana.meta.inner.generic import episode_query_logits
from repana.meta.evaluate import evaluate
from repana.meta.nil import nil_logits
from repana.models import Conv4


def episodes(gen, tasks=3, ways=3, shots=1, queries=2, size=16, dtype=torch.float32):
    labels = torch.stack([torch.randperm(ways, generator=gen) for _ in range(tasks)])
    return SimpleNamespace(
        support_x=torch.rand(tasks, ways * shots, 1, size, size, generator=gen, dtype=dtype),
        support_y=labels.repeat_interleave(shots, 1),
        query_x=torch.rand(tasks, ways * queries, 1, size, size, generator=gen, dtype=dtype),
        query_y=labels.repeat_interleave(queries, 1))


def test_registry_names_kinds_and_errors():
    assert list_algorithms() == ["anil", "boil", "fomaml", "maml", "multiclass", "multitask", "nil_training",
                                 "reptile"]
    assert get_algorithm("multiclass").batch_kind == "classification"
    assert all(get_algorithm(n).batch_kind == "episodes" for n in list_algorithms() if n != "multiclass")
    assert get_algorithm("pretrain").name == "multiclass" and get_algorithm("nil").name == "nil_training"
    assert get_algorithm("anil").trainable == "head" and not get_algorithm("anil").first_order
    assert get_algorithm("boil").trainable == "body" and not get_algorithm("boil").first_order
    assert get_algorithm("boil").test_time == "inner" and get_algorithm("boil").objective == "query"
    assert get_algorithm("fomaml").first_order
    assert get_algorithm("maml", inner_loss="sum_over_shots").inner_loss == "sum_over_shots"
    assert get_algorithm("maml", inner_loss="sum_div_k").inner_loss == "sum_over_shots"   # former spelling
    assert get_algorithm("multiclass", inner_lr=0.1, ignore_unused=True).name == "multiclass"
    with pytest.raises(ConfigError, match="unknown algorithm"):
        get_algorithm("protonet")
    with pytest.raises(ConfigError, match="no hyperparameter"):
        get_algorithm("multiclass", inner_lr=0.1)
    with pytest.raises(ConfigError, match="at least 1 inner step"):
        get_algorithm("maml", inner_steps=0)
    with pytest.raises(ConfigError, match="first order"):
        get_algorithm("fomaml", first_order=False)
    with pytest.raises(ConfigError, match="bn_support_query"):
        get_algorithm("anil", bn_support_query="mixed")
    with pytest.raises(ConfigError, match="inner_lr"):
        get_algorithm("maml", inner_lr=0.0)
    with pytest.raises(ConfigError, match="bn_inner_loop"):
        get_algorithm("boil", bn_inner_loop="no")


def test_multitask_is_the_query_loss_without_inner_loop():
    model = Conv4(n_classes=3, hidden=6, image_size=16).double()
    batch = episodes(torch.Generator().manual_seed(0), dtype=torch.float64)
    grads, metrics = get_algorithm("multitask").meta_gradients(model, batch)
    loss = sum(F.cross_entropy(model(batch.query_x[t]), batch.query_y[t]) for t in range(3)) / 3
    expected = torch.autograd.grad(loss, list(model.parameters()))
    for (name, _), g in zip(model.named_parameters(), expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-10, atol=1e-12)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-10)


def test_reptile_direction_on_softmax_regression_by_hand():
    """Linear softmax model: two inner SGD steps written out with numpy; direction = theta - phi, averaged."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    gen = torch.Generator().manual_seed(1)
    batch = SimpleNamespace(support_x=torch.randn(2, 6, 4, generator=gen, dtype=torch.float64),
                            support_y=torch.tensor([[0, 1, 2, 0, 1, 2], [2, 1, 0, 2, 1, 0]]),
                            query_x=torch.randn(2, 3, 4, generator=gen, dtype=torch.float64),
                            query_y=torch.tensor([[0, 1, 2], [1, 2, 0]]))
    lr, steps = 0.5, 2
    grads, _ = get_algorithm("reptile", inner_steps=steps, inner_lr=lr).meta_gradients(model, batch)
    w0, b0 = model.weight.detach().numpy(), model.bias.detach().numpy()
    directions_w, directions_b = [], []
    for t in range(2):
        x, y = batch.support_x[t].numpy(), np.eye(3)[batch.support_y[t].numpy()]
        w, b = w0.copy(), b0.copy()
        for _ in range(steps):
            z = x @ w.T + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w, b = w - lr * (p - y).T @ x / len(x), b - lr * (p - y).mean(0)
        directions_w.append(w0 - w)
        directions_b.append(b0 - b)
    np.testing.assert_allclose(grads["weight"].numpy(), np.mean(directions_w, 0), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grads["bias"].numpy(), np.mean(directions_b, 0), rtol=1e-10, atol=1e-13)
    # parameters are untouched (the trainer applies the direction with its optimizer)
    np.testing.assert_array_equal(model.weight.detach().numpy(), w0)


def test_nil_training_gradient_is_the_cosine_classifier_nll_and_ignores_the_head():
    model = Conv4(n_classes=3, hidden=6, image_size=16).double()
    batch = episodes(torch.Generator().manual_seed(2), dtype=torch.float64, shots=2)
    grads, metrics = get_algorithm("nil_training", temperature=0.1).meta_gradients(model, batch)
    loss = sum(F.nll_loss(nil_logits(model.features(batch.support_x[t]), batch.support_y[t],
                                     model.features(batch.query_x[t]), 3, 0.1), batch.query_y[t])
               for t in range(3)) / 3
    expected = torch.autograd.grad(loss, [p for n, p in model.named_parameters() if not n.startswith("head")])
    body = [n for n, _ in model.named_parameters() if not n.startswith("head")]
    for name, g in zip(body, expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-12)
    assert grads["head.weight"].abs().sum() == 0
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-9)


def test_multiclass_is_plain_cross_entropy():
    model = Conv4(n_classes=10, hidden=6, image_size=16)
    x, y = torch.rand(8, 1, 16, 16), torch.arange(8)
    grads, metrics = get_algorithm("multiclass").meta_gradients(model, (x, y))
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    torch.testing.assert_close(grads["conv2.conv.weight"], expected[4])
    assert metrics["n_tasks"] == 8
    with pytest.raises(InputError, match="outside the head"):
        get_algorithm("multiclass").meta_gradients(model, (x, y + 5))
    with pytest.raises(InputError, match="classification batch"):
        get_algorithm("multiclass").meta_gradients(model, {"x": x})


def test_bn_together_changes_the_query_normalisation():
    model = Conv4(n_classes=3, hidden=6, image_size=16).double()
    batch = episodes(torch.Generator().manual_seed(3), dtype=torch.float64)
    apart, _ = get_algorithm("anil", inner_steps=1).meta_gradients(model, batch)
    together, _ = get_algorithm("anil", inner_steps=1, bn_support_query="together").meta_gradients(model, batch)
    assert not torch.allclose(apart["conv1.conv.weight"], together["conv1.conv.weight"])
    # ANIL's batched path equals a per-episode loop of adapt + one forward of support and query together
    params = dict(model.named_parameters())
    loss = 0.0
    for t in range(3):
        adapted = adapt(model, params, batch.support_x[t], batch.support_y[t], 1, 0.4, "head")
        logits = episode_query_logits(model, adapted, batch.support_x[t], batch.query_x[t], together=True)
        loss = loss + F.cross_entropy(logits, batch.query_y[t]) / 3
    expected = torch.autograd.grad(loss, list(params.values()))
    for name, g in zip(params, expected):
        torch.testing.assert_close(together[name], g, rtol=1e-9, atol=1e-12)


def test_bad_episode_batches():
    model = Conv4(n_classes=3, hidden=6, image_size=16)
    batch = episodes(torch.Generator().manual_seed(4))
    with pytest.raises(InputError, match="query_y"):
        get_algorithm("maml").meta_gradients(model, SimpleNamespace(support_x=batch.support_x,
                                                                    support_y=batch.support_y,
                                                                    query_x=batch.query_x))
    batch.query_y = batch.query_y[:, :-1]
    with pytest.raises(InputError, match="do not match"):
        get_algorithm("maml").meta_gradients(model, batch)


def synthetic_task_sampler(seed: int, n_classes: int = 12, size: int = 16, ways: int = 3, shots: int = 1,
                           queries: int = 4, noise: float = 0.3):
    """Classes are fixed random binary patterns; examples are a pattern plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(n_classes, 1, size, size, generator=gen) > 0.5).float()

    def sample(tasks: int, classes: range):
        chosen = torch.stack([torch.tensor(list(classes))[torch.randperm(len(classes), generator=gen)[:ways]]
                              for _ in range(tasks)])
        def draw(per_class):
            idx = chosen.repeat_interleave(per_class, 1)
            return patterns[idx] + noise * torch.randn(tasks, ways * per_class, 1, size, size, generator=gen)
        labels = torch.arange(ways).expand(tasks, ways)
        return SimpleNamespace(support_x=draw(shots), support_y=labels.repeat_interleave(shots, 1),
                               query_x=draw(queries), query_y=labels.repeat_interleave(queries, 1))
    return sample


@pytest.mark.parametrize("name", ["anil", "maml"])
def test_a_few_dozen_meta_steps_raise_query_accuracy(name):
    torch.manual_seed(0)
    sample = synthetic_task_sampler(seed=5)
    model = Conv4(n_classes=3, hidden=12, image_size=16)
    test_set = sample(24, range(8, 12))            # held-out classes
    before = evaluate(model, test_set, steps=3, lr=0.4)
    algo = get_algorithm(name, inner_steps=1, inner_lr=0.4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        grads, metrics = algo.meta_gradients(model, sample(4, range(8)))
        for p_name, p in model.named_parameters():
            p.grad = grads[p_name]
        optimizer.step()
    after = evaluate(model, test_set, steps=3, lr=0.4)
    assert after.accuracy > before.accuracy + 0.1, (before, after)
    assert after.accuracy > 0.6, after
