"""Representational change in the inner loop (the paper's Figure 2: CCA/CKA before vs after adaptation).

For each test episode the network is adapted on the support set, one inner step at a time, and the
activations of every layer on the episode's query images are compared before adaptation and after
each step. Similarity near 1 means the inner loop left the layer's representation unchanged
(feature reuse); clearly lower means rapid learning. Each value has beside it the null baseline: the
same measure on the same arrays with the query datapoints of one side shuffled, i.e. what unrelated
data of this size scores. BOIL (arXiv 2008.08882), whose inner loop adapts the body only, is run
beside MAML and ANIL as the representation-change counterpoint, reported without a verdict.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from repana.analysis.common import DEFAULT_MEASURES, LAYERS, check_layers, episode_rows, summarize
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError
from repana.meta.inner import InnerLoop, adapt_trajectory
from repana.progress import progress


def _query_activations(model, query_x, layers, params) -> dict:
    from repana.capture import Capture

    with torch.no_grad():
        return Capture(layers=layers).run(model, query_x, params)


def inner_loop_similarity(model: torch.nn.Module, episodes, *, steps: int, lr: float,
                          trainable: Callable[[str], bool], measures: Sequence[str] = DEFAULT_MEASURES,
                          layers: Sequence[str] = LAYERS, reduction: str | None = None,
                          min_ratio: float = 5.0, null: bool = True, label: str = "",
                          every_step: bool = True, seed: int = 0,
                          record_steps: Sequence[int] | None = None) -> pd.DataFrame:
    """Similarity of each layer's query activations before vs after the inner loop, per episode.

    ``episodes``: :class:`repana.data.Episodes` (support and query per task). ``trainable``: which
    parameters the inner loop adapts (MAML: all; ANIL: the head). ``measures``: registered names of
    :mod:`repana.similarity` (default SVCCA and debiased linear CKA). Conv maps are reduced per
    measure (CCA family: spatial positions as datapoints; CKA: flattened), see
    :class:`repana.compare.Comparison` for the pooling rule (``min_ratio``).

    Returns a tidy DataFrame, one row per (step, episode or pooled group, layer, measure): columns
    label, step (1..steps; only ``steps`` when ``every_step`` is False; ``record_steps`` and ``steps`` when
    ``record_steps`` is given: the similarity costs more than the steps, so long inner loops record a few), then the columns of
    :meth:`repana.compare.Comparison.episodes` (layer_a = layer_b, measure, value, n_datapoints, n_features_a,
    n_features_b, reduction, episode, scope, null_value, note).
    """
    if steps < 1:
        raise InputError(f"steps = {steps}: the inner loop needs at least one step")
    layers = check_layers(model, layers)
    model.eval()
    n_tasks = len(episodes)
    if n_tasks < 1:
        raise InputError("no episodes given")
    if record_steps is not None:
        recorded = sorted({int(s) for s in record_steps if 1 <= int(s) <= steps} | {steps})
    else:
        recorded = list(range(1, steps + 1)) if every_step else [steps]
    before, after = [], {s: [] for s in recorded}
    for index in progress(range(n_tasks), desc=f"inner-loop similarity {label}".strip(), unit="episode"):
        task = episodes[index]
        trajectory = adapt_trajectory(model, dict(model.named_parameters()), task.support_x, task.support_y,
                                      InnerLoop(steps, lr, trainable))
        before.append(_query_activations(model, task.query_x, layers, trajectory[0]))
        for step in recorded:
            after[step].append(_query_activations(model, task.query_x, layers, trajectory[step]))
    frames = [episode_rows(before, acts, layers, measures, reduction=reduction, min_ratio=min_ratio, null=null,
                           seed=seed + step).assign(label=label, step=step)
              for step, acts in after.items() if acts]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["label", "step"] + [c for c in frame.columns if c not in ("label", "step")]]


def summarize_inner_loop(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95% CI and null-baseline mean per (label, step, layer, measure) of
    :func:`inner_loop_similarity` output."""
    return summarize(frame, ["label", "step", "layer", "measure"])


# ----- the registered analysis -------------------------------------------------------------------

def compute(context) -> dict[str, pd.DataFrame]:
    """Every network of ``context`` adapted with its own test-time rule; detail and summary tables."""
    settings = context.settings
    episodes = context.episodes(settings["episodes"])
    steps = int(settings.get("steps", context.steps))
    frames = [inner_loop_similarity(context.model(label), episodes, steps=steps, lr=context.lr,
                                    trainable=context.trainable(label), measures=settings["measures"],
                                    min_ratio=settings.get("min_ratio", 5.0), label=label.upper(),
                                    record_steps=settings.get("record_steps"))
              for label in context.networks]
    detail = pd.concat(frames, ignore_index=True)
    return {NAME: detail, f"{NAME}_summary": summarize_inner_loop(detail)}


def _figure_step(context) -> int | None:
    """The inner step the accuracy analyses use, when this analysis followed it (else the last)."""
    followed = int(context.settings.get("steps", context.steps))
    return context.steps if context.steps <= followed else None


