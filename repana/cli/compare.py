"""``repana compare``: layer-by-layer similarity of two models on the same inputs, as CSV and heatmap.

Models are given as an importable factory ``package.module:function`` (called with no arguments, or with
``--factory-kwargs`` JSON) plus a state_dict file, loaded with ``torch.load(weights_only=True)``; arbitrary
pickled objects are only unpickled with ``--unsafe-pickle`` (a pickle can run code: only for files you trust).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from repana.errors import InputError
from repana.io import atomic_save_csv, atomic_savefig

FACTORY_HINT = "a factory is given as 'package.module:function' (importable from PYTHONPATH or the current folder)"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="similarity of every layer of model A with every layer of model B",
        description="Capture the chosen layers of two models on the same inputs and compare every layer of A "
                    "with every layer of B. Writes similarity.csv and heatmap.png / heatmap.pdf to --out.")
    parser.add_argument("--model-a", required=True, metavar="MODULE:FUNCTION", help="factory of model A")
    parser.add_argument("--weights-a", metavar="FILE", help="state_dict of model A (.pt)")
    parser.add_argument("--model-b", metavar="MODULE:FUNCTION", help="factory of model B (default: --model-a)")
    parser.add_argument("--weights-b", metavar="FILE",
                        help="state_dict of model B (default: the weights of A, i.e. A against itself)")
    parser.add_argument("--factory-kwargs", default="{}", metavar="JSON",
                        help="keyword arguments for both factories, as JSON (default: {})")
    parser.add_argument("--inputs", required=True, metavar="FILE", help="inputs as .npy, .npz or .pt")
    parser.add_argument("--inputs-key", metavar="KEY", help="array to use from a .npz or a dict in a .pt")
    parser.add_argument("--layers-a", nargs="+", required=True, metavar="PATTERN",
                        help="module names or glob patterns of model A, e.g. 'conv*' head")
    parser.add_argument("--layers-b", nargs="+", metavar="PATTERN", help="of model B (default: --layers-a)")
    parser.add_argument("--measure", action="append", dest="measures", metavar="NAME",
                        help="similarity measure, repeatable (default: cka); see --list-measures")
    parser.add_argument("--reduction", choices=["flatten", "positions", "mean"],
                        help="how (n, C, H, W) activations become 2-D (required when a layer is convolutional)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--batch-size", type=int, default=256, help="inputs per forward pass (default 256)")
    parser.add_argument("--max-datapoints", type=int, help="random subset of this many inputs (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsampling (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device for the forward passes (default cpu)")
    parser.add_argument("--train-mode", action="store_true",
                        help="run the models in train mode (default: eval mode, batch norm uses running stats)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow torch.load to unpickle arbitrary objects (runs code from the file: "
                             "only for files you trust)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repana.compare import compare_models
    from repana.plots.similarity import plot_similarity_heatmap
    from repana.similarity import list_measures

    measures = args.measures or ["cka"]
    unknown = [name for name in measures if name not in list_measures()]
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; choose from {', '.join(list_measures())}")
    try:
        factory_kwargs = json.loads(args.factory_kwargs)
    except json.JSONDecodeError as error:
        raise InputError(f"--factory-kwargs is not valid JSON: {error}") from None
    if not isinstance(factory_kwargs, dict):
        raise InputError("--factory-kwargs must be a JSON object, e.g. '{\"hidden\": 32}'")
    device = torch.device(args.device)
    model_a = build_model(args.model_a, args.weights_a, factory_kwargs, args.unsafe_pickle, device)
    if args.model_b is None and args.weights_b is None:
        model_b = model_a
    else:
        model_b = build_model(args.model_b or args.model_a, args.weights_b or args.weights_a, factory_kwargs,
                              args.unsafe_pickle, device)
    for model in (model_a, model_b):
        model.train(args.train_mode)
    inputs = load_inputs(Path(args.inputs), args.inputs_key, args.unsafe_pickle)
    frame = compare_models(model_a, model_b, inputs, layers_a=args.layers_a, layers_b=args.layers_b,
                           measures=measures, reduction=args.reduction, batch_size=args.batch_size,
                           device=device, max_datapoints=args.max_datapoints, seed=args.seed,
                           show_progress=None)
    out = Path(args.out)
    atomic_save_csv(frame, out / "similarity.csv")
    figure = plot_similarity_heatmap(frame, label_a=_label(args.model_a, args.weights_a),
                                     label_b=_label(args.model_b or args.model_a, args.weights_b or args.weights_a))
    for suffix in ("png", "pdf"):
        atomic_savefig(figure, out / f"heatmap.{suffix}", dpi=200)
    for measure in measures:
        table = frame[frame["measure"] == measure].pivot_table(index="layer_a", columns="layer_b", values="value",
                                                               sort=False)
        print(f"{measure} (rows: A, columns: B), {int(frame['n_datapoints'].iloc[0])} datapoints")
        print(table.round(3).to_string())
    print(f"wrote {out / 'similarity.csv'}, {out / 'heatmap.png'}, {out / 'heatmap.pdf'}", file=sys.stderr)
    return 0


def _label(factory: str, weights: str | None) -> str:
    return Path(weights).stem if weights else factory.split(":")[-1]


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


def _torch_load(path: Path, unsafe_pickle: bool, what: str):
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError... for unsafe or corrupt files
        hint = "" if unsafe_pickle else (" If the file holds pickled objects and you trust it, pass "
                                         "--unsafe-pickle.")
        raise InputError(f"cannot load {what} {str(path)!r}: {str(error).splitlines()[0]}.{hint}") from None


def build_model(factory_spec: str, weights: str | None, factory_kwargs: dict, unsafe_pickle: bool,
                device: torch.device) -> torch.nn.Module:
    """Call the factory, load the state_dict (weights_only unless ``unsafe_pickle``), move to ``device``."""
    factory = import_factory(factory_spec)
    try:
        model = factory(**factory_kwargs)
    except TypeError as error:
        raise InputError(f"calling factory {factory_spec!r} with {factory_kwargs} failed: {error}") from None
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"factory {factory_spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = _torch_load(Path(weights), unsafe_pickle, "weights")
        if isinstance(state, torch.nn.Module):
            state = state.state_dict()
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise InputError(f"weights {weights!r} hold a {type(state).__name__}, not a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise InputError(f"weights {weights!r} do not fit {factory_spec!r}: {error}") from None
    return model.to(device)


def load_inputs(path: Path, key: str | None, unsafe_pickle: bool = False) -> torch.Tensor:
    """Inputs ``(n, ...)`` from ``.npy`` / ``.npz`` (``key`` or its only array) / ``.pt`` (tensor or dict + ``key``)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"inputs file {str(path)!r} does not exist")
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            data = _pick(dict(archive), key, path)
    elif suffix in (".pt", ".pth"):
        data = _torch_load(path, unsafe_pickle, "inputs")
        if isinstance(data, dict):
            data = _pick(data, key, path)
    else:
        raise InputError(f"inputs {str(path)!r}: expected a .npy, .npz or .pt file")
    tensor = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if tensor.ndim < 1 or tensor.shape[0] < 2:
        raise InputError(f"inputs {str(path)!r} have shape {tuple(tensor.shape)}; need (n_datapoints >= 2, ...)")
    return tensor


def _pick(arrays: dict, key: str | None, path: Path):
    if key is not None:
        if key not in arrays:
            raise InputError(f"{str(path)!r} has no {key!r}; it holds {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise InputError(f"{str(path)!r} holds {sorted(arrays)}: choose one with --inputs-key")
    return next(iter(arrays.values()))
