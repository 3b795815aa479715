"""The ``repana`` command: a thin layer over the Python API.

Each sub-command lives in a module of this package that exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit
code). Errors that repana raises on purpose are printed as one clear line (exit 1; usage errors exit 2).
Before a sub-command runs, glibc is asked to keep freed memory for reuse (:mod:`repana.runtime`).

The command answers at once: :data:`COMMANDS` lists every sub-command with its one-line help, so
``repana --help`` and ``repana --version`` import no sub-command module, and a sub-command's module
is imported only when that sub-command is parsed (its ``--help`` included). Sub-command modules import
torch, numpy, pandas and matplotlib inside ``run`` only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from repana import __version__
from repana.errors import RepanaError
from repana.runtime import configure_process_defaults, retain_freed_memory_from_env

# name -> (module that registers it, one-line help). Order is the order of `repana --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("repana.cli.compare", "similarity of every layer of model A with every layer of model B"),
    "data": ("repana.cli.data", "few-shot datasets: info, show an episode, download Omniglot"),
    "train": ("repana.cli.train", "meta-train MAML / FOMAML / ANIL / Reptile / baselines"),
    "evaluate": ("repana.cli.evaluate", "few-shot accuracy ± 95%% CI of a checkpoint on fixed test episodes"),
    "predict": ("repana.cli.evaluate",
                "classify query images after adapting a checkpoint on labelled support images"),
    "analyze": ("repana.cli.analyze", "run one of the paper's analyses on checkpoints"),
    "reproduce": ("repana.cli.reproduce", "train, analyse and report the paper's findings"),
}


class _Registrar:
    """What a sub-command module's ``register`` receives: ``add_parser(name, **kwargs)`` builds the
    real parser of an already listed command and puts it in place of its placeholder."""

    def __init__(self, action: argparse._SubParsersAction):
        self._action = action

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if name not in COMMANDS:
            raise RuntimeError(f"sub-command {name!r} is registered but not listed in repana.cli.COMMANDS")
        kwargs.pop("help", None)  # the listing's help comes from COMMANDS
        kwargs.pop("aliases", None)
        placeholder = self._action._name_parser_map[name]
        kwargs.setdefault("prog", placeholder.prog)
        parser = self._action._parser_class(**kwargs)
        self._action._name_parser_map[name] = parser
        return parser


class _LazySubParsersAction(argparse._SubParsersAction):
    """Sub-parsers whose arguments are added when their command is parsed (see the module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loaded_modules: set[str] = set()

    def load(self, name: str) -> argparse.ArgumentParser:
        """The full parser of command ``name`` (imports and registers its module on first use)."""
        module_name = COMMANDS[name][0]
        if module_name not in self._loaded_modules:
            importlib.import_module(module_name).register(_Registrar(self))
            self._loaded_modules.add(module_name)
        return self._name_parser_map[name]

    def __call__(self, parser, namespace, values, option_string=None):
        self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser(load: str | list[str] | None = None) -> argparse.ArgumentParser:
    """The ``repana`` parser. Sub-commands are registered when parsed; ``load``: names of commands
    to register now (``"all"``: every one), e.g. to inspect their arguments."""
    parser = argparse.ArgumentParser(
        prog="repana",
        description="Representation analysis: layer similarity and the MAML/ANIL feature-reuse study.",
        epilog="`repana COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"repana {__version__}")
    parser.register("action", "parsers", _LazySubParsersAction)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text)
    names = list(COMMANDS) if load == "all" else [load] if isinstance(load, str) else list(load or [])
    for name in names:
        subparsers.load(name)
    return parser


def _command_in_completion_line() -> list[str]:
    """The sub-command named on the line being completed (argcomplete's ``COMP_LINE``), if any."""
    words = os.environ.get("COMP_LINE", "").split()[1:]
    return [word for word in words if word in COMMANDS][:1]


def _autocomplete(parser_for) -> None:
    """Shell completion through argcomplete when it is installed (``pip install repana[completion]``,
    then ``eval "$(register-python-argcomplete repana)"``); a no-op otherwise."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser_for(_command_in_completion_line()))


def main(argv: list[str] | None = None) -> int:
    configure_process_defaults()  # OpenMP wait policy and threads: must run before any command imports torch
    _autocomplete(build_parser)
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
    except OSError as error:  # a file system that refuses (permissions, disk full, ...): one line too
        where = f" ({error.filename})" if getattr(error, "filename", None) and str(error.filename) not in str(error) else ""
        print(f"repana {args.command}: error: {error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"repana {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
