"""Returns, the linear baseline, conjugate gradient, Hessian-vector products and the TRPO step (float64)."""

import numpy as np
import pytest
import torch

from repana.rl.metalearner import MetaLearner
from repana.rl.returns import (baseline_features, discounted_returns, fit_linear_baseline, gae,
                               normalize_advantages)
from repana.rl.trpo import conjugate_gradient, flatten, hessian_vector_product

from rl_helpers import tiny_policy, train_valid

D = torch.float64


def test_discounted_returns_by_hand():
    rewards = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=D)
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=D)      # the episode ended after 3 steps
    g = 0.5
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3.0, 0.0]
    assert discounted_returns(rewards, mask, g)[0, 0].tolist() == pytest.approx(expected)


def test_gae_limits():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(2, 3, 6, generator=gen, dtype=D)
    values = torch.randn(2, 3, 6, generator=gen, dtype=D)
    mask = torch.ones(2, 3, 6, dtype=D)
    mask[0, 1, 4:] = 0
    rets = discounted_returns(rewards, mask, 0.9)
    assert torch.allclose(gae(rewards, values, mask, 0.9, 1.0), (rets - values) * mask)
    next_values = torch.cat([values[..., 1:] * mask[..., 1:], torch.zeros(2, 3, 1, dtype=D)], -1)
    delta = (rewards + 0.9 * next_values - values) * mask
    assert torch.allclose(gae(rewards, values, mask, 0.9, 0.0), delta)


def test_linear_baseline_matches_ridge_lstsq():
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(2, 5, 7, 3, generator=gen, dtype=D)
    returns = torch.randn(2, 5, 7, generator=gen, dtype=D)
    mask = torch.ones(2, 5, 7, dtype=D)
    mask[1, 2, 3:] = 0
    reg = 1e-5
    weights = fit_linear_baseline(obs, returns, mask, reg=reg)
    feats = baseline_features(obs, mask)
    assert feats.shape[-1] == 2 * 3 + 4
    for t in range(2):
        keep = mask[t].reshape(-1) > 0
        x = feats[t].reshape(-1, feats.shape[-1])[keep]
        y = returns[t].reshape(-1)[keep]
        n_f = x.shape[1]
        x_aug = torch.cat([x, np.sqrt(reg) * torch.eye(n_f, dtype=D)])
        y_aug = torch.cat([y, torch.zeros(n_f, dtype=D)])
        expected = torch.linalg.lstsq(x_aug, y_aug.unsqueeze(1)).solution.squeeze(1)
        assert torch.allclose(weights[t], expected, rtol=1e-7, atol=1e-9)


def test_normalized_advantages_per_task():
    gen = torch.Generator().manual_seed(2)
    adv = torch.randn(3, 4, 5, generator=gen, dtype=D) * 7 + 3
    mask = torch.ones(3, 4, 5, dtype=D)
    mask[0, 0, 2:] = 0
    out = normalize_advantages(adv, mask)
    for t in range(3):
        vals = out[t][mask[t] > 0]
        assert vals.mean().item() == pytest.approx(0, abs=1e-12)
        assert vals.std(unbiased=False).item() == pytest.approx(1, abs=1e-6)
    assert (out[0, 0, 2:] == 0).all()


def test_conjugate_gradient_solves_spd_system():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(8, 8, generator=gen, dtype=D)
    spd = a @ a.T + 0.5 * torch.eye(8, dtype=D)
    b = torch.randn(8, generator=gen, dtype=D)
    x = conjugate_gradient(lambda v: spd @ v, b, iters=8, residual_tol=0.0)
    assert torch.allclose(x, torch.linalg.solve(spd, b), rtol=1e-8, atol=1e-10)


def _unflatten(policy, flat):
    out, offset = {}, 0
    for name, p in policy.named_parameters():
        out[name] = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_hvp_through_adaptation_matches_autograd_hessian(algorithm):
    policy = tiny_policy(hidden=(3,))
    learner = MetaLearner(policy, algorithm, inner_lr=0.3)
    train, valid = train_valid(policy, learner, n_tasks=2, n_traj=2, horizon=4)
    _, kl, old = learner.surrogate(policy.params(), train, valid)
    theta0 = flatten([p.detach() for p in policy.parameters()])

    def kl_of(flat):
        return learner.surrogate(_unflatten(policy, flat), train, valid, old=old, differentiable=True)[1]

    hessian = torch.autograd.functional.hessian(kl_of, theta0)
    hvp = hessian_vector_product(kl, list(policy.parameters()), damping=0.0)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(theta0.numel(), generator=gen, dtype=D)
        assert torch.allclose(hvp(v), hessian @ v, rtol=1e-8, atol=1e-11)
    # the KL's Hessian at its minimum is a Fisher matrix: symmetric, positive semi-definite
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    assert torch.linalg.eigvalsh(hessian).min() > -1e-10


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_trpo_step_respects_max_kl_and_lowers_loss(algorithm):
    policy = tiny_policy(hidden=(8,))
    learner = MetaLearner(policy, algorithm, inner_lr=0.1)
    train, valid = train_valid(policy, learner, n_tasks=4, n_traj=5, horizon=15)
    loss0, _, old = learner.surrogate(policy.params(), train, valid)
    max_kl = 1e-3
    log = learner.step(train, valid, max_kl=max_kl)
    assert log["step_fraction"] > 0
    loss1, kl1, _ = learner.surrogate(policy.params(), train, valid, old=old)
    assert float(kl1) <= max_kl
    assert float(kl1) == pytest.approx(log["kl_after"], rel=1e-9)
    assert float(loss1) < float(loss0.detach())
