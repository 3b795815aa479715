"""Every ```python block of README.md and docs/*.md runs, so that no import or name in the docs goes stale.

The blocks of one file run in order in one namespace (a block may use what an earlier one defined), in a
temporary working directory, with ``REPANA_CACHE_DIR`` there too: nothing is written into the repository.
An HTML comment on the line before a fence changes how its block is checked:

``<!-- snippet: needs omniglot -->``
    needs the real Omniglot subset: skipped when :func:`conftest.real_data_root` finds none; the
    block's ``"../shared/data"`` is replaced by that root.
``<!-- snippet: needs MODULE -->``
    skipped when ``MODULE`` (e.g. ``transformers``) is not installed.
``<!-- snippet: imports only, REASON -->``
    an API listing (signatures, not Python) or an example that trains for minutes or needs a cluster:
    only its import statements run, and it must have at least one.
``<!-- snippet: tested in tests/FILE.py::TEST -->``
    that test runs the block and checks its values; here the test is only checked to exist.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT, real_data_root

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
MARKER = re.compile(r"<!--\s*snippet:\s*(.*?)\s*-->\s*$")
KINDS = ("needs ", "imports only", "tested in ")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int          # 1-based line of the opening fence
    code: str
    marker: str        # the text of the <!-- snippet: ... --> comment before the fence, or ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def snippets(path: Path) -> list[Snippet]:
    """The ```python blocks of one markdown file, in order, with their markers."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        found.append(Snippet(path, text.count("\n", 0, match.start()) + 1, match.group(1),
                             marker.group(1) if marker else ""))
    return found


ALL = [s for path in DOC_FILES for s in snippets(path)]


def import_statements(code: str) -> str:
    """The top-level ``import`` / ``from ... import`` statements of ``code`` (which need not be Python
    elsewhere), a parenthesised import running on until its parentheses close."""
    statements, statement, depth = [], [], 0
    for line in code.splitlines():
        if not statement and not re.match(r"(from\s+\S+\s+)?import\s", line):
            continue
        statement.append(line)
        code_part = line.split("#", 1)[0]
        depth += code_part.count("(") - code_part.count(")")
        if depth <= 0:
            statements.append("\n".join(statement))
            statement, depth = [], 0
    return "\n".join(statements) + "\n"


class _FileRun:
    """One markdown file's namespace, working directory and the fence lines already run in it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.namespace = {"__name__": "doc_snippet"}
        self.done: set[int] = set()


_RUNS: dict[Path, _FileRun] = {}


def _run(snippet: Snippet, namespace: dict) -> None:
    code = snippet.code
    if snippet.marker.startswith("imports only"):
        code = import_statements(code)
        assert code.strip(), f"{snippet.id}: an 'imports only' block holds no import statement"
    if snippet.marker == "needs omniglot":
        code = code.replace('"../shared/data"', repr(str(real_data_root())))
    # the leading blank lines keep the traceback's line numbers those of the markdown file
    exec(compile("\n" * snippet.line + code, str(snippet.path), "exec"), namespace)


def _skip_reason(snippet: Snippet) -> str | None:
    if snippet.marker == "needs omniglot" and real_data_root() is None:
        return "needs the real Omniglot subset: set REPANA_DATA_ROOT to a folder with omniglot/"
    if snippet.marker.startswith("needs ") and snippet.marker != "needs omniglot":
        module = snippet.marker.removeprefix("needs ")
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (not installed)"
    return None


def test_every_marker_is_known():
    for snippet in ALL:
        assert not snippet.marker or snippet.marker.startswith(KINDS), f"{snippet.id}: unknown marker {snippet.marker!r}"


def test_import_statements_follow_parentheses():
    code = "from a import (\n    b,  # (c)\n    d,\n)\nx = f(1) | g\nimport e\n"
    assert import_statements(code) == "from a import (\n    b,  # (c)\n    d,\n)\nimport e\n"
    ast.parse(import_statements(code))


@pytest.mark.parametrize("snippet", ALL, ids=[s.id for s in ALL])
def test_snippet_runs(snippet, tmp_path_factory, monkeypatch):
    if snippet.marker.startswith("tested in "):
        test_file, test_name = snippet.marker.removeprefix("tested in ").split("::")
        assert f"def {test_name}(" in (REPO_ROOT / test_file).read_text(encoding="utf-8"), snippet.marker
        return
    reason = _skip_reason(snippet)
    if reason:
        pytest.skip(reason)
    if snippet.path not in _RUNS:
        _RUNS[snippet.path] = _FileRun(tmp_path_factory.mktemp("doc_snippets"))
    run = _RUNS[snippet.path]
    monkeypatch.chdir(run.workdir)
    monkeypatch.setenv("REPANA_CACHE_DIR", str(run.workdir / "cache"))
    for previous in snippets(snippet.path):   # the blocks before it in the same file, each run once
        if previous.line < snippet.line and previous.line not in run.done and \
                not previous.marker.startswith("tested in ") and _skip_reason(previous) is None:
            run.done.add(previous.line)
            _run(previous, run.namespace)
    run.done.add(snippet.line)
    _run(snippet, run.namespace)
