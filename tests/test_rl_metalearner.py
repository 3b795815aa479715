"""The meta-learner: per-task batching, which parameters adapt, first vs second order."""

import pytest
import torch

from repana.errors import ConfigError
from repana.rl.metalearner import MetaLearner
from repana.rl.policy import adapted_parameter_names

from rl_helpers import navigation_batch, tiny_policy, train_valid


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_batched_meta_gradient_equals_mean_of_per_task(algorithm):
    policy = tiny_policy(hidden=(5, 4))
    learner = MetaLearner(policy, algorithm, inner_lr=0.2)
    train, valid = train_valid(policy, learner, n_tasks=3, n_traj=3, horizon=8)
    batched = learner.meta_gradient(train, valid)
    per_task = [learner.meta_gradient(train.select([t]), valid.select([t])) for t in range(3)]
    for i, g in enumerate(batched):
        expected = sum(p[i] for p in per_task) / 3
        assert torch.allclose(g, expected, rtol=1e-10, atol=1e-13)


def test_batched_adaptation_equals_per_task_adaptation():
    policy = tiny_policy(hidden=(5,))
    learner = MetaLearner(policy, "maml", inner_lr=0.2)
    _, train = navigation_batch(policy, n_tasks=3, n_traj=3, horizon=8)
    batched = learner.adapt(policy.params(), train)
    for t in range(3):
        single = learner.adapt(policy.params(), train.select([t]))
        for name in batched:
            assert torch.allclose(batched[name][t], single[name][0], rtol=1e-12, atol=1e-14)


def test_anil_body_activations_identical_after_adaptation():
    policy = tiny_policy(hidden=(6, 6))
    learner = MetaLearner(policy, "anil", inner_lr=0.5)
    _, train = navigation_batch(policy, n_tasks=2, n_traj=3, horizon=10)
    adapted = learner.adapt(policy.params(), train)
    states = train.observations
    before = policy.hidden(states)
    after = policy.hidden(states, adapted)
    for layer in before:
        # the same body weights (a per-task view of their memory), applied task by task: equal up to float64
        # rounding, whose last bit depends on the CPU's matmul kernels
        assert adapted["layer1.weight"].data_ptr() == policy.params()["layer1.weight"].data_ptr()
        torch.testing.assert_close(before[layer], after[layer], rtol=0, atol=1e-12)
    mean_before, _ = policy(states)
    mean_after, _ = policy(states, adapted)
    assert (mean_before - mean_after).abs().max() > 1e-4      # the head did adapt
    maml = MetaLearner(policy, "maml", inner_lr=0.5).adapt(policy.params(), train)
    assert not torch.equal(policy.hidden(states, maml)["layer1"], before["layer1"])


def test_adapted_parameter_sets():
    policy = tiny_policy(hidden=(3, 3))
    assert adapted_parameter_names(policy, "anil", adapt_log_std=False) == ["mu.weight", "mu.bias"]
    assert adapted_parameter_names(policy, "anil", adapt_log_std=True)[-1] == "log_std"
    assert set(adapted_parameter_names(policy, "maml", adapt_log_std=True)) == set(policy.params())
    assert "log_std" not in adapted_parameter_names(policy, "fomaml", adapt_log_std=False)
    with pytest.raises(ConfigError, match="unknown RL algorithm 'reptile'"):
        adapted_parameter_names(policy, "reptile", True)


def test_log_std_adapts_only_when_asked():
    policy = tiny_policy(hidden=(4,))
    _, train = navigation_batch(policy, n_tasks=2, n_traj=3, horizon=6)
    fixed = MetaLearner(policy, "maml", adapt_log_std=False).adapt(policy.params(), train)
    moved = MetaLearner(policy, "maml", adapt_log_std=True).adapt(policy.params(), train)
    assert torch.equal(fixed["log_std"][0], policy.log_std.detach())
    assert not torch.equal(moved["log_std"][0], policy.log_std.detach())


def test_first_order_drops_second_derivatives():
    policy = tiny_policy(hidden=(5,))
    train, valid = train_valid(policy, MetaLearner(policy, "maml"), n_tasks=2, n_traj=3, horizon=8)
    second = MetaLearner(policy, "maml").meta_gradient(train, valid)
    first = MetaLearner(policy, "fomaml").meta_gradient(train, valid)
    assert max((a - b).abs().max().item() for a, b in zip(first, second)) > 1e-8
