"""Record activations of named submodules of any ``nn.Module`` with forward hooks.

Hooks sit on the module objects, so they also fire when the model is called as
``torch.func.functional_call(model, params, x)`` with another parameter dict: "before" and "after"
adaptation are the same forward pass with two parameter dicts. Layers are chosen by exact name
(``model.named_modules()``) or fnmatch glob (``"layer*.conv2"``, ``"conv?"``); an unknown name is an
:class:`~repana.errors.InputError` that lists the model's module names.

The model's train/eval mode is left as it is: call ``model.eval()`` first if batch-norm layers should use
their running statistics (in train mode a forward pass also updates them).
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Mapping

import torch
from torch import nn

from repana.errors import InputError
from repana.progress import progress


def module_names(model: nn.Module) -> list[str]:
    """Names of all submodules (the root module, named ``""``, excluded), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: str | Iterable[str]) -> list[str]:
    """Expand names / glob patterns into module names, in the model's order, without repeats.

    Raises:
        InputError: a name or pattern that matches no module (the message lists the model's module names).
    """
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise InputError("no layers requested; give module names or glob patterns such as 'conv*'")
    names = module_names(model)
    chosen: set[str] = set()
    for pattern in patterns:
        matches = [pattern] if pattern in names else [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            raise InputError(f"no module of {type(model).__name__} matches {pattern!r}; its modules are: "
                             f"{', '.join(names)}")
        chosen.update(matches)
    return [name for name in names if name in chosen]


def _first_tensor(output, name: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise InputError(f"module {name!r} returned {type(output).__name__}, not a tensor; capture another module")


class ActivationRecorder:
    """Context manager that records the outputs of the chosen submodules on every forward call.

    Each call of a hooked module appends a copy of its output (detached; moved to CPU and cast when
    asked), so that in-place operations later in the forward pass do not change what was recorded; the
    ``activations`` property concatenates the calls along dimension 0. Hooks are removed on exit.

    >>> with ActivationRecorder(model, ["conv1", "head"]) as rec:
    ...     torch.func.functional_call(model, params, x)
    >>> rec.activations["conv1"].shape        # (n, C, H, W)
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str], *, to_cpu: bool = False,
                 dtype: torch.dtype | None = None, transform=None):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.to_cpu = to_cpu
        self.dtype = dtype
        self.transform = transform  # optional callable (name, tensor) -> tensor, applied before storing
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
        def hook(module, inputs, output):
            produced = _first_tensor(output, name)
            tensor = produced.detach()
            if self.transform is not None:
                tensor = self.transform(name, tensor)
            if self.to_cpu:
                tensor = tensor.to("cpu")
            if self.dtype is not None:
                tensor = tensor.to(self.dtype)
            if tensor.untyped_storage().data_ptr() == produced.untyped_storage().data_ptr():
                # still the module's own output: a later in-place op (ReLU(inplace=True) after a batch
                # norm, as in ResNets) would overwrite what was recorded
                tensor = tensor.clone()
            self._chunks[name].append(tensor)
        return hook

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        """``{layer: Tensor (n, ...)}``, calls concatenated along dim 0 (only layers that were called)."""
        return {name: chunks[0] if len(chunks) == 1 else torch.cat(chunks)
                for name, chunks in self._chunks.items() if chunks}

    def clear(self) -> None:
        """Forget what was recorded (hooks stay)."""
        for chunks in self._chunks.values():
            chunks.clear()


def capture_activations(model: nn.Module, inputs, layers: str | Iterable[str], params: Mapping | None = None,
                        batch_size: int | None = None, device=None, to_cpu: bool = True,
                        dtype: torch.dtype | None = torch.float32, max_datapoints: int | None = None,
                        max_positions: int | None = None, seed: int = 0,
                        show_progress: bool | None = None) -> dict[str, torch.Tensor]:
    """Activations of ``layers`` for all ``inputs``, as ``{layer: Tensor (n_datapoints, ...)}`` in model order.

    Args:
        inputs: a tensor ``(n, ...)`` (split into ``batch_size`` chunks; all at once when None), or an iterable of
            batches (e.g. a DataLoader) yielding tensors or tuples whose first element is the input.
        params: optional parameter (and buffer) dict: the model is called through
            ``torch.func.functional_call(model, params, x)``.
        device: where the forward pass runs (default: the device of the model's first parameter).
        to_cpu, dtype: where and as what activations are stored (detached, under ``torch.no_grad``).
        max_datapoints: keep at most this many datapoints, a uniform random subset fixed by ``seed``
            (tensor inputs: chosen before the forward pass; iterables: bottom-k of seeded random keys
            per datapoint, so reproducible for the same batch order). Rows keep their input order.
        max_positions: for activations with spatial dimensions ``(n, C, *spatial)``, keep this many spatial
            positions (the same random positions, fixed by ``seed``, for every datapoint): the result is
            ``(n, C, max_positions)``.
    """
    names = resolve_layers(model, layers)
    if max_datapoints is not None and max_datapoints < 1:
        raise InputError(f"max_datapoints must be >= 1, got {max_datapoints}")
    if max_positions is not None and max_positions < 1:
        raise InputError(f"max_positions must be >= 1, got {max_positions}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    batches, total = _batches(inputs, batch_size, max_datapoints, generator)
    positions: dict[str, torch.Tensor] = {}

    def keep_positions(name, tensor):
        if max_positions is None or tensor.ndim < 3:
            return tensor
        flat = tensor.reshape(tensor.shape[0], tensor.shape[1], -1)
        if name not in positions:
            count = flat.shape[2]
            chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 1))[:max_positions]
            positions[name] = chosen.sort().values.to(flat.device)
        return flat[:, :, positions[name]]

    keys_kept: torch.Tensor | None = None
    seen = 0
    stored: dict[str, torch.Tensor] = {}
    streaming_cap = max_datapoints is not None and not isinstance(inputs, torch.Tensor)
    with ActivationRecorder(model, names, to_cpu=to_cpu, dtype=dtype, transform=keep_positions) as recorder:
        with torch.no_grad():
            for batch in progress(batches, desc="capture", total=total, unit="batch", enabled=show_progress):
                batch = batch.to(device)
                if params is None:
                    model(batch)
                else:
                    torch.func.functional_call(model, dict(params), (batch,))
                if streaming_cap:
                    keys = torch.rand(batch.shape[0], generator=generator)
                    keys_kept, stored = _keep_smallest(keys_kept, stored, keys, seen, recorder.activations,
                                                       max_datapoints)
                    seen += batch.shape[0]
                    recorder.clear()
        activations = stored if streaming_cap else recorder.activations
    missing = [name for name in names if name not in activations]
    if missing:
        raise InputError(f"modules {missing} were not called in the forward pass; choose modules that run")
    if streaming_cap:  # restore input order among the kept datapoints
        order = torch.argsort(keys_kept[:, 1])
        activations = {name: tensor[order.to(tensor.device)] for name, tensor in activations.items()}
    return {name: activations[name] for name in names}


def _batches(inputs, batch_size, max_datapoints, generator):
    """Iterable of input tensors and its length (None when unknown)."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 0 or inputs.shape[0] == 0:
            raise InputError(f"inputs of shape {tuple(inputs.shape)} hold no datapoints")
        if max_datapoints is not None and max_datapoints < inputs.shape[0]:
            keys = torch.rand(inputs.shape[0], generator=generator)
            chosen = torch.argsort(keys)[:max_datapoints].sort().values
            inputs = inputs[chosen.to(inputs.device)]
        size = batch_size or inputs.shape[0]
        chunks = list(torch.split(inputs, size))
        return chunks, len(chunks)

    def from_iterable():
        for item in inputs:
            batch = item[0] if isinstance(item, (tuple, list)) else item
            if isinstance(batch, Mapping) or not isinstance(batch, torch.Tensor):
                raise InputError(f"batches must be tensors or (tensor, ...) tuples, got {type(batch).__name__}")
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
