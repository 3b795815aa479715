"""MAML and ANIL learn the same features (paper Table 3): layer similarity of network pairs.

The paper compares MAML-MAML and ANIL-ANIL pairs trained from different random seeds with ANIL-MAML
pairs: if the cross-algorithm pairs are about as similar as the same-algorithm pairs, the inner loop's
adaptation of the body does not change which features are learned. Every pair sees the query images of
the same test episodes; each body layer is compared with CCA (mean CCA over all canonical directions,
``cca``, and SVCCA, ``svcca``: spatial positions as datapoints, episodes pooled when too few) and debiased linear
CKA (flattened maps, per episode), and the body average is the mean over conv1-conv4, as the paper's
Table 3 reports.
"""

from __future__ import annotations

from itertools import combinations, product

import pandas as pd

from repana.analysis.common import BODY_LAYERS
from repana.analysis.maml_anil_similarity import cross_model_similarity, summarize_cross_model
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError

NAME = "seed_pair_similarity"
BODY_AVERAGE = "body average"
# the paper's Table 3 columns and the measures of ours that report against each
PAPER_MEASURES = {"cca": "CCA Similarity", "svcca": "CCA Similarity", "pwcca": "CCA Similarity",
                  "cka": "CKA Similarity", "cka_debiased": "CKA Similarity"}


def network_pairs(algorithms: dict[str, str]) -> list[tuple[str, str, str]]:
    """(kind, a, b) of every MAML-MAML and ANIL-ANIL pair of different seeds and every ANIL-MAML pair.

    ``algorithms``: network label -> its training algorithm. Raises InputError unless both algorithms
    have 2+ networks (seeds).
    """
    by_algorithm = {name: [label for label, algorithm in algorithms.items() if algorithm == name]
                    for name in ("maml", "anil")}
    short = [name for name, found in by_algorithm.items() if len(found) < 2]
    if short:
        raise InputError(f"Table 3 compares networks of different seeds: needs at least 2 seeds of MAML and of "
                         f"ANIL (got {', '.join(f'{n}: {len(by_algorithm[n])}' for n in ('maml', 'anil'))}); "
                         "run repana reproduce --seeds 2 or more")
    pairs = [("MAML-MAML", a, b) for a, b in combinations(by_algorithm["maml"], 2)]
    pairs += [("ANIL-ANIL", a, b) for a, b in combinations(by_algorithm["anil"], 2)]
    pairs += [("ANIL-MAML", a, b) for a, b in product(by_algorithm["anil"], by_algorithm["maml"])]
    return pairs


def with_body_average(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``summary`` plus one row per ``keys`` group: the mean over the body layers (conv1-conv4)."""
    body = summary[summary["layer"].isin(BODY_LAYERS)]
    average = body.groupby(keys, sort=False, as_index=False)[["mean", "null_mean"]].mean()
    return pd.concat([summary, average.assign(layer=BODY_AVERAGE)], ignore_index=True)


def compute(context) -> dict[str, pd.DataFrame]:
    settings = context.settings
    episodes = context.episodes(settings["episodes"])
    frames = []
    for kind, a, b in network_pairs({label: context.algorithm(label) for label in context.networks}):
        detail = cross_model_similarity(context.model(a), context.model(b), episodes, measures=settings["measures"],
                                        min_ratio=settings.get("min_ratio", 5.0), label_a=a, label_b=b,
                                        null=False)
        frames.append(summarize_cross_model(detail).assign(pair=kind))
    summary = with_body_average(pd.concat(frames, ignore_index=True), ["pair", "model_a", "model_b", "measure"])
    return {NAME: summary[["pair", "model_a", "model_b", "layer", "measure", "mean", "ci95", "n",
                           "n_datapoints", "n_features", "reduction"]]}


def pair_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over the pairs of each kind, per layer and measure."""
    grouped = frame.groupby(["pair", "measure", "layer"], sort=False)["mean"]
    return grouped.agg(mean="mean", std="std", n_pairs="count").reset_index()


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    table = pair_table(tables[NAME])
    return {NAME: lambda: plots.pair_similarity_figure(table)}


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    table = pair_table(tables[NAME])
    findings, rows = [], []
    for measure, group in table.groupby("measure", sort=False):
        body = group[group["layer"] == BODY_AVERAGE].set_index("pair")
        column = PAPER_MEASURES.get(measure)
        for pair in ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML"):
            if pair in body.index:
                rows.append({"measure": measure, "pair": pair, "body average (ours)": f"{body.loc[pair, 'mean']:.3f}"
                             + (f" ± {body.loc[pair, 'std']:.3f}" if body.loc[pair, "n_pairs"] > 1 else ""),
                             "pairs": int(body.loc[pair, "n_pairs"]),
                             "paper": paper_values.value("Table 3", pair, column).printed if column else "-"})
        if column and {"MAML-MAML", "ANIL-ANIL", "ANIL-MAML"} <= set(body.index):
            # spread: the 95% CI half-width of the mean over pairs (paper_values' noise definition)
            cells = {pair: (body.loc[pair, "mean"], paper_values.mean_ci95_half_width(
                         None if pd.isna(body.loc[pair, "std"]) else body.loc[pair, "std"], int(body.loc[pair, "n_pairs"])))
                     for pair in ("MAML-MAML", "ANIL-ANIL", "ANIL-MAML")}
            order = ("ANIL-MAML", "MAML-MAML", "ANIL-ANIL")
            findings.append(Finding.judged(
                paper_values.verdict_similar_representations(cells, measure),
                claim=f"ANIL-MAML pairs as similar as same-algorithm pairs ({measure})",
                location="Table 3; Section 4",
                paper=", ".join(f"{p} {paper_values.value('Table 3', p, column).printed}" for p in order)
                + f" ({column})",
                ours=", ".join(f"{p} {cells[p][0]:.3f}" for p in order)))
    per_layer = table.pivot_table(index=["measure", "layer"], columns="pair", values="mean", sort=False).round(3)
    text = ("Body averages (conv1-conv4) of each kind of pair: mean ± std over the pairs; MAML-MAML and ANIL-ANIL "
            "pair networks of different seeds. CCA variants: `cca` is mean CCA over all canonical directions, "
            "`svcca` keeps the directions with 99% of the variance first; the paper's Table 3 names no variant "
            "(its CCA is from Raghu et al. 2017 and Morcos et al. 2018). CKA is linear, debiased (`cka_debiased`): "
            "plain CKA of 75 images x thousands of features is about 0.95 even for unrelated data. Paper: "
            "Table 3 (no ±).\n\n"
            + markdown_table(pd.DataFrame(rows)) + "\n\nPer layer (mean over pairs):\n\n"
            + markdown_table(per_layer.reset_index()) + "\n\n"
            + figure_markdown(NAME, "Seed pairs, layer by layer (bars: std over pairs)"))
    return Section("MAML-MAML, ANIL-ANIL and ANIL-MAML pairs of different seeds (paper Table 3)", text,
                   tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Seed pairs: MAML-MAML, ANIL-ANIL, ANIL-MAML", reference="Table 3", networks=("maml", "anil"),
    n_checkpoints=(4, None), compute=compute, figures=figures, report=report, episode_offset=7, across_seeds=True,
    min_seeds=2))
