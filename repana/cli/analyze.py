"""``repana analyze <analysis>``: run one of the paper's analyses on your own checkpoints.

    repana analyze inner-loop --checkpoint runs/maml/checkpoints/latest.pt --out results --episodes 100
    repana analyze freezing   --checkpoint runs/maml/checkpoints/latest.pt --out results
    repana analyze similarity --checkpoint MAML.pt --checkpoint-b ANIL.pt --out results
    repana analyze comparison --checkpoint MAML.pt --checkpoint-b ANIL.pt --out results
    repana analyze regimes    --checkpoint A.pt --checkpoint B.pt ... --out results   (NIL accuracy per body)
    repana analyze head-needed --checkpoint ANIL.pt --checkpoint-b NIL_TRAINED.pt --out results
    repana analyze dynamics   --checkpoint step_000100.pt --checkpoint step_001000.pt ... --out results
    repana analyze convergence --checkpoint ANY.pt --out results   (uses its dataset and architecture)

Test episodes come from the test split of the checkpoint's dataset (``--dataset`` / ``--data-root``
override it), seeded, the same for every network. Writes ``<out>/<analysis>.csv`` and a figure
(PNG + PDF), and prints the summary table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from repana.errors import InputError

ANALYSES = ("inner-loop", "freezing", "dynamics", "comparison", "similarity", "regimes", "head-needed",
            "convergence")


def register(subparsers) -> None:
    parser = subparsers.add_parser("analyze", help="run one of the paper's analyses on checkpoints",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", choices=ANALYSES)
    parser.add_argument("--checkpoint", action="append", required=True, metavar="PATH",
                        help="checkpoint file (repeat for regimes / dynamics)")
    parser.add_argument("--checkpoint-b", metavar="PATH", help="second network (similarity, comparison, head-needed)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--episodes", type=int, default=100, help="test episodes (default 100)")
    parser.add_argument("--queries", type=int, default=15, help="query images per class (default 15)")
    parser.add_argument("--measure", action="append", metavar="NAME",
                        help="similarity measure (repeatable; default svcca and cka_debiased)")
    parser.add_argument("--steps", type=int, help="test-time inner steps (default: the checkpoint's)")
    parser.add_argument("--lr", type=float, help="test-time inner lr, mean-loss convention (default: the checkpoint's)")
    parser.add_argument("--dataset", help="dataset of the test episodes (default: the checkpoint's)")
    parser.add_argument("--data-root", metavar="DIR", help="data folder (default REPANA_DATA_ROOT)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the test episodes")
    parser.add_argument("--iterations", type=int, default=100, help="convergence: meta-iterations per run")
    parser.set_defaults(func=run)


def _episodes(args, meta: dict, offset: int = 0):
    from repana.data import fixed_episodes, load_splits

    config = meta["config"]
    dataset = args.dataset or config.get("dataset")
    if not dataset:
        raise InputError("the checkpoint records no dataset: pass --dataset")
    root = args.data_root or config.get("data_root") or None
    splits = load_splits(dataset, root=root)
    return splits, fixed_episodes(splits["test"], n_episodes=args.episodes, ways=config.get("ways", 5),
                                  shots=config.get("shots", 1), queries=args.queries, seed=args.seed + offset)


def run(args) -> int:
    from repana.analysis import (comparison, convergence, freezing, head_needed, inner_loop, regimes,
                                 representation_similarity, training_dynamics)
    from repana.analysis.common import DEFAULT_MEASURES, inner_loop_settings, load_model, trainable_for
    from repana.io import atomic_save_csv
    from repana.plots import paper as plots

    out = Path(args.out)
    measures = args.measure or list(DEFAULT_MEASURES)
    needs_b = args.analysis in ("similarity", "comparison", "head-needed")
    if needs_b and not args.checkpoint_b:
        raise InputError(f"analysis {args.analysis!r} compares two networks: pass --checkpoint-b")
    if args.episodes < 1:
        raise InputError("--episodes must be at least 1")
    model, meta = load_model(args.checkpoint[0])
    splits, episodes = _episodes(args, meta)
    name = args.analysis.replace("-", "_")
    figure = None
    if args.analysis == "inner-loop":
        steps, lr = inner_loop_settings(meta, args.steps, args.lr)
        detail = inner_loop.inner_loop_similarity(model, episodes, steps=steps, lr=lr,
                                                  trainable=trainable_for(meta["algorithm"]), measures=measures,
                                                  label=meta["algorithm"].upper())
        atomic_save_csv(detail, out / "inner_loop_detail.csv")
        frame = inner_loop.summarize_inner_loop(detail)
        figure = plots.inner_loop_figure(frame)
    elif args.analysis == "freezing":
        steps, lr = inner_loop_settings(meta, args.steps, args.lr)
        frame = freezing.freezing_accuracy(model, episodes, steps=steps, lr=lr,
                                           trainable=trainable_for(meta["algorithm"]), label=meta["algorithm"].upper())
        figure = plots.freezing_figure(frame)
    elif args.analysis == "dynamics":
        stages = training_dynamics.select_stages(args.checkpoint)
        frame = training_dynamics.inner_loop_over_training(stages, episodes, measures=measures,
                                                           steps=args.steps, lr=args.lr)
        frozen = training_dynamics.freezing_over_training(stages, episodes, steps=args.steps, lr=args.lr)
        atomic_save_csv(frozen, out / "dynamics_freezing.csv")
        figure = plots.dynamics_figure(frame, frozen)
    elif args.analysis == "regimes":
        bodies = {}
        for path in args.checkpoint + ([args.checkpoint_b] if args.checkpoint_b else []):
            body, body_meta = load_model(path)
            bodies[f"{body_meta['algorithm']}:{Path(path).stem}"] = body
        frame = regimes.regimes_accuracy(bodies, episodes)
        figure = plots.accuracy_bars_figure(frame, "regime", "NIL accuracy")
    elif args.analysis == "convergence":
        from repana.data import EpisodeSampler
        from repana.models import build_model

        config = meta["config"]
        batch = lambda step: EpisodeSampler(splits["train"], ways=config.get("ways", 5), shots=config.get("shots", 1),
                                            queries=config.get("queries_train", 5),
                                            seed=args.seed + step).sample(tasks=config.get("meta_batch_size", 4))
        model_config = dict(load_model_config(args.checkpoint[0]))
        frame = convergence.convergence_study(lambda: build_model(model_config), batch, episodes,
                                              iterations=args.iterations)
        figure = plots.convergence_figure(frame)
    else:
        model_b, meta_b = load_model(args.checkpoint_b)
        if args.analysis == "similarity":
            detail = representation_similarity.cross_model_similarity(
                model, model_b, episodes, measures=measures, label_a=meta["algorithm"].upper(),
                label_b=meta_b["algorithm"].upper())
            atomic_save_csv(detail, out / "similarity_detail.csv")
            frame = representation_similarity.summarize_cross_model(detail)
            figure = plots.cross_model_figure(frame)
        elif args.analysis == "head-needed":
            frame = head_needed.head_needed(model, model_b, episodes)
        else:
            specs = []
            for label, net, net_meta in (("A", model, meta), ("B", model_b, meta_b)):
                steps, lr = inner_loop_settings(net_meta, args.steps, args.lr)
                algorithm = net_meta["algorithm"].upper()
                specs.append(comparison.EvalSpec(f"{algorithm} ({label})", net, "adapt", steps, lr,
                                                 trainable_for(net_meta["algorithm"]), net_meta["algorithm"]))
                specs.append(comparison.EvalSpec(f"NIL ({algorithm} {label} body)", net, "nil",
                                                 trained_with=net_meta["algorithm"]))
            frame = comparison.evaluate_specs(specs, episodes)
            figure = plots.accuracy_bars_figure(frame, "label", "accuracy on the same episodes")
    atomic_save_csv(frame, out / f"{name}.csv")
    if figure is not None:
        plots.save_figure(figure, out / name)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(frame.to_string(index=False))
    print(f"wrote {out / f'{name}.csv'}")
    return 0


def load_model_config(path) -> dict:
    from repana.meta.checkpoint import load_checkpoint

    return load_checkpoint(path).model_config
