"""Slow: 2-D navigation meta-training learns to adapt (MAML and ANIL), checked on held-out tasks."""

import pytest

from repana.rl.evaluate import evaluate_rl
from repana.rl.train import train_rl


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_2d_navigation_adapts(tmp_path, algorithm):
    # the paper's per-update setting (20 tasks x 20 trajectories, horizon 100, TRPO) for 25 updates (held-out
    # returns of the same setting after 20 updates: ANIL -37.9 before, -15.3 after adaptation)
    train_rl("rl-2dnav", tmp_path / algorithm, algorithm=algorithm, iterations=25, threads=1)
    _, summary = evaluate_rl(tmp_path / algorithm / "checkpoints" / "latest.pt", n_tasks=20)
    assert summary["return_after"] > -25
    assert summary["return_after"] - summary["return_before"] >= 10
