"""Record activations of named submodules of any ``nn.Module`` with forward hooks.

:class:`Capture` holds the settings of a capture (which modules, batching, subsampling, dtype, device),
validated once; ``Capture(layers=["conv*", "head"]).run(model, inputs, params)`` records them.
:class:`ActivationRecorder` is the context manager underneath, for forward passes run by the caller.

Hooks sit on the module objects, so they also fire when the model is called as
``torch.func.functional_call(model, params, x)`` with another parameter dict: "before" and "after"
adaptation are the same forward pass with two parameter dicts. Layers are chosen by exact name
(``model.named_modules()``) or fnmatch glob (``"layer*.conv2"``, ``"conv?"``); an unknown name is an
:class:`~repana.errors.InputError` that lists the model's module names. Modules matched by a glob that do
not run in the forward pass (an attention block's unused ``out_proj``) are skipped; an exact name that does
not run is an error that lists the modules that did.

Real models (transformers, Hugging Face):

* **inputs**: a tensor ``(n, ...)``, a dict of tensors ``{"input_ids": (n, T), "attention_mask": (n, T)}``
  passed to the model as keyword arguments (split along dim 0 by ``batch_size``; non-tensor values such as
  ``output_hidden_states=True`` are passed unchanged), or an iterable of batches. Integer inputs stay integers.
* **structured outputs**: a module that returns a tuple (Hugging Face layers, ``nn.MultiheadAttention``)
  is recorded by its element 0 -- a :class:`RepanaWarning` says so when the tuple holds more than one tensor
  and the module is not ``nn.MultiheadAttention``; ``output=`` picks another element or a field of a dict /
  ``ModelOutput`` by a selector (:func:`select_output`). ``outputs=`` records fields of the *model's* return
  value, e.g. ``["hidden_states[1]", "last_hidden_state"]``, under the selector as name.
* **layouts**: the result is an :class:`Activations` dict whose ``layouts`` say, per layer, ``"conv"``
  ``(n, C, *spatial)``, ``"sequence"`` ``(n, T, D)``, ``"flat"`` ``(n, features)`` or None (unknown), from the
  module type (:func:`infer_layout`) -- ``"unknown"`` inside transformers, where even 4-D is not a conv map; :mod:`repana.compare` reduces each layer by its layout. PyTorch
  transformer modules built with ``batch_first=False`` are recorded transposed to batch-first ``(n, T, D)``.

The model's train/eval mode is left as it is: call ``model.eval()`` first if batch-norm layers should use
their running statistics (in train mode a forward pass also updates them).
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from repana.devices import check_device
from repana.errors import InputError, RepanaError
from repana.progress import progress
from repana.similarity._arrays import RepanaWarning
from repana.similarity.conv import check_layout, check_layout_option

#: Modules whose outputs are channels-first maps ``(n, C, *spatial)``.
CONV_MODULES = (_ConvNd, _BatchNorm, _InstanceNorm, nn.GroupNorm, _MaxPoolNd, _AvgPoolNd, _AdaptiveAvgPoolNd,
                _AdaptiveMaxPoolNd)
#: Modules whose 3-D outputs are batch-first token sequences ``(n, T, D)`` (features last).
SEQUENCE_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
                    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer, nn.Embedding, nn.Linear,
                    nn.LayerNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
#: ``Activations.layouts`` value of a layer of a transformer whose layout is not known: even 4-D activations
#: are then not taken for conv maps (attention maps are ``(n, heads, T, T)``); the user names the layout.
UNKNOWN_LAYOUT = "unknown"
_SELECTOR_TOKEN = re.compile(r"\.?([A-Za-z_]\w*)|\[(-?\d+)\]|(-?\d+)")


class Activations(dict):
    """``{layer: Tensor (n, ...)}`` with ``layouts``: ``{layer: "conv" | "sequence" | "flat" | None}``."""

    def __init__(self, *args, layouts: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layouts: dict = dict(layouts or {})


def module_names(model: nn.Module) -> list[str]:
    """Names of all submodules (the root module, named ``""``, excluded), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layer_patterns(model: nn.Module, layers: str | Iterable[str]) -> tuple[list[str], set[str]]:
    """Expand names / glob patterns into module names, in the model's order, without repeats, and the set of
    names that were asked for exactly (a glob-only match that does not run is skipped, an exact one is not).

    Raises:
        InputError: a name or pattern that matches no module (the message lists the model's module names).
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise InputError("no layers requested; give module names or glob patterns such as 'conv*'")
    names = module_names(model)
    chosen: set[str] = set()
    exact: set[str] = set()
    for pattern in patterns:
        if pattern in names:
            chosen.add(pattern)
            exact.add(pattern)
            continue
        matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            raise InputError(f"no module of {type(model).__name__} matches {pattern!r}; its modules are: "
                             f"{', '.join(names)}")
        chosen.update(matches)
    return [name for name in names if name in chosen], exact


def resolve_layers(model: nn.Module, layers: str | Iterable[str]) -> list[str]:
    """Expand names / glob patterns into module names, in the model's order, without repeats.

    Raises:
        InputError: a name or pattern that matches no module (the message lists the model's module names).
    """
    return resolve_layer_patterns(model, layers)[0]


def parse_selector(selector) -> list:
    """``"hidden_states[3]"`` -> ``["hidden_states", 3]``; ``0`` / ``"0"`` / ``"[0]"`` -> ``[0]``;
    ``"a.b[-1]"`` -> ``["a", "b", -1]`` (field names are strings, indices integers)."""
    if isinstance(selector, int) and not isinstance(selector, bool):
        return [selector]
    if not isinstance(selector, str) or not selector.strip():
        raise InputError(f"output selector {selector!r}: give a field name ('last_hidden_state'), a field and "
                         f"index ('hidden_states[3]') or a tuple index (0)")
    steps, position = [], 0
    text = selector.strip()
    while position < len(text):
        match = _SELECTOR_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise InputError(f"cannot read output selector {selector!r} at {text[position:]!r}: give a field name "
                             f"('last_hidden_state'), a field and index ('hidden_states[3]') or an index (0)")
        name, bracket, bare = match.groups()
        steps.append(name if name is not None else int(bracket if bracket is not None else bare))
        position = match.end()
    return steps


def select_output(output, selector, where: str = "the output") -> torch.Tensor:
    """The tensor that ``selector`` (see :func:`parse_selector`) names in a structured ``output``: a tensor,
    tuple / list, dict or Hugging Face ``ModelOutput`` (fields by name, or by position like a tuple).

    Raises:
        InputError: a field or index that is not there (the message lists what is), or a selection that is
            not a tensor.
    """
    value = output
    for step in parse_selector(selector):
        if isinstance(step, str):
            if isinstance(value, Mapping):
                if step not in value:
                    raise InputError(f"{where} has no field {step!r} (selector {selector!r}); its fields are: "
                                     f"{', '.join(map(str, value.keys())) or 'none'}")
                value = value[step]
            elif hasattr(value, step) and not isinstance(value, torch.Tensor):
                value = getattr(value, step)
            else:
                raise InputError(f"{where} is a {type(value).__name__} without field {step!r} "
                                 f"(selector {selector!r})")
        else:
            items = tuple(value.values()) if isinstance(value, Mapping) else value
            if not isinstance(items, (tuple, list)):
                raise InputError(f"{where}: selector {selector!r} indexes a {type(value).__name__}; indices "
                                 f"select elements of tuples, lists and ModelOutputs")
            if not -len(items) <= step < len(items):
                raise InputError(f"{where} has {len(items)} elements; index {step} of selector {selector!r} is "
                                 f"out of range")
            value = items[step]
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{where}: selector {selector!r} gives a {type(value).__name__}, not a tensor"
                         + (" (pass output_hidden_states=True to the model to get hidden states)"
                            if value is None else ""))
    return value


def _default_output(output, name: str, module: nn.Module, warned: set) -> torch.Tensor:
    """A module's output without a selector: the tensor itself, or element 0 of a tuple (say so when that is
    a choice among several tensors); dicts and ModelOutputs need a selector."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        raise InputError(f"module {name!r} returned a {type(output).__name__} with fields "
                         f"{', '.join(map(str, output.keys()))}: choose one with output={{{name!r}: 'FIELD'}}")
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        tensors = sum(isinstance(item, torch.Tensor) for item in output)
        if tensors > 1 and not isinstance(module, nn.MultiheadAttention) and name not in warned:
            warned.add(name)
            warnings.warn(f"module {name!r} returned a {type(output).__name__} of {len(output)} elements; "
                          f"recording element 0 (choose another with output={{{name!r}: INDEX}})", RepanaWarning,
                          stacklevel=4)
        return output[0]
    raise InputError(f"module {name!r} returned {type(output).__name__}, not a tensor; capture another module "
                     f"or choose a part with output=")


