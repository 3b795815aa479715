"""Returns before and after one adaptation step on held-out tasks, mean and 95% CI over tasks.

"Return" is the undiscounted sum of rewards of a trajectory, averaged over the task's trajectories
(the paper's "average return"). Held-out tasks are drawn from a generator seeded with ``seed``, which
no training run uses (training draws from ``RLConfig.seed``, 0, 1, 2...; evaluation defaults to 2**20).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from repana.rl.checkpoint import load_policy
from repana.rl.config import RLConfig
from repana.rl.sampler import make_sampler
from repana.rl.tasks import draw_tasks
from repana.rl.train import build_learner, detached, rollouts_with_advantages

EVAL_SEED = 2 ** 20


def adapted_rollouts(policy, config: RLConfig, tasks: torch.Tensor, generator: torch.Generator,
                     sampler=None):
    """``(episodes before, adapted per-task params (detached), episodes after)`` for ``tasks``."""
    own = sampler is None
    sampler = make_sampler(config.env, config.horizon, n_envs=config.n_envs, mode=config.vector_mode) \
        if own else sampler
    try:
        learner = build_learner(policy, config)
        before = rollouts_with_advantages(sampler, policy, policy.params(), tasks, config, generator)
        adapted = detached(learner.adapt(policy.params(), before, first_order=True))
        after = rollouts_with_advantages(sampler, policy, adapted, tasks, config, generator)
    finally:
        if own:
            sampler.close()
    return before, adapted, after


def evaluate_policy(policy, config: RLConfig, n_tasks: int = 40, seed: int = EVAL_SEED,
                    n_trajectories: int | None = None) -> pd.DataFrame:
    """One row per held-out task: ``task, task_value_0[, task_value_1], return_before, return_after``."""
    if n_trajectories is not None:
        config = config.replace(fast_batch_size=n_trajectories)
    tasks = draw_tasks(config.env, n_tasks, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    before, _, after = adapted_rollouts(policy, config, tasks, generator)
    frame = pd.DataFrame({"task": np.arange(n_tasks)})
    for j in range(tasks.shape[1]):
        frame[f"task_value_{j}"] = tasks[:, j].numpy()
    frame["return_before"] = before.total_rewards().mean(1).double().numpy()
    frame["return_after"] = after.total_rewards().mean(1).double().numpy()
    return frame


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half width of the t-interval)`` of ``values``; half width NaN for one value."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n))
    return mean, half


def summarize(frame: pd.DataFrame) -> dict:
    """Mean and 95% CI half width over tasks of the returns before / after and their difference."""
    out = {"n_tasks": len(frame)}
    for name, values in (("return_before", frame["return_before"]), ("return_after", frame["return_after"]),
                         ("improvement", frame["return_after"] - frame["return_before"])):
        out[name], out[f"{name}_ci95"] = mean_ci(values)
    return out


def evaluate_rl(checkpoint_path, n_tasks: int = 40, seed: int = EVAL_SEED,
                n_trajectories: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-task returns before / after adaptation of an RL checkpoint, and their summary.

    The summary also names the checkpoint's ``env``, ``algorithm``, ``seed`` and ``iteration``.
    Raises CheckpointError for anything but an RL checkpoint.
    """
    policy, config, data = load_policy(checkpoint_path)
    frame = evaluate_policy(policy, config, n_tasks=n_tasks, seed=seed, n_trajectories=n_trajectories)
    summary = {"env": config.env, "algorithm": config.algorithm, "seed": config.seed,
               "iteration": int(data["iteration"]), "adapt_log_std": config.adapt_log_std, **summarize(frame)}
    return frame, summary
