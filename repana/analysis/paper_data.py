"""The paper's printed numbers, quotes and their locations, loaded from the TOML files of
``repana/analysis/paper/`` and checked on loading.

Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML", ICLR 2020: arXiv 1909.09157 (https://arxiv.org/abs/1909.09157), OpenReview
rkgMkCEtPB (https://openreview.net/forum?id=rkgMkCEtPB).

The files (shipped as package data, found through :func:`repana.resources.paper_files`):

- ``source.toml``: the paper, the text quoted (:class:`Source`) and notes on it;
- ``tables.toml``: Tables 1-5, every cell as printed, with its unit and the meaning of its ``±``;
- ``figures.toml``: the captions of the figures the claims are about;
- ``text.toml``: numbers in the running text with their sentences, and the experimental settings;
- ``claims.toml``: the claims, as verbatim quotes, with the verdict rule that tests each.

:func:`load_paper` returns them as one frozen :class:`Paper`. A file that breaks the layout (a missing
or unknown key, a wrong type, an unknown unit or ``±`` meaning, a cell that is not a finite number, a
malformed location, a reference to nothing) raises :class:`repana.errors.ConfigError` naming the file,
the entry and the problem. The rules that judge a reproduction against these numbers are code:
:mod:`repana.analysis.paper_rules`.

Stdlib only: importing this module imports neither numpy nor pandas nor torch.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Mapping

from repana.errors import ConfigError
from repana.resources import paper_files

__all__ = ["Paper", "PaperClaim", "PaperValue", "Setting", "Source", "TextNumber", "UNITS", "load_paper",
           "parse_printed"]

UNITS = ("% accuracy", "average return", "similarity")
"""The units of the tables' cells: accuracy in percent (the unit of the verdict rules), RL return, similarity."""

NO_SPREAD = "none"
"""The name in ``tables.toml``'s ``[spreads]`` for rows printed without ``±``."""


@dataclass(frozen=True)
class Source:
    """The text of the paper that the numbers and quotes are copied from.

    ``key``: a short name for citations; ``version``: which text it is; ``address``: its public address;
    ``quoting``: how its notation is written here; ``locations``: what a location names; ``lacks``: the
    parts of the paper not quoted.
    """

    key: str
    version: str
    address: str
    quoting: str
    locations: str
    lacks: str


@dataclass(frozen=True)
class PaperValue:
    """One printed cell of one of the paper's tables.

    ``printed`` is the cell exactly as printed; ``value`` and ``spread`` (float; spread None when no
    ``±`` is printed) are parsed from it. ``spread_meaning`` says what the ``±`` is, in the paper's words
    where it says so. ``unit``: one of :data:`UNITS`. ``dataset``/``ways``/``shots`` are parsed from
    accuracy columns ("MiniImageNet-5way-1shot"); for RL and similarity cells ``dataset`` is the column
    and ``ways``/``shots`` are None. ``key``: the row's name in repana's analyses ("none", "maml").
    """

    table: str
    row: str
    column: str
    printed: str
    value: float
    spread: float | None
    spread_meaning: str
    unit: str
    dataset: str
    ways: int | None
    shots: int | None
    location: str
    key: str


@dataclass(frozen=True)
class TextNumber:
    """A number printed in the running text: as printed, what it is, where, and its sentence (verbatim)."""

    printed: str
    what: str
    location: str
    sentence: str


@dataclass(frozen=True)
class Setting:
    """An experimental setting as far as the main text states it: what the paper says, and where."""

    name: str
    says: str
    location: str


@dataclass(frozen=True)
class PaperClaim:
    """A claim of the paper: verbatim quotes, where they are, and the verdict rule that tests it
    (the name of a function of :mod:`repana.analysis.paper_rules`, with words where it takes more)."""

    key: str
    location: str
    quotes: tuple[str, ...]
    rule: str


@dataclass(frozen=True)
class Paper:
    """Everything in ``repana/analysis/paper/``, read-only. Mappings keep the files' order.

    ``tables``: table name -> its cells in the paper's row order (row by row, columns left to right);
    ``captions``: table or figure name -> caption; ``settings``: setting name -> :class:`Setting`;
    ``claims``: claim key -> :class:`PaperClaim`; ``notes``: Markdown paragraphs.
    """

    authors: str
    title: str
    venue: str
    arxiv: str
    openreview: str
    source: Source
    notes: tuple[str, ...]
    tables: Mapping[str, tuple[PaperValue, ...]]
    captions: Mapping[str, str]
    text_numbers: tuple[TextNumber, ...]
    settings: Mapping[str, Setting]
    claims: Mapping[str, PaperClaim]


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------