def _sequence_first(module: nn.Module) -> bool:
    """True for PyTorch transformer modules built with ``batch_first=False`` (outputs ``(T, n, D)``)."""
    if isinstance(module, (nn.MultiheadAttention, nn.Transformer)):
        return not module.batch_first
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return not module.self_attn.batch_first
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        return not module.layers[0].self_attn.batch_first
    return False


def infer_layout(module: nn.Module, activation: torch.Tensor) -> str | None:
    """The layout of ``module``'s (batch-first) output where its type makes it unambiguous, else None.

    2-D: ``"flat"``. Conv / batch-norm / pooling modules (:data:`CONV_MODULES`), at least 3-D: ``"conv"``.
    PyTorch transformer modules, embeddings, linear and layer-norm layers (:data:`SEQUENCE_MODULES`) and any
    module of the ``transformers`` package, 3-D: ``"sequence"``. Anything else (activation functions,
    containers): None -- the user names the layout of 3-D activations.
    """
    if activation.ndim == 2:
        return "flat"
    if activation.ndim >= 3 and isinstance(module, CONV_MODULES):
        return "conv"
    if activation.ndim == 3 and (isinstance(module, SEQUENCE_MODULES)
                                 or type(module).__module__.startswith("transformers.")):
        return "sequence"
    return None


