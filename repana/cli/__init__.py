"""The ``repana`` command: a thin layer over the Python API.

:data:`COMMANDS` lists every sub-command with the function that adds its parser and its one-line help.
That function, ``register(subparsers, help_text)`` (``register_<command>`` in a module with several
commands) in the command's module of this package, adds the parser with ``subparsers.add_parser`` and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code). Errors
that repana raises on purpose are printed as one clear line (exit 1; usage errors exit 2). Before a
sub-command runs, glibc is asked to keep freed memory for reuse (:mod:`repana.runtime`).

The command answers at once: :func:`main` parses the line twice. The first pass lists every command with
its one-line help only, which answers ``repana --help``, ``repana --version`` and an unknown command
without importing any command module, and finds the command named; the second pass builds that
command's full parser and parses the line again. Sub-command modules import torch, numpy, pandas and
matplotlib inside ``run`` only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterable

from repana import __version__
from repana.errors import RepanaError
from repana.runtime import configure_process_defaults, retain_freed_memory_from_env

# name -> ("module:function" that adds its parser, one-line help). Order is the order of `repana --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("repana.cli.compare:register", "similarity of every layer of model A with every layer of model B"),
    "data": ("repana.cli.data:register", "few-shot datasets: info, show an episode, download Omniglot"),
    "train": ("repana.cli.train:register", "meta-train MAML / FOMAML / ANIL / Reptile / baselines"),
    "evaluate": ("repana.cli.evaluate:register_evaluate",
                 "few-shot accuracy ± 95%% CI of a checkpoint on fixed test episodes"),
    "predict": ("repana.cli.evaluate:register_predict",
                "classify query images after adapting a checkpoint on labelled support images"),
    "analyze": ("repana.cli.analyze:register", "run one of the paper's analyses on checkpoints"),
    "reproduce": ("repana.cli.reproduce:register", "train, analyse and report the paper's findings"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``repana`` parser with the full parsers of ``commands`` (default: every command; each imports
    its module). Every other command is listed with its one-line help and a parser without arguments."""
    full = set(COMMANDS if commands is None else commands)
    if full - set(COMMANDS):
        raise ValueError(f"unknown commands {sorted(full - set(COMMANDS))}; known: {', '.join(COMMANDS)}")
    parser = argparse.ArgumentParser(
        prog="repana",
        description="Representation analysis: layer similarity and the MAML/ANIL feature-reuse study.",
        epilog="`repana COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"repana {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (where, help_text) in COMMANDS.items():
        if name in full:
            module_name, function = where.split(":")
            getattr(importlib.import_module(module_name), function)(subparsers, help_text)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_named(argv: list[str] | None) -> list[str]:
    """The command ``argv`` names (none: ``[]``), found by parsing it with every command listed only.
    ``--help``, ``--version`` and usage errors before the command are answered here (and exit)."""
    command = build_parser(commands=()).parse_known_args(argv)[0].command
    return [command] if command else []


def _command_in_completion_line() -> list[str]:
    """The sub-command named on the line being completed (argcomplete's ``COMP_LINE``), if any."""
    words = os.environ.get("COMP_LINE", "").split()[1:]
    return [word for word in words if word in COMMANDS][:1]


def _autocomplete() -> None:
    """Shell completion through argcomplete when it is installed (``pip install repana[completion]``,
    then ``eval "$(register-python-argcomplete repana)"``); a no-op otherwise."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(build_parser(_command_in_completion_line()))


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    configure_process_defaults()  # OpenMP wait policy and threads: must run before any command imports torch
    _autocomplete()
    parser = build_parser(_command_named(argv))
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
    except OSError as error:  # a file system that refuses (permissions, disk full, ...): one line too
        where = f" ({error.filename})" if getattr(error, "filename", None) and str(error.filename) not in str(error) else ""
        print(f"repana {args.command}: error: {error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"repana {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
