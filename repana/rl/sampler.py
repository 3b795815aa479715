"""Vectorised rollouts of a (per-task) policy: ``Episodes`` laid out ``(n_tasks, n_trajectories, horizon)``.

2-D navigation runs every trajectory of every task as one batched torch environment. HalfCheetah runs
waves of ``n_envs`` trajectories on a gymnasium vector environment: ``AsyncVectorEnv`` (one worker
process per sub-environment) or ``SyncVectorEnv`` (in this process). Each wave is reset explicitly
with seeds drawn from the sampler's generator and stepped exactly ``horizon`` times, so gymnasium's
auto-reset never fires inside a trajectory. Actions are drawn with an explicit ``torch.Generator``
(seeded determinism); the unclipped action is stored (its log-probability is what the policy gradient
needs) and the clipped one is what the environment receives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repana.rl.envs import HalfCheetahFactory, Navigation2D, check_environment, import_gymnasium


@dataclass
class Episodes:
    """observations ``(T, N, H, obs)``, actions ``(T, N, H, act)``, rewards / mask ``(T, N, H)``;
    ``returns`` and ``advantages`` ``(T, N, H)`` once :func:`repana.rl.returns.advantages` ran."""
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    returns: torch.Tensor | None = None
    advantages: torch.Tensor | None = None

    def total_rewards(self) -> torch.Tensor:
        """Undiscounted return of each trajectory, ``(T, N)``."""
        return (self.rewards * self.mask).sum(-1)

    def select(self, index) -> "Episodes":
        """The tasks ``index`` (a slice or index tensor) as a new Episodes."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Episodes(*(pick(getattr(self, f)) for f in
                          ("observations", "actions", "rewards", "mask", "returns", "advantages")))

    @property
    def n_steps(self) -> int:
        return int(self.mask.sum().item())


def sample_actions(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(log_std) * noise


def task_params(params: dict, index: torch.Tensor) -> dict:
    """Per-environment parameters: rows ``index`` of per-task parameters (every tensor of an adapted
    dict has the leading task dimension)."""
    return {n: p[index] for n, p in params.items()}


def is_per_task(params: dict) -> bool:
    return params["mu.weight"].dim() == 3


@torch.no_grad()
def sample_navigation(policy, params: dict, tasks: torch.Tensor, n_trajectories: int, horizon: int,
                      generator: torch.Generator) -> Episodes:
    """Roll out ``n_trajectories`` per goal of ``tasks (T, 2)`` for ``horizon`` steps."""
    dtype = params["mu.weight"].dtype
    n_tasks = tasks.shape[0]
    env = Navigation2D(tasks.to(dtype).repeat_interleave(n_trajectories, 0))
    obs = env.reset().view(n_tasks, n_trajectories, 2)
    alive = torch.ones(n_tasks, n_trajectories, dtype=dtype)
    observations, actions, rewards, masks = [], [], [], []
    for _ in range(horizon):
        mean, log_std = policy(obs, params)
        action = sample_actions(mean, log_std, generator)
        next_obs, reward, done = env.step(action.reshape(-1, 2))
        observations.append(obs)
        actions.append(action)
        rewards.append(reward.view(n_tasks, n_trajectories) * alive)
        masks.append(alive)
        alive = alive * (~done).view(n_tasks, n_trajectories).to(dtype)
        obs = next_obs.view(n_tasks, n_trajectories, 2)
    return Episodes(torch.stack(observations, 2), torch.stack(actions, 2), torch.stack(rewards, 2),
                    torch.stack(masks, 2))


class HalfCheetahSampler:
    """Rollouts of HalfCheetah tasks on a gymnasium vector env of ``n_envs`` sub-environments.

    ``mode="async"``: ``AsyncVectorEnv`` (a worker process per sub-environment); ``"sync"``: in this
    process. Call :meth:`close` (or use as a context manager) to stop the workers.
    """

    def __init__(self, env: str, horizon: int, n_envs: int = 8, mode: str = "sync"):
        check_environment(env)
        gymnasium = import_gymnasium()
        kind = env.split("-")[1]
        factories = [HalfCheetahFactory(kind, horizon) for _ in range(n_envs)]
        if mode == "async":
            self.vector = gymnasium.vector.AsyncVectorEnv(factories)
        elif mode == "sync":
            self.vector = gymnasium.vector.SyncVectorEnv(factories)
        else:
            from repana.errors import ConfigError
            raise ConfigError(f"unknown vector mode {mode!r}; use 'sync' or 'async'")
        self.env, self.horizon, self.n_envs, self.mode = env, horizon, n_envs, mode
        self.action_low = float(self.vector.single_action_space.low.min())
        self.action_high = float(self.vector.single_action_space.high.max())

    def close(self) -> None:
        self.vector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @torch.no_grad()
    def sample(self, policy, params: dict, tasks: torch.Tensor, n_trajectories: int,
               generator: torch.Generator) -> Episodes:
        dtype = params["mu.weight"].dtype
        n_tasks, horizon, n_envs = tasks.shape[0], self.horizon, self.n_envs
        total = n_tasks * n_trajectories
        per_task = is_per_task(params)
        obs_out = torch.zeros(total, horizon, 17, dtype=dtype)
        act_out = torch.zeros(total, horizon, 6, dtype=dtype)
        rew_out = torch.zeros(total, horizon, dtype=dtype)
        for start in range(0, total, n_envs):
            rows = torch.arange(start, start + n_envs).clamp_max(total - 1)
            task_index = rows // n_trajectories
            self.vector.set_attr("task_value", [float(v) for v in tasks[task_index, 0]])
            seeds = torch.randint(0, 2**31 - 1, (n_envs,), generator=generator).tolist()
            obs, _ = self.vector.reset(seed=seeds)
            wave_params = task_params(params, task_index) if per_task else params
            for t in range(horizon):
                obs_t = torch.as_tensor(np.asarray(obs), dtype=dtype)
                mean, log_std = policy(obs_t.unsqueeze(1), wave_params)
                action = sample_actions(mean, log_std, generator).squeeze(1)
                clipped = action.clamp(self.action_low, self.action_high).numpy().astype(np.float32)
                obs, reward, _, _, _ = self.vector.step(clipped)
                real = slice(0, min(n_envs, total - start))  # the last wave is padded with copies
                obs_out[rows[real], t] = obs_t[real]
                act_out[rows[real], t] = action[real]
                rew_out[rows[real], t] = torch.as_tensor(np.asarray(reward), dtype=dtype)[real]
        shape = (n_tasks, n_trajectories, horizon)
        return Episodes(obs_out.view(*shape, 17), act_out.view(*shape, 6), rew_out.view(shape),
                        torch.ones(shape, dtype=dtype))


def make_sampler(env: str, horizon: int, n_envs: int = 8, mode: str = "sync"):
    """``sample(policy, params, tasks, n_trajectories, generator) -> Episodes`` for ``env``."""
    check_environment(env)
    if env == "2d-navigation":
        return NavigationSampler(horizon)
    return HalfCheetahSampler(env, horizon, n_envs=n_envs, mode=mode)


class NavigationSampler:
    def __init__(self, horizon: int):
        self.horizon = horizon

    def sample(self, policy, params, tasks, n_trajectories, generator) -> Episodes:
        return sample_navigation(policy, params, tasks, n_trajectories, self.horizon, generator)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
