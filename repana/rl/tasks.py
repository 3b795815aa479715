"""Seeded task samplers: one float vector per task, drawn from a numpy Generator whose state is saved.

2d-navigation: goal uniform in [-0.5, 0.5]^2 -> (n, 2). halfcheetah-dir: direction -1 or +1 with equal
probability -> (n, 1). halfcheetah-vel: target velocity uniform in [0, 2] -> (n, 1).
"""

from __future__ import annotations

import numpy as np
import torch

from repana.rl.envs import check_environment


def draw_tasks(env: str, n_tasks: int, rng: np.random.Generator) -> torch.Tensor:
    """``(n_tasks, task_dim)`` float64 task parameters for ``env`` drawn from ``rng``."""
    check_environment(env)
    if env == "2d-navigation":
        values = rng.uniform(-0.5, 0.5, size=(n_tasks, 2))
    elif env == "halfcheetah-dir":
        values = rng.choice(np.array([-1.0, 1.0]), size=(n_tasks, 1))
    else:
        values = rng.uniform(0.0, 2.0, size=(n_tasks, 1))
    return torch.from_numpy(values)


class TaskSampler:
    """Draws batches of tasks for one environment; ``state_dict`` / ``load_state_dict`` for resume."""

    def __init__(self, env: str, seed: int):
        self.env = check_environment(env)
        self.rng = np.random.default_rng(seed)

    def sample(self, n_tasks: int) -> torch.Tensor:
        return draw_tasks(self.env, n_tasks, self.rng)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state
