"""``repana evaluate`` (accuracy ± 95% CI over fixed test episodes) and ``repana predict`` (one episode
given as image files: support subfolders per label, query images) for a checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from repana.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def register(subparsers) -> None:
    ev = subparsers.add_parser(
        "evaluate", help="few-shot accuracy ± 95%% CI of a checkpoint on fixed test episodes",
        description="Adapt a checkpoint on each of N fixed test episodes and report the mean query "
                    "accuracy with its 95% confidence interval over episodes (1.96 * std / sqrt(N)).",
        epilog="example:\n  repana evaluate runs/quick/checkpoints/latest.pt --episodes 600 --method nil",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("checkpoint", type=Path)
    ev.add_argument("--episodes", type=int, default=None, help="test episodes (default: the run's test_episodes, 600)")
    ev.add_argument("--method", choices=("adapt", "nil"), default=None,
                    help="adapt: fine-tune on the support set; nil: no head, cosine similarity to the support "
                         "features (default: the run's eval_method)")
    ev.add_argument("--adapt", dest="adapt_layers", default=None,
                    help="comma-separated layers that adapt at test time (default: all for MAML/FOMAML/"
                         "Reptile, head for ANIL and the baselines)")
    ev.add_argument("--freeze", default="", help="comma-separated layers kept frozen at test time, e.g. conv1,conv2")
    ev.add_argument("--steps", type=int, default=None, help="inner steps at test (default: the run's inner_steps_test)")
    ev.add_argument("--lr", type=float, default=None,
                    help="inner learning rate for a mean loss (default: the run's, converted)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--seed", type=int, default=0, help="seed of the fixed episodes (same seed, same tasks)")
    ev.add_argument("--data-root", default=None)
    ev.add_argument("--csv", type=Path, default=None, help="write per-episode accuracies here")
    ev.add_argument("--device", default="cpu")
    ev.set_defaults(func=run_evaluate)

    pr = subparsers.add_parser(
        "predict", help="classify query images after adapting a checkpoint on labelled support images",
        description="SUPPORT holds one subfolder per label with that label's images (the same number in "
                    "each); QUERY holds the images to classify (flat, or in label subfolders to also get "
                    "the accuracy). Images are read with Pillow, converted to the checkpoint's channels and "
                    "size; for 1-channel models dark-on-light images are inverted (Omniglot convention: "
                    "strokes 1, background 0) unless --invert no.",
        epilog="example:\n  repana predict runs/quick/checkpoints/latest.pt --support my/support --query my/query",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("checkpoint", type=Path)
    pr.add_argument("--support", type=Path, required=True)
    pr.add_argument("--query", type=Path, required=True)
    pr.add_argument("--method", choices=("adapt", "nil"), default=None)
    pr.add_argument("--steps", type=int, default=None)
    pr.add_argument("--lr", type=float, default=None)
    pr.add_argument("--invert", choices=("auto", "yes", "no"), default="auto")
    pr.add_argument("--out", type=Path, default=None, help="write the predictions as CSV (file, label)")
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(func=run_predict)


# ----- shared -----

def _layers(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def trainable_names(model: torch.nn.Module, config, adapt_layers: str | None, freeze: str) -> list[str]:
    """Parameter names that adapt: the run's default (or ``adapt_layers``) minus ``freeze``."""
    from repana.meta.train import eval_trainable

    names = [n for n, _ in model.named_parameters()]
    layers = set(model.layer_names)
    for layer in _layers(adapt_layers) + _layers(freeze):
        if layer not in layers:
            raise InputError(f"layer {layer!r} does not exist; layers are {', '.join(model.layer_names)}")
    if adapt_layers is not None:
        chosen = [n for n in names if n.split(".", 1)[0] in set(_layers(adapt_layers))]
    else:
        default = eval_trainable(config)
        chosen = [n for n in names if default(n)]
    frozen = set(_layers(freeze))
    return [n for n in chosen if n.split(".", 1)[0] not in frozen]


# ----- evaluate -----

