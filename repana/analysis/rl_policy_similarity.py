"""The policy's layer similarity before vs after adaptation (the RL counterpart of Figure 2).

For each held-out task every RL checkpoint adapts (its own inner loop), rolls the adapted policy out, and
its layers (``layer1``, ``layer2``: hidden ReLU layers; ``mu``: the action mean) are read on those states
twice, with the meta-learned and with the adapted parameters (:func:`repana.rl.analysis.policy_similarity`).
SVCCA (99% of the variance) and linear CKA compare the two; mean CCA over all units is reported too, but
labelled: for a 2-D input (17-D for HalfCheetah) most of the 100 canonical directions of a hidden layer
are near-null (dead or collinear units) and their correlations are numerical noise or cut off, so the
mean says more about the rank cut-off than about the representation (docs/rl.md). ANIL's hidden layers are
not adapted, so they score exactly 1 by construction; the question is MAML's: does its body change?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from repana.analysis.registry import AGREES, DISAGREES, NO_VERDICT, Analysis, Finding, Section, register

NAME = "rl_policy_similarity"
SUMMARY = f"{NAME}_layers"
HIDDEN_LAYERS = ("layer1", "layer2")
EXACT_TOLERANCE = 1e-6   # ANIL's unadapted hidden layers: float64 similarity of identical activations
MEASURE_LABELS = {"cca": "mean CCA (misleading, see text)", "svcca": "SVCCA (99%)", "cka": "linear CKA"}


def similarity_rows(checkpoints: dict, n_tasks: int, measures, task_seed: int, max_datapoints: int) -> pd.DataFrame:
    """One row per (checkpoint, task, layer, measure): ``label, env, algorithm, seed, task, layer, measure,
    value, n_datapoints, n_features, adapt_log_std`` (``checkpoints``: label -> RL Checkpoint)."""
    from repana.rl.analysis import policy_similarity

    frames = []
    for label, checkpoint in checkpoints.items():
        frame = policy_similarity(checkpoint, n_tasks=int(n_tasks), measures=tuple(measures),
                                  seed=int(task_seed), max_datapoints=int(max_datapoints))
        frames.append(frame.assign(label=label, seed=int(checkpoint.config["seed"])))
    columns = ["label", "env", "algorithm", "seed", "task", "layer", "measure", "value", "n_datapoints",
               "n_features", "adapt_log_std"]
    return pd.concat(frames, ignore_index=True)[columns]


def layer_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (env, algorithm, layer, measure): the mean over tasks of each run, then ``value`` (mean over
    seeds), ``value_std`` (std over seeds, NaN for one), ``n_seeds``, ``min`` (lowest task value)."""
    keys = ["env", "algorithm", "layer", "measure"]
    per_run = rows.groupby([*keys, "label"], sort=False)["value"].mean().reset_index()
    grouped = per_run.groupby(keys, sort=False)["value"]
    summary = grouped.agg(value="mean", value_std="std", n_seeds="count").reset_index()
    summary["min"] = rows.groupby(keys, sort=False)["value"].min().to_numpy()
    return summary


def compute(context) -> dict[str, pd.DataFrame]:
    settings = context.settings
    checkpoints = {label: context.rl_checkpoint(label) for label in context.networks}
    rows = similarity_rows(checkpoints, settings["tasks"], settings["measures"], settings["task_seed"],
                           settings["max_datapoints"])
    return {NAME: rows, SUMMARY: layer_summary(rows)}


