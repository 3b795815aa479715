"""MAML and ANIL learn similar representations (paper Sec. 4.2): layer-by-layer similarity of two networks.

Both networks see the query images of the same test episodes (one forward pass per episode, so
batch-statistic batch norm normalises the same batches); their activations are compared per layer
and episode (CKA) or with spatial positions as datapoints / pooled episodes (CCA family), with the
null baseline beside each value.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from repana.analysis.common import (BODY_LAYERS, DEFAULT_MEASURES, check_layers, check_same_architecture,
                                    episode_rows, summarize)
from repana.analysis.registry import AGREES, DISAGREES, Analysis, Finding, Section, register
from repana.progress import progress


def cross_model_similarity(model_a: torch.nn.Module, model_b: torch.nn.Module, episodes, *,
                           measures: Sequence[str] = DEFAULT_MEASURES,
                           layers: Sequence[str] = BODY_LAYERS, reduction: str | None = None,
                           min_ratio: float = 5.0, label_a: str = "a", label_b: str = "b",
                           null: bool = True, seed: int = 0) -> pd.DataFrame:
    """Similarity of ``model_a`` and ``model_b`` layer by layer on the query images of ``episodes``.

    Returns the rows of :func:`repana.analysis.common.episode_rows` with columns model_a and model_b added.
    """
    from repana.capture import Capture

    layers = check_layers(model_a, layers)
    check_layers(model_b, layers)
    check_same_architecture(model_a, model_b, f"{label_a!r} and {label_b!r}")
    model_a.eval()
    model_b.eval()
    acts_a, acts_b = [], []
    capture = Capture(layers=layers)
    with torch.no_grad():
        for index in progress(range(len(episodes)), desc=f"{label_a} vs {label_b}", unit="episode"):
            query = episodes[index].query_x
            acts_a.append(capture.run(model_a, query))
            acts_b.append(capture.run(model_b, query))
    frame = episode_rows(acts_a, acts_b, layers, measures, reduction=reduction, min_ratio=min_ratio, null=null,
                         seed=seed)
    frame.insert(0, "model_b", label_b)
    frame.insert(0, "model_a", label_a)
    return frame


def summarize_cross_model(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, CI and null-baseline mean per (model_a, model_b, layer, measure)."""
    return summarize(frame, ["model_a", "model_b", "layer", "measure"])


# ----- the registered analysis -------------------------------------------------------------------

NAME = "maml_anil_similarity"
MARGIN = 0.1   # how far above its null baseline each layer's similarity must be


def compute(context) -> dict[str, pd.DataFrame]:
    """The first two networks of ``context`` compared layer by layer."""
    label_a, label_b = list(context.networks)[:2]
    settings = context.settings
    detail = cross_model_similarity(context.model(label_a), context.model(label_b),
                                    context.episodes(settings["episodes"]), measures=settings["measures"],
                                    min_ratio=settings.get("min_ratio", 5.0), label_a=label_a.upper(),
                                    label_b=label_b.upper())
    return {NAME: detail, f"{NAME}_summary": summarize_cross_model(detail)}


def _seed_summary(summary: pd.DataFrame) -> pd.DataFrame:
    from repana.analysis.report import over_seeds

    keys = ["model_a", "model_b", "layer", "measure"]
    merged = over_seeds(summary, keys, "mean").merge(
        over_seeds(summary, keys, "null_mean", ci="null_ci95").drop(columns="n_seeds"), on=keys, how="left")
    extra = [c for c in ("n_datapoints", "n_features", "reduction") if c in summary]
    return merged.merge(summary.drop_duplicates(keys)[keys + extra], on=keys, how="left")


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    summary = _seed_summary(tables[f"{NAME}_summary"])
    several = summary["n_seeds"] > 1
    summary.loc[several, "ci95"] = summary.loc[several, "mean_std"]
    return {NAME: lambda: plots.cross_model_figure(summary)}


def report(tables, context) -> Section:
    import numpy as np

    from repana.analysis.report import figure_markdown, markdown_table

    summary = _seed_summary(tables[f"{NAME}_summary"])
    view = summary[["layer", "measure", "mean", "mean_std", "ci95", "null_mean", "n_seeds", "n_datapoints",
                    "n_features", "reduction"]].rename(columns={"mean_std": "std over seeds", "ci95": "episode CI"})
    above = summary["mean"] - summary["null_mean"]
    ok = bool((above > MARGIN).all())
    finding = Finding(f"MAML vs ANIL similarity per layer is {'above' if ok else 'not everywhere above'} its null "
                      f"baseline by more than {MARGIN} (smallest margin {np.nanmin(above):.3f}). This is a weaker "
                      "check than the paper's Table 3, which compares ANIL-MAML pairs with same-algorithm pairs of "
                      "different seeds (see the seed-pair section)", AGREES if ok else DISAGREES,
                      claim="MAML and ANIL of one seed learn related features (above the null baseline)",
                      location="Section 4 (a weaker check than Table 3)", paper="(no number; Table 3: 0.50 CCA, 0.83 CKA)",
                      ours=f"smallest margin over the null {np.nanmin(above):.3f}",
                      reason=f"a layer is within {MARGIN} of its null baseline" if not ok else "")
    body = markdown_table(view) + "\n\n" + figure_markdown(NAME, "MAML vs ANIL, layer by layer")
    return Section("MAML and ANIL networks of the same seed, layer by layer (paper Sec. 4)", body, (finding,))


ANALYSIS = register(Analysis(
    name=NAME, title="MAML and ANIL learn similar representations", reference="Sec. 4.2",
    networks=("maml", "anil"), n_checkpoints=(2, 2), compute=compute, figures=figures, report=report,
    episode_offset=4, summary_table=f"{NAME}_summary"))
