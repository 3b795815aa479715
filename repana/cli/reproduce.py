"""``repana reproduce``: the paper's evidence in one command (see docs/reproduce.md).

    repana reproduce                                   # quick preset, offline glyph set, ./reproduce
    repana reproduce --dataset omniglot --data-root /data --out results
    repana reproduce --dataset omniglot --setting 20way-1shot --setting 20way-5shot --seeds 3
    repana reproduce --preset paper --dataset miniimagenet --data-root /data --out paper_run --plan plan/
    repana reproduce --executor ray --address HEAD:6379 --device cuda ...
    repana reproduce --rl --seeds 3 --out rl                         # Table 2's RL rows: 2-D navigation
    repana reproduce --rl --rl-envs 2d-navigation,halfcheetah-dir,halfcheetah-vel --seeds 3
    repana reproduce --rl --preset paper --rl-envs halfcheetah-dir,halfcheetah-vel --seeds 3 --plan plan/

A reproduction is a plan of independent training jobs (setting x network x seed) and then the analyses.
It trains what is missing (reusing and resuming the runs in ``<out>/runs``; ``--executor local`` runs
jobs in parallel worker processes, one per usable core or GPU; ``--executor ray`` as Ray tasks on the
cluster at ``--address``), runs every analysis of ``analyses/*.toml`` (each analysis and seed in its own
worker process, one per usable core, unless ``--executor inline``), writes
``<out>/tables/<setting>/*.csv``, ``<out>/figures/<setting>/*.png|pdf`` and ``<out>/report.md``.
``--plan DIR`` only writes the plan (one ``repana train`` command per job, a GNU parallel list and a
SLURM array script) for another scheduler, after checking that the dataset's files are there; ``--threads``
goes into every job (and the SLURM array's --cpus-per-task). Rerun without ``--plan`` once the jobs are done.
Rerunning an interrupted command continues where it stopped; a failed job leaves the others intact.

``--rl`` reproduces Table 2's RL rows instead of the supervised analyses (their own report): MAML and
ANIL policies (repana.rl) per environment of ``--rl-envs`` (default 2d-navigation) and seed, then the
analyses rl_returns (returns before / after adaptation beside the paper's, the MAML-vs-ANIL verdict) and
rl_policy_similarity (SVCCA / CKA per layer before vs after adaptation). Quick preset: 2-D navigation
40 meta-updates at the paper's per-update size (~6 s each on one core), HalfCheetah 10 meta-updates of
10 tasks x 10 trajectories (needs pip install 'repana[rl]'); paper preset: 500 meta-updates (for a
cluster: --plan). RL trains on the CPU; --dataset and --setting are not used with --rl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repana.cli.checks import check_output_dir
from repana.devices import check_device
from repana.limits import MAX_SEEDS


def register(subparsers, help_text: str) -> None:
    """Add the ``repana reproduce`` parser to ``subparsers``, listed with ``help_text``."""
    parser = subparsers.add_parser("reproduce", help=help_text,
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="quick: minutes on a laptop CPU; paper: the paper's training lengths")
    parser.add_argument("--dataset", choices=("glyphs", "omniglot", "miniimagenet"), default="glyphs",
                        help="glyphs (offline, generated), omniglot or miniimagenet (need --data-root)")
    parser.add_argument("--data-root", metavar="DIR", help="data folder (default REPANA_DATA_ROOT)")
    parser.add_argument("--out", default="reproduce", metavar="DIR", help="output folder (default ./reproduce)")
    parser.add_argument("--analyses", metavar="DIR", help="folder of analysis entries (default: analyses/ of the source)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: $REPANA_THREADS, else automatic: 1 for Omniglot-size networks, the "
                             "idle cores for MiniImageNet-size ones; docs/training.md)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run only these analyses, e.g. --only freezing convergence (or NAME,NAME)")
    parser.add_argument("--setting", nargs="+", action="extend", metavar="NwayKshot",
                        help="cells of the paper's tables, e.g. --setting 20way-1shot 20way-5shot (default 5way-1shot)")
    parser.add_argument("--seeds", type=int, default=2, metavar="N",
                        help="training seeds per network (default 2; the paper: 3)")
    parser.add_argument("--executor", choices=("local", "inline", "ray"), default="local",
                        help="where training jobs run: local worker processes (default), inline (this process), "
                             "ray (a Ray cluster; pip install 'repana[ray]')")
    parser.add_argument("--max-workers", type=int, metavar="N",
                        help="local executor: parallel training jobs (default: usable cores, or visible GPUs with --device "
                             "cuda); with any executor but inline, also the most analysis worker processes (default: "
                             "usable cores / --threads)")
    parser.add_argument("--address", metavar="HOST:PORT", help="ray: the cluster's address (default: a local instance)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the training jobs run")
    parser.add_argument("--rl", action="store_true",
                        help="reproduce Table 2's RL rows (MAML vs ANIL policies, rl_* analyses) instead of the "
                             "supervised analyses")
    parser.add_argument("--rl-envs", nargs="+", action="extend", metavar="ENV",
                        help="with --rl: environments, e.g. --rl-envs 2d-navigation,halfcheetah-dir,halfcheetah-vel "
                             "(default 2d-navigation)")
    parser.add_argument("--plan", metavar="DIR", help="only write the training plan to DIR (plan.jsonl, commands.sh, "
                                                      "slurm.sh) and stop")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_output_dir(args.out, "--out")
    only = [part.strip() for value in args.only for part in value.split(",") if part.strip()] if args.only else None
    # absolute: the runs' config.toml must find the data from any folder (repana evaluate / analyze)
    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
    from repana.analysis.reproduce import Reproduction
    from repana.errors import ConfigError

    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: train at least 1 seed per network (the paper uses 3)")
    if args.seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds {args.seeds} is above the limit of {MAX_SEEDS} (each seed trains every network "
                          "of every setting; the paper uses 3); see repana/limits.py")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be at least 1 (leave it out for the automatic count)")
    if args.plan:
        unused = [flag for flag, value in (("--max-workers", args.max_workers), ("--address", args.address),
                                           (f"--executor {args.executor}", args.executor != "local")) if value]
        if unused:
            raise ConfigError(f"{', '.join(unused)}: --plan only writes the jobs for another scheduler, which "
                              "chooses where they run; drop them, or drop --plan to run the jobs here")
    if args.rl and args.device != "cpu":
        raise ConfigError(f"--device {args.device}: RL jobs train on the CPU; drop --device with --rl")
    check_device(args.device, "--device")
    if args.rl_envs and not args.rl:
        raise ConfigError("--rl-envs only applies with --rl")
    if args.rl and args.setting:
        raise ConfigError("--setting names few-shot cells of the supervised tables; with --rl choose "
                          "environments with --rl-envs")
    reproduction = Reproduction(preset=args.preset, dataset=args.dataset, data_root=data_root, out=args.out,
                                analyses_dir=args.analyses, only=only, settings=args.setting,
                                rl_envs=(args.rl_envs or ["2d-navigation"]) if args.rl else None, seeds=args.seeds,
                                executor=args.executor, max_workers=args.max_workers, address=args.address,
                                device=args.device, threads=args.threads)
    if any(env.startswith("halfcheetah") for env in reproduction.rl_envs or ()) and not args.plan:
        from repana.rl.envs import import_gymnasium

        import_gymnasium()   # one line naming the extra, before anything trains
    if args.plan:
        path = reproduction.write_plan(args.plan)
        print(f"plan: {path} (run its commands, then rerun this command without --plan for the analyses)")
        return 0
    print(f"report: {reproduction.run()}")
    return 0