def option_for_layer(option, name: str):
    """``option`` for layer ``name``: one value for all (None included), or from a mapping by exact name, else
    by the first glob pattern that matches (None when none does)."""
    if not isinstance(option, Mapping):
        return option
    if name in option:
        return option[name]
    for pattern, value in option.items():
        if isinstance(pattern, str) and fnmatch.fnmatchcase(name, pattern):
            return value
    return None


class ActivationRecorder:
    """Context manager that records the outputs of the chosen submodules on every forward call.

    Each call of a hooked module appends a copy of its output (detached; moved to CPU and cast when
    asked), so that in-place operations later in the forward pass do not change what was recorded; the
    ``activations`` property concatenates the calls along dimension 0. Hooks are removed on exit.

    Args:
        output: selector of the recorded part of structured outputs (:func:`select_output`), one for all
            layers or ``{name or glob: selector}``; default: tensors as they are, element 0 of tuples.
        layout: ``"conv"`` | ``"sequence"`` | ``"flat"``, one for all layers or ``{name or glob: layout}``,
            overriding :func:`infer_layout` in ``layouts``.

    >>> with ActivationRecorder(model, ["conv1", "head"]) as rec:
    ...     torch.func.functional_call(model, params, x)
    >>> rec.activations["conv1"].shape        # (n, C, H, W)
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str], *, to_cpu: bool = False,
                 dtype: torch.dtype | None = None, transform=None, output=None, layout=None):
        self.model = model
        self.layers = resolve_layers(model, layers) if layers or isinstance(layers, str) else []
        self.to_cpu = to_cpu
        self.dtype = dtype
        self.transform = transform  # optional callable (name, tensor) -> tensor, applied before storing
        self.output = output
        self.layout = layout
        self.layouts: dict[str, str | None] = {}
        self._warned: set[str] = set()
        self._chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        self._handles: list = []

    def __enter__(self) -> "ActivationRecorder":
        modules = dict(self.model.named_modules())
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        selector = option_for_layer(self.output, name)
        named_layout = option_for_layer(self.layout, name)
        if named_layout is not None:
            check_layout(named_layout)

        def hook(module, inputs, output):
            if selector is None:
                produced = _default_output(output, name, module, self._warned)
            else:
                produced = select_output(output, selector, f"the output of module {name!r}")
            tensor = produced.detach()
            if tensor.ndim == 3 and _sequence_first(module):
                tensor = tensor.transpose(0, 1)  # (T, n, D) -> batch-first (n, T, D)
            if name not in self.layouts:
                self.layouts[name] = named_layout or infer_layout(module, tensor)
            self._store(name, produced, tensor)
        return hook

    def _store(self, name: str, produced: torch.Tensor, tensor: torch.Tensor) -> None:
        if self.transform is not None:
            tensor = self.transform(name, tensor)
        if self.to_cpu:
            tensor = tensor.to("cpu")
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if tensor.untyped_storage().data_ptr() == produced.untyped_storage().data_ptr():
            # still the module's own output: a later in-place op (ReLU(inplace=True) after a batch
            # norm, as in ResNets) would overwrite what was recorded
            tensor = tensor.clone()
        self._chunks.setdefault(name, []).append(tensor)

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        """``{layer: Tensor (n, ...)}``, calls concatenated along dim 0 (only layers that were called)."""
        return {name: chunks[0] if len(chunks) == 1 else torch.cat(chunks)
                for name, chunks in self._chunks.items() if chunks}

    def clear(self) -> None:
        """Forget what was recorded (hooks stay)."""
        for chunks in self._chunks.values():
            chunks.clear()


@dataclass(frozen=True, kw_only=True)
class Capture:
    """Settings of an activation capture; :meth:`run` records them for a model and its inputs.

    ``Capture(layers=["conv*", "head"], batch_size=64).run(model, inputs)`` -> :class:`Activations`
    ``{layer: Tensor (n_datapoints, ...)}`` in model order, with ``.layouts``. The settings are validated
    here, once (InputError naming the setting); what depends on the model is checked by :meth:`run`.

    Args:
        layers: module names or glob patterns (None: only ``outputs``). Globs skip modules that did not run.
        outputs: selectors applied to the *model's* return value, each recorded under its selector string,
            e.g. ``["hidden_states[2]", "last_hidden_state"]`` of a Hugging Face model.
        output: selector of the recorded part of modules that return tuples, dicts or ModelOutputs
            (``0``, ``"last_hidden_state"``, ``"hidden_states[3]"``), one for all layers or
            ``{name or glob: selector}``. Default: element 0 of a tuple (see the module docs).
        layout: ``"conv"`` | ``"sequence"`` | ``"flat"`` for all layers or ``{name or glob: layout}``,
            overriding the layouts inferred from the module types (:func:`infer_layout`).
        batch_size: tensor and dict inputs are split into chunks of this many datapoints along dim 0 (None:
            all at once); iterables are taken batch by batch as they come.
        max_datapoints: keep at most this many datapoints, a uniform random subset fixed by ``seed``
            (tensor / dict inputs: chosen before the forward pass; iterables: bottom-k of seeded random keys
            per datapoint, so reproducible for the same batch order). Rows keep their input order.
        max_positions: for conv maps ``(n, C, *spatial)``, keep this many spatial positions (the same random
            positions, fixed by ``seed``, for every datapoint): ``(n, C, max_positions)``; for token sequences
            ``(n, T, D)``, this many tokens: ``(n, max_positions, D)``.
        seed: seed of the datapoint and position subsets.
        device: where the forward pass runs (default: the device of the model's first parameter); it must
            exist here (:func:`repana.devices.check_device`).
        dtype, to_cpu: as what and where floating activations are stored (detached, under ``torch.no_grad``;
            None: the model's dtype).
        forward_kwargs: extra keyword arguments for every forward call (e.g. ``{"output_hidden_states": True}``).
        show_progress: a progress bar (None: when stderr is a terminal, :func:`repana.progress.progress`).
    """

    layers: tuple[str, ...] | None = None
    outputs: tuple | None = None
    output: int | str | Mapping | None = None
    layout: str | Mapping[str, str] | None = None
    batch_size: int | None = None
    max_datapoints: int | None = None
    max_positions: int | None = None
    seed: int = 0
    device: str | torch.device | None = None
    dtype: torch.dtype | None = torch.float32
    to_cpu: bool = True
    forward_kwargs: Mapping | None = None
    show_progress: bool | None = None

    def __post_init__(self):
        layers = _as_tuple(self.layers)
        outputs = _as_tuple(self.outputs, scalar=(str, int))
        for selector in outputs or ():
            parse_selector(selector)
        if not layers and not outputs:
            raise InputError("no layers requested; give module names or glob patterns such as 'conv*', or outputs=")
        for name in ("batch_size", "max_datapoints", "max_positions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1, got {value}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "layout", check_layout_option(self.layout))
        if self.device is not None:
            object.__setattr__(self, "device", check_device(self.device))

    def run(self, model: nn.Module, inputs, params: Mapping | None = None) -> Activations:
        """Activations of the chosen layers and outputs of ``model`` for all ``inputs``.

        Args:
            inputs: a tensor ``(n, ...)`` or a dict of tensors ``(n, ...)`` passed as keyword arguments, or an
                iterable of batches (e.g. a DataLoader) yielding tensors, dicts, or tuples whose first element
                is the input. Dtypes are kept (integer token ids stay integers).
            params: optional parameter (and buffer) dict: the model is called through
                ``torch.func.functional_call(model, params, x)``.

        Returns:
            :class:`Activations` (a dict ``{layer or selector: Tensor (n, ...)}``) with ``.layouts``.

        Raises:
            InputError: unknown layers, an exact layer name that did not run (the message lists the modules
                that did), outputs that cannot be selected, inputs with no datapoints or dicts with tensors of
                unequal lengths.
        """
        names, exact = resolve_layer_patterns(model, self.layers) if self.layers else ([], set())
        selectors = list(self.outputs or ())
        for selector in selectors:
            if str(selector) in names:
                raise InputError(f"output selector {selector!r} has the name of a module; capture it as a layer")
        device = self.device
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(self.seed)
        batches, total = _batches(inputs, self.batch_size, self.max_datapoints, generator)
        layouts: dict[str, str | None] = {}   # of the model's outputs; the recorder keeps the layers'
        positions = _Positions(self.max_positions, self.seed,
                               lambda name: layouts.get(name, recorder.layouts.get(name)))
        streamed = self.max_datapoints is not None and not isinstance(inputs, (torch.Tensor, Mapping))
        rows = _Rows(self.max_datapoints if streamed else None, generator)
        ran: set[str] | None = None
        recorder = ActivationRecorder(model, names, to_cpu=self.to_cpu, dtype=self.dtype, transform=positions,
                                      output=self.output, layout=self.layout)
        with recorder, torch.no_grad():
            for batch in progress(batches, desc="capture", total=total, unit="batch", enabled=self.show_progress):
                batch = _to_device(batch, device)
                if ran is None:
                    ran = set()
                    with _track_calls(model, ran):
                        result = _forward(model, params, batch, self.forward_kwargs)
                else:
                    result = _forward(model, params, batch, self.forward_kwargs)
                new = recorder.activations
                recorder.clear()
                for selector in selectors:
                    tensor = select_output(result, selector, f"the output of {type(model).__name__}").detach()
                    key = str(selector)
                    if key not in layouts:
                        layouts[key] = option_for_layer(self.layout, key) or _model_output_layout(model, tensor)
                    recorder._store(key, tensor, positions(key, tensor))
                    new[key] = recorder._chunks.pop(key)[0]
                rows.add(batch, new)
        activations = rows.activations()
        not_run = [name for name in names if name not in activations]
        missing = [name for name in not_run if name in exact]
        if missing:
            did_run = [name for name in module_names(model) if name in (ran or set())]
            raise InputError(f"module(s) {', '.join(map(repr, missing))} did not run in the forward pass; the "
                             f"modules that ran are: {', '.join(did_run) or 'none'}")
        names = [name for name in names if name in activations]
        if not names and not selectors:
            raise InputError(f"none of the modules matching {list(self.layers)!r} ran in the forward pass")
        layouts.update(recorder.layouts)
        if _is_sequence_model(model):  # e.g. attention maps (n, heads, T, T) of a BERT: not conv maps
            layouts = {key: UNKNOWN_LAYOUT if value is None and activations[key].ndim >= 3 else value
                       for key, value in layouts.items() if key in activations}
        keys = names + [str(selector) for selector in selectors]
        return Activations({key: activations[key] for key in keys}, layouts={key: layouts.get(key) for key in keys})


def _as_tuple(value, scalar=(str,)) -> tuple | None:
    """None, one name or an iterable of names -> a tuple of them (None when empty)."""
    if value is None:
        return None
    values = (value,) if isinstance(value, scalar) else tuple(value)
    return values or None


class _Positions:
    """The ``max_positions`` random spatial positions (conv maps) or tokens (sequences) kept of each layer,
    the same for every datapoint, drawn on the layer's first batch from a generator seeded ``seed + 1``."""

    def __init__(self, max_positions: int | None, seed: int, layout_of):
        self.max_positions, self.seed, self.layout_of = max_positions, seed, layout_of
        self.chosen: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        named = self.layout_of(name)
        if self.max_positions is None or tensor.ndim < 3 or named == "flat" or (named is None and tensor.ndim == 3):
            if self.max_positions is not None and tensor.ndim == 3 and named is None:
                raise InputError(f"max_positions on {name!r} of shape {tuple(tensor.shape)}: is it a conv map "
                                 f"(n, C, L) or a token sequence (n, T, D)? name it with layout=")
            return tensor
        sequence = named == "sequence"
        flat = tensor if sequence else tensor.reshape(tensor.shape[0], tensor.shape[1], -1)
        axis = 1 if sequence else 2
        if name not in self.chosen:
            count = flat.shape[axis]
            chosen = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed + 1))[:self.max_positions]
            self.chosen[name] = chosen.sort().values.to(flat.device)
        return flat[:, self.chosen[name]] if sequence else flat[:, :, self.chosen[name]]


