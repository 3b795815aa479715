"""Returns before and after one adaptation step on held-out tasks, mean and 95% CI over tasks.

"Return" is the undiscounted sum of rewards of a trajectory, averaged over the task's trajectories
(the paper's "average return").

Held-out tasks (the protocol, docs/rl.md): by default each run is evaluated on its own sample of
:data:`EVAL_TASKS` tasks from the task distribution, drawn from ``SeedSequence(run seed,
spawn_key=(EVAL_SEED,))`` (:func:`evaluation_seed_sequence`). Training draws its tasks from
``default_rng(run seed)``, a SeedSequence with an empty spawn key, so no training run of any seed draws
from an evaluation stream, and two seeds get two independent samples: the spread over seeds then holds
the task-sampling noise as well as the differences between the trained policies.
With an explicit ``task_seed`` every run is evaluated on the same tasks from ``default_rng(task_seed)``
(``repana evaluate --seed``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats

from repana.meta.checkpoint import as_checkpoint
from repana.rl.config import RLConfig
from repana.rl.sampler import make_sampler
from repana.rl.tasks import draw_tasks
from repana.rl.train import build_learner, detached, rollouts_with_advantages

#: The spawn key of the per-run evaluation streams, and the fixed seed of policy_similarity's tasks.
EVAL_SEED = 2 ** 20
#: Held-out tasks per run: pytorch-maml-rl's test.py (10 batches of 40 tasks, fast-batch-size trajectories
#: each). 2-D navigation: 95% CI of the mean return after adaptation over 400 tasks about +-0.5 (+-1.7 over 40).
EVAL_TASKS = 400


def evaluation_seed_sequence(run_seed: int, stream: int = EVAL_SEED) -> np.random.SeedSequence:
    """The seed sequence of run ``run_seed``'s evaluation tasks: ``SeedSequence(run_seed, spawn_key=(stream,))``,
    never the stream of a training run (those have an empty spawn key)."""
    return np.random.SeedSequence(int(run_seed), spawn_key=(int(stream),))


def evaluation_tasks(env: str, n_tasks: int, run_seed: int, task_seed: int | None = None,
                     stream: int = EVAL_SEED) -> tuple[torch.Tensor, torch.Generator, str]:
    """``(tasks (n_tasks, task_dim) float64, action-noise generator, protocol)`` of one run's evaluation.

    ``task_seed`` None: the run's own sample (:func:`evaluation_seed_sequence`), the action noise seeded
    from the same sequence; else the fixed tasks of ``default_rng(task_seed)`` and noise seeded with
    ``task_seed``. ``protocol`` names the source in words, for tables and reports.
    """
    if task_seed is None:
        sequence = evaluation_seed_sequence(run_seed, stream)
        tasks = draw_tasks(env, n_tasks, np.random.default_rng(sequence))
        generator = torch.Generator().manual_seed(int(sequence.generate_state(1)[0]))
        return tasks, generator, f"per-seed sample: SeedSequence({int(run_seed)}, spawn_key=({int(stream)},))"
    tasks = draw_tasks(env, n_tasks, np.random.default_rng(int(task_seed)))
    return tasks, torch.Generator().manual_seed(int(task_seed)), f"fixed, seed {int(task_seed)}"


def goal_distance(tasks: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``(n,)`` of 2-D navigation goals ``(n, 2)`` from the start (the origin)."""
    return tasks.double().norm(dim=1)


#: Mean goal distance of 2-D navigation's task distribution (goal uniform in [-1/2, 1/2]^2, start at the
#: origin): E|g| = (sqrt(2) + ln(1 + sqrt(2))) / 6 = 0.38260 (derived in docs/rl.md); std 0.1424.
NAV_MEAN_GOAL_DISTANCE = (np.sqrt(2.0) + np.log1p(np.sqrt(2.0))) / 6.0


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


def evaluate_policy(policy, config: RLConfig, n_tasks: int = EVAL_TASKS, task_seed: int | None = None,
                    n_trajectories: int | None = None) -> tuple[pd.DataFrame, str]:
    """``(frame, protocol)``: one row per held-out task, ``task, task_value_0[, task_value_1,
    goal_distance], return_before, return_after`` (goal_distance for 2-D navigation only), and the task
    source in words (:func:`evaluation_tasks`; the run's own sample of ``config.seed`` unless ``task_seed``)."""
    if n_trajectories is not None:
        config = config.replace(fast_batch_size=n_trajectories)
    tasks, generator, protocol = evaluation_tasks(config.env, n_tasks, config.seed, task_seed)
    before, _, after = adapted_rollouts(policy, config, tasks, generator)
    frame = pd.DataFrame({"task": np.arange(n_tasks)})
    for j in range(tasks.shape[1]):
        frame[f"task_value_{j}"] = tasks[:, j].numpy()
    if config.env == "2d-navigation":
        frame["goal_distance"] = goal_distance(tasks).numpy()
    frame["return_before"] = before.total_rewards().mean(1).double().numpy()
    frame["return_after"] = after.total_rewards().mean(1).double().numpy()
    return frame, protocol


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


def evaluate_rl(checkpoint_path, n_tasks: int = EVAL_TASKS, task_seed: int | None = None,
                n_trajectories: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Per-task returns before / after adaptation of an RL checkpoint, and their summary.

    Tasks: the run's own evaluation sample (``task_seed`` None) or the fixed tasks of ``task_seed``
    (:func:`evaluation_tasks`). The summary also names the checkpoint's ``env``, ``algorithm``, ``seed``,
    ``iteration``, the task source (``eval_tasks``) and, for 2-D navigation, the sample's
    ``mean_goal_distance`` (NaN otherwise). Raises CheckpointError for anything but an RL checkpoint.
    """
    checkpoint = as_checkpoint(checkpoint_path, kind="rl")
    policy, config = checkpoint.model(), checkpoint.train_config()
    frame, protocol = evaluate_policy(policy, config, n_tasks=n_tasks, task_seed=task_seed,
                                      n_trajectories=n_trajectories)
    distance = float(frame["goal_distance"].mean()) if "goal_distance" in frame else float("nan")
    summary = {"env": config.env, "algorithm": config.algorithm, "seed": config.seed,
               "iteration": checkpoint.step, "adapt_log_std": config.adapt_log_std,
               "eval_tasks": protocol, "mean_goal_distance": distance, **summarize(frame)}
    return frame, summary
