"""``repana compare``: layer-by-layer similarity of two models on the same inputs, as CSV and heatmap.

Models are given as an importable factory ``package.module:function`` (called with no arguments, or with
``--factory-kwargs`` JSON for both models, ``--factory-kwargs-a`` / ``-b`` for one) plus a state_dict file,
loaded with ``torch.load(weights_only=True)``; arbitrary pickled objects are only unpickled with
``--unsafe-pickle`` (a pickle can run code: only for files you trust). The work is done by
:mod:`repana.compare` (imported when the command runs, so ``--help`` answers at once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from repana.cli.checks import check_seed
from repana.errors import InputError

CONV_REDUCTIONS = ("flatten", "positions", "mean")
SEQUENCE_REDUCTIONS = ("tokens", "mean", "first", "flatten")


def register(subparsers, help_text: str) -> None:
    """Add the ``repana compare`` parser to ``subparsers``, listed with ``help_text``."""
    parser = subparsers.add_parser(
        "compare", help=help_text,
        description="Capture the chosen layers of two models on the same inputs and compare every layer of A "
                    "with every layer of B. Writes similarity.csv and heatmap.png / heatmap.pdf to --out. "
                    "Lists are space-separated (--layers-a conv1 conv2 'layer.*').")
    parser.add_argument("--list-measures", action="store_true", help="print the similarity measures and exit")
    parser.add_argument("--model-a", metavar="MODULE:FUNCTION", help="factory of model A (required)")
    parser.add_argument("--weights-a", metavar="FILE", help="state_dict of model A (.pt)")
    parser.add_argument("--model-b", metavar="MODULE:FUNCTION", help="factory of model B (default: --model-a)")
    parser.add_argument("--weights-b", metavar="FILE",
                        help="state_dict of model B (default: the weights of A, i.e. A against itself)")
    parser.add_argument("--factory-kwargs", default="{}", metavar="JSON",
                        help="keyword arguments for both factories, as JSON (default: {})")
    parser.add_argument("--factory-kwargs-a", metavar="JSON",
                        help="keyword arguments for factory A only (merged over --factory-kwargs)")
    parser.add_argument("--factory-kwargs-b", metavar="JSON",
                        help="keyword arguments for factory B only (merged over --factory-kwargs)")
    parser.add_argument("--inputs", metavar="FILE", help="inputs as .npy, .npz or .pt (required); integer arrays "
                        "stay integers (token ids)")
    parser.add_argument("--inputs-key", nargs="+", metavar="KEY",
                        help="array(s) to use from a .npz or a dict in a .pt; several keys are passed to the "
                             "model as keyword arguments, e.g. input_ids attention_mask")
    parser.add_argument("--layers-a", nargs="+", metavar="PATTERN",
                        help="module names or glob patterns of model A (required), e.g. 'conv*' head; globs skip "
                             "modules that do not run")
    parser.add_argument("--layers-b", nargs="+", metavar="PATTERN", help="of model B (default: --layers-a)")
    parser.add_argument("--measure", "--measures", action="extend", nargs="+", dest="measures", metavar="NAME",
                        help="similarity measure(s) (default: cka); see --list-measures")
    parser.add_argument("--layout", choices=("conv", "sequence", "flat"),
                        help="layout of activations with more than 2 dims when the module type does not say: "
                             "conv (n, C, *spatial) or sequence (n, T, D)")
    parser.add_argument("--reduction", choices=tuple(dict.fromkeys(CONV_REDUCTIONS + SEQUENCE_REDUCTIONS)),
                        help="how activations become 2-D (required when a layer has more than 2 dims): conv maps "
                             "flatten | positions | mean; token sequences tokens | mean | first | flatten")
    parser.add_argument("--output", metavar="SELECTOR",
                        help="part of structured module outputs to record: a tuple index (0, the default for "
                             "tuples) or a field such as last_hidden_state or hidden_states[3]")
    parser.add_argument("--out", metavar="DIR", help="output folder (required)")
    parser.add_argument("--batch-size", type=int, default=256, help="inputs per forward pass (default 256)")
    parser.add_argument("--max-datapoints", type=int, help="random subset of this many inputs (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed for subsampling (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for the forward passes (default: cpu)")
    parser.add_argument("--train-mode", action="store_true",
                        help="run the models in train mode (default: eval mode, batch norm uses running stats)")
    parser.add_argument("--unsafe-pickle", action="store_true",
                        help="allow torch.load to unpickle arbitrary objects (runs code from the file: "
                             "only for files you trust)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from repana.similarity import get_measure, list_measures

    if args.list_measures:
        for name in list_measures():
            print(f"{name:14s} {get_measure(name).description}")
        return 0
    missing = [flag for flag, value in (("--model-a", args.model_a), ("--inputs", args.inputs),
                                        ("--layers-a", args.layers_a), ("--out", args.out)) if not value]
    if missing:
        raise InputError(f"the following arguments are required: {', '.join(missing)}")
    measures = args.measures or ["cka"]
    unknown = [name for name in measures if name not in list_measures()]
    if unknown:
        raise InputError(f"unknown measure(s) {unknown}; choose from {', '.join(list_measures())}")
    shared = _json_object(args.factory_kwargs, "--factory-kwargs")
    kwargs_a = {**shared, **_json_object(args.factory_kwargs_a, "--factory-kwargs-a")}
    kwargs_b = {**shared, **_json_object(args.factory_kwargs_b, "--factory-kwargs-b")}
    check_seed(args.seed)
    out = Path(args.out)
    _check_writable_folder(out)  # before any work

    from repana.capture import Capture
    from repana.compare import Comparison, load_inputs, model_from_factory
    from repana.devices import check_device
    import torch

    from repana.runtime import similarity_threads

    torch.set_num_threads(similarity_threads())   # the user's count, else 1 (repana.runtime: measured)
    from repana.io import atomic_save_csv, atomic_savefig
    from repana.plots.similarity import plot_similarity_heatmap

    device = check_device(args.device, "--device")
    model_a = model_from_factory(args.model_a, args.weights_a, kwargs_a, unsafe_pickle=args.unsafe_pickle,
                                 device=device)
    if args.model_b is None and args.weights_b is None and args.factory_kwargs_b is None:
        model_b = model_a
    else:
        model_b = model_from_factory(args.model_b or args.model_a, args.weights_b or args.weights_a, kwargs_b,
                                     unsafe_pickle=args.unsafe_pickle, device=device)
    for model in (model_a, model_b):
        model.train(args.train_mode)
    inputs = load_inputs(Path(args.inputs), args.inputs_key, args.unsafe_pickle)
    capture = Capture(layers=args.layers_a, output=_selector(args.output), layout=args.layout,
                      batch_size=args.batch_size, max_datapoints=args.max_datapoints, seed=args.seed, device=device)
    capture_b = None if args.layers_b is None else dataclasses.replace(capture, layers=args.layers_b)
    frame = Comparison(measures=measures, reduction=args.reduction).models(model_a, model_b, inputs, capture,
                                                                           capture_b=capture_b)
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
        flagged = int(frame.loc[frame["measure"] == measure, "degenerate"].sum())
        if flagged:
            print(f"{flagged} of these values are degenerate (near 1 by construction: a layer's effective rank "
                  "reaches its distinct datapoints - 1; column 'degenerate' of similarity.csv)")
    print(f"wrote {out / 'similarity.csv'}, {out / 'heatmap.png'}, {out / 'heatmap.pdf'}", file=sys.stderr)
    return 0


def _json_object(text: str | None, flag: str) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{flag} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object, e.g. '{{\"hidden\": 32}}'")
    return value


def _selector(text: str | None):
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def _check_writable_folder(out: Path) -> None:
    """Create ``out`` and write a probe file in it, so an unwritable --out fails before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".repana-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f"cannot write to --out {str(out)!r}: {reason}; choose a folder you can write") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"cannot write to --out {str(out)!r}: permission denied")


def _label(factory: str, weights: str | None) -> str:
    return Path(weights).stem if weights else factory.split(":")[-1]
