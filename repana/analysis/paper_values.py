"""The published numbers and claims of Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature
Reuse? Towards Understanding the Effectiveness of MAML" (ICLR 2020; arXiv 1909.09157,
https://arxiv.org/abs/1909.09157; OpenReview rkgMkCEtPB, https://openreview.net/forum?id=rkgMkCEtPB),
and the verdict rules that test a reproduction against them: the one module analyses import.

- The data (every printed cell, quote and location, the meaning of each ``±``, units) is in the TOML
  files of ``repana/analysis/paper/``, checked when loaded (:mod:`repana.analysis.paper_data`); it is
  exposed here as :data:`TABLES` (:data:`TABLE_1` ... :data:`TABLE_5`), :data:`CAPTIONS`,
  :data:`TEXT_NUMBERS`, :data:`SETTINGS`, :data:`CLAIMS`, :data:`SOURCE` and :data:`NOTES`, and read
  through :func:`table`, :func:`value`, :func:`claim`, :func:`rl_cells` and :func:`paper_cells`.
- The rules (:class:`Verdict`, the tolerances, the noise, ``verdict_*``) are code:
  :mod:`repana.analysis.paper_rules`, re-exported here.
- ``docs/paper.md`` is :func:`paper_markdown`, the data rendered for people.

What the quoted text does not contain (its appendices: training hyperparameters, total iterations, the
CCA variant's details, the speed-up table) is marked as such, never filled in.

Stdlib only: importing this module imports neither numpy nor pandas nor torch.
"""

from __future__ import annotations

from repana.analysis.paper_data import (Paper, PaperClaim, PaperValue, Setting, Source, TextNumber, load_paper,
                                        parse_printed)
from repana.analysis.paper_rules import (AGREES, BODY_CCA_ABOVE, BODY_LAYERS, CCA_MEASURES, CKA_MEASURES,
                                         COMPARABLE_DEFICIT_POINTS, COMPARABLE_SURPLUS_POINTS, DISAGREES,
                                         FREEZING_TOLERANCE_POINTS, HEAD_CCA_BELOW, LEARNING_CURVES_FROM,
                                         NO_VERDICT, PAPER_ALGORITHMS, PRINT_EPSILON, SAME_SIMILARITY_TOLERANCE,
                                         Judgement, Verdict, cells_from_records, difference_noise, judged,
                                         layer_rule, mean_ci95_half_width, t975, verdict_anil_matches_maml,
                                         verdict_anil_matches_maml_rl, verdict_anil_speedup, verdict_freezing,
                                         verdict_head_needed_at_training, verdict_inner_loop_similarity,
                                         verdict_learning_curves, verdict_multitask_below_random,
                                         verdict_nil_matches, verdict_similar_representations,
                                         verdict_training_dynamics, verdicts_inner_loop_similarity)
from repana.errors import InputError

__all__ = [
    # data
    "ARXIV", "CAPTIONS", "CLAIMS", "MINI_1", "MINI_5", "NOTES", "OMNI_1", "OMNI_5", "OPENREVIEW", "PAPER", "RL_ENVS",
    "SETTINGS", "SOURCE", "TABLES", "TABLE_1", "TABLE_2", "TABLE_3", "TABLE_4", "TABLE_5", "TEXT_NUMBERS", "Paper",
    "PaperClaim", "PaperValue", "Setting", "Source", "TextNumber", "cite", "claim", "paper_cells", "paper_markdown",
    "paper_rl_results", "paper_settings", "parse_printed", "rl_cells", "table", "value",
    # rules (repana.analysis.paper_rules)
    "AGREES", "BODY_CCA_ABOVE", "BODY_LAYERS", "CCA_MEASURES", "CKA_MEASURES", "COMPARABLE_DEFICIT_POINTS",
    "COMPARABLE_SURPLUS_POINTS", "DISAGREES", "FREEZING_TOLERANCE_POINTS", "HEAD_CCA_BELOW", "LEARNING_CURVES_FROM",
    "NO_VERDICT", "PAPER_ALGORITHMS", "PRINT_EPSILON", "SAME_SIMILARITY_TOLERANCE", "Judgement", "Verdict",
    "cells_from_records", "difference_noise", "judged", "layer_rule", "mean_ci95_half_width", "t975",
    "verdict_anil_matches_maml", "verdict_anil_matches_maml_rl", "verdict_anil_speedup", "verdict_freezing",
    "verdict_head_needed_at_training", "verdict_inner_loop_similarity", "verdict_learning_curves",
    "verdict_multitask_below_random", "verdict_nil_matches", "verdict_similar_representations",
    "verdict_training_dynamics", "verdicts_inner_loop_similarity",
]