_PRINTED = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:±\s*(\d+(?:\.\d+)?))?\s*$")
_SETTING = re.compile(r"^(Omniglot|MiniImageNet)-(\d+)way-(\d+)shot$")
# A location: parts separated by "; ", each naming a part of the paper ("Table 1 (...)", "Section 3.2.1",
# "Sections 3.2 and 4", "Figure 2 caption", "Appendix B, C.4", "Abstract").
_LOCATION_PART = re.compile(r"^(Abstract|(Table|Figure|Section|Sections|Appendix) [0-9A-D](\.\d+)*)\b")


def parse_printed(printed: str) -> tuple[float, float | None]:
    """``(value, spread)`` of a printed cell ("44.5 ± 0.8" -> (44.5, 0.8); "0.51" -> (0.51, None)).
    Raises ValueError when the text is not a number with an optional ``± spread``."""
    match = _PRINTED.match(printed)
    if match is None:
        raise ValueError(f"cannot parse the printed cell {printed!r}")
    spread = match.group(2)
    return float(match.group(1)), (float(spread) if spread is not None else None)


class _File:
    """Checks of one data file's entries; every error names the file and the entry."""

    def __init__(self, name: str):
        self.name = name

    def error(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"repana/analysis/paper/{self.name}, {where}: {problem}")

    def fields(self, entry: Any, where: str, required: Mapping[str, type],
               optional: Mapping[str, type] | None = None) -> dict[str, Any]:
        """``entry`` as a dict, after checking it is a table with every required key, no unknown key,
        and values of the given types (strings non-empty, without surrounding whitespace); the items of
        lists are checked by the caller."""
        if not isinstance(entry, dict):
            raise self.error(where, f"expected a table, got {type(entry).__name__}")
        optional = optional or {}
        unknown = sorted(set(entry) - set(required) - set(optional))
        if unknown:
            raise self.error(where, f"unknown key(s) {', '.join(unknown)}; known: "
                                    f"{', '.join([*required, *optional])}")
        missing = [k for k in required if k not in entry]
        if missing:
            raise self.error(where, f"missing key(s) {', '.join(missing)}")
        for key, value in entry.items():
            kind = required.get(key) or optional[key]
            if not isinstance(value, kind):
                raise self.error(where, f"{key} must be {kind.__name__}, got {type(value).__name__}")
            if kind is str:
                self.text(value, where, key)
        return dict(entry)

    def text(self, value: str, where: str, key: str) -> str:
        if not value.strip():
            raise self.error(where, f"{key} is empty")
        if value != value.strip():
            raise self.error(where, f"{key} has leading or trailing whitespace")
        return value

    def strings(self, values: list, where: str, key: str) -> tuple[str, ...]:
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise self.error(where, f"{key}[{i}] must be a string, got {type(v).__name__}")
            self.text(v, where, f"{key}[{i}]")
        return tuple(values)

    def location(self, value: str, where: str) -> str:
        for part in value.split("; "):
            if not _LOCATION_PART.match(part):
                raise self.error(where, f"location part {part!r} of {value!r} names no part of the paper "
                                        f"(Abstract, Table N, Figure N, Section N, Sections N, Appendix X)")
        return value

    def unique(self, names: list[str], what: str) -> None:
        seen = set()
        for name in names:
            if name in seen:
                raise self.error(f"{what} {name!r}", "defined twice")
            seen.add(name)


def _read(name: str) -> tuple[_File, dict[str, Any]]:
    files = paper_files()
    if name not in files:
        raise ConfigError(f"repana/analysis/paper/{name} is missing; found {', '.join(sorted(files)) or 'nothing'}: "
                          "reinstall repana")
    try:
        data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"repana/analysis/paper/{name} is not valid TOML: {error}") from None
    return _File(name), data


# --------------------------------------------------------------------------------------------------
# The files
# --------------------------------------------------------------------------------------------------

