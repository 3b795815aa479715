"""Freezing layers at test time (the paper's layer-freezing table), under three test-time protocols.

The network is adapted on each test episode with the parameters of conv blocks 1..k held fixed, for
k = 0 (nothing frozen) to 4 (only the head adapts), and its query accuracy is measured on the same
episodes each time. If accuracy barely drops, the inner loop's changes to the body do not matter:
feature reuse. BOIL (arXiv 2008.08882), whose inner loop adapts the body only, is run beside MAML as the
representation-change counterpoint, reported without a verdict (the paper makes no claim about it).
On MiniImageNet 5-way 1-shot the paper's Table 1 prints 44.5, 44.8, 44.8, 44.7, 44.7 %
(none, {1}, {1,2}, {1,2,3}, {1,2,3,4} frozen): see :mod:`repana.analysis.paper_values`.

A drop when every conv block is frozen has two readings, and the step count tells them apart:

- the body is reused but the head needs more steps: a head adapting alone from its meta-learned start
  has to do in the test-time steps what MAML spread over every layer; with more steps it catches up;
- the body really adapts: the drop stays however many steps the head gets, because the last conv
  block's inner-loop change carried information the frozen body cannot give.

So every frozen set is measured under three protocols (:data:`PROTOCOLS`): ``run`` (the run's own
test-time steps), ``paper`` (the steps of the paper's protocol for the cell: Table 1 is MiniImageNet,
evaluated with Finn et al.'s 10 test steps) and ``converged`` (enough steps for the support loss to
converge: the first of :data:`CONVERGENCE_LADDER` steps whose mean support cross-entropy is at most
:data:`CONVERGED_SUPPORT_LOSS` nats, capped at the last; the table records the steps used and whether
the criterion was met).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from repana.meta.inner import all_parameters, freeze_layers
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError
from repana.progress import progress

FROZEN_SETS: tuple[tuple[int, ...], ...] = ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4))
PROTOCOLS = ("run", "paper", "converged")
# Table 1 is MiniImageNet (5-way 1-shot and 5-shot), evaluated as in Finn et al. 2017 with 10 test-time steps
# (arXiv 1703.03400, Section 5.2 and Appendix A.1; Raghu et al. train and evaluate "using the same
# hyperparameters", arXiv 1909.09157 Section 3.1).
PAPER_TEST_STEPS = 10
CONVERGENCE_LADDER = (10, 30, 100, 300)
# 0.05 nats: every support image's true class at probability ~0.95; the support set is fitted.
CONVERGED_SUPPORT_LOSS = 0.05


def frozen_name(frozen: Sequence[int]) -> str:
    """``()`` -> ``"none"``, ``(1, 2)`` -> ``"1,2"`` (the paper's column names)."""
    return ",".join(map(str, frozen)) if frozen else "none"


def _check_frozen_sets(frozen_sets: Sequence[Sequence[int]]) -> None:
    for frozen in frozen_sets:
        bad = [i for i in frozen if i not in (1, 2, 3, 4)]
        if bad:
            raise InputError(f"frozen layers {bad} are not conv blocks 1..4")


def freezing_accuracy(model: torch.nn.Module, episodes, *, steps: int, lr: float,
                      trainable: Callable[[str], bool] = all_parameters,
                      frozen_sets: Sequence[Sequence[int]] = FROZEN_SETS, inner_loss: str = "mean",
                      label: str = "") -> pd.DataFrame:
    """Query accuracy after adapting all ``trainable`` parameters except those of frozen conv blocks.

    ``episodes``: :class:`repana.data.Episodes` (the same for every frozen set). ``trainable``: the
    algorithm's own inner-loop choice (MAML: all; ANIL: head), which freezing narrows further.
    Returns one row per frozen set: label, frozen ("none", "1", "1,2", ...), n_frozen, accuracy
    (fraction in [0, 1]), ci95 (half-width over episodes), n_episodes, steps, lr.
    """
    from repana.meta.evaluate import evaluate

    _check_frozen_sets(frozen_sets)
    rows = []
    for frozen in progress(frozen_sets, desc=f"freezing {label}".strip(), unit="set"):
        result = evaluate(model, episodes, method="adapt", steps=steps, lr=lr,
                          trainable=freeze_layers(trainable, frozen, model.layer_names),
                          inner_loss=inner_loss)
        rows.append({"label": label, "frozen": frozen_name(frozen), "n_frozen": len(frozen),
                     "accuracy": float(result.accuracy), "ci95": float(result.ci95),
                     "n_episodes": len(episodes), "steps": steps, "lr": lr})
    return pd.DataFrame.from_records(rows)


def converged_steps(model: torch.nn.Module, episodes, *, lr: float, trainable: Callable[[str], bool],
                    ladder: Sequence[int] = CONVERGENCE_LADDER, target: float = CONVERGED_SUPPORT_LOSS,
                    losses: dict[int, float] | None = None) -> tuple[int, float, bool]:
    """The first step count of ``ladder`` whose mean support cross-entropy over ``episodes`` is at most
    ``target`` nats: ``(steps, that loss, True)``; ``(ladder[-1], its loss, False)`` when none is.

    ``losses``: ``{steps: mean support loss}`` already measured on these episodes with this ``lr`` and
    ``trainable``; read instead of measured again, and filled with every step count measured here."""
    from repana.meta.evaluate import support_loss

    if not ladder or any(int(s) < 1 for s in ladder):
        raise InputError(f"convergence ladder {list(ladder)} must hold step counts of at least 1")
    losses = {} if losses is None else losses
    loss = float("nan")
    for steps in map(int, ladder):
        if steps not in losses:
            losses[steps] = float(support_loss(model, episodes, steps=steps, lr=lr, trainable=trainable).mean())
        loss = losses[steps]
        if not np.isfinite(loss):
            raise InputError(f"the support loss is not finite after {steps} steps of lr {lr}: the test-time "
                             "inner loop diverges; use a smaller lr")
        if loss <= target:
            return steps, loss, True
    return int(ladder[-1]), loss, False


def freezing_by_protocol(model: torch.nn.Module, episodes, *, run_steps: int, lr: float,
                         trainable: Callable[[str], bool] = all_parameters,
                         frozen_sets: Sequence[Sequence[int]] = FROZEN_SETS, paper_steps: int = PAPER_TEST_STEPS,
                         ladder: Sequence[int] = CONVERGENCE_LADDER, target: float = CONVERGED_SUPPORT_LOSS,
                         label: str = "", ladder_episodes=None) -> pd.DataFrame:
    """:func:`freezing_accuracy` under each test-time protocol of :data:`PROTOCOLS` (module docstring).

    Returns one row per (frozen set, protocol): label, frozen, n_frozen, protocol, steps, accuracy (fraction),
    ci95 (over episodes), support_loss (mean support cross-entropy after adaptation, nats, over the episodes
    the convergence criterion is searched on), converged (that support loss at most ``target``), n_episodes,
    lr. Steps are in the mean-loss convention of ``lr``. ``ladder_episodes``: the episodes the convergence
    criterion is searched and judged on (default ``episodes``; a subset bounds the search's cost, accuracy is
    then measured on every episode).
    """
    from repana.meta.evaluate import evaluate, support_loss

    _check_frozen_sets(frozen_sets)
    search = episodes if ladder_episodes is None else ladder_episodes
    rows = []
    for frozen in progress(frozen_sets, desc=f"freezing {label}".strip(), unit="set"):
        adapted = freeze_layers(trainable, frozen, model.layer_names)
        losses: dict[int, float] = {}   # support losses on the search episodes, shared by the protocols
        settled = converged_steps(model, search, lr=lr, trainable=adapted, ladder=ladder, target=target,
                                  losses=losses)
        results: dict[int, object] = {}   # protocols with the same step count share one evaluation
        for protocol, steps in (("run", run_steps), ("paper", paper_steps), ("converged", settled[0])):
            if steps not in results:
                results[steps] = evaluate(model, episodes, method="adapt", steps=steps, lr=lr, trainable=adapted)
            if steps not in losses:
                losses[steps] = float(support_loss(model, search, steps=steps, lr=lr, trainable=adapted).mean())
            result, loss = results[steps], losses[steps]
            rows.append({"label": label, "frozen": frozen_name(frozen), "n_frozen": len(frozen),
                         "protocol": protocol, "steps": int(steps), "accuracy": float(result.accuracy),
                         "ci95": float(result.ci95), "support_loss": loss, "converged": bool(loss <= target),
                         "n_episodes": len(episodes), "lr": lr})
    return pd.DataFrame.from_records(rows)


def freezing_reading(drop_paper: float, drop_converged: float, tolerance: float, conv4_change: float | None = None,
                     ) -> str:
    """Which explanation a frozen-body drop supports (points, all four conv blocks frozen vs none).

    ``drop_paper``: the drop under the paper's protocol; ``drop_converged``: with the support loss
    converged; ``tolerance``: the points within which two accuracies are equal (the verdict's allowance);
    ``conv4_change``: 1 - conv4's similarity before vs after the inner loop, when measured.
    """
    change = "" if conv4_change is None else f"; conv4's representation changes by {conv4_change:.3f} (1 - similarity) in the inner loop"
    if drop_paper <= tolerance:
        return (f"the body is reused: freezing all four conv blocks changes accuracy by {-drop_paper:+.1f} points under "
                "the paper's protocol")
    if drop_converged <= tolerance:
        return (f"the body is reused but the head needs more steps: freezing all four conv blocks costs "
                f"{drop_paper:.1f} points under the paper's protocol and {drop_converged:+.1f} once the support loss "
                f"has converged{change}")
    return (f"the body really adapts: freezing all four conv blocks costs {drop_paper:.1f} points under the paper's "
            f"protocol and still {drop_converged:.1f} once the support loss has converged{change}")


# ----- the registered analysis -------------------------------------------------------------------

NAME = "freezing"
BODY_ADAPTING = ("maml", "fomaml")   # the algorithms whose inner loop adapts the body: Table 1's claim is about MAML


def conv4_change(model: torch.nn.Module, episodes, *, steps: int, lr: float, trainable: Callable[[str], bool],
                 measure: str = "cka_debiased") -> float:
    """1 - conv4's similarity (``measure``) before vs after ``steps`` inner steps on ``episodes``, averaged."""
    from repana.analysis.inner_loop_similarity import inner_loop_similarity

    detail = inner_loop_similarity(model, episodes, steps=steps, lr=lr, trainable=trainable, measures=[measure],
                                   layers=["conv4"], null=False, every_step=False)
    return float(1.0 - detail["value"].mean())


def _ladder_episodes(context, episodes):
    """The first ``ladder_episodes`` (setting) of ``episodes``, the convergence search's sample; None: all."""
    count = context.settings.get("ladder_episodes")
    if count is None or int(count) >= len(episodes):
        return None
    from repana.data.episodes import Episodes

    whole = next(iter(episodes.chunks(len(episodes)))) if hasattr(episodes, "chunks") else episodes
    part = slice(0, int(count))
    return Episodes(whole.support_x[part], whole.support_y[part], whole.query_x[part], whole.query_y[part],
                    whole.class_ids[part])


def compute(context) -> dict[str, pd.DataFrame]:
    """Every network of ``context``, its own test-time rule narrowed by each frozen set, under each protocol;
    and conv4's inner-loop change of the body-adapting networks (``freezing_conv4``)."""
    settings = context.settings
    episodes = context.episodes(settings["episodes"])
    ladder = tuple(settings.get("ladder", CONVERGENCE_LADDER))
    frames, changes = [], []
    for label in context.networks:
        model = context.model(label)
        frames.append(freezing_by_protocol(model, episodes, run_steps=context.steps, lr=context.lr,
                                           trainable=context.trainable(label), ladder=ladder,
                                           ladder_episodes=_ladder_episodes(context, episodes),
                                           paper_steps=int(settings.get("paper_steps", PAPER_TEST_STEPS)),
                                           label=label.upper()))
        if context.algorithm(label) in BODY_ADAPTING:
            few = context.episodes(int(settings.get("similarity_episodes", 20)), offset=7)
            changes.append({"label": label.upper(), "layer": "conv4", "measure": "cka_debiased",
                            "steps": context.steps, "change": conv4_change(model, few, steps=context.steps,
                                                                           lr=context.lr,
                                                                           trainable=context.trainable(label))})
    tables = {NAME: pd.concat(frames, ignore_index=True)}
    if changes:
        tables[f"{NAME}_conv4"] = pd.DataFrame.from_records(changes)
    return tables


def figures(tables, context) -> dict:
    from repana.analysis.report import for_figure
    from repana.plots import paper as plots

    frame = tables[NAME]
    if "protocol" in frame:
        frame = frame[frame["protocol"] == "paper"]
    return {NAME: lambda: plots.freezing_figure(for_figure(frame, ["label", "frozen"], "accuracy"))}


def paper_column(context) -> str:
    """Table 1's column closest to this run's cell (it has MiniImageNet 5-way 1-shot and 5-shot)."""
    shots = context.reference_config.shots
    return f"MiniImageNet-5way-{5 if shots >= 5 else 1}shot"


def _ends(accuracy, frozen: list[str], column: str = "") -> str:
    """"none 44.5 -> 1,2,3,4 44.7 %": accuracy (percent) with nothing and with the most blocks frozen."""
    most = frozen[-1]
    return f"none {accuracy('none'):.1f} -> {most} {accuracy(most):.1f} %" + (f" ({column})" if column else "")


PROTOCOL_HEADERS = {"run": "run's protocol (%)", "paper": "paper's protocol (%)",
                    "converged": "support loss converged (%)"}


def _steps_of(frame: pd.DataFrame, label: str, frozen: str, protocol: str) -> str:
    """The test-time steps behind one cell ("30", or "30/100" when seeds differ)."""
    chosen = frame[(frame["label"] == label) & (frame["frozen"] == frozen) & (frame["protocol"] == protocol)]
    return "/".join(str(s) for s in sorted(set(chosen["steps"].astype(int))))


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, judged_cell, markdown_table, over_seeds, pct_seeds

    frame = tables[NAME]
    if "protocol" not in frame:   # tables of an older repana: the run's protocol only
        frame = frame.assign(protocol="paper")
    summary = over_seeds(frame, ["label", "frozen", "protocol"], "accuracy")
    algorithms = {label.upper(): context.algorithm(label) for label in context.networks}
    changes = tables.get(f"{NAME}_conv4")
    column = paper_column(context)
    algorithms = {label.upper(): context.algorithm(label) for label in context.networks}
    findings, views = [], []
    for label, group in summary.groupby("label", sort=False):
        view = {"network": label, "frozen conv blocks": list(dict.fromkeys(group["frozen"]))}
        for protocol in (p for p in PROTOCOLS if p in set(group["protocol"])):
            rows = group[group["protocol"] == protocol]
            view[PROTOCOL_HEADERS[protocol]] = [f"{pct_seeds(row)} [{_steps_of(frame, label, row['frozen'], protocol)} steps]"
                                                for _, row in rows.iterrows()]
        view[f"paper {column} (%)"] = [paper_values.value("Table 1", f, column).printed for f in view["frozen conv blocks"]]
        views.append(pd.DataFrame(view))
        cells = {protocol: {row["frozen"]: judged_cell(row) for _, row in group[group["protocol"] == protocol].iterrows()}
                 for protocol in set(group["protocol"])}
        algorithm = algorithms.get(label, label.lower())
        if not paper_values.judged(algorithm):
            findings.append(Finding(f"{label}: {_unjudged(algorithm, cells['paper'])}"))
            continue
        if algorithm not in BODY_ADAPTING:   # ANIL and the head-only regimes: their body never adapts
            continue
        frozen_names = list(cells["paper"])
        steps = sorted(set(frame.loc[(frame["label"] == label) & (frame["protocol"] == "paper"), "steps"].astype(int)))
        findings.append(Finding.judged(
            paper_values.verdict_freezing(cells["paper"]), prefix=f"{label}, paper's protocol: ",
            claim=f"{label}: freezing conv blocks at test time hardly affects accuracy ({'/'.join(map(str, steps))} test steps)",
            location="Table 1; Section 3.2.1",
            paper=_ends(lambda f: paper_values.value("Table 1", f, column).value, frozen_names, column),
            ours=_ends(lambda f: cells["paper"][f][0], frozen_names)))
        if "converged" in cells and "1,2,3,4" in cells["paper"]:
            tolerance = max(paper_values.FREEZING_TOLERANCE_POINTS, cells["paper"]["1,2,3,4"][1])
            drop = {p: cells[p]["none"][0] - cells[p]["1,2,3,4"][0] for p in ("paper", "converged")}
            change = None if changes is None else float(changes.loc[changes["label"] == label, "change"].mean())
            findings.append(Finding(f"{label}: {freezing_reading(drop['paper'], drop['converged'], tolerance, change)}"))
    steps_note = (f"Three test-time protocols: the run's own steps ({context.steps}), the paper's (Table 1 is "
                  f"MiniImageNet, evaluated with {PAPER_TEST_STEPS} steps) and enough steps for the support loss "
                  f"to converge (the first of {', '.join(map(str, CONVERGENCE_LADDER))} steps whose mean support "
                  f"cross-entropy is at most {CONVERGED_SUPPORT_LOSS} nats). The verdict uses the paper's protocol; "
                  "the converged column tells a head that needed more steps from a body that really adapts.")
    body = (f"Accuracy with conv blocks 1..k held at their meta-learned values in the test-time inner loop. "
            f"{steps_note} Paper: Table 1, {column}; its ± is "
            f"{paper_values.value('Table 1', 'none', column).spread_meaning}\n\n"
            + markdown_table(pd.concat(views, ignore_index=True)) + "\n\n"
            + figure_markdown(NAME, "Accuracy with conv blocks frozen at test time (paper's protocol)"))
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