PAPER: Paper = load_paper()
ARXIV, OPENREVIEW = PAPER.arxiv, PAPER.openreview
SOURCE: Source = PAPER.source
NOTES: tuple[str, ...] = PAPER.notes
TABLES = PAPER.tables
TABLE_1, TABLE_2, TABLE_3, TABLE_4, TABLE_5 = (TABLES[f"Table {i}"] for i in range(1, 6))
CAPTIONS = PAPER.captions
TEXT_NUMBERS: tuple[TextNumber, ...] = PAPER.text_numbers
SETTINGS = PAPER.settings
CLAIMS = PAPER.claims

MINI_1 = "MiniImageNet-5way-1shot"
MINI_5 = "MiniImageNet-5way-5shot"
OMNI_1 = "Omniglot-20way-1shot"
OMNI_5 = "Omniglot-20way-5shot"

RL_ENVS = {"2d-navigation": "2D-Navigation", "halfcheetah-dir": "HalfCheetah-Direction",
           "halfcheetah-vel": "HalfCheetah-Velocity"}
"""repana.rl environment names -> Table 2's RL column names."""


# --------------------------------------------------------------------------------------------------
# Accessors
# --------------------------------------------------------------------------------------------------

def table(name: str) -> tuple[PaperValue, ...]:
    """Every printed cell of ``name`` ("Table 1" ... "Table 5"), in the paper's row order."""
    try:
        return TABLES[name]
    except KeyError:
        raise InputError(f"no table {name!r} is transcribed; choose one of {', '.join(TABLES)}") from None


def value(table_name: str, row: str, column: str) -> PaperValue:
    """The cell of ``table_name`` at ``row`` (as printed or its key, case-insensitive: "None" or
    "none", "MAML training-NIL head" or "maml") and ``column`` (as printed, e.g.
    "MiniImageNet-5way-1shot", "HalfCheetah-Direction", "CKA Similarity"; case-insensitive)."""
    wanted_row, wanted_column = row.strip().lower(), column.strip().lower()
    for cell in table(table_name):
        if wanted_row in (cell.row.lower(), cell.key.lower()) and cell.column.lower() == wanted_column:
            return cell
    rows = sorted({c.row for c in table(table_name)})
    columns = sorted({c.column for c in table(table_name)})
    raise InputError(f"{table_name} has no cell ({row!r}, {column!r}); rows: {', '.join(rows)}; "
                     f"columns: {', '.join(columns)}")


def claim(key: str) -> PaperClaim:
    """The claim ``key`` (see :data:`CLAIMS`)."""
    try:
        return CLAIMS[key]
    except KeyError:
        raise InputError(f"no claim {key!r}; choose one of {', '.join(CLAIMS)}") from None


def cite(cell: PaperValue) -> str:
    """One line naming a cell, its printed text, what its ± is and where it is, e.g. for a report."""
    return (f"{cell.printed} ({cell.table}, {cell.row} / {cell.column}; ±: {cell.spread_meaning}; "
            f"{SOURCE.key})")


def rl_cells(env: str) -> dict[str, PaperValue]:
    """{"MAML": cell, "ANIL": cell} of Table 2's RL column of a repana.rl environment (``"2d-navigation"``...)."""
    if env not in RL_ENVS:
        raise InputError(f"Table 2 has no RL column for environment {env!r}; it has {', '.join(RL_ENVS)}")
    return {c.row: c for c in TABLE_2 if c.column == RL_ENVS[env]}


# The paper's own tables in the verdicts' input shapes (the tests check that the paper agrees with its own
# claims under the rules; training_regimes puts Table 5 beside a reproduction).

def paper_cells(table_name: str, column: str) -> dict[str, tuple[float, float | None]]:
    """{row key: (value, spread)} of one column of a table, e.g. ``paper_cells("Table 1", MINI_5)``."""
    cells = {c.key: (c.value, c.spread) for c in table(table_name) if c.column == column}
    if not cells:
        columns = sorted({c.column for c in table(table_name)})
        raise InputError(f"{table_name} has no column {column!r}; columns: {', '.join(columns)}")
    return cells


def paper_rl_results() -> dict[str, dict[str, tuple[float, float | None]]]:
    """{environment: {"MAML": (value, spread), "ANIL": ...}} of Table 2's RL rows (repana.rl names)."""
    return {env: {row: (c.value, c.spread) for row, c in rl_cells(env).items()} for env in RL_ENVS}


def paper_settings(table_name: str) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{column: {row as printed: (value, spread)}} of Table 2 or 4's accuracy cells."""
    out: dict[str, dict[str, tuple[float, float | None]]] = {}
    for c in table(table_name):
        if c.unit == "% accuracy":
            out.setdefault(c.column, {})[c.row] = (c.value, c.spread)
    return out


