"""The CLI answers at once: building the parser, `--help` and `--version` import no heavy module, and
every flag is spelled one way across commands."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repana import __version__
from repana.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "pandas", "matplotlib", "scipy", "PIL")
# Modules owned by other work in progress that still import heavy modules at their top level.
NOT_YET_LIGHT: dict[str, str] = {}   # every command's parser is light now


def _heavy_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules did it import?"""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_nothing_heavy():
    loaded = _heavy_after("import repana.cli\nrepana.cli.build_parser()")
    assert not any(loaded.values()), loaded


def test_help_and_version_import_nothing_heavy():
    code = ("import contextlib, io, repana.cli\n"
            "for argv in (['--help'], ['--version']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            repana.cli.main(argv)\n"
            "        except SystemExit as exit:\n            assert exit.code == 0, exit.code")
    loaded = _heavy_after(code)
    assert not any(loaded.values()), loaded


def test_importing_repana_and_its_runtime_setup_imports_nothing_heavy():
    loaded = _heavy_after("import repana, repana.runtime\nrepana.runtime.retain_freed_memory_from_env()")
    assert not any(loaded.values()), loaded


@pytest.mark.parametrize("command", [
    pytest.param(name, marks=pytest.mark.xfail(reason=NOT_YET_LIGHT[name], strict=False))
    if name in NOT_YET_LIGHT else name for name in COMMANDS])
def test_sub_command_parser_imports_nothing_heavy(command):
    loaded = _heavy_after(f"import repana.cli\nrepana.cli.build_parser([{command!r}])")
    assert not any(loaded.values()), loaded


@pytest.mark.parametrize("argv, imported", [
    (["--help"], []),
    (["bogus"], []),
    (["compare", "--help"], ["repana.cli.compare"]),
    (["predict", "--help"], ["repana.cli.evaluate"]),
])
def test_only_the_named_command_module_is_imported(argv, imported):
    modules = sorted({where.split(":")[0] for where, _ in COMMANDS.values()})
    code = ("import contextlib, io, json, sys, repana.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            f"    try:\n        repana.cli.main({argv!r})\n"
            "    except SystemExit:\n        pass\n"
            f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == imported


def test_unknown_command_and_no_command_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bogus"])
    assert exit.value.code == 2
    assert "argument COMMAND: invalid choice: 'bogus' (choose from 'compare', 'data'" in capsys.readouterr().err
    assert main([]) == 2 and "usage: repana" in capsys.readouterr().out


def test_version_and_help_print(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"repana {__version__}"
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0
    for name in COMMANDS:
        assert f"    {name}" in out


def _sub_parsers(parser: argparse.ArgumentParser, prefix=()):
    """(command words, parser) of every parser below ``parser``, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action._name_parser_map.items():
                yield (*prefix, name), sub
                yield from _sub_parsers(sub, (*prefix, name))


def test_every_sub_command_help_renders_and_lists_its_options():
    parser = build_parser()
    found = list(_sub_parsers(parser))
    assert {words[0] for words, _ in found} == set(COMMANDS)
    for words, sub in found:
        text = sub.format_help()  # a bare '%' in a help string would raise here
        assert text.startswith(f"usage: repana {' '.join(words)}"), words


def test_one_spelling_for_the_data_root():
    parser = build_parser([name for name in COMMANDS if name not in NOT_YET_LIGHT])
    visible = {}
    for words, sub in _sub_parsers(parser):
        for action in sub._actions:
            if action.help != argparse.SUPPRESS:
                for option in action.option_strings:
                    visible.setdefault(option, []).append(" ".join(words))
    assert "--root" not in visible, visible.get("--root")
    assert {"data download", "train", "evaluate", "reproduce", "data info"} <= set(visible["--data-root"])


def test_deprecated_root_alias_still_works(capsys):
    args = build_parser().parse_args(["data", "download", "omniglot", "--root", "/some/where"])
    assert args.data_root == "/some/where"
    assert "--root is deprecated, use --data-root" in capsys.readouterr().err
    args = build_parser().parse_args(["data", "download", "omniglot", "--data-root", "/else"])
    assert args.data_root == "/else"


def test_lists_space_separated_and_comma_forms_agree():
    from repana.cli.data import split_list
    from repana.cli.evaluate import _layers
    from repana.cli.train import resolve_config

    parse = build_parser().parse_args
    for steps in (["0", "50", "200"], ["0,50,200"], ["0,50", "200"]):
        args = parse(["train", "--preset", "quick", "--iterations", "300", "--save-steps", *steps])
        assert resolve_config(args).save_steps == [0, 50, 200]
    spaced = parse(["data", "download", "omniglot", "--archives", "images_background", "images_evaluation"])
    commas = parse(["data", "download", "omniglot", "--archives", "images_background,images_evaluation"])
    assert split_list(spaced.archives) == split_list(commas.archives) == ["images_background", "images_evaluation"]
    ev = parse(["evaluate", "c.pt", "--freeze", "conv1", "conv2", "--adapt", "head"])
    assert _layers(ev.freeze) == ["conv1", "conv2"] and _layers(ev.adapt_layers) == ["head"]
    assert _layers(parse(["evaluate", "c.pt", "--freeze", "conv1,conv2"]).freeze) == ["conv1", "conv2"]
    assert parse(["evaluate", "c.pt", "--adapt"]).adapt_layers == []  # --adapt alone: nothing adapts
    only = parse(["reproduce", "--only", "freezing", "convergence", "--only", "head_needed"]).only
    assert only == ["freezing", "convergence", "head_needed"]


def test_console_script_help_in_a_subprocess_is_quick_to_import():
    """`python -X importtime -m repana --help`: repana's own imports stay small (no torch)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "repana", "--help"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "usage: repana" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "repana.cli" in imported and not imported & set(HEAVY)


@pytest.mark.parametrize("line, expected", [
    ("repana tr", ["train"]),
    ("repana train --da", ["--data-root"]),
    ("repana evaluate run.pt --me", ["--method"]),
])
def test_shell_completion_through_argcomplete(tmp_path, line, expected):
    """argcomplete's protocol: the shell sets _ARGCOMPLETE and COMP_LINE, the program prints the
    candidates (here into a file) and exits; only the named sub-command's module is imported."""
    pytest.importorskip("argcomplete")
    out = tmp_path / "candidates"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n",
           "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}
    done = subprocess.run([sys.executable, "-m", "repana"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert [word.strip() for word in out.read_text().split("\n") if word.strip()] == expected
