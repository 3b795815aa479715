"""Layer-by-layer comparison of two models (or one model with two parameter sets) as a tidy DataFrame.

One engine turns activations into similarity tables. :class:`Comparison` holds the settings (measures,
reduction, pairs, null baselines, ...), validated once; its methods take the data: two dicts of activations
(:meth:`Comparison.activations`), two lists of them for the paper's per-episode analyses
(:meth:`Comparison.episodes`), or two models and their inputs (:meth:`Comparison.models`, captured with the
settings of a :class:`repana.capture.Capture`). Each layer is prepared once per reduction (reduced to 2-D by
its layout, validated, centred in float64, its SVD / Gram / covariance cached on first use,
:class:`~repana.similarity.Representation`), then compared under every measure: the per-pair work is only the
cross term.

Column schema (:data:`COLUMNS`): ``layer_a, layer_b, measure, value, n_datapoints, n_features_a,
n_features_b, reduction`` (``"none"`` when both layers are 2-D), ``degenerate`` (True when the measure is near 1
by construction: a side's centred rank reaches its distinct datapoints - 1, :mod:`repana.similarity.datapoints`;
one :class:`~repana.similarity.RepanaWarning` per frame names the effective rank), plus, where asked, ``episode`` and
``scope`` (:meth:`Comparison.episodes`), ``null_value`` (``null_permutations > 0``) and ``note``
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
import importlib
import math
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from repana.capture import Capture, option_for_layer
from repana.devices import check_device
from repana.errors import InputError, RepanaError
from repana.progress import progress
from repana.similarity._arrays import warn
from repana.similarity.conv import (LAYOUT_REDUCTIONS, check_layout, check_layout_option, reduce_activations,
                                    reduction_options)
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


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Settings of a layer-by-layer comparison; its methods compare the data they are given.

    ``Comparison(measures=["cka", "svcca"], reduction="flatten")`` then :meth:`activations` (two dicts of
    activations), :meth:`episodes` (two lists of them, one per episode) or :meth:`models` (two models on the
    same inputs, captured by a :class:`repana.capture.Capture`). The settings are validated here, once
    (InputError naming the setting); what depends on the activations is checked by the methods.

    Args:
        measures: registered measure names (:func:`repana.similarity.list_measures`).
        reduction: how activations with more than 2 dimensions become 2-D (required when there are any: the
            choice changes the values, so it is never implied): conv ``"flatten"`` | ``"positions"`` |
            ``"mean"``; sequence ``"tokens"`` | ``"mean"`` | ``"first"`` | ``"flatten"``; or per measure, a
            mapping ``{"svcca": "positions", "cka": "flatten"}`` or a callable ``(measure, layout) -> str``
            such as :func:`reduction_by_measure` (the paper's rule).
        layout: ``"conv"`` | ``"sequence"`` | ``"flat"`` for all layers, or ``{layer or glob: layout}``
            (overrides the capture's layouts); needed for 3-D activations whose layout is not known.
        measure_options: per-measure keyword options, e.g. ``{"svcca": {"keep": 20}}``.
        pairs: ``"all"`` (every layer of A with every layer of B), ``"same"`` (each layer of A with its
            namesake in B) or a list of ``(layer_a, layer_b)``.
        min_ratio: when given, a CCA-family measure (:data:`CCA_FAMILY`) is computed per episode only when
            datapoints >= ``min_ratio`` x features (the larger side's); otherwise consecutive episodes are
            pooled into groups of ``ceil(min_ratio * features / n_per_episode)`` (scope ``"pooled"``,
            ``episode`` ``"first-last"``; a remainder that does not fill a group is left out), and when even all
            episodes together are too few the row holds NaN with a note.
        null_permutations: when > 0, ``null_value`` = mean of the measure over this many row permutations of
            B (:func:`repana.similarity.null_baseline`, seed ``seed + first episode of the group``); NaN when
            the value is not finite.
        seed: seed of the null baseline's permutations.
        errors: ``"raise"``, or ``"note"``: an input a measure refuses (constant activations, too few
            datapoints) gives a NaN value and the reason in a ``note`` column.
        dtype: cast the reduced activations to this dtype before preparing them (None: keep). The rank
            tolerance of CCA-family measures comes from the prepared dtype (the paper analyses,
            :func:`repana.analysis.common.episode_rows`, use ``torch.float64``).
        show_progress: a progress bar over the layer pairs (None: when stderr is a terminal).
    """

    measures: tuple[str, ...] = ("cka",)
    reduction: Reduction = None
    layout: str | Mapping[str, str] | None = None
    measure_options: Mapping[str, dict] | None = None
    pairs: str | tuple[tuple[str, str], ...] = "all"
    min_ratio: float | None = None
    null_permutations: int = 0
    seed: int = 0
    errors: str = "raise"
    dtype: torch.dtype | None = None
    show_progress: bool | None = None

    def __post_init__(self):
        measures = (self.measures,) if isinstance(self.measures, str) else tuple(self.measures)
        if not measures:
            raise InputError("no measures given; choose from repana.similarity.list_measures()")
        for name in measures:
            get_measure(name)
        options = dict(self.measure_options or {})
        unknown = set(options) - set(measures)
        if unknown:
            raise InputError(f"measure_options for {sorted(unknown)}, which are not among measures {list(measures)}")
        if self.errors not in ERRORS:
            raise InputError(f"errors={self.errors!r}: choose 'raise' or 'note'")
        if self.min_ratio is not None and not self.min_ratio > 0:
            raise InputError(f"min_ratio must be positive, got {self.min_ratio}")
        if not isinstance(self.null_permutations, (int, np.integer)) or self.null_permutations < 0:
            raise InputError(f"null_permutations must be a non-negative integer, got {self.null_permutations!r}")
        _check_reduction(self.reduction, measures)
        object.__setattr__(self, "measures", measures)
        object.__setattr__(self, "measure_options", options or None)
        object.__setattr__(self, "layout", check_layout_option(self.layout))
        object.__setattr__(self, "pairs", _check_pairs(self.pairs))

    @property
    def columns(self) -> list[str]:
        """The columns of :meth:`activations` and :meth:`models`: :data:`COLUMNS`, + ``null_value`` with
        ``null_permutations``, + ``note`` with ``errors="note"``."""
        return (COLUMNS + (["null_value"] if self.null_permutations else [])
                + (["note"] if self.errors == "note" else []))

    def activations(self, acts_a: Mapping, acts_b: Mapping | None = None) -> pd.DataFrame:
        """Layers of ``acts_a`` against layers of ``acts_b`` (default: ``acts_a`` itself), as :attr:`pairs` says.

        Args:
            acts_a, acts_b: ``{layer: activations (n, ...)}`` (numpy or torch) on the same n inputs, same order.
                The :class:`repana.capture.Activations` of a capture carry each layer's layout.

        Returns:
            Tidy DataFrame, one row per (layer_a, layer_b, measure), with the columns :attr:`columns`, layers in
            the order given.
        """
        frame = self.episodes([acts_a], None if acts_b is None else [acts_b])
        return frame[self.columns]

    def episodes(self, episodes_a: Sequence[Mapping], episodes_b: Sequence[Mapping] | None = None) -> pd.DataFrame:
        """Similarity of two representations of the same datapoints, layer by layer, episode by episode.

        ``episodes_a[e][layer]`` and ``episodes_b[e][layer]`` (default: ``episodes_a``) hold episode ``e``'s
        activations ``(n_e, ...)``, same ``n_e`` on both sides. Each (episode or group, layer, reduction) is
        prepared once and shared by the measures and pairs that use it.

        Returns:
            DataFrame with the columns :data:`EPISODE_COLUMNS`: ``episode`` (int, or ``"a-b"`` for a pooled
            group), ``scope`` (``"episode"`` | ``"pooled"``), ``null_value`` (NaN without permutations),
            ``note`` (``""`` unless a value is NaN). Rows: pair, then measure, then episode.
        """
        episodes_a = list(episodes_a)
        episodes_b = None if episodes_b is None else list(episodes_b)
        if not episodes_a or (episodes_b is not None and len(episodes_b) != len(episodes_a)):
            raise InputError(f"need the same non-zero number of episodes on both sides, got {len(episodes_a)} and "
                             f"{len(episodes_a) if episodes_b is None else len(episodes_b)}")
        for side, episodes in (("A", episodes_a), ("B", episodes_b or [])):
            if any(not acts for acts in episodes):
                raise InputError(f"no activations for model {side}")
        layer_pairs = _pairs(episodes_a[0], (episodes_b or episodes_a)[0], self.pairs)
        side_a = _Side("A", episodes_a, self.layout, self.dtype)
        side_b = side_a if episodes_b is None else _Side("B", episodes_b, self.layout, self.dtype)
        specs = [get_measure(name) for name in self.measures]
        rows: list[dict] = []
        degenerate: list[str] = []
        done: dict[tuple, float] = {}   # values of a side against itself, for the mirrored pair
        for layer_a, layer_b in progress(layer_pairs, desc="compare", unit="pair", enabled=self.show_progress):
            for spec in specs:
                rows += self._measure_rows(spec, side_a, layer_a, side_b, layer_b, done, degenerate)
        if degenerate:
            warn(f"{len(degenerate)} of {len(rows)} similarity values are degenerate (column 'degenerate'), "
                 f"e.g. {degenerate[0]}")
        return pd.DataFrame(rows, columns=EPISODE_COLUMNS)

    def models(self, model_a: nn.Module, model_b: nn.Module | None, inputs, capture: Capture, *,
               capture_b: Capture | None = None, params_a: Mapping | None = None,
               params_b: Mapping | None = None) -> pd.DataFrame:
        """Capture ``model_a`` with ``capture`` and ``model_b`` with ``capture_b`` on the same ``inputs``, then
        compare them (:meth:`activations`).

        ``model_b=None`` means ``model_a`` again (e.g. with ``params_b``, the parameters after adaptation);
        ``capture_b=None`` means ``capture`` (``dataclasses.replace(capture, layers=[...])`` captures other
        layers of B). ``inputs``: a tensor, a dict of tensors passed as keyword arguments (``input_ids``,
        ``attention_mask``), or an iterable of batches (both models see the same batches).

        The models run in the mode they are in (train mode: batch norm normalises with the batch's statistics)
        and are left as they were: the buffers a forward pass updates (batch-norm running statistics and
        counts, in the models and in ``params_a`` / ``params_b``) are restored afterwards, bit for bit, and so
        is every module's train/eval flag. Call ``model.eval()`` first to compare with the running statistics.
        """
        for side, model in (("model_a", model_a), ("model_b", model_b)):
            if model is not None and not isinstance(model, nn.Module):
                raise InputError(f"{side} is of type {type(model).__name__}, not a torch.nn.Module; build the model "
                                 "first (repana.compare.model_from_factory builds one from 'package.module:function')")
        if model_a is None:
            raise InputError("model_a is None; give a torch.nn.Module")
        model_b = model_a if model_b is None else model_b
        capture_b = capture if capture_b is None else capture_b
        if not isinstance(inputs, (torch.Tensor, Mapping)):
            inputs = list(inputs)  # both models must see the same batches (a DataLoader may reshuffle)
        with _left_unchanged([model_a, model_b], [params_a, params_b]):
            acts_a = capture.run(model_a, inputs, params_a)
            same = model_b is model_a and params_b is params_a and capture_b == capture
            acts_b = None if same else capture_b.run(model_b, inputs, params_b)
        return self.activations(acts_a, acts_b)

    def _measure_rows(self, spec, side_a: "_Side", layer_a: str, side_b: "_Side", layer_b: str,
                      done: dict, degenerate: list) -> list[dict]:
        """The rows of one measure for one layer pair: one per episode, or per pooled group of episodes."""
        # a layout or reduction choice is an error whatever `errors` says: never a NaN row
        red_a = side_a.reduction_for(layer_a, self.reduction, spec.name)
        red_b = side_b.reduction_for(layer_b, self.reduction, spec.name)
        n_episodes = len(side_a.episodes)
        xs = [side_a.reduced(layer_a, red_a, e) for e in range(n_episodes)]
        ys = [side_b.reduced(layer_b, red_b, e) for e in range(n_episodes)]
        n_per, features = xs[0].shape[0], max(xs[0].shape[1], ys[0].shape[1])
        options = (self.measure_options or {}).get(spec.name, {})
        pooled = self.min_ratio is not None and spec.name in CCA_FAMILY
        group = 1
        if pooled and n_per < self.min_ratio * features:
            group = min(n_episodes, math.ceil(self.min_ratio * features / n_per))
        rows = []
        for start in range(0, n_episodes - group + 1, group):
            n_rows = sum(x.shape[0] for x in xs[start:start + group])
            value, null_value, note, flagged = float("nan"), float("nan"), "", False
            if pooled and n_rows < self.min_ratio * features:
                note = (f"skipped: {n_rows} datapoints < {self.min_ratio} x {features} features even with all "
                        "episodes pooled; use more episodes or reduction='positions'")
            else:
                try:
                    rep_a = side_a.prepared(layer_a, red_a, start, group, spec.min_datapoints)
                    rep_b = side_b.prepared(layer_b, red_b, start, group, spec.min_datapoints)
                    if rep_a.n != rep_b.n:
                        raise InputError(f"layer {layer_a!r} of A has {rep_a.n} datapoints but layer {layer_b!r} of "
                                         f"B has {rep_b.n}; with reduction 'positions' or 'tokens' both layers need "
                                         "the same spatial size / tokens")
                    mirrored = (spec.name, layer_b, layer_a, start)
                    if side_b is side_a and spec.symmetric and mirrored in done:
                        value = done[mirrored]  # a model against itself: the matrix is symmetric
                    else:
                        value = spec(rep_a, rep_b, **options)
                        done[(spec.name, layer_a, layer_b, start)] = value
                    reason = spec.degenerate_reason(rep_a, rep_b) if np.isfinite(value) else None
                    if reason is not None:
                        flagged = True
                        degenerate.append(f"{spec.name} for {layer_a!r} (A) vs {layer_b!r} (B): {reason}")
                    if self.null_permutations and np.isfinite(value):
                        null_value = null_baseline(spec.name, rep_a, rep_b, n_permutations=self.null_permutations,
                                                   seed=self.seed + start, **options).mean
                except InputError as error:
                    if self.errors == "raise":
                        raise InputError(f"{spec.name} for {layer_a!r} (A) vs {layer_b!r} (B): {error}") from None
                    value, null_value, note = float("nan"), float("nan"), str(error)
            rows.append({"layer_a": layer_a, "layer_b": layer_b, "measure": spec.name, "value": value,
                         "n_datapoints": int(n_rows), "n_features_a": int(xs[0].shape[1]),
                         "n_features_b": int(ys[0].shape[1]), "reduction": _reduction_label(red_a, red_b),
                         "degenerate": flagged, "episode": start if group == 1 else f"{start}-{start + group - 1}",
                         "scope": "episode" if group == 1 else "pooled", "null_value": null_value, "note": note})
        return rows


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
        named = option_for_layer(self.layout, layer)
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


