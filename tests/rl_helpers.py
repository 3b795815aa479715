"""Shared builders for the RL tests: tiny float64 policies and fabricated rollouts."""

from __future__ import annotations

import torch

from repana.rl.policy import GaussianMLPPolicy
from repana.rl.returns import advantages
from repana.rl.sampler import sample_navigation


def tiny_policy(hidden=(4,), seed=0, obs=2, act=2) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(obs, act, hidden_sizes=hidden, init_std=0.5).double()


def navigation_batch(policy, params=None, n_tasks=3, n_traj=4, horizon=12, seed=0):
    """Rollouts on seeded goals with returns and normalised advantages."""
    gen = torch.Generator().manual_seed(seed)
    goals = torch.rand(n_tasks, 2, generator=gen, dtype=torch.float64) - 0.5
    params = {n: p.detach() for n, p in (params or policy.params()).items()}
    eps = sample_navigation(policy, params, goals, n_traj, horizon, gen)
    eps.returns, eps.advantages = advantages(eps.observations, eps.rewards, eps.mask, 0.99, 1.0)
    return goals, eps


def train_valid(policy, learner, n_tasks=3, n_traj=4, horizon=12, seed=0):
    goals, train = navigation_batch(policy, n_tasks=n_tasks, n_traj=n_traj, horizon=horizon, seed=seed)
    adapted = {n: p.detach() for n, p in learner.adapt(policy.params(), train, first_order=True).items()}
    gen = torch.Generator().manual_seed(seed + 1)
    valid = sample_navigation(policy, adapted, goals, n_traj, horizon, gen)
    valid.returns, valid.advantages = advantages(valid.observations, valid.rewards, valid.mask, 0.99, 1.0)
    return train, valid
