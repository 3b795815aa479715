"""Helpers shared by the analyses: confidence intervals, layer checks, trainable-parameter choices,
and the per-episode similarity table that the inner-loop and MAML-vs-ANIL analyses both build.

Conventions: accuracies are fractions in [0, 1]; ``ci95`` is the half-width of a normal-approximation
95% confidence interval over episodes (1.96 * std / sqrt(n), ddof=0 as in the MAML/ANIL code), as in the paper's tables.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from repana.errors import CheckpointError, InputError
from repana.meta.evaluate import confidence_interval95

BODY_LAYERS = ("conv1", "conv2", "conv3", "conv4")
LAYERS = BODY_LAYERS + ("head",)
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


# ----- per-episode similarity: the analyses' conventions on repana.compare's engine -----

NULL_PERMUTATIONS = 3   # row permutations behind each null baseline of the analyses


def episode_rows(acts_a: Sequence[Mapping[str, torch.Tensor]], acts_b: Sequence[Mapping[str, torch.Tensor]],
                 layers: Sequence[str], measures: Sequence[str], *, reduction: str | None = None,
                 min_ratio: float = 5.0, null: bool = True, seed: int = 0) -> pd.DataFrame:
    """:meth:`repana.compare.Comparison.episodes` with the paper analyses' conventions: each layer against its
    namesake; conv maps reduced per measure (``reduction`` None: CCA family -> spatial positions as
    datapoints, others -> flattened maps); CCA-family measures pool episodes below ``min_ratio`` x
    features; a null baseline per row (``null``); degenerate inputs (a dead layer) give NaN with a note;
    activations prepared in float64. Columns: :data:`repana.compare.EPISODE_COLUMNS`.
    """
    from repana.compare import Comparison, reduction_by_measure

    comparison = Comparison(measures=measures, pairs=[(layer, layer) for layer in layers],
                            reduction=reduction or reduction_by_measure, min_ratio=min_ratio,
                            null_permutations=NULL_PERMUTATIONS if null else 0, seed=seed, errors="note",
                            dtype=torch.float64)
    return comparison.episodes(acts_a, acts_b)


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Mean and 95% CI of ``value`` (and of ``null_value`` when present) per group ``by``.

    On rows of :func:`episode_rows` (same-named layers), ``"layer"`` in ``by`` groups by ``layer_a`` and
    ``n_features`` is the larger side's.
    """
    if "layer" in by and "layer" not in frame and "layer_a" in frame:
        frame = frame.rename(columns={"layer_a": "layer"}).assign(
            n_features=frame[["n_features_a", "n_features_b"]].max(axis=1))
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
