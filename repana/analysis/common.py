"""Helpers shared by the analyses: confidence intervals, layer checks, trainable-parameter choices,
and the per-episode similarity table that the inner-loop and MAML-vs-ANIL analyses both build.

Conventions: accuracies are fractions in [0, 1]; ``ci95`` is the half-width of a normal-approximation
95% confidence interval over episodes (1.96 * std / sqrt(n), ddof=0 as in the MAML/ANIL code), as in the paper's tables.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from repana.errors import CheckpointError, InputError
from repana.meta.evaluate import confidence_interval95

BODY_LAYERS = ("conv1", "conv2", "conv3", "conv4")
LAYERS = BODY_LAYERS + ("head",)
CCA_FAMILY = ("cca", "cca_r2", "svcca", "pwcca")
DEFAULT_MEASURES = ("svcca", "cka_debiased")


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width (normal approximation, population std: see
    :func:`repana.meta.evaluate.confidence_interval95`) of finite ``values``.

    One value gives a NaN half-width; no finite value gives (NaN, NaN).
    """
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), confidence_interval95(array)


def default_reduction(measure: str) -> str:
    """How conv maps ``(n, C, H, W)`` become 2-D for ``measure``.

    CCA-family measures need many more datapoints than features, so spatial positions become
    datapoints (``n*H*W`` x ``C``); CKA works on Gram matrices and takes the flattened maps
    (``n`` x ``C*H*W``).
    """
    return "positions" if measure in CCA_FAMILY else "flatten"


def check_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[str]:
    """``layers`` as a list, or InputError naming the layers the model lacks and those it has."""
    names = dict(model.named_children())
    missing = [layer for layer in layers if layer not in names]
    if missing:
        raise InputError(f"the model has no layer {', '.join(map(repr, missing))}; its layers are "
                         f"{', '.join(names)}")
    return list(layers)


def check_same_architecture(model_a: torch.nn.Module, model_b: torch.nn.Module,
                            what: str = "the two networks") -> None:
    """CheckpointError when the body parameters of two networks differ in name or shape."""
    shapes_a = {k: tuple(v.shape) for k, v in model_a.named_parameters() if not k.startswith("head")}
    shapes_b = {k: tuple(v.shape) for k, v in model_b.named_parameters() if not k.startswith("head")}
    if shapes_a != shapes_b:
        differ = sorted(k for k in set(shapes_a) | set(shapes_b) if shapes_a.get(k) != shapes_b.get(k))
        detail = ", ".join(f"{k}: {shapes_a.get(k)} vs {shapes_b.get(k)}" for k in differ[:4])
        raise CheckpointError(f"{what} have mismatched architectures ({detail})")


def all_parameters(name: str) -> bool:
    """MAML: every parameter adapts in the inner loop."""
    return True


def head_only(name: str) -> bool:
    """ANIL: only the head adapts in the inner loop."""
    from repana.models import is_head_parameter

    return is_head_parameter(name)


def trainable_for(algorithm: str) -> Callable[[str], bool]:
    """What adapts at test time for a network trained with ``algorithm`` (as recorded in its checkpoint):
    every parameter for MAML-like algorithms, the head for all others."""
    from repana.meta.algorithms import ALIASES, list_algorithms

    name = ALIASES.get(algorithm, algorithm)
    if name not in list_algorithms():
        raise InputError(f"unknown algorithm {algorithm!r}: expected one of {list_algorithms()}")
    return all_parameters if name in ("maml", "fomaml", "reptile") else head_only


def freeze(trainable: Callable[[str], bool], frozen_layers: Iterable[int]) -> Callable[[str], bool]:
    """``trainable`` minus the parameters of conv blocks ``frozen_layers`` (1-based: 1 -> conv1)."""
    prefixes = tuple(f"conv{i}." for i in frozen_layers)

    def predicate(name: str) -> bool:
        return trainable(name) and not name.startswith(prefixes)

    return predicate


def load_model(source) -> tuple[torch.nn.Module, dict]:
    """A model and its metadata from a checkpoint path, a Checkpoint, or a model.

    Returns ``(model in eval mode, {"algorithm": ..., "step": ..., "config": ...})``.
    """
    if isinstance(source, torch.nn.Module):
        return source.eval(), {"algorithm": "unknown", "step": -1, "config": {}}
    from repana.meta.checkpoint import Checkpoint, load_checkpoint

    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    return checkpoint.model(), {"algorithm": checkpoint.algorithm, "step": checkpoint.step,
                                "config": dict(checkpoint.config)}


# ----- per-episode similarity between two lists of activations -----

def _to_2d(activation: torch.Tensor, reduction: str) -> torch.Tensor:
    from repana.similarity import reduce_conv

    if activation.dim() == 4:
        return reduce_conv(activation, mode=reduction)
    if activation.dim() == 2:
        return activation
    return activation.reshape(activation.shape[0], -1)


def _null_similarity(measure: str, x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int) -> float:
    """Mean similarity of ``x`` with the rows of ``y`` shuffled: what unrelated data of this size gets."""
    from repana.similarity import null_baseline

    return null_baseline(measure, x, y, n_permutations=permutations, seed=seed).mean


