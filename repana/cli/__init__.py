"""The ``repana`` command: a thin layer over the Python API.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and
returning an exit code). Errors that repana raises on purpose are printed as one clear line. Before a
sub-command runs, glibc is asked to keep freed memory for reuse (:mod:`repana.runtime`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from repana import __version__
from repana.errors import RepanaError
from repana.runtime import retain_freed_memory_from_env

# Order is the order of `repana --help`.
SUBCOMMAND_MODULES = [
    "repana.cli.compare",    # repana compare
    "repana.cli.data",       # repana data info | show | download
    "repana.cli.train",      # repana train
    "repana.cli.evaluate",   # repana evaluate, repana predict
    "repana.cli.analyze",    # repana analyze <analysis>
    "repana.cli.reproduce",  # repana reproduce
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repana",
        description="Representation analysis: layer similarity and the MAML/ANIL feature-reuse study.",
    )
    parser.add_argument("--version", action="version", version=f"repana {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # sub-command not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        retain_freed_memory_from_env()  # faster CPU passes (repana.runtime); REPANA_RETAIN_FREED_MIB=0: off
        return int(args.func(args) or 0)
    except RepanaError as error:
        print(f"repana {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"repana {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