def _check_pairs(pairs) -> str | tuple[tuple[str, str], ...]:
    """The ``pairs=`` setting, checked: ``"all"``, ``"same"`` or a tuple of ``(layer_a, layer_b)``."""
    if isinstance(pairs, str):
        if pairs not in PAIRS:
            raise InputError(f"pairs={pairs!r}: choose 'all', 'same' or a list of (layer_a, layer_b)")
        return pairs
    chosen = tuple(tuple(pair) for pair in pairs)
    if not chosen or any(len(pair) != 2 for pair in chosen):
        raise InputError("pairs must be 'all', 'same' or a non-empty list of (layer_a, layer_b)")
    return chosen


def _pairs(first_a: Mapping, first_b: Mapping, pairs) -> list[tuple[str, str]]:
    """The layer pairs that ``pairs`` (checked by :func:`_check_pairs`) names among the layers of A and B."""
    names_a, names_b = list(first_a), list(first_b)
    if not isinstance(pairs, str):
        return list(pairs)
    if pairs == "all":
        return [(a, b) for a in names_a for b in names_b]
    missing = [name for name in names_a if name not in names_b]
    if missing:
        raise InputError(f"pairs='same': layers {missing} of A have no namesake in B ({', '.join(names_b)})")
    return [(name, name) for name in names_a]


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