def _cell(row) -> str:
    text = f"{row['value']:.4f}"
    return text + (f" ± {row['value_std']:.4f}" if row["n_seeds"] > 1 and np.isfinite(row["value_std"]) else "")


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    summary = tables[SUMMARY]
    rows = tables[NAME]
    measures = list(dict.fromkeys(summary["measure"]))
    wide = summary.assign(cell=[_cell(row) for _, row in summary.iterrows()]).pivot_table(
        index=["env", "algorithm", "layer"], columns="measure", values="cell", aggfunc="first", sort=False)
    view = wide.reset_index()[["env", "algorithm", "layer", *measures]].rename(
        columns={m: MEASURE_LABELS.get(m, m) for m in measures})
    view["algorithm"] = view["algorithm"].str.upper()
    body = (f"Similarity of each layer with the meta-learned vs the adapted parameters, on the states of the "
            f"post-adaptation rollouts of {int(rows['task'].nunique())} held-out tasks (up to "
            f"{int(rows['n_datapoints'].max())} states each); mean over tasks, ± std over seeds.\n\n"
            + markdown_table(view) + "\n\n"
            "**Why mean CCA is shown but not used.** The 2-D navigation input is 2-dimensional (HalfCheetah's "
            "17-D), so a hidden layer's 100 ReLU units live on a low-dimensional manifold: all but a handful of "
            "the 100 canonical directions are near-null (dead or collinear units), their correlations are "
            "numerical noise or dropped by the rank cut-off, and the mean over all of them depends on how many "
            "survive the cut-off, not on how the representation changed. SVCCA keeps the directions holding 99% "
            "of the variance first and CKA weighs each direction by its variance, so both measure the "
            "directions the policy uses. For the 2-unit output `mu`, CCA-type measures are 1 for any invertible "
            "affine change of the head; only CKA sees the head adapt.\n\n"
            + figure_markdown(NAME, "Layer similarity before vs after adaptation, per algorithm and measure") + "\n")
    findings = []
    hidden = summary[summary["layer"].isin(HIDDEN_LAYERS)]
    anil = rows[(rows["algorithm"] == "anil") & rows["layer"].isin(HIDDEN_LAYERS)]
    if len(anil):
        worst = float((anil["value"] - 1).abs().max())
        ok = worst <= EXACT_TOLERANCE
        findings.append(Finding(f"ANIL's hidden layers are not adapted, so their similarity is 1 by construction: "
                                f"largest |1 - value| {worst:.1e} ({'check passed' if ok else 'CHECK FAILED: a bug'})",
                                NO_VERDICT if ok else DISAGREES))
    maml = hidden[(hidden["algorithm"] == "maml") & hidden["measure"].isin(["svcca", "cka"])]
    if len(maml):
        low = maml[maml["value"] <= paper_values.BODY_CCA_ABOVE]
        cells = ", ".join(f"{r.env} {r.layer} {r.measure} {r.value:.4f}" for r in maml.itertuples())
        rule = (f"MAML's hidden layers barely change in the inner loop: SVCCA and CKA > {paper_values.BODY_CCA_ABOVE} "
                "(the paper's threshold for the body, Section 3.2.2: feature reuse)")
        findings.append(Finding(f"{rule}; {cells}", AGREES if low.empty else DISAGREES,
                                claim="MAML's hidden policy layers barely change in the inner loop (RL)",
                                location="Section 3.2.2 (Figure 2's rule on the RL policies)",
                                paper=f"body CCA > {paper_values.BODY_CCA_ABOVE} (supervised Conv4)",
                                ours=f"min {maml['value'].min():.4f}", reason=f"{rule}; {cells}"))
    cca = hidden[(hidden["algorithm"] == "maml") & (hidden["measure"] == "cca")]
    if len(cca):
        findings.append(Finding("Mean CCA of MAML's hidden layers (misleading for a low-dimensional input, see the "
                                "text): " + ", ".join(f"{r.env} {r.layer} {r.value:.3f}" for r in cca.itertuples()),
                                NO_VERDICT))
    return Section("RL: the policy's layer similarity before vs after adaptation", body, tuple(findings))


def figures(tables, context) -> dict:
    from repana.plots.paper import rl_similarity_figure

    return {NAME: lambda: rl_similarity_figure(tables[SUMMARY])}


ANALYSIS = register(Analysis(
    name=NAME, title="RL: the policy's layer similarity before vs after adaptation",
    reference="Section 3.2.2 (Figure 2) on the RL policies", networks=("maml", "anil"),
    n_checkpoints=(1, None), compute=compute, report=report, figures=figures, across_seeds=True,
    summary_table=SUMMARY, kind="rl"))