def run_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from repana.data import fixed_episodes
    from repana.io import atomic_save_csv
    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.evaluate import evaluate
    from repana.meta.train import load_data

    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.train_config()
    if args.data_root:
        config = config.replace(data_root=args.data_root)
    model = ckpt.model(device=args.device)
    method = args.method or config.eval_method
    steps = config.inner_steps_test if args.steps is None else args.steps
    lr = config.mean_loss_inner_lr() if args.lr is None else args.lr
    n_episodes = config.test_episodes if args.episodes is None else args.episodes
    if n_episodes < 1:
        raise InputError(f"--episodes {n_episodes} must be at least 1")
    names = trainable_names(model, config, args.adapt_layers, args.freeze)
    split = load_data(config)[args.split]
    config.check_classes({args.split: split.n_classes})
    episodes = fixed_episodes(split, n_episodes=n_episodes, ways=config.ways, shots=config.shots,
                              queries=config.queries_test, seed=args.seed)
    result = evaluate(model, episodes, method=method, steps=steps, lr=lr, trainable=names,
                      bn_support_query=config.bn_support_query)
    adapted = sorted({n.split(".", 1)[0] for n in names}, key=model.layer_names.index)
    how = ("nil (no head: cosine similarity to the support features)" if method == "nil" else
           f"adapt ({steps} steps, lr {lr:g}, adapting {','.join(adapted) or 'nothing'})")
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

def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, channels: int, size: int, invert: str = "auto") -> torch.Tensor:
    """One image as float32 ``(channels, size, size)`` in [0, 1] (Pillow, bilinear resize).

    ``invert``: for 1-channel images, "auto" inverts when the mean is above 0.5 (dark strokes on a
    light background -> the Omniglot convention of strokes 1, background 0).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"cannot read image {path}: {error}") from None
    if channels == 1:
        if invert == "yes" or (invert == "auto" and array.mean() > 0.5):
            array = 1.0 - array
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def read_labelled_folder(folder: Path, channels: int, size: int, invert: str,
                         what: str) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path]]:
    """Images in label subfolders -> (x (n, C, H, W), y int64 (n,), label names sorted, files)."""
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist")
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not labels:
        raise InputError(f"{what} folder {folder} has no label subfolders; put each label's images in "
                         f"{folder}/<label>/")
    files, ys = [], []
    counts = {}
    for index, label in enumerate(labels):
        found = _image_files(folder / label)
        counts[label] = len(found)
        files += found
        ys += [index] * len(found)
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise InputError(f"{what} label folders without images: {empty}")
    x = torch.stack([read_image(p, channels, size, invert) for p in files])
    return x, torch.tensor(ys, dtype=torch.int64), labels, files


def run_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from repana.io import atomic_save_csv
    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.evaluate import predict

    ckpt = load_checkpoint(args.checkpoint)
    config = ckpt.train_config()
    model = ckpt.model(device=args.device)
    channels, size = ckpt.model_config["in_channels"], ckpt.model_config["image_size"]
    method = args.method or config.eval_method
    support_x, support_y, labels, _ = read_labelled_folder(args.support, channels, size, args.invert, "support")
    counts = torch.bincount(support_y, minlength=len(labels)).tolist()
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
    if not args.query.is_dir():
        raise InputError(f"query folder {args.query} does not exist")
    query_labels = None
    if any(p.is_dir() for p in args.query.iterdir()):
        query_x, query_y, q_names, query_files = read_labelled_folder(args.query, channels, size, args.invert, "query")
        unknown = sorted(set(q_names) - set(labels))
        if unknown:
            raise InputError(f"query labels {unknown} are not among the support labels {labels}")
        query_labels = [q_names[i] for i in query_y.tolist()]
    else:
        query_files = _image_files(args.query)
        if not query_files:
            raise InputError(f"query folder {args.query} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        query_x = torch.stack([read_image(p, channels, size, args.invert) for p in query_files])
    steps = config.inner_steps_test if args.steps is None else args.steps
    lr = config.mean_loss_inner_lr() if args.lr is None else args.lr
    from repana.meta.train import eval_trainable

    predicted = predict(model, support_x, support_y, query_x, method=method, steps=steps, lr=lr,
                        trainable=eval_trainable(config), bn_support_query=config.bn_support_query)
    rows = [{"file": str(f), "label": labels[i]} for f, i in zip(query_files, predicted.tolist())]
    for row in rows:
        print(f"{row['file']}\t{row['label']}")
    if query_labels is not None:
        accuracy = float(np.mean([r["label"] == t for r, t in zip(rows, query_labels)]))
        print(f"accuracy {100 * accuracy:.1f}% on {len(rows)} labelled query images", file=sys.stderr)
    if args.out is not None:
        atomic_save_csv(pd.DataFrame(rows), args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