class _Rows:
    """The recorded rows of every batch: all of them, or at most ``limit`` (inputs streamed batch by batch),
    the rows with the smallest seeded random keys (bottom-k sampling), in input order at the end."""

    def __init__(self, limit: int | None, generator: torch.Generator):
        self.limit, self.generator = limit, generator
        self.chunks: dict[str, list[torch.Tensor]] = {}
        self.keys_kept: torch.Tensor | None = None
        self.stored: dict[str, torch.Tensor] = {}
        self.seen = 0

    def add(self, batch, new: dict[str, torch.Tensor]) -> None:
        if self.limit is None:
            for key, tensor in new.items():
                self.chunks.setdefault(key, []).append(tensor)
            return
        keys = torch.rand(_batch_length(batch), generator=self.generator)
        self.keys_kept, self.stored = _keep_smallest(self.keys_kept, self.stored, keys, self.seen, new, self.limit)
        self.seen += keys.shape[0]

    def activations(self) -> dict[str, torch.Tensor]:
        if self.limit is None:
            return {key: parts[0] if len(parts) == 1 else torch.cat(parts) for key, parts in self.chunks.items()}
        if self.keys_kept is None:
            return {}
        order = torch.argsort(self.keys_kept[:, 1])   # input order among the kept datapoints
        return {name: tensor[order.to(tensor.device)] for name, tensor in self.stored.items()}


