"""Is the head needed at training time? ANIL (trained with a head adapted in the inner loop) against
a network trained with NIL's cosine classifier in the inner loop (no head), both evaluated with NIL
on the same episodes. The paper finds the head matters at training time (MiniImageNet 5-way 1-shot:
ANIL body 48.0 %, NIL-trained 38.3 %).
"""

from __future__ import annotations

import pandas as pd
import torch

from repana.analysis.common import check_same_architecture
from repana.analysis.maml_anil_nil import EvalSpec, evaluate_specs
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError


def head_needed(anil_model: torch.nn.Module, nil_trained_model: torch.nn.Module, episodes) -> pd.DataFrame:
    """NIL accuracy of an ANIL-trained and a NIL-trained body on the same episodes.

    Returns rows: training ("anil" | "nil"), accuracy (fraction), ci95, n_episodes.
    """
    check_same_architecture(anil_model, nil_trained_model, "the ANIL and NIL-trained networks")
    specs = [EvalSpec("anil", anil_model.eval(), method="nil", trained_with="anil"),
             EvalSpec("nil", nil_trained_model.eval(), method="nil", trained_with="nil")]
    frame = evaluate_specs(specs, episodes).rename(columns={"label": "training"})
    return frame[["training", "accuracy", "ci95", "n_episodes"]]


# ----- the registered analysis -------------------------------------------------------------------

NAME = "head_needed"


def _roles(context) -> tuple[str, str]:
    """(label of the head-trained network, label of the NIL-trained one), by their algorithms."""
    nil = [label for label in context.networks if context.algorithm(label) == "nil_training"]
    others = [label for label in context.networks if context.algorithm(label) != "nil_training"]
    if len(nil) != 1 or len(others) != 1:
        found = ", ".join(f"{label} ({context.algorithm(label)})" for label in context.networks)
        raise InputError(f"head_needed compares one network trained with a head (e.g. ANIL) with one trained "
                         f"with algorithm nil_training; got {found}")
    return others[0], nil[0]


def compute(context) -> dict[str, pd.DataFrame]:
    head_label, nil_label = _roles(context)
    return {NAME: head_needed(context.model(head_label), context.model(nil_label),
                              context.episodes(context.settings["episodes"]))}


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import judged_cell, markdown_table, over_seeds, pct_seeds

    summary = over_seeds(tables[NAME], ["training"], "accuracy")
    column = f"MiniImageNet-5way-{5 if context.reference_config.shots >= 5 else 1}shot"
    view = pd.DataFrame({"trained with": summary["training"],
                         "ours, NIL eval (%)": [pct_seeds(row) for _, row in summary.iterrows()],
                         f"paper {column} (%)": [paper_values.value("Table 5", t, column).printed
                                                 for t in summary["training"]]})
    cells = {row["training"]: judged_cell(row) for _, row in summary.iterrows()}
    paper = {t: paper_values.value("Table 5", t, column).value for t in summary["training"]}
    finding = Finding.judged(paper_values.verdict_head_needed_at_training(cells), prefix="Head needed at training time: ",
                             claim="the head is needed at training (ANIL body above NIL-trained body)",
                             location="Table 5; Section 5.2",
                             paper=", ".join(f"{t} {v:.1f}" for t, v in paper.items()) + f" % ({column})",
                             ours=", ".join(f"{t} {cells[t][0]:.1f}" for t in paper) + " %")
    return Section("Is the head needed at training time? (paper Table 5)", markdown_table(view), (finding,))


ANALYSIS = register(Analysis(
    name=NAME, title="Is the head needed at training time?", reference="Table 5", networks=("anil", "nil"),
    n_checkpoints=(2, 2), compute=compute, report=report, episode_offset=5))