def _source(f: _File, data: dict) -> tuple[dict, Source, tuple[str, ...]]:
    top = f.fields(data, "top level", {"paper": dict, "source": dict, "note": list})
    paper = f.fields(top["paper"], "[paper]", dict.fromkeys(("authors", "title", "venue", "arxiv", "openreview"), str))
    for key, prefix in (("arxiv", "https://arxiv.org/abs/"), ("openreview", "https://openreview.net/forum?id=")):
        if not paper[key].startswith(prefix):
            raise f.error("[paper]", f"{key} must be an address starting with {prefix}, got {paper[key]!r}")
    source = Source(**f.fields(top["source"], "[source]", dict.fromkeys(
        ("key", "version", "address", "quoting", "locations", "lacks"), str)))
    notes = tuple(f.fields(n, f"note {i + 1}", {"text": str})["text"] for i, n in enumerate(top["note"]))
    return paper, source, notes


def _column(f: _File, entry: Any, where: str) -> tuple[str, str, str, int | None, int | None]:
    column = f.fields(entry, where, {"name": str, "unit": str})
    name, unit = column["name"], column["unit"]
    if unit not in UNITS:
        raise f.error(where, f"unknown unit {unit!r}; known: {', '.join(UNITS)}")
    setting = _SETTING.match(name)
    if unit == "% accuracy" and setting is None:
        raise f.error(where, f"an accuracy column is named Dataset-<ways>way-<shots>shot, got {name!r}")
    if setting is None:
        return name, unit, name, None, None
    return name, unit, setting.group(1), int(setting.group(2)), int(setting.group(3))


def _table(f: _File, entry: Any, spreads: Mapping[str, str], index: int) -> tuple[str, str, tuple[PaperValue, ...]]:
    where = f"table {index + 1}"
    table = f.fields(entry, where, {"name": str, "location": str, "caption": str, "columns": list, "rows": list})
    name = table["name"]
    where = f"table {name!r}"
    if not re.fullmatch(r"Table \d+", name):
        raise f.error(where, "a table's name is 'Table <number>'")
    location = f.location(table["location"], where)
    if not location.startswith(name):
        raise f.error(where, f"its location must start with its name, got {location!r}")
    columns = [_column(f, c, f"{where}, column {i + 1}") for i, c in enumerate(table["columns"])]
    f.unique([c[0] for c in columns], f"{where}: column")
    if not columns or not table["rows"]:
        raise f.error(where, "needs at least one column and one row")
    cells: list[PaperValue] = []
    for i, raw in enumerate(table["rows"]):
        row = f.fields(raw, f"{where}, row {i + 1}", {"printed": str, "key": str, "spread": str, "cells": list})
        here = f"{where}, row {row['printed']!r}"
        if row["spread"] not in spreads:
            raise f.error(here, f"the meaning of its ± {row['spread']!r} is not in [spreads]: "
                                f"{', '.join(spreads)}")
        printed = f.strings(row["cells"], here, "cells")
        if len(printed) != len(columns):
            raise f.error(here, f"{len(printed)} cells for {len(columns)} columns")
        for text, (column, unit, dataset, ways, shots) in zip(printed, columns):
            try:
                value, spread = parse_printed(text)
            except ValueError as error:
                raise f.error(f"{here}, column {column!r}", str(error)) from None
            if not (math.isfinite(value) and (spread is None or math.isfinite(spread))):
                raise f.error(f"{here}, column {column!r}", f"{text!r} is not finite")
            if (spread is None) != (row["spread"] == NO_SPREAD):
                raise f.error(f"{here}, column {column!r}", f"{text!r} prints {'no ' if spread is None else ''}± "
                                                            f"but the row's ± meaning is {row['spread']!r}")
            cells.append(PaperValue(table=name, row=row["printed"], column=column, printed=text, value=value,
                                    spread=spread, spread_meaning=spreads[row["spread"]], unit=unit,
                                    dataset=dataset, ways=ways, shots=shots, location=location, key=row["key"]))
    first_cells = cells[::len(columns)]
    f.unique([c.row for c in first_cells], f"{where}: row")
    f.unique([c.key for c in first_cells], f"{where}: key")
    return name, table["caption"], tuple(cells)


def _tables(f: _File, data: dict) -> tuple[dict[str, tuple[PaperValue, ...]], dict[str, str]]:
    top = f.fields(data, "top level", {"spreads": dict, "table": list})
    spreads = f.fields(top["spreads"], "[spreads]", dict.fromkeys(top["spreads"], str))
    if NO_SPREAD not in spreads:
        raise f.error("[spreads]", f"needs {NO_SPREAD!r}, the meaning of rows printed without ±")
    tables, captions = {}, {}
    for i, entry in enumerate(top["table"]):
        name, caption, cells = _table(f, entry, spreads, i)
        if name in tables:
            raise f.error(f"table {name!r}", "defined twice")
        tables[name], captions[name] = cells, caption
    return tables, captions


