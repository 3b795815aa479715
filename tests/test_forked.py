"""repana.runs.forked: independent computations in forked worker processes, or here where fork is not used."""

import os

import pytest
import torch

from repana.runs.forked import can_fork, run_forked

needs_fork = pytest.mark.skipif(not can_fork(), reason="worker processes are forked on Linux only")


@needs_fork
def test_results_in_order_from_worker_processes():
    data = {"weights": torch.arange(6.0)}   # closures read this process's objects: the workers inherit them
    calls = [lambda k=k: (k, float(data["weights"][: k + 1].sum()), os.getpid(), torch.get_num_threads())
             for k in range(6)]
    finished = []
    results = run_forked(calls, workers=2, threads=1, on_done=lambda index, result: finished.append(index))
    assert [(k, total) for k, total, _, _ in results] == [(k, sum(range(k + 1))) for k in range(6)]
    assert sorted(finished) == list(range(6))
    assert os.getpid() not in {pid for _, _, pid, _ in results} and {t for *_, t in results} == {1}


def test_one_worker_runs_here_in_order():
    finished = []
    results = run_forked([lambda k=k: (k, os.getpid()) for k in range(3)], workers=1,
                         on_done=lambda index, result: finished.append(index))
    assert results == [(k, os.getpid()) for k in range(3)] and finished == [0, 1, 2]


def _fails():
    raise ValueError("table 3 has no rows")


@needs_fork
def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(ValueError, match="table 3 has no rows"):
        run_forked([lambda: 1, _fails, lambda: 3], workers=2)
    # the pool is gone and a new call works
    assert run_forked([lambda: 1, lambda: 2], workers=2) == [1, 2]
