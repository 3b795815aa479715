"""Where the features come from (the paper's training-regimes table) and whether the head is needed
at training time.

Every body is evaluated the same way, with NIL (no inner loop, no head: each query image gets the
class of the support features it is most cosine-similar to), on the same episodes, so differences
come from the body alone. The paper's Table 5 (MiniImageNet 5-way 1-shot / 5-shot) prints MAML 48.4 / 61.5,
ANIL 48.0 / 62.2, multiclass 39.7 / 54.4, multitask 26.5 / 34.2, random features 32.9 / 43.2, NIL training
38.3 / 43.0 % (see :mod:`repana.analysis.paper_values`).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch

from repana.analysis.common import check_same_architecture
from repana.analysis.maml_anil_nil import EvalSpec, evaluate_specs
from repana.analysis.registry import Analysis, Finding, Section, register

REGIME_ORDER = ("maml", "anil", "multiclass", "multitask", "nil", "random")
REGIME_NAMES = {"maml": "MAML", "anil": "ANIL", "multiclass": "Multiclass pretrain",
                "multitask": "Multitask", "nil": "NIL training", "random": "Random features"}


def random_init_model(model_config: dict, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised network of ``model_config`` (torch default init, seeded)."""
    from repana.models import build_model

    torch.manual_seed(seed)
    return build_model(dict(model_config)).eval()


def regimes_accuracy(bodies: Mapping[str, torch.nn.Module], episodes) -> pd.DataFrame:
    """NIL accuracy of each body on the same ``episodes``.

    ``bodies``: regime key (see ``REGIME_ORDER``; other keys allowed) -> network. Bodies must share
    the conv architecture (heads may differ in size: multiclass heads are not used by NIL).
    Returns rows: regime, name, accuracy (fraction), ci95, n_episodes.
    """
    items = list(bodies.items())
    for key, model in items[1:]:
        check_same_architecture(items[0][1], model, f"bodies {items[0][0]!r} and {key!r}")
    specs = [EvalSpec(label=key, model=model.eval(), method="nil", trained_with=key) for key, model in items]
    frame = evaluate_specs(specs, episodes).rename(columns={"label": "regime"})
    frame.insert(1, "name", [REGIME_NAMES.get(k, k) for k in frame["regime"]])
    return frame.drop(columns=["trained_with", "method"])


# ----- the registered analysis -------------------------------------------------------------------

NAME = "training_regimes"
RANDOM_BODY_SEED_OFFSET = 5   # the random body's seed: the reference run's seed + this


def compute(context) -> dict[str, pd.DataFrame]:
    """NIL accuracy of every network's body, and of a random body of the same architecture."""
    episodes = context.episodes(context.settings["episodes"])
    base = context.reference_config
    bodies = {label: context.model(label) for label in context.networks}
    bodies["random"] = random_init_model(base.model_config(), seed=base.seed + RANDOM_BODY_SEED_OFFSET)
    return {NAME: regimes_accuracy(bodies, episodes)}


def figures(tables, context) -> dict:
    from repana.analysis.report import for_figure
    from repana.plots import paper as plots

    frame = for_figure(tables[NAME], ["regime", "name"], "accuracy")
    return {NAME: lambda: plots.accuracy_bars_figure(frame, "regime", "NIL accuracy by training regime")}


def paper_column(context) -> str:
    """Table 5's column closest to this run's cell (MiniImageNet 5-way 1-shot and 5-shot)."""
    return f"MiniImageNet-5way-{5 if context.reference_config.shots >= 5 else 1}shot"


def _ranked(accuracy: dict[str, float]) -> str:
    """"anil 62.2 > maml 61.5 > ...": regimes by accuracy (percent), best first."""
    return " > ".join(f"{k} {v:.1f}" for k, v in sorted(accuracy.items(), key=lambda item: -item[1]))


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, judged_cell, markdown_table, over_seeds, pct_seeds

    summary = over_seeds(tables[NAME], ["regime", "name"], "accuracy")
    column = paper_column(context)
    paper = paper_values.paper_cells("Table 5", column)
    view = pd.DataFrame({"training regime": summary["name"],
                         "ours, NIL eval (%)": [pct_seeds(row) for _, row in summary.iterrows()],
                         f"paper {column} (%)": [paper_values.value("Table 5", r, column).printed if r in paper else ""
                                                 for r in summary["regime"]]})
    cells = {row["regime"]: judged_cell(row) for _, row in summary.iterrows()}
    claims = {paper_values.verdict_head_needed_at_training: "MAML/ANIL training gives the best features (NIL eval)",
              paper_values.verdict_multitask_below_random: "multitask training is the worst, below random features"}
    findings = []
    for rule, claim in claims.items():
        try:
            judgement = rule(cells)
        except ValueError as error:       # a regime the rule needs was not run
            findings.append(Finding(f"{rule.__name__}: not judged ({error})"))
            continue
        findings.append(Finding.judged(judgement, claim=claim, location="Table 5; Section 5.2",
                                       paper=_ranked({k: v for k, (v, _) in paper.items()}) + f" % ({column})",
                                       ours=_ranked({k: v for k, (v, _) in cells.items()}) + " %"))
    ranking = " > ".join(summary.sort_values("accuracy", ascending=False)["regime"])
    paper_ranking = " > ".join(sorted(paper, key=lambda k: -paper[k][0]))
    findings.append(Finding(f"Ranking ours: {ranking}; paper ({column}): {paper_ranking}"))
    body = (f"Every body evaluated with NIL on the same episodes. Paper: Table 5, {column} (± not stated).\n\n"
            + markdown_table(view) + "\n\n" + figure_markdown(NAME, "NIL accuracy of bodies from each training regime"))
    return Section("Where the features come from (paper Table 5)", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Where the features come from", reference="Table 5",
    networks=("maml", "anil", "multiclass", "multitask", "nil"), compute=compute, figures=figures, report=report,
    episode_offset=5))