# --------------------------------------------------------------------------------------------------
# docs/paper.md
# --------------------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def paper_markdown() -> str:
    """The text of ``docs/paper.md``: every quoted number with where it is and the source address."""
    lines = ["# The paper's numbers, quoted", "",
             f"{PAPER.authors}, \"{PAPER.title}\", {PAPER.venue} (arXiv 1909.09157, {ARXIV}; OpenReview "
             f"rkgMkCEtPB, {OPENREVIEW}).", "",
             "Generated from the data files `repana/analysis/paper/*.toml` by "
             "`repana.analysis.paper_values.paper_markdown()`; edit the data files, not this page. Every number "
             "and quote is copied from the source below.", "",
             "## Source", "",
             f"- Version: {SOURCE.version}.", f"- Address: {SOURCE.address}.",
             f"- Quotes: {SOURCE.quoting}.",
             f"- Locations: {SOURCE.locations}.", f"- Not quoted here: {SOURCE.lacks}.", "",
             "## Notes", ""]
    lines += [f"{i}. {note}" for i, note in enumerate(NOTES, 1)]
    for name, cells in TABLES.items():
        lines += ["", f"## {name}", "", f"Where: {cells[0].location}.", "",
                  f"> {_md_escape(CAPTIONS[name])}", ""]
        columns = list(dict.fromkeys(c.column for c in cells))
        rows = list(dict.fromkeys(c.row for c in cells))
        grid = {(c.row, c.column): c.printed for c in cells}
        lines += ["| " + " | ".join(["row", *columns]) + " |", "|" + " --- |" * (len(columns) + 1)]
        lines += ["| " + " | ".join([row, *(grid.get((row, col), "") for col in columns)]) + " |" for row in rows]
        by_meaning: dict[str, list[str]] = {}
        for c in cells:
            rows_of = by_meaning.setdefault(c.spread_meaning, [])
            if c.row not in rows_of:
                rows_of.append(c.row)
        if len(by_meaning) == 1:
            spreads = next(iter(by_meaning))
        else:
            spreads = "; ".join(f"{', '.join(r)}: {m}" for m, r in by_meaning.items())
        units = ", ".join(dict.fromkeys(c.unit for c in cells))
        lines += ["", f"Unit: {units}. ±: {spreads}"]
    lines += ["", "## Numbers in the text", "", "| printed | what | where | sentence |", "| --- | --- | --- | --- |"]
    lines += [f"| {_md_escape(n.printed)} | {_md_escape(n.what)} | {_md_escape(n.location)} | "
              f"{_md_escape(n.sentence)} |" for n in TEXT_NUMBERS]
    lines += ["", "## Figures without printed numbers", ""]
    lines += [f"- **{name}** > {caption}" for name, caption in CAPTIONS.items() if name.startswith("Figure")]
    lines += ["", "## Settings stated in the main text", "", "| setting | what the paper says | where |",
              "| --- | --- | --- |"]
    lines += [f"| {_md_escape(s.name)} | {_md_escape(s.says)} | {_md_escape(s.location)} |" for s in SETTINGS.values()]
    lines += ["", "## Claims and the verdict rules", "",
              f"The rules are code, in `repana/analysis/paper_rules.py`. Each returns (\"{AGREES}\" | "
              f"\"{DISAGREES}\", reason). Tolerances: "
              f"each conv layer CCA > {BODY_CCA_ABOVE}, head CCA < {HEAD_CCA_BELOW} (one verdict per layer); "
              f"freezing ±{FREEZING_TOLERANCE_POINTS} points; ANIL vs MAML from -{COMPARABLE_DEFICIT_POINTS} to "
              f"+{COMPARABLE_SURPLUS_POINTS} points; NIL not below MAML or ANIL by more than "
              f"{COMPARABLE_DEFICIT_POINTS} points (above by any amount agrees); learning curves within "
              f"±{COMPARABLE_DEFICIT_POINTS} points at every validation of the second half of training; RL "
              f"returns: ANIL not below MAML by more than the noise; Table 3 shortfall {SAME_SIMILARITY_TOLERANCE}; "
              "each widened to the reproduction's noise when that is larger.", "",
              "The noise: each cell's spread is the 95% confidence-interval half-width of its mean, "
              "t(0.975, n-1) x std / sqrt(n) over n >= 2 seeds (std with ddof=1; each seed's value is a mean "
              "over test episodes, so the spread between seeds holds the episode noise too), or the one run's "
              "95% CI over test episodes when there is one seed (the spread between initialisations is then not "
              "counted). Two cells differ beyond noise when their difference exceeds sqrt(s_a^2 + s_b^2), the "
              "95% CI half-width of a difference of two independent means (conservative for two networks "
              "measured on the same episodes). With 2 seeds t(0.975, 1) = 12.706: the noise of a 2-seed mean "
              "is 9.0 x its std over seeds, so 2-seed verdicts can only reject large differences.", ""]
    for claim_ in CLAIMS.values():
        lines += [f"### {claim_.key} ({claim_.location}) -> `{claim_.rule}`", ""]
        lines += [f"> {_md_escape(q)}" + "\n" for q in claim_.quotes]
    return "\n".join(lines).rstrip() + "\n"