def _is_sequence_model(model: nn.Module) -> bool:
    return isinstance(model, SEQUENCE_MODULES) or type(model).__module__.startswith("transformers.")


def _model_output_layout(model: nn.Module, tensor: torch.Tensor) -> str | None:
    if tensor.ndim == 2:
        return "flat"
    return infer_layout(model, tensor)


class _track_calls:
    """Record the names of the modules that run (forward hooks on every submodule, removed on exit)."""

    def __init__(self, model: nn.Module, ran: set):
        self.model, self.ran, self.handles = model, ran, []

    def __enter__(self):
        for name, module in self.model.named_modules():
            if name:
                self.handles.append(module.register_forward_hook(
                    lambda module, inputs, output, name=name: self.ran.add(name)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _forward(model: nn.Module, params: Mapping | None, batch, forward_kwargs: Mapping | None):
    kwargs = dict(forward_kwargs or {})
    if isinstance(batch, Mapping):
        args, kwargs = (), {**batch, **kwargs}
    else:
        args = (batch,)
    try:
        if params is None:
            return model(*args, **kwargs)
        return torch.func.functional_call(model, dict(params), args, kwargs)
    except RepanaError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as error:  # shapes or dtypes the model cannot take
        inputs = {"shape": batch} if not isinstance(batch, Mapping) else batch
        described = ", ".join(f"{key} {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
                              for key, value in inputs.items() if isinstance(value, torch.Tensor))
        hint = ("; integer inputs stay integers (token ids): a model of images takes floats"
                if any(isinstance(v, torch.Tensor) and not v.is_floating_point() for v in inputs.values())
                and "type" in str(error).lower() else "")
        first = " ".join(str(error).split())[:240]
        raise InputError(f"{type(model).__name__} cannot run on the inputs ({described}): {first}{hint}; "
                         f"check that they fit the model (size, channels, dtype)") from error


def _to_device(batch, device):
    if isinstance(batch, Mapping):
        return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    return batch.to(device)


def _batch_length(batch) -> int:
    if isinstance(batch, Mapping):
        lengths = {key: value.shape[0] for key, value in batch.items()
                   if isinstance(value, torch.Tensor) and value.ndim > 0}
        if not lengths:
            raise InputError(f"the input dict {sorted(batch)} holds no tensors")
        if len(set(lengths.values())) > 1:
            raise InputError(f"the tensors of an input dict must have the same length along dim 0 (one row per "
                             f"datapoint), got {lengths}")
        return next(iter(lengths.values()))
    return batch.shape[0]


def _batches(inputs, batch_size, max_datapoints, generator):
    """Iterable of input batches (tensors or dicts of tensors) and its length (None when unknown)."""
    if isinstance(inputs, (torch.Tensor, Mapping)):
        n = inputs.shape[0] if isinstance(inputs, torch.Tensor) and inputs.ndim else (
            _batch_length(inputs) if isinstance(inputs, Mapping) else 0)
        if n == 0:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else "dict"
            raise InputError(f"inputs of shape {shape} hold no datapoints")
        index = None
        if max_datapoints is not None and max_datapoints < n:
            keys = torch.rand(n, generator=generator)
            index = torch.argsort(keys)[:max_datapoints].sort().values
            n = max_datapoints
        size = batch_size or n
        starts = range(0, n, size)
        if isinstance(inputs, torch.Tensor):
            inputs = inputs if index is None else inputs[index.to(inputs.device)]
            return list(torch.split(inputs, size)), len(starts)
        rows = {key: (value if index is None else value[index.to(value.device)])
                if isinstance(value, torch.Tensor) and value.ndim > 0 else value for key, value in inputs.items()}
        return [{key: value[start:start + size] if isinstance(value, torch.Tensor) and value.ndim > 0 else value
                 for key, value in rows.items()} for start in starts], len(starts)

    def from_iterable():
        for item in inputs:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(batch, (torch.Tensor, Mapping)):
                raise InputError(f"batches must be tensors, dicts of tensors or (tensor, ...) tuples, got "
                                 f"{type(batch).__name__}")
            yield batch
    return from_iterable(), (len(inputs) if hasattr(inputs, "__len__") else None)


def _keep_smallest(keys_kept, stored, keys, start, new, limit):
    """Bottom-k sampling: keep the ``limit`` datapoints with the smallest random keys seen so far.

    ``keys_kept`` is ``(k, 2)`` float64: each kept datapoint's random key and its running input index
    (used at the end to restore input order); ``start`` is the running index of this batch's first row.
    """
    batch_keys = torch.stack([keys.double(), torch.arange(start, start + keys.shape[0]).double()], dim=1)
    all_keys = batch_keys if keys_kept is None else torch.cat([keys_kept, batch_keys])
    merged = new if not stored else {name: torch.cat([stored[name], new[name]]) for name in new}
    if all_keys.shape[0] <= limit:
        return all_keys, merged
    keep = torch.argsort(all_keys[:, 0])[:limit]
    return all_keys[keep], {name: tensor[keep.to(tensor.device)] for name, tensor in merged.items()}
