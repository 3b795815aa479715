"""Discounted returns, generalised advantage estimation and the linear feature baseline.

Every function takes per-step tensors laid out ``(n_tasks, n_trajectories, horizon)`` with a ``mask``
of the same shape (1 while the episode runs, 0 after it ended); masked steps contribute nothing.
"""

from __future__ import annotations

import torch

from repana.errors import InputError


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_k gamma^k r_{t+k}`` over the unmasked steps, same shape as ``rewards``."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] * mask[..., t] + gamma * running * mask[..., t]
        returns[..., t] = running
    return returns


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> torch.Tensor:
    """Generalised advantage estimates (Schulman et al. 2016); the value after the horizon or after
    the episode's end is 0. With ``lam = 1`` this is ``discounted_returns - values``."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = (delta + gamma * lam * running) * m
        advantages[..., t] = running
        next_value = values[..., t] * m
    return advantages


def baseline_features(observations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Features of the linear baseline (Duan et al. 2016): ``[o, o^2, t, t^2, t^3, 1]`` with
    ``t = step / 100``, zero on masked steps -> ``(..., horizon, 2 * obs_size + 4)``."""
    horizon = observations.shape[-2]
    t = torch.arange(horizon, dtype=observations.dtype, device=observations.device) / 100.0
    t = t.expand(*observations.shape[:-1]).unsqueeze(-1)
    ones = torch.ones_like(t)
    feats = torch.cat([observations, observations ** 2, t, t ** 2, t ** 3, ones], dim=-1)
    return feats * mask.unsqueeze(-1)


def fit_linear_baseline(observations: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                        reg: float = 1e-5, attempts: int = 5) -> torch.Tensor:
    """Per-task ridge fit of the returns on :func:`baseline_features`.

    observations ``(T, N, H, obs)``, returns / mask ``(T, N, H)`` -> weights ``(T, n_features)`` solving
    ``(X^T X + reg I) w = X^T y`` over each task's unmasked steps; ``reg`` grows 10x while the solve
    fails or gives non-finite weights (as in rllab).
    """
    feats = baseline_features(observations, mask)
    n_tasks, n_features = feats.shape[0], feats.shape[-1]
    x = feats.reshape(n_tasks, -1, n_features)
    y = (returns * mask).reshape(n_tasks, -1, 1)
    xtx = x.transpose(1, 2) @ x
    xty = x.transpose(1, 2) @ y
    eye = torch.eye(n_features, dtype=x.dtype, device=x.device)
    for _ in range(attempts):
        try:
            weights = torch.linalg.solve(xtx + reg * eye, xty).squeeze(-1)
        except RuntimeError:
            weights = None
        if weights is not None and torch.isfinite(weights).all():
            return weights
        reg *= 10
    raise InputError(f"the linear baseline's normal equations stay singular up to reg={reg:g}; "
                     "the rollouts hold NaN or constant observations")


def baseline_values(observations: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Predicted values ``(T, N, H)`` of a fitted baseline ``weights (T, n_features)``."""
    feats = baseline_features(observations, mask)
    return torch.einsum("tnhf,tf->tnh", feats, weights)


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit std within each task (over its unmasked steps); masked steps stay 0."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True).clamp_min(1)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = ((advantages - mean) ** 2 * mask).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask


def advantages(observations, rewards, mask, gamma: float, lam: float, normalize: bool = True):
    """Returns ``(returns, advantages)``: discounted returns, a per-task linear baseline fitted on
    them, GAE on the baseline's values, normalised per task."""
    rets = discounted_returns(rewards, mask, gamma)
    weights = fit_linear_baseline(observations, rets, mask)
    values = baseline_values(observations, mask, weights)
    adv = gae(rewards, values, mask, gamma, lam)
    return rets, (normalize_advantages(adv, mask) if normalize else adv)
