"""``repana train``: meta-train from a preset or a TOML config, with overrides, resume and torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path

from repana.cli.checks import check_device, check_output_dir
from repana.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="meta-train MAML / FOMAML / ANIL / Reptile / baselines",
        description="Meta-train a Conv4 from a preset or TOML config into a run folder (config.toml, "
                    "metrics.csv, checkpoints/). Under torchrun the meta-batch is split across ranks.",
        epilog="examples:\n  repana train --preset quick --out runs/quick\n"
               "  repana train --preset omniglot-subset --set algorithm=anil --set iterations=2000\n"
               "  repana train --out runs/quick --resume\n"
               "  torchrun --nproc_per_node 2 -m repana train --preset omniglot-5way-1shot --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a bundled preset (see --list-presets)")
    source.add_argument("--config", type=Path, help="a TOML file with TrainConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key (value parsed as TOML); repeatable")
    parser.add_argument("--algorithm", help="shortcut for --set algorithm=NAME")
    parser.add_argument("--iterations", type=int, help="shortcut for --set iterations=N")
    parser.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    parser.add_argument("--save-steps", nargs="+", metavar="STEP",
                        help="steps whose checkpoints are kept, e.g. --save-steps 0 500 2000 (or 0,500,2000)")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the datasets (default: REPANA_DATA_ROOT)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log the metrics.csv scalars to RUN/tensorboard (needs the tensorboard package: "
                             "pip install 'repana[tensorboard]')")
    parser.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The TrainConfig the arguments describe (on --resume without a source, the run's own config)."""
    from repana.meta.config import load_config, parse_override
    from repana.meta.train import read_run_config

    overrides = dict(parse_override(text) for text in args.overrides)
    for key, value in (("algorithm", args.algorithm), ("iterations", args.iterations), ("seed", args.seed),
                       ("data_root", args.data_root)):
        if value is not None:
            overrides[key] = value
    if args.save_steps:
        texts = [part.strip() for value in args.save_steps for part in value.split(",") if part.strip()]
        try:
            overrides["save_steps"] = [int(text) for text in texts]
        except ValueError:
            raise ConfigError(f"--save-steps {' '.join(args.save_steps)!r} must be integers, e.g. "
                              "--save-steps 0 500 2000") from None
    if args.preset is None and args.config is None:
        if args.resume and args.out is not None:
            return read_run_config(args.out).replace(**overrides)
        raise ConfigError("give --preset NAME or --config FILE (or --out RUN --resume)")
    return load_config(preset=args.preset, path=args.config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from repana.meta.config import list_presets

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    check_device(args.device)
    loggers = []
    if args.tensorboard:
        from repana.tensorboard import TensorBoardLog, check_tensorboard

        check_tensorboard()
    from repana.meta.distributed import init_from_environment, shutdown
    from repana.meta.train import train

    config = resolve_config(args)
    if config.data_root and not Path(config.data_root).expanduser().is_absolute():
        # the run's config.toml must find the data from any folder (evaluate, analyze, resume)
        config = config.replace(data_root=str(Path(config.data_root).expanduser().resolve()))
    run_dir = args.out if args.out is not None else Path("runs") / config.name
    check_output_dir(run_dir, "--out")
    dist, device = init_from_environment(args.device)
    if args.tensorboard and (dist is None or dist.rank == 0):
        loggers.append(TensorBoardLog(run_dir / "tensorboard"))
    try:
        summary = train(config, run_dir, resume=args.resume, device=device, dist=dist, loggers=loggers)
    finally:
        for logger in loggers:
            logger.close()
        shutdown()
    if dist is None or dist.rank == 0:
        val = ("" if summary.val_accuracy is None
               else f", val accuracy {100 * summary.val_accuracy:.2f}% ± {100 * summary.val_ci95:.2f}")
        print(f"{config.algorithm} {config.name}: {summary.steps} steps in {summary.elapsed_s:.1f} s, "
              f"train loss {summary.train_loss:.4f}, train accuracy {100 * summary.train_accuracy:.2f}%"
              f"{val}; run folder {summary.run_dir}")
    return 0
