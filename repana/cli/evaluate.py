"""``repana evaluate`` (accuracy ± 95% CI over fixed test episodes) and ``repana predict`` (one episode
given as image files: support subfolders per label, query images) for a checkpoint.

``repana evaluate`` on an RL checkpoint (a checkpoint whose ``kind`` is ``"rl"``, :func:`repana.meta.checkpoint.checkpoint_kind`) reports the
policy's returns before / after one adaptation step on held-out tasks (:func:`repana.rl.evaluate.evaluate_rl`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repana.cli.checks import check_checkpoint_file, check_output_file, check_seed
from repana.devices import check_device
from repana.errors import InputError
from repana.limits import check_command_options
from repana.runtime import set_torch_threads


def register_evaluate(subparsers, help_text: str) -> None:
    """Add the ``repana evaluate`` parser to ``subparsers``, listed with ``help_text``."""
    ev = subparsers.add_parser(
        "evaluate", help=help_text,
        description="Adapt a checkpoint on each of N fixed test episodes and report the mean query "
                    "accuracy with its 95% confidence interval over episodes (1.96 * std / sqrt(N)). "
                    "On an RL checkpoint: the returns before / after one adaptation step on N held-out "
                    "tasks (default 40), mean ± 95% t-interval over tasks.",
        epilog="example:\n  repana evaluate runs/quick/checkpoints/latest.pt --episodes 600 --method nil",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--episodes", type=int, default=None,
                    help="test episodes (default: the run's test_episodes, 600); RL: held-out tasks (default 400)")
    ev.add_argument("--method", choices=("adapt", "nil"), default=None,
                    help="adapt: fine-tune on the support set; nil: no head, cosine similarity to the support "
                         "features (default: the run's eval_method)")
    ev.add_argument("--adapt", dest="adapt_layers", nargs="*", default=None, metavar="LAYER",
                    help="layers that adapt at test time, e.g. --adapt conv4 head (default: all for MAML/"
                         "FOMAML/Reptile, head for ANIL and the baselines; none given: nothing adapts)")
    ev.add_argument("--freeze", nargs="+", default=[], metavar="LAYER",
                    help="layers kept frozen at test time, e.g. --freeze conv1 conv2")
    ev.add_argument("--steps", type=int, default=None, help="inner steps at test (default: the run's inner_steps_test)")
    ev.add_argument("--lr", type=float, default=None,
                    help="inner learning rate for a mean loss (default: the run's, converted)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--seed", type=int, default=None,
                    help="seed of the fixed episodes (same seed, same tasks; default 0; RL: default the run's own "
                         "task sample drawn from its seed, --seed S evaluates every run on the tasks of S)")
    ev.add_argument("--data-root", default=None, metavar="DIR",
                    help="folder holding the datasets (default: the run's, else REPANA_DATA_ROOT)")
    ev.add_argument("--csv", type=Path, default=None, metavar="FILE",
                    help="write per-episode accuracies (RL: per-task returns) here")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ev.set_defaults(func=run_evaluate)


def register_predict(subparsers, help_text: str) -> None:
    """Add the ``repana predict`` parser to ``subparsers``, listed with ``help_text``."""
    pr = subparsers.add_parser(
        "predict", help=help_text,
        description="SUPPORT holds one subfolder per label with that label's images (the same number in "
                    "each); QUERY holds the images to classify (flat, or in label subfolders to also get "
                    "the accuracy). Images are read with Pillow, converted to the checkpoint's channels and "
                    "size; for 1-channel models dark-on-light images are inverted (Omniglot convention: "
                    "strokes 1, background 0) unless --invert no. Every image mode is read by its range "
                    "(8-bit / 255, 16-bit / 65535, float as given in [0, 1]); transparent pixels show "
                    "--background.",
        epilog="example:\n  repana predict runs/quick/checkpoints/latest.pt --support my/support --query my/query",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("checkpoint", type=Path)
    pr.add_argument("--support", type=Path, required=True)
    pr.add_argument("--query", type=Path, required=True)
    pr.add_argument("--method", choices=("adapt", "nil"), default=None)
    pr.add_argument("--steps", type=int, default=None)
    pr.add_argument("--lr", type=float, default=None)
    pr.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                    help="1-channel models: invert the images (auto: when the mean is above 0.5)")
    pr.add_argument("--background", choices=("white", "black"), default="white",
                    help="what transparent pixels show (default: white, like paper)")
    pr.add_argument("--out", type=Path, default=None, metavar="FILE",
                    help="write the predictions as CSV (file, label)")
    pr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    pr.set_defaults(func=run_predict)


# ----- shared -----

def _layers(values: list[str] | str | None) -> list[str]:
    """Layer names given space-separated (``conv1 conv2``), comma-separated (``conv1,conv2``) or both."""
    if isinstance(values, str):
        values = [values]
    return [t.strip() for value in (values or []) for t in value.split(",") if t.strip()]


def trainable_names(model, config, adapt_layers: list[str] | str | None, freeze: list[str] | str | None) -> list[str]:
    """Parameter names of ``model`` (a torch module) that adapt: the run's default (or
    ``adapt_layers``) minus ``freeze``. A layer named in both, or a ``freeze`` that leaves nothing of
    what would adapt, is an InputError (``adapt_layers=[]`` asks for no adaptation explicitly)."""
    from repana.meta.train import eval_trainable

    names = [n for n, _ in model.named_parameters()]
    layers = set(model.layer_names)
    for layer in _layers(adapt_layers) + _layers(freeze):
        if layer not in layers:
            raise InputError(f"layer {layer!r} does not exist; layers are {', '.join(model.layer_names)}")
    frozen = set(_layers(freeze))
    if adapt_layers is not None:
        both = [layer for layer in model.layer_names if layer in frozen and layer in set(_layers(adapt_layers))]
        if both:
            raise InputError(f"--freeze and --adapt both name {', '.join(both)}: a layer either adapts or stays "
                             "frozen; name it in one of them")
        chosen = [n for n in names if n.split(".", 1)[0] in set(_layers(adapt_layers))]
    else:
        default = eval_trainable(config)
        chosen = [n for n in names if default(n)]
    kept = [n for n in chosen if n.split(".", 1)[0] not in frozen]
    if chosen and not kept:
        raise InputError(f"--freeze {' '.join(_layers(freeze))} freezes every layer that adapts "
                         f"({', '.join(sorted({n.split('.', 1)[0] for n in chosen}, key=model.layer_names.index))}), "
                         "so nothing would adapt; to evaluate without adaptation pass --adapt with no layer")
    return kept


# ----- evaluate -----

def _refuse_rl_checkpoint(path: Path, command: str) -> None:
    """One line when ``path`` is an RL checkpoint given to a command that takes supervised ones."""
    from repana.meta.checkpoint import checkpoint_kind

    if checkpoint_kind(path) == "rl":
        raise InputError(f"{path} is an RL checkpoint (a meta-trained policy); repana {command} takes supervised "
                         "checkpoints: use `repana evaluate` on it (returns before / after adaptation), "
                         "`repana train --out RUN --resume` to continue its run")


def run_evaluate_rl(args: argparse.Namespace) -> int:
    """Returns before / after adaptation of an RL checkpoint on held-out tasks."""
    given = [flag for flag, value in (
        ("--method", args.method), ("--adapt", args.adapt_layers is not None), ("--freeze", args.freeze),
        ("--steps", args.steps is not None), ("--lr", args.lr is not None),
        (f"--split {args.split}", args.split != "test"), ("--data-root", args.data_root),
        (f"--device {args.device}", args.device != "cpu")) if value]
    if given:
        raise InputError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} "
                         f"to supervised checkpoints; {args.checkpoint} is an RL "
                         "checkpoint (evaluated with one adaptation step on held-out tasks: --episodes N tasks, "
                         "--seed, --csv)")
    from repana.io import atomic_save_csv
    from repana.rl.evaluate import EVAL_TASKS, evaluate_rl

    n_tasks = EVAL_TASKS if args.episodes is None else args.episodes
    frame, summary = evaluate_rl(args.checkpoint, n_tasks=n_tasks, task_seed=args.seed)

    def pm(name: str) -> str:
        half = summary[f"{name}_ci95"]
        return f"{summary[name]:.2f}" + ("" if half != half else f" ± {half:.2f}")

    print(f"{args.checkpoint}: {summary['algorithm']} {summary['env']} iteration {summary['iteration']}, one "
          f"adaptation step on {n_tasks} held-out tasks ({summary['eval_tasks']}): return before adaptation "
          f"{pm('return_before')}, after {pm('return_after')}, improvement {pm('improvement')} "
          "(mean ± 95% CI over tasks)")
    if args.csv is not None:
        frame.insert(0, "checkpoint", str(args.checkpoint))
        frame.insert(1, "algorithm", summary["algorithm"])
        frame.insert(2, "env", summary["env"])
        frame.insert(3, "iteration", summary["iteration"])
        atomic_save_csv(frame, args.csv)
        print(f"wrote {args.csv}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    check_checkpoint_file(args.checkpoint)
    check_seed(args.seed)
    if args.csv is not None:
        check_output_file(args.csv, "--csv", "episodes.csv")
    check_command_options(episodes=args.episodes, steps=args.steps, lr=args.lr)
    from repana.meta.checkpoint import checkpoint_kind

    if checkpoint_kind(args.checkpoint) == "rl":
        return run_evaluate_rl(args)
    device = check_device(args.device, "--device")
    import numpy as np
    import pandas as pd

    from repana.data import fixed_episodes
    from repana.io import atomic_save_csv
    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.evaluate import evaluate
    from repana.meta.train import load_data
    from repana.models import forward_macs

    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.train_config()
    if args.data_root:
        config = config.replace(data_root=args.data_root)
    elif config.dataset != "glyphs" and config.data_root and not Path(config.data_root).expanduser().exists():
        recorded = Path(config.data_root)
        why = "" if recorded.is_absolute() else " (recorded relative to the folder the run was trained from)"
        raise InputError(f"the run's data root {str(recorded)!r} is not found from {Path.cwd()}{why}; "
                         f"pass --data-root DIR (the folder holding {config.dataset}/)")
    model = ckpt.model(device=device)
    method = args.method or config.eval_method
    steps = config.inner_steps_test if args.steps is None else args.steps
    lr = config.mean_loss_inner_lr() if args.lr is None else args.lr
    n_episodes = config.test_episodes if args.episodes is None else args.episodes
    names = trainable_names(model, config, args.adapt_layers, args.freeze)
    split = load_data(config)[args.split]
    config.check_classes({args.split: split.n_classes})
    episodes = fixed_episodes(split, n_episodes=n_episodes, ways=config.ways, shots=config.shots,
                              queries=config.queries_test, seed=0 if args.seed is None else args.seed)
    set_torch_threads(forward_macs(ckpt.model_config, config.ways * (config.shots + config.queries_test)))
    result = evaluate(model, episodes, method=method, steps=steps, lr=lr, trainable=names,
                      bn_support_query=config.bn_support_query)
    adapted = sorted({n.split(".", 1)[0] for n in names}, key=model.layer_names.index)
    from repana.models import is_batch_norm_parameter

    bn_fixed = any(is_batch_norm_parameter(n) and n.split(".", 1)[0] in adapted and n not in names
                   for n, _ in model.named_parameters())
    how = ("nil (no head: cosine similarity to the support features)" if method == "nil" else
           f"adapt ({steps} steps, lr {lr:g}, adapting {','.join(adapted) or 'nothing'}"
           f"{' (batch norm fixed)' if bn_fixed else ''})")
    print(f"{args.checkpoint}: {config.algorithm} step {ckpt.step}, {how} on {n_episodes} {args.split} episodes "
          f"{config.ways}-way {config.shots}-shot: accuracy {100 * result.accuracy:.2f}% "
          f"± {100 * result.ci95:.2f} (95% CI over episodes)")
    if args.csv is not None:
        frame = pd.DataFrame({"checkpoint": str(args.checkpoint), "algorithm": config.algorithm, "step": ckpt.step,
                              "method": method, "adapted": ",".join(adapted), "steps": steps, "lr": lr,
                              "split": args.split, "episode": np.arange(n_episodes),
                              "accuracy": np.asarray(result.per_episode, dtype=float)})
        atomic_save_csv(frame, args.csv)
        print(f"wrote {args.csv}")
    return 0


# ----- predict: an episode from image files -----

def run_predict(args: argparse.Namespace) -> int:
    check_checkpoint_file(args.checkpoint)
    _refuse_rl_checkpoint(args.checkpoint, "predict")
    check_command_options(steps=args.steps, lr=args.lr)
    device = check_device(args.device, "--device")
    if args.out is not None:
        check_output_file(args.out, "--out", "predictions.csv")
    import pandas as pd
    import torch

    from repana.data.images import read_image_folder
    from repana.io import atomic_save_csv
    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.evaluate import predict
    from repana.meta.train import eval_trainable
    from repana.models import forward_macs

    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.train_config()
    channels, size = ckpt.model_config["in_channels"], ckpt.model_config["image_size"]
    method = args.method or config.eval_method
    reading = dict(invert=args.invert, background=args.background)
    support = read_image_folder(args.support, channels, size, labelled=True, what="support", **reading)
    labels = support.label_names
    counts = torch.bincount(support.labels, minlength=len(labels)).tolist()
    if len(set(counts)) > 1:
        raise InputError("support classes must have the same number of images (K-shot); got "
                         + ", ".join(f"{label}: {n}" for label, n in zip(labels, counts)))
    head_outputs = ckpt.model_config["n_classes"]
    # a multiclass head (one output per meta-training class) is replaced by a zero head of the episode's ways
    per_episode_head = config.algorithm not in ("multiclass", "pretrain")
    if method == "adapt" and per_episode_head and len(labels) != head_outputs:
        raise InputError(f"the support set has {len(labels)} labels but the checkpoint's head has "
                         f"{head_outputs} outputs ({config.ways}-way); give {head_outputs} label folders "
                         "or use --method nil (any number of labels)")
    query = read_image_folder(args.query, channels, size, what="query", **reading)
    query_labels = None
    if query.label_names is not None:
        unknown = sorted(set(query.label_names) - set(labels))
        if unknown:
            raise InputError(f"query labels {unknown} are not among the support labels {labels}")
        query_labels = [query.label_names[i] for i in query.labels.tolist()]
    steps = config.inner_steps_test if args.steps is None else args.steps
    lr = config.mean_loss_inner_lr() if args.lr is None else args.lr
    model = ckpt.model(device=device)
    set_torch_threads(forward_macs(ckpt.model_config, len(support.labels) + len(query.files)))
    predicted = predict(model, support.images, support.labels, query.images, method=method, steps=steps, lr=lr,
                        trainable=eval_trainable(config), bn_support_query=config.bn_support_query)
    rows = [{"file": str(f), "label": labels[i]} for f, i in zip(query.files, predicted.tolist())]
    for row in rows:
        print(f"{row['file']}\t{row['label']}")
    if query_labels is not None:
        accuracy = sum(r["label"] == t for r, t in zip(rows, query_labels)) / len(rows)
        print(f"accuracy {100 * accuracy:.1f}% on {len(rows)} labelled query images", file=sys.stderr)
    if args.out is not None:
        atomic_save_csv(pd.DataFrame(rows), args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
