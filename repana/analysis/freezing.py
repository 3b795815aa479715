"""Freezing layers at test time (the paper's layer-freezing table).

The network is adapted on each test episode with the parameters of conv blocks 1..k held fixed, for
k = 0 (nothing frozen) to 4 (only the head adapts), and its query accuracy is measured on the same
episodes each time. If accuracy barely drops, the inner loop's changes to the body do not matter:
feature reuse. BOIL (arXiv 2008.08882), whose inner loop adapts the body only, is run beside MAML as the
representation-change counterpoint, reported without a verdict (the paper makes no claim about it).
On MiniImageNet 5-way 1-shot the paper's Table 1 prints 44.5, 44.8, 44.8, 44.7, 44.7 %
(none, {1}, {1,2}, {1,2,3}, {1,2,3,4} frozen): see :mod:`repana.analysis.paper_values`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from repana.meta.adapt import all_parameters, freeze_layers
from repana.analysis.registry import AGREES, DISAGREES, Analysis, Finding, Section, register
from repana.errors import InputError
from repana.progress import progress

FROZEN_SETS: tuple[tuple[int, ...], ...] = ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4))


def frozen_name(frozen: Sequence[int]) -> str:
    """``()`` -> ``"none"``, ``(1, 2)`` -> ``"1,2"`` (the paper's column names)."""
    return ",".join(map(str, frozen)) if frozen else "none"


def freezing_accuracy(model: torch.nn.Module, episodes, *, steps: int, lr: float,
                      trainable: Callable[[str], bool] = all_parameters,
                      frozen_sets: Sequence[Sequence[int]] = FROZEN_SETS, loss_reduction: str = "mean",
                      label: str = "") -> pd.DataFrame:
    """Query accuracy after adapting all ``trainable`` parameters except those of frozen conv blocks.

    ``episodes``: :class:`repana.data.Episodes` (the same for every frozen set). ``trainable``: the
    algorithm's own inner-loop choice (MAML: all; ANIL: head), which freezing narrows further.
    Returns one row per frozen set: label, frozen ("none", "1", "1,2", ...), n_frozen, accuracy
    (fraction in [0, 1]), ci95 (half-width over episodes), n_episodes, steps, lr.
    """
    from repana.meta.evaluate import evaluate

    for frozen in frozen_sets:
        bad = [i for i in frozen if i not in (1, 2, 3, 4)]
        if bad:
            raise InputError(f"frozen layers {bad} are not conv blocks 1..4")
    rows = []
    for frozen in progress(frozen_sets, desc=f"freezing {label}".strip(), unit="set"):
        result = evaluate(model, episodes, method="adapt", steps=steps, lr=lr,
                          trainable=freeze_layers(trainable, frozen, model.layer_names),
                          loss_reduction=loss_reduction)
        rows.append({"label": label, "frozen": frozen_name(frozen), "n_frozen": len(frozen),
                     "accuracy": float(result.accuracy), "ci95": float(result.ci95),
                     "n_episodes": len(episodes), "steps": steps, "lr": lr})
    return pd.DataFrame.from_records(rows)


# ----- the registered analysis -------------------------------------------------------------------

NAME = "freezing"


def compute(context) -> dict[str, pd.DataFrame]:
    """Every network of ``context``, its own test-time rule narrowed by each frozen set."""
    episodes = context.episodes(context.settings["episodes"])
    frames = [freezing_accuracy(context.model(label), episodes, steps=context.steps, lr=context.lr,
                                trainable=context.trainable(label), label=label.upper())
              for label in context.networks]
    return {NAME: pd.concat(frames, ignore_index=True)}


def figures(tables, context) -> dict:
    from repana.analysis.report import for_figure
    from repana.plots import paper as plots

    return {NAME: lambda: plots.freezing_figure(for_figure(tables[NAME], ["label", "frozen"], "accuracy"))}


def paper_column(context) -> str:
    """Table 1's column closest to this run's cell (it has MiniImageNet 5-way 1-shot and 5-shot)."""
    shots = context.reference_config.shots
    return f"MiniImageNet-5way-{5 if shots >= 5 else 1}shot"


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table, over_seeds, pct_seeds, seed_spread

    summary = over_seeds(tables[NAME], ["label", "frozen"], "accuracy")
    column = paper_column(context)
    algorithms = {label.upper(): context.algorithm(label) for label in context.networks}
    findings, views = [], []
    for label, group in summary.groupby("label", sort=False):
        views.append(pd.DataFrame({
            "network": label, "frozen conv blocks": group["frozen"],
            "ours (%)": [pct_seeds(row) for _, row in group.iterrows()],
            f"paper {column} (%)": [paper_values.value("Table 1", f, column).printed for f in group["frozen"]]}))
        cells = {row["frozen"]: (100 * row["accuracy"], 100 * seed_spread(row)) for _, row in group.iterrows()}
        if not paper_values.judged(algorithms.get(label, "maml")):
            findings.append(Finding(f"{label}: {_unjudged(algorithms[label], cells)}"))
            continue
        verdict, reason = paper_values.verdict_freezing(cells)
        findings.append(Finding(f"{label}: {reason}", AGREES if verdict == paper_values.AGREES else DISAGREES))
    body = (f"Accuracy with conv blocks 1..k held at their meta-learned values in the test-time inner loop. "
            f"Paper: Table 1, {column}; its ± is {paper_values.value('Table 1', 'none', column).spread_meaning}\n\n"
            + markdown_table(pd.concat(views, ignore_index=True)) + "\n\n"
            + figure_markdown(NAME, "Accuracy with conv blocks frozen at test time"))
    return Section("Freezing layers at test time (paper Table 1)", body, tuple(findings))


def _unjudged(algorithm: str, cells: dict) -> str:
    """The accuracy cost of freezing the whole body, stated without a verdict (no claim of the paper
    about ``algorithm``; BOIL's body adapts by design, arXiv 2008.08882)."""
    none, frozen = cells.get("none"), cells.get("1,2,3,4")
    cost = (f"{{1,2,3,4}} frozen {none[0]:.1f} -> {frozen[0]:.1f} ({frozen[0] - none[0]:+.1f} points)"
            if none and frozen else "")
    return (f"trained with {algorithm}, about which the paper makes no claim (no verdict)"
            + (f"; {cost}" if cost else ""))


ANALYSIS = register(Analysis(
    name=NAME, title="Freezing layers at test time", reference="Table 1", networks=("maml", "boil"),
    compute=compute, figures=figures, report=report, episode_offset=1))
