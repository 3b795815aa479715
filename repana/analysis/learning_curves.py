"""MAML and ANIL learn very similarly (paper Fig. 5): validation accuracy along training, every seed.

Reads the validation rows that training wrote to each run's ``metrics.csv`` (``val_every``), so it costs
no computation; a run trained without validation has no curve and is named in the error. Also says
whether each curve has flattened: the gain over the last third of training, against the episode CI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repana.analysis.registry import AGREES, DISAGREES, Analysis, Finding, Section, register
from repana.errors import InputError

NAME = "learning_curves"
LAST_PART = 1 / 3     # a curve has flattened when its last third gains no more than FLAT_GAIN or the episode CI
FLAT_GAIN = 0.01


def read_curve(run_dir: Path | None, label: str) -> pd.DataFrame:
    """Validation rows of one run: step, val_accuracy (fraction), val_ci95."""
    path = Path(run_dir) / "metrics.csv" if run_dir is not None else None
    if path is None or not path.exists():
        raise InputError(f"{label}: no metrics.csv beside its checkpoint ({path}); learning curves need the run "
                         "folder that training wrote")
    metrics = pd.read_csv(path)
    val = metrics[metrics["split"] == "val"]
    if val.empty or "accuracy" not in val:
        raise InputError(f"{label}: {path} has no validation rows: train with val_every > 0")
    ci = val["ci95"] if "ci95" in val else np.nan
    return pd.DataFrame({"step": val["step"].astype(int), "val_accuracy": val["accuracy"].astype(float),
                         "val_ci95": ci})


def compute(context) -> dict[str, pd.DataFrame]:
    frames = []
    for label in context.networks:
        curve = read_curve(context.run_dir(label), label)
        seed = label.split("/seed")[-1] if "/seed" in label else "0"
        frames.append(curve.assign(algorithm=context.algorithm(label), network=label, seed=int(seed)))
    return {NAME: pd.concat(frames, ignore_index=True)[["algorithm", "network", "seed", "step", "val_accuracy",
                                                        "val_ci95"]]}


def flattening(curves: pd.DataFrame, flat_gain: float = FLAT_GAIN) -> pd.DataFrame:
    """Per algorithm: accuracy (mean over seeds) at the start of the last third of training and at the end,
    the gain, the mean episode CI (NaN when training did not record it), and whether the curve has
    flattened (gain <= max(1 point, CI))."""
    rows = []
    for algorithm, group in curves.groupby("algorithm", sort=False):
        mean = group.groupby("step")[["val_accuracy", "val_ci95"]].mean().sort_index()
        last = mean.index.max()
        start = mean.index[mean.index >= (1 - LAST_PART) * last].min()
        gain = float(mean.loc[last, "val_accuracy"] - mean.loc[start, "val_accuracy"])
        ci = float(mean["val_ci95"].mean())
        rows.append({"algorithm": algorithm, "from_step": int(start), "to_step": int(last),
                     "accuracy_from": float(mean.loc[start, "val_accuracy"]),
                     "accuracy_to": float(mean.loc[last, "val_accuracy"]), "gain": gain, "episode_ci95": ci,
                     "flattened": bool(gain <= max(flat_gain, np.nan_to_num(ci)))})
    return pd.DataFrame(rows)


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    return {NAME: lambda: plots.learning_curves_figure(tables[NAME])}


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    curves = tables[NAME]
    flat = flattening(curves, context.settings.get("flat_gain", FLAT_GAIN))
    findings = [Finding(f"{row['algorithm'].upper()} validation accuracy {100 * row['accuracy_from']:.1f}% at step "
                        f"{row['from_step']} -> {100 * row['accuracy_to']:.1f}% at step {row['to_step']} "
                        f"({100 * row['gain']:+.1f} points over the last third; episode CI ± "
                        f"{100 * row['episode_ci95']:.1f}): "
                        + ("the curve has flattened" if row["flattened"] else "still rising: longer training would "
                           "change the numbers"))
                for _, row in flat.iterrows()]
    stats = curves.groupby(["step", "algorithm"])["val_accuracy"].agg(["mean", "std"]).reset_index()
    both = stats.pivot(index="step", columns="algorithm")
    if {"maml", "anil"} <= set(curves["algorithm"]):
        cells = {int(step): {name.upper(): (100 * row[("mean", name)], 100 * np.nan_to_num(row[("std", name)]))
                             for name in ("maml", "anil")}
                 for step, row in both.iterrows() if np.isfinite(row[("mean", "maml")]) and np.isfinite(row[("mean", "anil")])}
        if cells:
            verdict, reason = paper_values.verdict_learning_curves(cells)
            findings.append(Finding(reason, AGREES if verdict == paper_values.AGREES else DISAGREES))
    view = stats.assign(mean=lambda f: (100 * f["mean"]).round(1), std=lambda f: (100 * f["std"]).round(1))
    body = ("Validation accuracy (%) written during training, mean and std over seeds at each validation step "
            "(the paper's Figure 5 shows MiniImageNet 5-way 5-shot curves, no numbers).\n\n"
            + markdown_table(view.pivot(index="step", columns="algorithm", values=["mean", "std"]).reset_index()
                             .set_axis(["step"] + [f"{a} {s}" for s, a in
                                                   view.pivot(index="step", columns="algorithm",
                                                              values=["mean", "std"]).columns], axis=1))
            + "\n\n" + markdown_table(flat) + "\n\n"
            + figure_markdown(NAME, "Validation accuracy along training, MAML vs ANIL (shaded: std over seeds)"))
    return Section("MAML and ANIL learn very similarly (paper Fig. 5)", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Learning curves", reference="Fig. 5", networks=("maml", "anil"), compute=compute,
    figures=figures, report=report, episode_offset=8, across_seeds=True))
