"""MAML vs ANIL vs NIL on the same test episodes, and ANIL's speed-up over MAML.

Accuracy: each network is evaluated the way it was trained (MAML adapts every parameter, ANIL only
the head) and NIL (no inner loop: cosine similarity of query features to the support features of
each class, with a body trained by ANIL or MAML). Speed: seconds per meta-training step (inner loop
plus meta-gradient) and per test episode (inner loop plus query prediction) of ANIL and MAML on the
same network and the same batch, measured back to back in one process, so machine load affects
both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from repana.analysis.common import all_parameters, head_only
from repana.errors import InputError


@dataclass
class EvalSpec:
    """One line of a comparison table: a network and how to evaluate it.

    ``method``: "adapt" (inner loop on ``trainable`` for ``steps`` steps of size ``lr``) or "nil".
    """

    label: str
    model: torch.nn.Module
    method: str = "adapt"
    steps: int = 0
    lr: float = 0.0
    trainable: Callable[[str], bool] | None = None
    trained_with: str = ""
    loss_reduction: str = "mean"


def evaluate_specs(specs: list[EvalSpec], episodes) -> pd.DataFrame:
    """Accuracy of each spec on the same ``episodes``.

    Returns one row per spec: label, trained_with, method, accuracy (fraction), ci95, n_episodes,
    seconds_per_episode (wall-clock of the evaluation divided by the number of episodes).
    """
    from repana.meta.evaluate import evaluate

    rows = []
    for spec in specs:
        if spec.method not in ("adapt", "nil"):
            raise InputError(f"{spec.label}: method {spec.method!r} is not 'adapt' or 'nil'")
        start = time.perf_counter()
        if spec.method == "nil":
            result = evaluate(spec.model, episodes, method="nil")
        else:
            result = evaluate(spec.model, episodes, method="adapt", steps=spec.steps, lr=spec.lr,
                              trainable=spec.trainable, loss_reduction=spec.loss_reduction)
        seconds = time.perf_counter() - start
        rows.append({"label": spec.label, "trained_with": spec.trained_with, "method": spec.method,
                     "accuracy": float(result.accuracy), "ci95": float(result.ci95),
                     "n_episodes": len(episodes), "seconds_per_episode": seconds / max(len(episodes), 1)})
    return pd.DataFrame.from_records(rows)


def _meta_step_seconds(model, batch, algorithm: str, steps: int, lr: float, repeats: int,
                       loss_reduction: str) -> float:
    """Median seconds of one meta-gradient computation of ``algorithm`` on ``batch``."""
    from repana.meta.algorithms import get_algorithm

    learner = get_algorithm(algorithm, inner_lr=lr, inner_steps=steps)
    times = []
    for _ in range(repeats + 1):  # the first call warms up allocators and is dropped
        start = time.perf_counter()
        learner.meta_gradients(model, batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def _inference_seconds(model, episodes, trainable, steps: int, lr: float, repeats: int) -> float:
    from repana.meta.evaluate import evaluate

    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        evaluate(model, episodes, method="adapt", steps=steps, lr=lr, trainable=trainable)
        times.append((time.perf_counter() - start) / len(episodes))
    return float(np.median(times[1:]))


# Inner steps in training and at test time of the paper's ANIL speed-up (MiniImageNet: 5 and 10):
# the setting in which its 1.7x (training) and 4.1x (inference) were measured.
PAPER_SPEED_STEPS = (5, 10)


def speed_comparison(model: torch.nn.Module, train_batch, test_episodes, *, train_steps: int,
                     test_steps: int, lr: float, repeats: int = 3) -> pd.DataFrame:
    """Seconds per meta-training step and per test episode of MAML and ANIL on the same network.

    ``train_batch``: :class:`repana.data.Episodes` (one meta-batch). Both algorithms run on the same
    ``model`` (its weights do not matter for cost) and batch, alternately, in this process.
    Returns rows: phase ("train" | "inference"), algorithm, seconds, and speedup (MAML seconds /
    ANIL seconds, on the ANIL rows).
    """
    if repeats < 1:
        raise InputError("repeats must be at least 1")
    model.train()
    train = {alg: _meta_step_seconds(model, train_batch, alg, train_steps, lr, repeats, "mean")
             for alg in ("maml", "anil")}
    model.eval()
    infer = {"maml": _inference_seconds(model, test_episodes, all_parameters, test_steps, lr, repeats),
             "anil": _inference_seconds(model, test_episodes, head_only, test_steps, lr, repeats)}
    rows = []
    for phase, seconds in (("train", train), ("inference", infer)):
        for alg in ("maml", "anil"):
            rows.append({"phase": phase, "algorithm": alg, "seconds": seconds[alg],
                         "speedup": seconds["maml"] / seconds[alg] if alg == "anil" else 1.0,
                         "inner_steps": train_steps if phase == "train" else test_steps})
    return pd.DataFrame.from_records(rows)
