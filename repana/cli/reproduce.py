"""``repana reproduce``: the paper's evidence in one command (see docs/reproduce.md).

    repana reproduce                                   # quick preset, offline glyph set, ./reproduce
    repana reproduce --dataset omniglot --data-root /data --out results
    repana reproduce --preset paper --dataset miniimagenet --data-root /data --out paper_run

Trains what is missing (reusing and resuming the runs in ``<out>/runs``), runs every analysis of
``analyses/*.toml``, writes ``<out>/tables/*.csv``, figures ``<out>/*.png|pdf`` and ``<out>/report.md``.
Rerunning an interrupted command continues where it stopped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repana.cli.checks import check_output_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("reproduce", help="train, analyse and report the paper's findings",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="quick: minutes on a laptop CPU; paper: the paper's training lengths")
    parser.add_argument("--dataset", choices=("glyphs", "omniglot", "miniimagenet"), default="glyphs",
                        help="glyphs (offline, generated), omniglot or miniimagenet (need --data-root)")
    parser.add_argument("--data-root", metavar="DIR", help="data folder (default REPANA_DATA_ROOT)")
    parser.add_argument("--out", default="reproduce", metavar="DIR", help="output folder (default ./reproduce)")
    parser.add_argument("--analyses", metavar="DIR", help="folder of analysis entries (default: analyses/ of the source)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's choice; use 1 on a machine shared with other jobs)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help="run only these analyses, e.g. --only freezing convergence (or NAME,NAME)")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_output_dir(args.out, "--out")
    only = [part.strip() for value in args.only for part in value.split(",") if part.strip()] if args.only else None
    # absolute: the runs' config.toml must find the data from any folder (repana evaluate / analyze)
    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
    from repana.analysis.reproduce import reproduce

    report = reproduce(preset=args.preset, dataset=args.dataset, data_root=data_root, out=args.out,
                       analyses_dir=args.analyses, only=only, threads=args.threads)
    print(f"report: {report}")
    return 0
