"""Independent computations on this process's data, in forked worker processes.

A reproduction's analyses (one per analysis and training seed) are independent and read the same loaded
datasets and checkpoints. Forked workers inherit those without pickling or copying them, each runs with
``threads`` torch threads (``workers x threads`` within the usable cores), and only the results (tables)
travel back, pickled. Each worker is single-threaded by default, so there is no thread pool to spin and
no cliff when another process takes a core: the workers then share the cores that are left.

Fork is used on Linux only: Windows has none, and on macOS forking a process that has loaded system
frameworks is unsafe (Python's default start method there is spawn). Elsewhere, with one worker, or with
one computation, the computations run in this process, one after another, with the same results.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

Result = TypeVar("Result")

# The computations of the running call, read by the forked workers (inherited with the process's memory).
_PENDING: list[Callable[[], object]] = []


def can_fork() -> bool:
    """Whether :func:`run_forked` can use worker processes here (Linux, where fork is safe)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


def _run_pending(index: int):
    return _PENDING[index]()


def run_forked(calls: Sequence[Callable[[], Result]], workers: int, threads: int = 1,
               on_done: Callable[[int, Result], None] | None = None) -> list[Result]:
    """``[call() for call in calls]``, computed by up to ``workers`` forked processes of ``threads`` torch
    threads each, started in the order given (put the longest first); ``on_done(index, result)`` is called
    here as each one finishes. An exception in a call is raised here, after the pool has shut down.

    Calls may be closures over anything this process holds; their results must pickle. Where
    :func:`can_fork` is False, or with ``workers <= 1`` or a single call, they run here, in order.
    """
    global _PENDING
    calls = list(calls)
    results: list = [None] * len(calls)
    if workers <= 1 or len(calls) <= 1 or not can_fork():
        for index, call in enumerate(calls):
            results[index] = call()
            if on_done is not None:
                on_done(index, results[index])
        return results
    if _PENDING:
        raise RuntimeError("run_forked is not re-entrant: a worker cannot start workers of its own")
    _PENDING = calls
    try:
        with ProcessPoolExecutor(min(int(workers), len(calls)), mp_context=multiprocessing.get_context("fork"),
                                 initializer=_start_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_run_pending, index): index for index in range(len(calls))}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    results[index] = future.result()
                    if on_done is not None:
                        on_done(index, results[index])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)   # the calls not started yet are dropped
                raise
    finally:
        _PENDING = []
    return results