def _figures(f: _File, data: dict) -> dict[str, str]:
    top = f.fields(data, "top level", {"figure": list})
    captions = {}
    for i, entry in enumerate(top["figure"]):
        figure = f.fields(entry, f"figure {i + 1}", {"name": str, "caption": str})
        if not re.fullmatch(r"Figure \d+", figure["name"]):
            raise f.error(f"figure {i + 1}", f"a figure's name is 'Figure <number>', got {figure['name']!r}")
        if figure["name"] in captions:
            raise f.error(f"figure {figure['name']!r}", "defined twice")
        captions[figure["name"]] = figure["caption"]
    return captions


def _text(f: _File, data: dict) -> tuple[tuple[TextNumber, ...], dict[str, Setting]]:
    top = f.fields(data, "top level", {"number": list, "setting": list})
    numbers = []
    for i, entry in enumerate(top["number"]):
        number = TextNumber(**f.fields(entry, f"number {i + 1}", dict.fromkeys(
            ("printed", "what", "location", "sentence"), str)))
        f.location(number.location, f"number {number.printed!r}")
        numbers.append(number)
    settings = {}
    for i, entry in enumerate(top["setting"]):
        setting = Setting(**f.fields(entry, f"setting {i + 1}", dict.fromkeys(("name", "says", "location"), str)))
        f.location(setting.location, f"setting {setting.name!r}")
        if setting.name in settings:
            raise f.error(f"setting {setting.name!r}", "defined twice")
        settings[setting.name] = setting
    return tuple(numbers), settings


def _claims(f: _File, data: dict, captions: Mapping[str, str]) -> dict[str, PaperClaim]:
    top = f.fields(data, "top level", {"passages": dict, "claim": list})
    passages = f.fields(top["passages"], "[passages]", dict.fromkeys(top["passages"], str))
    claims = {}
    for i, entry in enumerate(top["claim"]):
        claim = f.fields(entry, f"claim {i + 1}", {"key": str, "location": str, "rule": str, "quote": list})
        where = f"claim {claim['key']!r}"
        f.location(claim["location"], where)
        if not claim["rule"].startswith("verdict"):
            raise f.error(where, f"rule must name a verdict function (verdict_*), got {claim['rule']!r}")
        quotes = []
        for j, raw in enumerate(claim["quote"]):
            here = f"{where}, quote {j + 1}"
            quote = f.fields(raw, here, {}, {"text": str, "caption": str, "passage": str})
            if len(quote) != 1:
                raise f.error(here, "give exactly one of text, caption (a table or figure name) or passage")
            (kind, value), = quote.items()
            if kind == "caption" and value not in captions:
                raise f.error(here, f"no caption of {value!r}; captions: {', '.join(captions)}")
            if kind == "passage" and value not in passages:
                raise f.error(here, f"no passage {value!r} in [passages]: {', '.join(passages)}")
            quotes.append({"text": value, "caption": captions.get(value), "passage": passages.get(value)}[kind])
        if not quotes:
            raise f.error(where, "needs at least one quote")
        if claim["key"] in claims:
            raise f.error(where, "defined twice")
        claims[claim["key"]] = PaperClaim(claim["key"], claim["location"], tuple(quotes), claim["rule"])
    return claims


@cache
def load_paper() -> Paper:
    """Read and check the data files once (cached); the returned :class:`Paper` is read-only."""
    paper, source, notes = _source(*_read("source.toml"))
    tables, captions = _tables(*_read("tables.toml"))
    figures = _figures(*_read("figures.toml"))
    clash = sorted(set(figures) & set(tables))
    if clash:
        raise ConfigError(f"repana/analysis/paper: {', '.join(clash)} both a table and a figure")
    captions.update(figures)
    numbers, settings = _text(*_read("text.toml"))
    claims = _claims(*_read("claims.toml"), captions)
    return Paper(**paper, source=source, notes=notes, tables=MappingProxyType(tables),
                 captions=MappingProxyType(captions), text_numbers=numbers, settings=MappingProxyType(settings),
                 claims=MappingProxyType(claims))