def _safe_similarity(measure: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, str]:
    from repana.similarity import similarity

    try:
        return float(similarity(measure, x, y)), ""
    except InputError as error:  # e.g. constant activations (dead ReLUs) in a tiny network
        return float("nan"), str(error)[:120]


def episode_similarity_rows(acts_a: Sequence[Mapping[str, torch.Tensor]],
                            acts_b: Sequence[Mapping[str, torch.Tensor]],
                            layers: Sequence[str], measures: Sequence[str], *,
                            reduction: str | None = None, min_ratio: float = 5.0,
                            null: bool = True, null_permutations: int = 3, seed: int = 0) -> list[dict]:
    """Similarity of two representations of the same datapoints, layer by layer, episode by episode.

    ``acts_a[e][layer]`` and ``acts_b[e][layer]``: activations of episode ``e``'s inputs, shape
    ``(n, C, H, W)`` or ``(n, features)``, same ``n`` for a and b. Conv maps are reduced with
    ``reduction`` (default per measure: :func:`default_reduction`). A CCA-family measure is computed
    per episode only when datapoints >= ``min_ratio`` x features; otherwise consecutive episodes are
    pooled into groups large enough (scope ``"pooled"``), and when even all episodes together are too
    few the row holds NaN and says why. ``null_value``: mean of the measure over ``null_permutations``
    row permutations of one side (:func:`repana.similarity.null_baseline`). Returns one dict per (group, layer, measure) with columns
    episode, scope, layer, measure, value, null_value, n_datapoints, n_features, reduction, note.
    """
    from repana.similarity import list_measures

    unknown = [m for m in measures if m not in list_measures()]
    if unknown:
        raise InputError(f"unknown similarity measure(s) {unknown}; available: {', '.join(list_measures())}")
    if len(acts_a) != len(acts_b) or not acts_a:
        raise InputError(f"need the same non-zero number of episodes on both sides, got {len(acts_a)} "
                         f"and {len(acts_b)}")
    rows = []
    n_episodes = len(acts_a)
    for layer in layers:
        for measure in measures:
            mode = reduction or default_reduction(measure)
            xs = [_to_2d(a[layer], mode).double() for a in acts_a]
            ys = [_to_2d(b[layer], mode).double() for b in acts_b]
            n_per, features = xs[0].shape[0], max(xs[0].shape[1], ys[0].shape[1])
            group = 1
            if measure in CCA_FAMILY and n_per < min_ratio * features:
                group = min(n_episodes, math.ceil(min_ratio * features / n_per))
            scope = "episode" if group == 1 else "pooled"
            for start in range(0, n_episodes - group + 1, group):
                x = torch.cat(xs[start:start + group])
                y = torch.cat(ys[start:start + group])
                note = ""
                if measure in CCA_FAMILY and x.shape[0] < min_ratio * features:
                    value, null_value = float("nan"), float("nan")
                    note = (f"skipped: {x.shape[0]} datapoints < {min_ratio} x {features} features even "
                            "with all episodes pooled; use more episodes or reduction='positions'")
                else:
                    value, note = _safe_similarity(measure, x, y)
                    null_value = (_null_similarity(measure, x, y, null_permutations, seed + start)
                                  if null and np.isfinite(value) else float("nan"))
                rows.append({"episode": start if group == 1 else f"{start}-{start + group - 1}",
                             "scope": scope, "layer": layer, "measure": measure, "value": value,
                             "null_value": null_value, "n_datapoints": int(x.shape[0]),
                             "n_features": int(features),
                             "reduction": mode if acts_a[0][layer].dim() == 4 else "none", "note": note})
    return rows


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean and 95% CI of ``value`` (and of ``null_value`` when present) per group ``by``."""
    records = []
    for keys, group in frame.groupby(list(by), sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        mean, ci = mean_ci95(group[value])
        record = dict(zip(by, keys), mean=mean, ci95=ci, n=int(group[value].notna().sum()))
        if "null_value" in group:
            record["null_mean"], record["null_ci95"] = mean_ci95(group["null_value"])
        for column in ("n_datapoints", "n_features", "reduction", "scope"):
            if column in group:
                record[column] = group[column].iloc[0]
        records.append(record)
    return pd.DataFrame.from_records(records)


def inner_loop_settings(meta: Mapping, steps: int | None = None, lr: float | None = None) -> tuple[int, float]:
    """Test-time inner steps and step size (mean-loss convention) of a checkpoint's run config,
    overridden by ``steps`` / ``lr`` when given; a model without a config needs both."""
    config = meta.get("config") or {}
    if steps is None:
        steps = config.get("inner_steps_test")
    if lr is None and config:
        from repana.meta.config import from_dict

        lr = from_dict(config, source="checkpoint config").mean_loss_inner_lr()
    if steps is None or lr is None:
        raise InputError("this network has no training config: give the inner-loop steps and lr")
    return int(steps), float(lr)
