"""Representational change in the inner loop (the paper's SVCCA/CKA before-vs-after figure).

For each test episode the network is adapted on the support set, one inner step at a time, and the
activations of every layer on the episode's query images are compared before adaptation and after
each step. Similarity near 1 means the inner loop left the layer's representation unchanged
(feature reuse); clearly lower means rapid learning. Each value has beside it the null baseline: the
same measure on the same arrays with the query datapoints of one side shuffled, i.e. what unrelated
data of this size scores.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from repana.analysis.common import (DEFAULT_MEASURES, LAYERS, check_layers, episode_similarity_rows,
                                    summarize)
from repana.errors import InputError
from repana.progress import progress


def adapt_per_step(model: torch.nn.Module, support_x: torch.Tensor, support_y: torch.Tensor, *,
                   steps: int, lr: float, trainable: Callable[[str], bool]) -> list[dict]:
    """Parameter dicts after 0, 1, ..., ``steps`` inner steps (SGD on the support loss).

    ``support_x``: float32 ``(n_support, C, H, W)``; ``support_y``: int64 ``(n_support,)``. Steps are
    taken one call of :func:`repana.meta.adapt.adapt` at a time, which for plain SGD is the same
    trajectory as one call with ``steps``. Returned tensors are detached.
    """
    from repana.meta.adapt import adapt

    if steps < 1:
        raise InputError(f"steps = {steps}: the inner loop needs at least one step")
    params = {name: p.detach().clone().requires_grad_(True) for name, p in model.named_parameters()}
    trajectory = [{k: v.detach() for k, v in params.items()}]
    with torch.enable_grad():
        for _ in range(steps):
            params = adapt(model, params, support_x, support_y, steps=1, lr=lr, trainable=trainable,
                           first_order=True)
            params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            trajectory.append({k: v.detach() for k, v in params.items()})
    return trajectory


def _query_activations(model, query_x, layers, params) -> dict:
    from repana.capture import capture_activations

    with torch.no_grad():
        return capture_activations(model, query_x, layers=list(layers), params=params)


def inner_loop_similarity(model: torch.nn.Module, episodes, *, steps: int, lr: float,
                          trainable: Callable[[str], bool], measures: Sequence[str] = DEFAULT_MEASURES,
                          layers: Sequence[str] = LAYERS, reduction: str | None = None,
                          min_ratio: float = 5.0, null: bool = True, label: str = "",
                          every_step: bool = True, seed: int = 0) -> pd.DataFrame:
    """Similarity of each layer's query activations before vs after the inner loop, per episode.

    ``episodes``: :class:`repana.data.Episodes` (support and query per task). ``trainable``: which
    parameters the inner loop adapts (MAML: all; ANIL: the head). ``measures``: registered names of
    :mod:`repana.similarity` (default SVCCA and debiased linear CKA). Conv maps are reduced per
    measure (CCA family: spatial positions as datapoints; CKA: flattened), see
    :func:`repana.analysis.common.episode_similarity_rows` for the pooling rule (``min_ratio``).

    Returns a tidy DataFrame, one row per (step, episode or pooled group, layer, measure): columns
    label, step (1..steps; only ``steps`` when ``every_step`` is False), episode, scope, layer,
    measure, value, null_value, n_datapoints, n_features, reduction, note.
    """
    layers = check_layers(model, layers)
    model.eval()
    n_tasks = len(episodes)
    if n_tasks < 1:
        raise InputError("no episodes given")
    before, after = [], {s: [] for s in range(1, steps + 1)}
    for index in progress(range(n_tasks), desc=f"inner-loop similarity {label}".strip(), unit="episode"):
        task = episodes[index]
        trajectory = adapt_per_step(model, task.support_x, task.support_y, steps=steps, lr=lr,
                                    trainable=trainable)
        before.append(_query_activations(model, task.query_x, layers, trajectory[0]))
        for step in (range(1, steps + 1) if every_step else [steps]):
            after[step].append(_query_activations(model, task.query_x, layers, trajectory[step]))
    rows = []
    for step, acts in after.items():
        if not acts:
            continue
        for row in episode_similarity_rows(before, acts, layers, measures, reduction=reduction,
                                           min_ratio=min_ratio, null=null, seed=seed + step):
            rows.append({"label": label, "step": step, **row})
    return pd.DataFrame.from_records(rows)


def summarize_inner_loop(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95% CI and null-baseline mean per (label, step, layer, measure) of
    :func:`inner_loop_similarity` output."""
    return summarize(frame, ["label", "step", "layer", "measure"])
