"""``repana train``: meta-train from a preset or a TOML config, with overrides, resume and torchrun.

The RL presets (:data:`repana.rl.presets.PRESETS`), a TOML file holding an RL config (one that names
an ``env``) and ``--out RUN --resume`` on an RL run folder train a policy through
:func:`repana.rl.train.train_rl`; everything else trains a supervised model."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import warnings
from pathlib import Path

from repana.cli.checks import check_output_dir
from repana.devices import check_device
from repana.errors import ConfigError, ConfigWarning, InputError
from repana.assignments import parse_assignment
from repana.rl.presets import PRESETS as RL_PRESETS


def register(subparsers, help_text: str) -> None:
    """Add the ``repana train`` parser to ``subparsers``, listed with ``help_text``."""
    parser = subparsers.add_parser(
        "train", help=help_text,
        description="Meta-train a Conv4 from a preset or TOML config into a run folder (config.toml, "
                    "metrics.csv, checkpoints/). Under torchrun the meta-batch is split across ranks. "
                    "The rl-* presets (or a TOML with an RL config) meta-train a Gaussian MLP policy with "
                    "TRPO instead (docs/rl.md).",
        epilog="examples:\n  repana train --preset quick --out runs/quick\n"
               "  repana train --preset omniglot-subset --set algorithm=anil --set iterations=2000\n"
               "  repana train --out runs/quick --resume\n"
               "  repana train --preset rl-2dnav --algorithm anil --seed 1 --out runs/nav-anil-s1\n"
               "  torchrun --nproc_per_node 2 -m repana train --preset omniglot-5way-1shot --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a bundled preset (see --list-presets)")
    source.add_argument("--config", type=Path, help="a TOML file with TrainConfig (or RLConfig) keys")
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConfigWarning)
        config = load_config(preset=args.preset, path=args.config, overrides=overrides)
    for warning in caught:   # one line each, as the errors are
        if issubclass(warning.category, ConfigWarning):
            print(f"repana train: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return config


def _read_toml(path: Path) -> dict | None:
    """The parsed TOML at ``path``, or None when it is missing or unreadable (the caller reports it)."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def requested_kind(args: argparse.Namespace):
    """The :class:`repana.runs.kinds.RunKind` the arguments ask for: RL for an rl-* preset, a TOML file
    holding an RL config, or ``--resume`` of an RL run folder without a source; else supervised."""
    from repana.runs.kinds import RL, SUPERVISED, kind_of_values

    if args.preset is not None:
        if args.preset.startswith("rl-") and args.preset not in RL_PRESETS:
            raise ConfigError(f"unknown RL preset {args.preset!r}; choose one of {', '.join(RL_PRESETS)}")
        return RL if args.preset in RL_PRESETS else SUPERVISED
    if args.config is not None:
        return kind_of_values(_read_toml(args.config)) if args.config.is_file() else SUPERVISED
    if args.resume and args.out is not None:
        return kind_of_values(_read_toml(Path(args.out) / "config.toml"))
    return SUPERVISED


def _check_rl_flags(args: argparse.Namespace, what: str) -> None:
    """Supervised-only flags given for an RL run: one line naming them."""
    given = [flag for flag, value in (("--tensorboard", args.tensorboard), ("--save-steps", args.save_steps),
                                      ("--data-root", args.data_root)) if value]
    if args.device != "cpu":
        given.append(f"--device {args.device}")
    if given:
        raise InputError(f"{', '.join(given)} only {'applies' if len(given) == 1 else 'apply'} "
                         f"to supervised training, not to {what} (RL trains on "
                         "the CPU, checkpoints every checkpoint_every updates: --set checkpoint_every=N)")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise InputError(f"{what} does not run under torchrun; start it as a single process")


def run_rl(args: argparse.Namespace) -> int:
    """Train (or resume) an RL run through repana.rl.train.train_rl."""
    what = f"the RL preset {args.preset}" if args.preset else (
        f"the RL config {args.config}" if args.config else f"the RL run {args.out}")
    _check_rl_flags(args, what)
    overrides = dict(parse_assignment(text) for text in args.overrides)   # unknown keys: RLConfig reports them
    for key, value in (("algorithm", args.algorithm), ("iterations", args.iterations), ("seed", args.seed)):
        if value is not None:
            overrides[key] = value
    from repana.rl.config import RLConfig, resolve_config
    from repana.rl.envs import import_gymnasium

    if args.preset is not None or args.config is not None:
        config = resolve_config(args.preset if args.preset is not None else str(args.config))
        name = args.preset if args.preset is not None else args.config.stem
    else:
        config = RLConfig.from_dict(_read_toml(Path(args.out) / "config.toml"))
        name = Path(args.out).name
    config = config.replace(**overrides)
    if config.env.startswith("halfcheetah"):
        import_gymnasium()  # one line naming the extra, before any file is written
    run_dir = args.out if args.out is not None else Path("runs") / name
    check_output_dir(run_dir, "--out")
    if (Path(run_dir) / "checkpoints" / "latest.pt").exists() and not args.resume:
        raise InputError(f"{run_dir} already holds an RL run; add --resume to continue it or choose another --out")
    from repana.rl.train import train_rl

    last = train_rl(config, run_dir, resume=args.resume)
    print(f"{config.algorithm} {config.env}: {last.get('iteration', -1) + 1} meta-updates in "
          f"{last.get('elapsed_s', 0.0):.1f} s, last update's return before adaptation "
          f"{last.get('return_before', float('nan')):.2f}, after {last.get('return_after', float('nan')):.2f}; "
          f"run folder {run_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    from repana.meta.config import list_presets

    if args.list_presets:
        print("\n".join(list_presets() + list(RL_PRESETS)))
        return 0
    if requested_kind(args).name == "rl":
        return run_rl(args)
    check_device(args.device, "--device")
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
        threads = f" on {summary.threads} thread{'s' if summary.threads != 1 else ''}" if summary.threads else ""
        print(f"{config.algorithm} {config.name}: {summary.steps} steps in {summary.elapsed_s:.1f} s{threads}, "
              f"train loss {summary.train_loss:.4f}, train accuracy {100 * summary.train_accuracy:.2f}%"
              f"{val}; run folder {summary.run_dir}")
    return 0
