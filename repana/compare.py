"""Layer-by-layer comparison of two models (or one model with two parameter sets) as a tidy DataFrame.

Each layer is prepared once (reduced to 2-D, validated, cast to float64, centred, and its SVD / Gram /
covariance cached on first use), then every chosen layer of A is compared with every chosen layer of B
under every measure: the per-pair work is only the cross term.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd
import torch
from torch import nn

from repana.capture import capture_activations
from repana.errors import InputError
from repana.progress import progress
from repana.similarity.conv import REDUCTIONS, reduce_conv
from repana.similarity.registry import get_measure
from repana.similarity.representation import Representation

COLUMNS = ["layer_a", "layer_b", "measure", "value", "n_datapoints", "n_features_a", "n_features_b", "reduction"]


def compare_activations(acts_a: Mapping, acts_b: Mapping | None = None, measures: str | Iterable[str] = ("cka",),
                        reduction: str | None = None, measure_options: Mapping[str, dict] | None = None,
                        show_progress: bool | None = None) -> pd.DataFrame:
    """Every layer of ``acts_a`` against every layer of ``acts_b`` (default: ``acts_a`` itself) under ``measures``.

    Args:
        acts_a, acts_b: ``{layer: activations (n, ...)}`` (numpy or torch) on the same n inputs, same order.
        measures: registered measure names (:func:`repana.similarity.list_measures`).
        reduction: ``"flatten"`` | ``"positions"`` | ``"mean"`` for activations with more than 2 dimensions
            (required when there are any: the choice changes the values, so it is never implied).
        measure_options: per-measure keyword options, e.g. ``{"svcca": {"keep": 20}}``.

    Returns:
        Tidy DataFrame, one row per (layer_a, layer_b, measure), with columns
        ``layer_a, layer_b, measure, value, n_datapoints, n_features_a, n_features_b, reduction``, layers in the
        order given.
    """
    measure_names = [measures] if isinstance(measures, str) else list(measures)
    if not measure_names:
        raise InputError("no measures given; choose from repana.similarity.list_measures()")
    specs = [get_measure(name) for name in measure_names]
    options = dict(measure_options or {})
    unknown = set(options) - set(measure_names)
    if unknown:
        raise InputError(f"measure_options for {sorted(unknown)}, which are not among measures {measure_names}")
    if reduction is not None and reduction not in REDUCTIONS:
        raise InputError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    min_datapoints = max(spec.min_datapoints for spec in specs)
    reps_a = _prepare(acts_a, "A", reduction, min_datapoints)
    reps_b = reps_a if acts_b is None else _prepare(acts_b, "B", reduction, min_datapoints)
    rows = []
    done: dict[tuple[str, str, str], float] = {}
    pairs = [(a, b) for a in reps_a for b in reps_b]
    for layer_a, layer_b in progress(pairs, desc="compare", unit="pair", enabled=show_progress):
        rep_a, rep_b = reps_a[layer_a], reps_b[layer_b]
        if rep_a.n != rep_b.n:
            raise InputError(f"layer {layer_a!r} of A has {rep_a.n} datapoints but layer {layer_b!r} of B has "
                             f"{rep_b.n}; with reduction='positions' both layers need the same spatial size")
        for spec in specs:
            mirrored = (spec.name, layer_b, layer_a)
            if acts_b is None and spec.symmetric and mirrored in done:
                value = done[mirrored]  # a model against itself: the matrix is symmetric
            else:
                try:
                    value = spec(rep_a, rep_b, **options.get(spec.name, {}))
                except InputError as error:
                    raise InputError(f"{spec.name} for {layer_a!r} (A) vs {layer_b!r} (B): {error}") from None
                done[(spec.name, layer_a, layer_b)] = value
            rows.append({"layer_a": layer_a, "layer_b": layer_b, "measure": spec.name, "value": value,
                         "n_datapoints": rep_a.n, "n_features_a": rep_a.d, "n_features_b": rep_b.d,
                         "reduction": reduction})
    return pd.DataFrame(rows, columns=COLUMNS)


def compare_models(model_a: nn.Module, model_b: nn.Module | None, inputs, layers_a, layers_b=None,
                   measures: str | Iterable[str] = ("cka",), reduction: str | None = None,
                   params_a: Mapping | None = None, params_b: Mapping | None = None,
                   measure_options: Mapping[str, dict] | None = None, batch_size: int | None = None,
                   device=None, max_datapoints: int | None = None, seed: int = 0,
                   show_progress: bool | None = None) -> pd.DataFrame:
    """Capture ``layers_a`` of ``model_a`` and ``layers_b`` of ``model_b`` on the same ``inputs`` and compare them.

    ``model_b=None`` means ``model_a`` again (e.g. with ``params_b``, the parameters after adaptation);
    ``layers_b=None`` means ``layers_a``. Activations are stored on the CPU in float32 (the measures work in
    float64). See :func:`repana.capture.capture_activations` and :func:`compare_activations`.
    """
    model_b = model_a if model_b is None else model_b
    layers_b = layers_a if layers_b is None else layers_b
    if not isinstance(inputs, torch.Tensor):
        inputs = list(inputs)  # both models must see the same batches (a DataLoader may reshuffle)
    capture = dict(inputs=inputs, batch_size=batch_size, device=device, max_datapoints=max_datapoints,
                   seed=seed, show_progress=show_progress)
    acts_a = capture_activations(model_a, layers=layers_a, params=params_a, **capture)
    same = model_b is model_a and params_b is params_a and list(_as_list(layers_b)) == list(_as_list(layers_a))
    acts_b = None if same else capture_activations(model_b, layers=layers_b, params=params_b, **capture)
    return compare_activations(acts_a, acts_b, measures=measures, reduction=reduction,
                               measure_options=measure_options, show_progress=show_progress)


def _prepare(acts: Mapping, side: str, reduction: str | None, min_datapoints: int) -> dict[str, Representation]:
    if not acts:
        raise InputError(f"no activations for model {side}")
    reps = {}
    for name, value in acts.items():
        if getattr(value, "ndim", 2) > 2:
            if reduction is None:
                raise InputError(f"layer {name!r} of {side} has shape {tuple(value.shape)}: choose reduction="
                                 f"'flatten' (n, C*H*W), 'positions' (n*H*W, C) or 'mean' (n, C)")
            value = reduce_conv(value, reduction)
        reps[name] = Representation(value, name=f"{side}:{name}", min_datapoints=min_datapoints)
    return reps


def _as_list(layers) -> list:
    return [layers] if isinstance(layers, str) else list(layers)
