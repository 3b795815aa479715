"""2-D navigation: how much the choice of held-out tasks moves the return after adaptation of one policy.

One RL checkpoint is evaluated (one adaptation step, its run's inner loop) on

1. the fixed 40 goals of ``default_rng(2**20)`` (every run on the same tasks), with ``--noise-seeds``
   different action-noise generators (the spread over seeds that this protocol can show);
2. the per-seed samples of ``--tasks`` goals (:func:`repana.rl.evaluate.evaluation_tasks`) of the run
   seeds ``--seeds`` (the default protocol);

and prints the mean goal distance and the mean return before / after adaptation of each, the spread over
seeds of both protocols, and the return after adaptation per goal-distance bin over all per-seed tasks
with a least-squares line (return = a + b * distance), read at the fixed goals' mean distance and at the
distribution's expectation (0.3826).

    python benchmarks/rl_eval_tasks.py RUN/checkpoints/latest.pt [--tasks 400] [--seeds 0 1000 2000 1 1001 2001]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from repana.meta.checkpoint import load_checkpoint
from repana.rl.evaluate import (EVAL_SEED, NAV_MEAN_GOAL_DISTANCE, adapted_rollouts, evaluate_policy,
                                evaluation_tasks, goal_distance, summarize)


def fixed_goals_with_noise_seeds(policy, config, noise_seeds) -> pd.DataFrame:
    """One row per action-noise seed on the fixed 40 goals: mean distance, returns before / after."""
    tasks, _, _ = evaluation_tasks(config.env, 40, config.seed, task_seed=EVAL_SEED)
    rows = []
    for noise_seed in noise_seeds:
        generator = torch.Generator().manual_seed(int(noise_seed))
        before, _, after = adapted_rollouts(policy, config, tasks, generator)
        rows.append({"noise_seed": noise_seed, "mean_goal_distance": float(goal_distance(tasks).mean()),
                     "return_before": float(before.total_rewards().mean()),
                     "return_after": float(after.total_rewards().mean())})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000, 1, 1001, 2001])
    parser.add_argument("--noise-seeds", type=int, nargs="+", default=[EVAL_SEED, 1, 2, 3, 4, 5])
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint, kind="rl")
    policy, config = checkpoint.model(), checkpoint.train_config()
    print(f"{config.algorithm} {config.env}, {checkpoint.step} meta-updates, run seed {config.seed}")

    started = time.perf_counter()
    frame, protocol = evaluate_policy(policy, config, n_tasks=40, task_seed=EVAL_SEED)
    fixed = summarize(frame)
    fixed_distance = float(frame["goal_distance"].mean())
    fixed_goals = frame["goal_distance"]
    print(f"(a) {protocol}, 40 goals: mean distance {frame['goal_distance'].mean():.4f}, return before "
          f"{fixed['return_before']:.2f}, after {fixed['return_after']:.2f} ± {fixed['return_after_ci95']:.2f} "
          f"(95% CI over tasks) [{time.perf_counter() - started:.1f} s]")
    noise = fixed_goals_with_noise_seeds(policy, config, args.noise_seeds)
    print(f"    same 40 goals, {len(noise)} action-noise seeds: after {noise['return_after'].mean():.2f} ± "
          f"{noise['return_after'].std(ddof=1):.2f} (std over noise seeds)")

    frames, rows = [], []
    for seed in args.seeds:
        started = time.perf_counter()
        frame, protocol = evaluate_policy(policy, config.replace(seed=seed), n_tasks=args.tasks)
        summary = summarize(frame)
        rows.append({"seed": seed, "mean_goal_distance": frame["goal_distance"].mean(), **summary})
        frames.append(frame.assign(seed=seed))
        print(f"(b) {protocol}, {args.tasks} goals: mean distance {frame['goal_distance'].mean():.4f}, return "
              f"before {summary['return_before']:.2f}, after {summary['return_after']:.2f} ± "
              f"{summary['return_after_ci95']:.2f} [{time.perf_counter() - started:.1f} s]")
    per_seed = pd.DataFrame(rows)
    print(f"    over {len(per_seed)} seeds: after {per_seed['return_after'].mean():.2f} ± "
          f"{per_seed['return_after'].std(ddof=1):.2f} (std over seeds), mean distance "
          f"{per_seed['mean_goal_distance'].mean():.4f} (expectation {NAV_MEAN_GOAL_DISTANCE:.4f})")

    pooled = pd.concat(frames, ignore_index=True)
    edges = np.arange(0.0, 0.75, 0.1)
    pooled["bin"] = pd.cut(pooled["goal_distance"], edges)
    table = pooled.groupby("bin", observed=True).agg(tasks=("return_after", "size"),
                                                     return_before=("return_before", "mean"),
                                                     return_after=("return_after", "mean"))
    print("return by goal distance (all per-seed tasks):")
    print(table.round(2).to_string())
    slope, intercept = np.polyfit(pooled["goal_distance"], pooled["return_after"], 1)
    at_fixed = intercept + slope * fixed_distance
    at_mean = intercept + slope * NAV_MEAN_GOAL_DISTANCE
    print(f"least squares: return_after = {intercept:.2f} + {slope:.2f} * distance; at {fixed_distance:.4f}: "
          f"{at_fixed:.2f}, "
          f"at {NAV_MEAN_GOAL_DISTANCE:.4f}: {at_mean:.2f} (difference {at_fixed - at_mean:+.2f})")
    fine = np.arange(0.0, 0.75, 0.05)
    by_bin = pooled.groupby(pd.cut(pooled["goal_distance"], fine), observed=False)["return_after"].mean()
    expected_on_fixed = float(by_bin.loc[pd.cut(fixed_goals, fine)].mean())
    print(f"the fixed goals' distances read on the per-seed tasks' 0.05-wide bin means: {expected_on_fixed:.2f} "
          f"(all per-seed tasks: {pooled['return_after'].mean():.2f}, difference "
          f"{expected_on_fixed - pooled['return_after'].mean():+.2f}: the goal-distance part of (a) - (b))")


if __name__ == "__main__":
    main()
