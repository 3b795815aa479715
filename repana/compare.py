"""Layer-by-layer comparison of two models (or one model with two parameter sets) as a tidy DataFrame.

One engine turns activations into similarity tables, for a one-off comparison (:func:`compare_activations`,
:func:`compare_models`) and for the paper's per-episode analyses (:func:`compare_episodes`). Each layer is
prepared once per reduction (reduced to 2-D by its layout, validated, centred in float64, its SVD / Gram /
covariance cached on first use, :class:`~repana.similarity.Representation`), then compared under every
measure: the per-pair work is only the cross term.

Column schema (:data:`COLUMNS`): ``layer_a, layer_b, measure, value, n_datapoints, n_features_a,
n_features_b, reduction`` (``"none"`` when both layers are 2-D), ``degenerate`` (True when the measure is near 1
by construction: a side's centred rank reaches its distinct datapoints - 1, :mod:`repana.similarity.datapoints`;
one :class:`~repana.similarity.RepanaWarning` per frame names the effective rank), plus, where asked, ``episode`` and
``scope`` (:func:`compare_episodes`), ``null_value`` (``null_permutations > 0``) and ``note``
(``errors="note"``).

Layouts (:mod:`repana.similarity.conv`): ``"conv"`` ``(n, C, *spatial)``, ``"sequence"`` ``(n, T, D)``,
``"flat"`` ``(n, features)``. 2-D activations are flat and 4-D and wider are conv maps; a 3-D activation
takes its layout from ``layout=`` or from the capture (module types, :func:`repana.capture.infer_layout`),
otherwise the comparison refuses it: the same shape means opposite things for a 1-D conv and a transformer.

Also the library side of ``repana compare``: :func:`model_from_factory` (an importable factory plus a
state_dict file), :func:`load_inputs`; devices are checked by :func:`repana.devices.check_device`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import math
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from repana.capture import capture_activations
from repana.devices import check_device
from repana.errors import InputError, RepanaError
from repana.progress import progress
from repana.similarity._arrays import warn
from repana.similarity.conv import LAYOUT_REDUCTIONS, check_layout, reduce_activations, reduction_options
from repana.similarity.registry import get_measure
from repana.similarity.representation import Representation
from repana.similarity.stats import null_baseline

COLUMNS = ["layer_a", "layer_b", "measure", "value", "n_datapoints", "n_features_a", "n_features_b", "reduction",
           "degenerate"]
EPISODE_COLUMNS = COLUMNS + ["episode", "scope", "null_value", "note"]
#: Measures that need many more datapoints than features (pooled over episodes under ``min_ratio``).
CCA_FAMILY = ("cca", "cca_r2", "svcca", "pwcca")
PAIRS = ("all", "same")
ERRORS = ("raise", "note")

Reduction = str | Mapping[str, str] | Callable[[str, str], str] | None


def reduction_by_measure(measure: str, layout: str) -> str:
    """The paper's reduction rule, for ``reduction=``: CCA-family measures need many more datapoints than
    features, so positions (conv) or tokens (sequence) become datapoints; CKA and Procrustes take the
    flattened maps (``n`` x ``C*H*W``, or ``n`` x ``T*D``)."""
    if measure in CCA_FAMILY:
        return "tokens" if layout == "sequence" else "positions"
    return "flatten"


def compare_activations(acts_a: Mapping, acts_b: Mapping | None = None, measures: str | Iterable[str] = ("cka",),
                        reduction: Reduction = None, measure_options: Mapping[str, dict] | None = None,
                        show_progress: bool | None = None, *, layout=None, pairs="all",
                        null_permutations: int = 0, seed: int = 0, errors: str = "raise") -> pd.DataFrame:
    """Every layer of ``acts_a`` against every layer of ``acts_b`` (default: ``acts_a`` itself) under ``measures``.

    Args:
        acts_a, acts_b: ``{layer: activations (n, ...)}`` (numpy or torch) on the same n inputs, same order.
            The :class:`repana.capture.Activations` of a capture carry each layer's layout.
        measures: registered measure names (:func:`repana.similarity.list_measures`).
        reduction: how activations with more than 2 dimensions become 2-D (required when there are any: the
            choice changes the values, so it is never implied): conv ``"flatten"`` | ``"positions"`` |
            ``"mean"``; sequence ``"tokens"`` | ``"mean"`` | ``"first"`` | ``"flatten"``; or per measure, a
            mapping ``{"svcca": "positions", "cka": "flatten"}`` or a callable ``(measure, layout) -> str``
            such as :func:`reduction_by_measure`.
        layout: ``"conv"`` | ``"sequence"`` | ``"flat"`` for all layers, or ``{layer or glob: layout}``
            (overrides the capture's layouts); needed for 3-D activations whose layout is not known.
        measure_options: per-measure keyword options, e.g. ``{"svcca": {"keep": 20}}``.
        pairs: ``"all"`` (every layer of A with every layer of B), ``"same"`` (same-named layers only) or a
            list of ``(layer_a, layer_b)``.
        null_permutations: when > 0, a ``null_value`` column: the mean of the measure over this many row
            permutations of B (:func:`repana.similarity.null_baseline`), seeded by ``seed``.
        errors: ``"raise"``, or ``"note"``: an input a measure refuses (constant activations, too few
            datapoints) gives a NaN value and the reason in a ``note`` column.

    Returns:
        Tidy DataFrame, one row per (layer_a, layer_b, measure), with the columns :data:`COLUMNS` (+ ``null_value``,
        ``note`` when asked), layers in the order given.
    """
    frame = compare_episodes([acts_a], None if acts_b is None else [acts_b], layers=list(acts_a),
                             layers_b=None if acts_b is None else list(acts_b), measures=measures, pairs=pairs,
                             reduction=reduction, layout=layout, measure_options=measure_options,
                             null_permutations=null_permutations, seed=seed, errors=errors,
                             show_progress=show_progress)
    columns = COLUMNS + (["null_value"] if null_permutations else []) + (["note"] if errors == "note" else [])
    return frame[columns]


def compare_episodes(acts_a: Sequence[Mapping], acts_b: Sequence[Mapping] | None = None,
                     layers: Sequence[str] | None = None, measures: str | Iterable[str] = ("cka",), *,
                     layers_b: Sequence[str] | None = None, pairs="same", reduction: Reduction = None,
                     layout=None, measure_options: Mapping[str, dict] | None = None,
                     min_ratio: float | None = None, null_permutations: int = 0, seed: int = 0,
                     errors: str = "raise", dtype: torch.dtype | None = None,
                     show_progress: bool | None = None) -> pd.DataFrame:
    """Similarity of two representations of the same datapoints, layer by layer, episode by episode.

    ``acts_a[e][layer]`` and ``acts_b[e][layer]`` (default: ``acts_a``) hold episode ``e``'s activations
    ``(n_e, ...)``, same ``n_e`` on both sides. Each (episode or group, layer, reduction) is prepared once and
    shared by the measures and pairs that use it.

    Args:
        layers, layers_b: layer names of A and B (default: all layers of the first episode; B: ``layers``).
        pairs: ``"same"`` (default: each layer with its namesake), ``"all"`` or a list of ``(layer_a, layer_b)``.
        reduction, layout, measure_options, errors: as in :func:`compare_activations`
            (``reduction=reduction_by_measure`` is the paper's rule).
        min_ratio: when given, a CCA-family measure (:data:`CCA_FAMILY`) is computed per episode only when
            datapoints >= ``min_ratio`` x features (the larger side's); otherwise consecutive episodes are
            pooled into groups of ``ceil(min_ratio * features / n_per_episode)`` (scope ``"pooled"``,
            ``episode`` ``"first-last"``; a remainder that does not fill a group is left out), and when even all
            episodes together are too few the row holds NaN with a note.
        null_permutations: when > 0, ``null_value`` = mean of the measure over this many row permutations of
            B (:func:`repana.similarity.null_baseline`, seed ``seed + first episode of the group``); NaN when
            the value is not finite.
        dtype: cast the reduced activations to this dtype before preparing them (None: keep). The rank
            tolerance of CCA-family measures comes from the prepared dtype (the paper analyses,
            :func:`repana.analysis.common.episode_rows`, use ``torch.float64``).

    Returns:
        DataFrame with the columns :data:`EPISODE_COLUMNS`: ``episode`` (int, or ``"a-b"`` for a pooled group),
        ``scope`` (``"episode"`` | ``"pooled"``), ``null_value`` (NaN without permutations), ``note``
        (``""`` unless a value is NaN). Rows: pair, then measure, then episode.
    """
    measure_names = [measures] if isinstance(measures, str) else list(measures)
    if not measure_names:
        raise InputError("no measures given; choose from repana.similarity.list_measures()")
    specs = [get_measure(name) for name in measure_names]
    options = dict(measure_options or {})
    unknown = set(options) - set(measure_names)
    if unknown:
        raise InputError(f"measure_options for {sorted(unknown)}, which are not among measures {measure_names}")
    if errors not in ERRORS:
        raise InputError(f"errors={errors!r}: choose 'raise' or 'note'")
    if min_ratio is not None and not min_ratio > 0:
        raise InputError(f"min_ratio must be positive, got {min_ratio}")
    if not isinstance(null_permutations, (int, np.integer)) or null_permutations < 0:
        raise InputError(f"null_permutations must be a non-negative integer, got {null_permutations!r}")
    _check_reduction(reduction, measure_names)
    if isinstance(layout, str):
        check_layout(layout)
    episodes_a = list(acts_a)
    episodes_b = None if acts_b is None else list(acts_b)
    if not episodes_a or (episodes_b is not None and len(episodes_b) != len(episodes_a)):
        raise InputError(f"need the same non-zero number of episodes on both sides, got {len(episodes_a)} and "
                         f"{len(episodes_a) if episodes_b is None else len(episodes_b)}")
    for side, episodes in (("A", episodes_a), ("B", episodes_b or [])):
        if any(not acts for acts in episodes):
            raise InputError(f"no activations for model {side}")
    layer_pairs = _pairs(episodes_a[0], (episodes_b or episodes_a)[0], layers, layers_b, pairs)
    sides = {"A": _Side("A", episodes_a, layout, dtype)}
    sides["B"] = sides["A"] if episodes_b is None else _Side("B", episodes_b, layout, dtype)
    self_comparison = episodes_b is None
    n_episodes = len(episodes_a)
    rows = []
    degenerate_reasons: list[str] = []
    done: dict[tuple, float] = {}
    for layer_a, layer_b in progress(layer_pairs, desc="compare", unit="pair", enabled=show_progress):
        for spec in specs:
            measure_options_ = options.get(spec.name, {})
            # a layout or reduction choice is an error whatever `errors` says: never a NaN row
            red_a = sides["A"].reduction_for(layer_a, reduction, spec.name)
            red_b = sides["B"].reduction_for(layer_b, reduction, spec.name)
            xs = [sides["A"].reduced(layer_a, red_a, e) for e in range(n_episodes)]
            ys = [sides["B"].reduced(layer_b, red_b, e) for e in range(n_episodes)]
            label = _reduction_label(red_a, red_b)
            n_per, features = xs[0].shape[0], max(xs[0].shape[1], ys[0].shape[1])
            group = 1
            if min_ratio is not None and spec.name in CCA_FAMILY and n_per < min_ratio * features:
                group = min(n_episodes, math.ceil(min_ratio * features / n_per))
            scope = "episode" if group == 1 else "pooled"
            for start in range(0, n_episodes - group + 1, group):
                n_rows = sum(x.shape[0] for x in xs[start:start + group])
                value, null_value, note, degenerate = float("nan"), float("nan"), "", False
                rep_a = rep_b = None
                if min_ratio is not None and spec.name in CCA_FAMILY and n_rows < min_ratio * features:
                    note = (f"skipped: {n_rows} datapoints < {min_ratio} x {features} features even with all "
                            "episodes pooled; use more episodes or reduction='positions'")
                else:
                    key = (spec.name, layer_a, layer_b, start)
                    mirrored = (spec.name, layer_b, layer_a, start)
                    try:
                        rep_a = sides["A"].prepared(layer_a, red_a, start, group, spec.min_datapoints)
                        rep_b = sides["B"].prepared(layer_b, red_b, start, group, spec.min_datapoints)
                        if rep_a.n != rep_b.n:
                            raise InputError(f"layer {layer_a!r} of A has {rep_a.n} datapoints but layer "
                                             f"{layer_b!r} of B has {rep_b.n}; with reduction 'positions' or "
                                             f"'tokens' both layers need the same spatial size / tokens")
                        if self_comparison and spec.symmetric and mirrored in done:
                            value = done[mirrored]  # a model against itself: the matrix is symmetric
                        else:
                            value = spec(rep_a, rep_b, **measure_options_)
                            done[key] = value
                        reason = spec.degenerate_reason(rep_a, rep_b) if np.isfinite(value) else None
                        if reason is not None:
                            degenerate = True
                            degenerate_reasons.append(f"{spec.name} for {layer_a!r} (A) vs {layer_b!r} (B): {reason}")
                        if null_permutations and np.isfinite(value):
                            null_value = null_baseline(spec.name, rep_a, rep_b, n_permutations=null_permutations,
                                                       seed=seed + start, **measure_options_).mean
                    except InputError as error:
                        message = f"{spec.name} for {layer_a!r} (A) vs {layer_b!r} (B): {error}"
                        if errors == "raise":
                            raise InputError(message) from None
                        value, null_value, note = float("nan"), float("nan"), str(error)
                rows.append({"layer_a": layer_a, "layer_b": layer_b, "measure": spec.name, "value": value,
                             "n_datapoints": int(n_rows), "n_features_a": int(xs[0].shape[1]),
                             "n_features_b": int(ys[0].shape[1]), "reduction": label, "degenerate": degenerate,
                             "episode": start if group == 1 else f"{start}-{start + group - 1}", "scope": scope,
                             "null_value": null_value, "note": note})
    if degenerate_reasons:
        warn(f"{len(degenerate_reasons)} of {len(rows)} similarity values are degenerate (column 'degenerate'), "
             f"e.g. {degenerate_reasons[0]}")
    return pd.DataFrame(rows, columns=EPISODE_COLUMNS)


class _Side:
    """One side's episodes, with each layer's layout, reduced 2-D tensors and Representations cached."""

    def __init__(self, side: str, episodes: list[Mapping], layout, dtype):
        self.side, self.episodes, self.layout, self.dtype = side, episodes, layout, dtype
        self._layouts: dict[str, str] = {}
        self._reduced: dict[tuple, torch.Tensor] = {}
        self._prepared: dict[tuple, Representation] = {}

    def value(self, layer: str, episode: int):
        acts = self.episodes[episode]
        if layer not in acts:
            raise InputError(f"episode {episode} of {self.side} has no layer {layer!r}; it has {', '.join(acts)}")
        return acts[layer]

    def layout_of(self, layer: str) -> str:
        if layer in self._layouts:
            return self._layouts[layer]
        value = self.value(layer, 0)
        shape = tuple(np.shape(value))
        named = _option_for(self.layout, layer)
        captured = getattr(self.episodes[0], "layouts", {}).get(layer)
        if len(shape) <= 2:
            layout = "flat"
        elif named is not None:
            layout = check_layout(named)
        elif captured is not None and captured != "unknown":
            layout = captured
        elif len(shape) >= 4 and captured is None:
            layout = "conv"
        else:
            what = ("3-D activations are conv maps (n, C, L) or token sequences (n, T, D)" if len(shape) == 3 else
                    "its module inside a transformer does not say what the dimensions are (attention maps are "
                    "(n, heads, T, T))")
            raise InputError(f"layer {layer!r} of {self.side} has shape {shape}: {what}; name the layout with "
                             f"layout='conv' or layout='sequence' (or layout={{{layer!r}: ...}})")
        self._layouts[layer] = layout
        return layout

    def reduction_for(self, layer: str, reduction: Reduction, measure: str) -> str:
        layout = self.layout_of(layer)
        if layout == "flat" and len(np.shape(self.value(layer, 0))) <= 2:
            return "none"
        if callable(reduction) and not isinstance(reduction, Mapping):
            chosen = reduction(measure, layout)
        elif isinstance(reduction, Mapping):
            chosen = reduction[measure]
        else:
            chosen = reduction
        shape = tuple(np.shape(self.value(layer, 0)))
        if chosen is None:
            raise InputError(f"layer {layer!r} of {self.side} has shape {shape} ({layout} layout): choose "
                             f"reduction={reduction_options(layout)}")
        if chosen not in LAYOUT_REDUCTIONS[layout]:
            raise InputError(f"reduction {chosen!r} does not apply to layer {layer!r} of {self.side}, shape {shape} "
                             f"({layout} layout); choose {reduction_options(layout)}")
        return chosen

    def reduced(self, layer: str, reduction: str, episode: int) -> torch.Tensor:
        key = (layer, reduction, episode)
        if key not in self._reduced:
            value = _as_tensor(self.value(layer, episode), f"layer {layer!r} of {self.side}")
            if reduction != "none":
                value = reduce_activations(value, self.layout_of(layer), reduction)
            if self.dtype is not None:
                value = value.to(self.dtype)
            self._reduced[key] = value
        return self._reduced[key]

    def prepared(self, layer: str, reduction: str, start: int, group: int, min_datapoints: int) -> Representation:
        key = (layer, reduction, start, group)
        if key not in self._prepared:
            parts = [self._reduced[(layer, reduction, e)] for e in range(start, start + group)]
            data = parts[0] if group == 1 else torch.cat(parts)
            self._prepared[key] = Representation(data, name=f"{self.side}:{layer}")
        rep = self._prepared[key]
        if rep.n < min_datapoints:
            raise InputError(f"{rep.name} has {rep.n} datapoints; at least {min_datapoints} are needed")
        return rep


def _as_tensor(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError("object dtype")
        return torch.from_numpy(array)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what}: expected a numpy array or torch tensor of numbers, got {type(value).__name__} "
                         f"({error})") from None


def _option_for(option, layer: str):
    if option is None or isinstance(option, str):
        return option
    if layer in option:
        return option[layer]
    for pattern, value in option.items():
        if fnmatch.fnmatchcase(layer, pattern):
            return value
    return None


def _reduction_label(red_a: str, red_b: str) -> str:
    if red_a == "none" or red_a == red_b:
        return red_b
    return red_a if red_b == "none" else f"{red_a}/{red_b}"


def _check_reduction(reduction, measure_names: list[str]) -> None:
    if isinstance(reduction, Mapping):
        missing = [name for name in measure_names if name not in reduction]
        if missing:
            raise InputError(f"reduction maps measures {sorted(reduction)} but not {missing}; give one per measure")
    elif reduction is not None and not callable(reduction):
        known = sorted({name for names in LAYOUT_REDUCTIONS.values() for name in names} - {"none"})
        if reduction not in known:
            raise InputError(f"unknown reduction {reduction!r}; choose one of {known}, a mapping by measure or a "
                             f"callable (measure, layout) -> reduction")


def _pairs(first_a: Mapping, first_b: Mapping, layers, layers_b, pairs) -> list[tuple[str, str]]:
    names_a = list(first_a) if layers is None else list(layers)
    names_b = (list(first_b) if layers is None else names_a) if layers_b is None else list(layers_b)
    if not isinstance(pairs, str):
        chosen = [tuple(pair) for pair in pairs]
        if not chosen or any(len(pair) != 2 for pair in chosen):
            raise InputError("pairs must be 'all', 'same' or a non-empty list of (layer_a, layer_b)")
        return chosen
    if pairs == "all":
        return [(a, b) for a in names_a for b in names_b]
    if pairs == "same":
        missing = [name for name in names_a if name not in names_b]
        if missing:
            raise InputError(f"pairs='same': layers {missing} of A have no namesake in B ({', '.join(names_b)})")
        return [(name, name) for name in names_a]
    raise InputError(f"pairs={pairs!r}: choose 'all', 'same' or a list of (layer_a, layer_b)")


def compare_models(model_a: nn.Module, model_b: nn.Module | None, inputs, layers_a=None, layers_b=None,
                   measures: str | Iterable[str] = ("cka",), reduction: Reduction = None,
                   params_a: Mapping | None = None, params_b: Mapping | None = None,
                   measure_options: Mapping[str, dict] | None = None, batch_size: int | None = None,
                   device=None, max_datapoints: int | None = None, seed: int = 0,
                   show_progress: bool | None = None, *, layout=None, output=None, outputs_a=None,
                   outputs_b=None, forward_kwargs: Mapping | None = None, pairs="all",
                   null_permutations: int = 0, errors: str = "raise") -> pd.DataFrame:
    """Capture ``layers_a`` of ``model_a`` and ``layers_b`` of ``model_b`` on the same ``inputs`` and compare them.

    ``model_b=None`` means ``model_a`` again (e.g. with ``params_b``, the parameters after adaptation);
    ``layers_b=None`` means ``layers_a`` (and ``outputs_b=None``, ``outputs_a``). ``inputs``: a tensor, a dict of
    tensors passed as keyword arguments (``input_ids``, ``attention_mask``), or an iterable of batches.
    ``output``, ``outputs_a/_b``, ``forward_kwargs``: see :func:`repana.capture.capture_activations`; layouts
    come from the module types unless ``layout`` names them. Activations are stored on the CPU in float32 (the
    measures work in float64). See :func:`compare_activations` for the other arguments.

    The models run in the mode they are in (train mode: batch norm normalises with the batch's statistics) and
    are left as they were: the buffers a forward pass updates (batch-norm running statistics and counts, in
    the models and in ``params_a`` / ``params_b``) are restored afterwards, bit for bit, and so is every
    module's train/eval flag. Call ``model.eval()`` first to compare with the running statistics.
    ``device`` must exist here (:func:`repana.devices.check_device`; InputError otherwise).
    """
    for side, model in (("model_a", model_a), ("model_b", model_b)):
        if model is not None and not isinstance(model, nn.Module):
            raise InputError(f"{side} is of type {type(model).__name__}, not a torch.nn.Module; build the model first "
                             "(repana.compare.model_from_factory builds one from 'package.module:function')")
    if model_a is None:
        raise InputError("model_a is None; give a torch.nn.Module")
    if device is not None:
        device = check_device(device)
    model_b = model_a if model_b is None else model_b
    layers_b = layers_a if layers_b is None else layers_b
    outputs_b = outputs_a if outputs_b is None else outputs_b
    if not isinstance(inputs, (torch.Tensor, Mapping)):
        inputs = list(inputs)  # both models must see the same batches (a DataLoader may reshuffle)
    capture = dict(inputs=inputs, batch_size=batch_size, device=device, max_datapoints=max_datapoints,
                   seed=seed, show_progress=show_progress, output=output, layout=layout,
                   forward_kwargs=forward_kwargs)
    with _left_unchanged([model_a, model_b], [params_a, params_b]):
        acts_a = capture_activations(model_a, layers=layers_a, params=params_a, outputs=outputs_a, **capture)
        same = (model_b is model_a and params_b is params_a and _as_list(layers_b) == _as_list(layers_a)
                and _as_list(outputs_b) == _as_list(outputs_a))
        acts_b = None if same else capture_activations(model_b, layers=layers_b, params=params_b,
                                                       outputs=outputs_b, **capture)
    return compare_activations(acts_a, acts_b, measures=measures, reduction=reduction, layout=layout,
                               measure_options=measure_options, show_progress=show_progress, pairs=pairs,
                               null_permutations=null_permutations, seed=seed, errors=errors)


@contextlib.contextmanager
def _left_unchanged(models: Sequence[nn.Module], params: Sequence[Mapping | None]):
    """Restore, on exit, every buffer of ``models`` and every tensor of ``params`` named like a buffer (what a
    train-mode forward updates in place: batch-norm running statistics) and each module's train/eval flag."""
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    modes: dict[int, tuple[nn.Module, bool]] = {}
    for model, given in zip(models, params):
        buffer_names = set()
        for name, buffer in model.named_buffers():
            saved.setdefault(id(buffer), (buffer, buffer.detach().clone()))
            buffer_names.add(name)
        for name, tensor in (given or {}).items():
            if name in buffer_names and isinstance(tensor, torch.Tensor):
                saved.setdefault(id(tensor), (tensor, tensor.detach().clone()))
        for module in model.modules():
            modes.setdefault(id(module), (module, module.training))
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, copy in saved.values():
                tensor.copy_(copy)
        for module, training in modes.values():
            module.training = training


def _as_list(layers) -> list:
    if layers is None:
        return []
    return [layers] if isinstance(layers, (str, int)) else list(layers)


# ----- loading models and inputs from files (the library side of `repana compare`) -----

FACTORY_HINT = "a factory is given as 'package.module:function' (importable from PYTHONPATH or the current folder)"


def import_factory(spec: str):
    """``'package.module:function'`` -> the callable."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(f"bad factory {spec!r}: {FACTORY_HINT}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current folder are importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"cannot import {module_name!r} for factory {spec!r} ({error}); {FACTORY_HINT}") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"module {module_name!r} has no attribute {attribute!r}; {FACTORY_HINT}")
        target = getattr(target, part)
    if not callable(target):
        raise InputError(f"{spec!r} is not callable")
    return target


def torch_load(path: str | Path, unsafe_pickle: bool = False, what: str = "weights"):
    """``torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)`` with one-line errors
    (:func:`repana.data.safe_pickle.torch_load`, raising InputError): only a ``torch.save`` file whose
    pickled objects ``weights_only`` loading refuses suggests ``--unsafe-pickle`` (a pickle can run code:
    only for files you trust); plain pickles, empty, truncated and random files are named as such."""
    from repana.data.safe_pickle import torch_load as load

    with warnings.catch_warnings():  # a plain pickle's protocol: the error says what to do
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return load(path, unsafe_pickle=unsafe_pickle, what=f"{what} file", error_class=InputError)


def model_from_factory(factory: str | Callable, weights: str | Path | None = None,
                       factory_kwargs: Mapping | None = None, *, unsafe_pickle: bool = False,
                       device: str | torch.device = "cpu") -> nn.Module:
    """A model from a factory (``'package.module:function'`` or a callable) called with ``factory_kwargs``,
    with the state_dict in ``weights`` loaded (``weights_only`` unless ``unsafe_pickle``; a whole pickled
    module or a ``{"state_dict": ...}`` dict also work), moved to ``device``."""
    spec = factory if isinstance(factory, str) else getattr(factory, "__name__", repr(factory))
    factory = import_factory(factory) if isinstance(factory, str) else factory
    kwargs = dict(factory_kwargs or {})
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise InputError(f"calling factory {spec!r} with {kwargs} failed: {error}") from None
    except Exception as error:  # the user's code failed: one line with its own message
        raise InputError(f"factory {spec!r} failed when called with {kwargs}: {type(error).__name__}: "
                         f"{' '.join(str(error).split())}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = torch_load(Path(weights), unsafe_pickle, "weights")
        if isinstance(state, nn.Module):
            state = state.state_dict()
        if isinstance(state, dict) and state.get("format") == "repana-rl-checkpoint":
            raise InputError(f"weights {str(weights)!r} are an RL checkpoint (a meta-trained policy), not the weights "
                             "of a model built by a factory: compare a policy before vs after adaptation with "
                             "`repana analyze rl_policy_similarity --checkpoint CKPT --out DIR`")
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise InputError(f"weights {str(weights)!r} hold a {type(state).__name__}, not a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = " ".join(str(error).split())[:300]
            raise InputError(f"weights {str(weights)!r} do not fit {spec!r}: {first}") from None
    return model.to(check_device(device))


def load_inputs(path: str | Path, key: str | Sequence[str] | None = None,
                unsafe_pickle: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Inputs ``(n, ...)`` from ``.npy`` / ``.npz`` (``key`` or its only array) / ``.pt`` (tensor or dict + ``key``).

    Several keys give a dict ``{key: tensor}`` that the model receives as keyword arguments (e.g.
    ``input_ids attention_mask``). Dtypes are kept: integer token ids stay integers (int64 for embeddings),
    floats stay floats; object arrays and non-numeric dtypes are refused.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"inputs file {str(path)!r} " + ("is a folder, not a file" if path.is_dir()
                                                          else "does not exist"))
    keys = [key] if isinstance(key, str) else (list(key) if key else [])
    if suffix in NUMPY_MAGIC:
        _check_numpy_file(path, suffix)
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                data = _pick({name: archive[name] for name in archive.files}, keys, path)
        elif suffix in (".pt", ".pth"):
            data = torch_load(path, unsafe_pickle, "inputs")
            if isinstance(data, dict):
                data = _pick(data, keys, path)
        else:
            raise InputError(f"inputs {str(path)!r}: expected a .npy, .npz or .pt file")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as error:
        if isinstance(error, RepanaError):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "allow_pickle" in reason or "Object arrays" in reason:
            reason = "it holds Python objects (an object-dtype array), not numbers; save a numeric array"
        else:
            reason = f"the file is truncated or corrupt ({type(error).__name__}: {reason})"
        raise InputError(f"cannot read inputs {str(path)!r}: {reason}") from None
    if isinstance(data, dict):
        return {name: _input_tensor(value, path, name) for name, value in data.items()}
    return _input_tensor(data, path, None)


#: The first bytes of the numpy formats: a .npy header (numpy.lib.format) and a .npz zip archive.
NUMPY_MAGIC = {".npy": (b"\x93NUMPY", "a .npy file written by numpy.save"),
               ".npz": (b"PK\x03\x04", "a .npz archive (a zip file written by numpy.savez)")}


def _check_numpy_file(path: Path, suffix: str) -> None:
    """InputError naming what is wrong when ``path`` is empty or does not start like its format."""
    magic, what = NUMPY_MAGIC[suffix]
    with open(path, "rb") as handle:
        head = handle.read(len(magic))
    if not head:
        raise InputError(f"cannot read inputs {str(path)!r}: the file is empty (0 bytes), not {what}")
    if head != magic:
        raise InputError(f"cannot read inputs {str(path)!r}: it is not {what} (its first bytes are {head!r}); "
                         f"the file is corrupt or of another format")


def _input_tensor(data, path: Path, name: str | None) -> torch.Tensor:
    where = f"inputs {str(path)!r}" + (f" [{name!r}]" if name else "")
    if isinstance(data, torch.Tensor):
        tensor = data
    else:
        array = np.asarray(data)
        if array.dtype == object or array.dtype.kind not in "biuf":
            raise InputError(f"{where} have dtype {array.dtype}: need numbers (float images or integer token ids)")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool:
        tensor = tensor.long()  # integers stay integers (token ids), as int64: what nn.Embedding takes
    if tensor.ndim < 1 or tensor.shape[0] < 2:
        raise InputError(f"{where} have shape {tuple(tensor.shape)}; need (n_datapoints >= 2, ...)")
    return tensor


def _pick(arrays: dict, keys: list[str], path: Path):
    if keys:
        missing = [key for key in keys if key not in arrays]
        if missing:
            raise InputError(f"{str(path)!r} has no {', '.join(map(repr, missing))}; it holds {sorted(arrays)}")
        return arrays[keys[0]] if len(keys) == 1 else {key: arrays[key] for key in keys}
    if len(arrays) != 1:
        raise InputError(f"{str(path)!r} holds {sorted(arrays)}: choose one with --inputs-key (several keys: "
                         f"passed to the model as keyword arguments)")
    return next(iter(arrays.values()))
