"""Where the features come from (the paper's training-regimes table) and whether the head is needed
at training time.

Every body is evaluated the same way, with NIL (no inner loop, no head: each query image gets the
class of the support features it is most cosine-similar to), on the same episodes, so differences
come from the body alone. The paper (MiniImageNet 5-way 1-shot) reports MAML 48.4, ANIL 48.0,
multiclass pretraining 39.7, multitask 26.5, NIL training 38.3, random init 32.9 %.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch

from repana.analysis.common import check_same_architecture
from repana.analysis.maml_anil_nil import EvalSpec, evaluate_specs
from repana.analysis.registry import AGREES, DISAGREES, Analysis, Finding, Section, register

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
    from repana.plots import paper as plots

    return {NAME: lambda: plots.accuracy_bars_figure(tables[NAME], "regime", "NIL accuracy by training regime")}


def verdict(accuracy: dict[str, float]) -> bool:
    """The paper's claim: meta-learned bodies (MAML, ANIL) beat every other regime under NIL evaluation."""
    meta = min(accuracy.get("maml", np.nan), accuracy.get("anil", np.nan))
    others = [accuracy[k] for k in ("multiclass", "multitask", "nil", "random") if k in accuracy]
    return bool(others) and meta > max(others)


def report(tables, context) -> Section:
    from repana.analysis.report import PAPER, figure_markdown, markdown_table, pct

    frame = tables[NAME]
    view = pd.DataFrame({"training regime": frame["name"],
                         "ours, NIL eval (%)": [pct(a, c) for a, c in zip(frame["accuracy"], frame["ci95"])],
                         "paper MiniImageNet 5w1s (%)": [PAPER["regimes"].get(r, "") for r in frame["regime"]]})
    best = verdict(dict(zip(frame["regime"], frame["accuracy"])))
    finding = Finding(f"Meta-learned bodies (MAML, ANIL) {'beat' if best else 'do NOT beat'} every other regime under "
                      "NIL evaluation (paper: 48.4 / 48.0 vs at most 39.7). Ranking ours: "
                      + " > ".join(frame.sort_values("accuracy", ascending=False)["regime"])
                      + "; paper: maml > anil > multiclass > nil > random > multitask", AGREES if best else DISAGREES)
    body = markdown_table(view) + "\n\n" + figure_markdown(NAME, "NIL accuracy of bodies from each training regime")
    return Section("Where the features come from (paper Table 5)", body, (finding,))


ANALYSIS = register(Analysis(
    name=NAME, title="Where the features come from", reference="Table 5",
    networks=("maml", "anil", "multiclass", "multitask", "nil"), compute=compute, figures=figures, report=report,
    episode_offset=5))