def seed_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary averaged over seeds: mean (and null_mean) per (label, step, layer, measure), with
    mean_std over seeds, n_seeds and the mean episode CI."""
    from repana.analysis.report import over_seeds

    keys = ["label", "step", "layer", "measure"]
    merged = over_seeds(summary, keys, "mean").merge(
        over_seeds(summary, keys, "null_mean", ci="null_ci95").drop(columns="n_seeds"), on=keys, how="left")
    extra = [c for c in ("n_datapoints", "n_features", "reduction", "scope") if c in summary]
    return merged.merge(summary.drop_duplicates(keys)[keys + extra], on=keys, how="left")


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    summary = seed_summary(tables[f"{NAME}_summary"])
    several = summary["n_seeds"] > 1
    summary.loc[several, "ci95"] = summary.loc[several, "mean_std"]   # error bars: spread over seeds
    return {NAME: lambda: plots.inner_loop_figure(summary, step=_figure_step(context)),
            f"{NAME}_steps": lambda: plots.inner_steps_figure(summary)}


def layer_findings(maml: pd.DataFrame, inner_step: int) -> list[Finding]:
    """Figure 2's claim layer by layer (Section 3.2.2 states it per layer): one finding per (measure,
    layer) of MAML's similarity before vs after ``inner_step`` inner steps (``maml``: rows of
    :func:`seed_summary` of one step)."""
    from repana.analysis import paper_values

    findings = []
    after = f"MAML after {inner_step} inner step{'s' if inner_step > 1 else ''}"
    for measure, group in maml.groupby("measure", sort=False):
        cells = {row["layer"]: row["mean"] for _, row in group.iterrows()}
        for layer, judgement in paper_values.verdicts_inner_loop_similarity(cells, measure).items():
            cca = measure.lower() in paper_values.CCA_MEASURES
            if layer != "head":
                paper = f"CCA > {paper_values.BODY_CCA_ABOVE}" if cca else f"CKA 'almost 1' (rule: > {paper_values.BODY_CCA_ABOVE})"
            else:
                paper = f"CCA < {paper_values.HEAD_CCA_BELOW}" if cca else "CKA 'much lower' than the conv layers"
            findings.append(Finding.judged(
                judgement, prefix=f"{after}: ", claim=f"{layer} barely changes in the inner loop ({measure})"
                if layer != "head" else f"the head changes in the inner loop ({measure})",
                location="Figure 2; Section 3.2.2", paper=paper, ours=f"{cells[layer]:.3f} ({after})"))
    return findings


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    summary = seed_summary(tables[f"{NAME}_summary"])
    step = _figure_step(context)
    if step is not None and step in set(summary["step"]):
        last = summary[summary["step"] == step]
    else:
        last = summary[summary["step"] == summary.groupby("label")["step"].transform("max")]
        step = None
    view = last[["label", "layer", "measure", "mean", "mean_std", "ci95", "null_mean", "n_seeds", "n_datapoints",
                 "n_features", "reduction"]].rename(columns={"mean": "before vs after", "mean_std": "std over seeds",
                                                             "ci95": "episode CI", "null_mean": "null baseline"})
    findings = []
    maml_all = summary[summary["label"].str.startswith("MAML")]
    if len(maml_all):
        judged_step = step if step is not None else int(maml_all["step"].max())
        findings += layer_findings(maml_all[maml_all["step"] == judged_step], judged_step)
    algorithms = {label.upper(): context.algorithm(label) for label in context.networks}
    for label, rows in last.groupby("label", sort=False):
        if paper_values.judged(algorithms.get(label, "maml")):
            continue
        for measure, group in rows.groupby("measure", sort=False):
            layers = ", ".join(f"{row['layer']} {row['mean']:.2f}" for _, row in group.iterrows())
            findings.append(Finding(f"{label} (trained with {algorithms[label]}, about which the paper makes no "
                                    f"claim; no verdict), {measure} before vs after the inner loop: {layers}"))
    by_step = maml_all.pivot_table(index=["measure", "layer"], columns="step", values="mean").round(3)
    by_step.columns = [f"after step {c}" for c in by_step.columns]
    by_step = by_step.reset_index()
    which = f"after {step} inner step(s), as in the accuracy analyses" if step else "last inner step"
    body = ("Similarity of each layer's activations on the query images before vs after the test-time "
            f"inner loop ({which}): mean over seeds of the mean over episodes (or pooled groups), its std over "
            "seeds and the mean episode CI, beside the null baseline (one side's query datapoints shuffled). "
            "`n_datapoints` x `n_features` is what entered each measure; `reduction` how conv maps became "
            "2-D. The paper's Figure 2 uses CCA and CKA; SVCCA is the CCA variant computed here.\n\n"
            + markdown_table(view) + "\n\n"
            + figure_markdown(NAME, "Before vs after the inner loop, per layer (dotted: null; bars: std over seeds)")
            + "\nMAML, similarity to the representation before the inner loop after each inner step:\n\n"
            + (markdown_table(by_step) if len(by_step) else "") + "\n\n"
            + figure_markdown(f"{NAME}_steps", "Similarity to the initial representation after each step"))
    return Section(f"Representational change in the inner loop (paper {REFERENCE})", body, tuple(findings))


NAME = "inner_loop_similarity"
REFERENCE = "Fig. 2"

ANALYSIS = register(Analysis(
    name=NAME, title="Representational change in the inner loop", reference=REFERENCE,
    networks=("maml", "anil", "boil"), compute=compute, figures=figures, report=report,
    episode_offset=0, summary_table=f"{NAME}_summary"))
