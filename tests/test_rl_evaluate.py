"""Held-out RL evaluation tasks: each run's own sample from the task distribution, reproducible for a seed,
never a training task, and the fixed-task protocol on request."""

import numpy as np
import pytest
import torch

from repana.rl.evaluate import (EVAL_SEED, NAV_MEAN_GOAL_DISTANCE, evaluate_rl, evaluation_tasks,
                                goal_distance)
from repana.rl.tasks import TaskSampler, draw_tasks
from repana.rl.train import train_rl

TINY_NAV = dict(env="2d-navigation", meta_batch_size=2, fast_batch_size=3, horizon=10, hidden_sizes=[8, 8],
                cg_iters=2, dtype="float64", checkpoint_every=1, iterations=1)


def test_mean_goal_distance_constant_is_the_integral():
    # midpoint rule on a 2000 x 2000 grid of [-1/2, 1/2]^2: error O(h^2) ~ 1e-7
    centres = (np.arange(2000) + 0.5) / 2000 - 0.5
    x, y = np.meshgrid(centres, centres)
    assert np.hypot(x, y).mean() == pytest.approx(NAV_MEAN_GOAL_DISTANCE, abs=1e-6)
    assert NAV_MEAN_GOAL_DISTANCE == pytest.approx(0.382598, abs=1e-6)


@pytest.mark.parametrize("run_seed", [0, 1, 1000])
def test_a_large_evaluation_sample_comes_from_the_task_distribution(run_seed):
    tasks, _, _ = evaluation_tasks("2d-navigation", 100_000, run_seed)
    assert tasks.shape == (100_000, 2) and tasks.dtype == torch.float64
    assert tasks.min() >= -0.5 and tasks.max() <= 0.5
    # std of the distance 0.1424 (E|g|^2 = 1/6): standard error 0.00045 at 1e5 goals; 0.0025 is 5.5 of them
    assert goal_distance(tasks).mean().item() == pytest.approx(NAV_MEAN_GOAL_DISTANCE, abs=0.0025)
    # and each coordinate uniform: mean 0, variance 1/12
    assert tasks.mean(0).numpy() == pytest.approx([0.0, 0.0], abs=0.005)
    assert tasks.var(0).numpy() == pytest.approx([1 / 12, 1 / 12], abs=0.002)


def test_evaluation_tasks_differ_per_seed_and_repeat_for_a_seed():
    a, gen_a, protocol = evaluation_tasks("2d-navigation", 40, 0)
    again, gen_again, _ = evaluation_tasks("2d-navigation", 40, 0)
    other, gen_other, _ = evaluation_tasks("2d-navigation", 40, 1000)
    assert torch.equal(a, again) and torch.equal(gen_a.get_state(), gen_again.get_state())
    assert not torch.isclose(a, other).any()
    assert not torch.equal(gen_a.get_state(), gen_other.get_state())
    assert protocol == f"per-seed sample: SeedSequence(0, spawn_key=({EVAL_SEED},))"


@pytest.mark.parametrize("run_seed", [0, 1, 2 ** 20])
def test_evaluation_tasks_are_never_training_tasks(run_seed):
    held_out, _, _ = evaluation_tasks("2d-navigation", 400, run_seed)
    # 500 meta-updates of 20 tasks: the paper's whole training stream of this seed
    training = TaskSampler("2d-navigation", run_seed).sample(500 * 20)
    assert not (held_out[:, None, :] == training[None, :, :]).all(-1).any()


def test_a_task_seed_gives_every_run_the_same_fixed_tasks():
    for run_seed in (0, 1001):
        tasks, generator, protocol = evaluation_tasks("2d-navigation", 40, run_seed, task_seed=EVAL_SEED)
        assert torch.equal(tasks, draw_tasks("2d-navigation", 40, np.random.default_rng(EVAL_SEED)))
        assert torch.equal(generator.get_state(), torch.Generator().manual_seed(EVAL_SEED).get_state())
        assert protocol == f"fixed, seed {EVAL_SEED}"


def test_evaluate_rl_runs_each_seed_on_its_own_tasks(tmp_path):
    paths = {}
    for seed in (0, 1000):
        train_rl(TINY_NAV, tmp_path / str(seed), seed=seed)
        paths[seed] = tmp_path / str(seed) / "checkpoints" / "latest.pt"
    frames = {seed: evaluate_rl(path, n_tasks=5) for seed, path in paths.items()}
    for seed, (frame, summary) in frames.items():
        expected, _, _ = evaluation_tasks("2d-navigation", 5, seed)
        assert frame[["task_value_0", "task_value_1"]].to_numpy() == pytest.approx(expected.numpy(), abs=0)
        assert frame["goal_distance"].to_numpy() == pytest.approx(goal_distance(expected).numpy(), abs=1e-15)
        assert summary["mean_goal_distance"] == pytest.approx(frame["goal_distance"].mean())
        assert summary["eval_tasks"] == f"per-seed sample: SeedSequence({seed}, spawn_key=({EVAL_SEED},))"
    assert not np.isclose(frames[0][0]["task_value_0"], frames[1000][0]["task_value_0"]).any()
    fixed = {seed: evaluate_rl(path, n_tasks=5, task_seed=7)[0] for seed, path in paths.items()}
    assert fixed[0]["task_value_0"].tolist() == fixed[1000]["task_value_0"].tolist()
