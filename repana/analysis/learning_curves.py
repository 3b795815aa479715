"""MAML and ANIL learn very similarly (paper Fig. 5): validation accuracy along training, every seed.

Reads the validation rows that training wrote to each run's ``metrics.csv`` (``val_every``), so it costs
no computation; a run trained without validation has no curve and is named in the error. Every network
of a reproduction has its curve (MAML and ANIL are the paper's Figure 5; the baselines show whether they
too were trained until their curves flattened), and :func:`flattening` says whether each has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError

NAME = "learning_curves"
LAST_PART = 1 / 3     # the part of training in which a flattened curve no longer rises (see flattening)
FLAT_GAIN = 0.01
# A rise larger than this over the last third is a trend, however noisy the validations: an Omniglot-subset MAML
# that rose 4.3 ± 2.2 points over the last third of 5000 meta-iterations (not distinguishable from zero at 2
# standard errors) gained 10 more points by 10000.
MAX_NOISY_RISE = 0.03


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
    """Per algorithm, over the last third of training: the rise of a least-squares line through the
    validation accuracy (mean over seeds) and its standard error, both in accuracy over that span.

    A curve has flattened when that rise is at most ``flat_gain`` (a fraction; 1 point by default), or when it
    is not distinguishable from zero (below 2 standard errors) and at most :data:`MAX_NOISY_RISE` (3 points):
    single validation points are noisy (50 episodes of 5 queries have a 95% CI of several points), a fitted
    line over several of them is less so, and a larger rise is a trend whatever its noise.
    Columns: algorithm, from_step, to_step, accuracy_from, accuracy_to, rise, rise_se, flattened.
    """
    rows = []
    for algorithm, group in curves.groupby("algorithm", sort=False):
        mean = group.groupby("step")["val_accuracy"].mean().sort_index()
        last = mean.index.max()
        tail = mean[mean.index >= (1 - LAST_PART) * last]
        span = float(tail.index.max() - tail.index.min())
        rise, rise_se = float("nan"), float("nan")
        if len(tail) >= 3 and span > 0:
            steps = tail.index.to_numpy(dtype=np.float64)
            slope, intercept = np.polyfit(steps, tail.to_numpy(), 1)
            fitted = slope * steps + intercept
            dof = len(tail) - 2
            sigma2 = float(((tail.to_numpy() - fitted) ** 2).sum()) / dof if dof > 0 else float("nan")
            slope_se = np.sqrt(sigma2 / float(((steps - steps.mean()) ** 2).sum()))
            rise, rise_se = float(slope * span), float(slope_se * span)
        flattened = bool(np.isfinite(rise) and (rise <= flat_gain or (rise < 2 * rise_se and rise <= MAX_NOISY_RISE)))
        rows.append({"algorithm": algorithm, "from_step": int(tail.index.min()), "to_step": int(last),
                     "accuracy_from": float(tail.iloc[0]), "accuracy_to": float(tail.iloc[-1]), "rise": rise,
                     "rise_se": rise_se, "flattened": flattened})
    return pd.DataFrame(rows)


def curve_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, step) of :func:`compute`'s table: :func:`repana.analysis.report.over_seeds` of the
    validation accuracy (columns algorithm, step, val_accuracy, val_accuracy_std, n_seeds, val_ci95; fractions)."""
    from repana.analysis.report import over_seeds

    return over_seeds(curves, ["algorithm", "step"], "val_accuracy", ci="val_ci95")


def paired_curves(stats: pd.DataFrame) -> dict[int, dict[str, tuple[float, float]]]:
    """{iteration: {"MAML": (percent, spread), "ANIL": (percent, spread)}} at MAML's validation iterations
    within ANIL's range, for :func:`repana.analysis.paper_values.verdict_learning_curves`.

    ``stats``: :func:`curve_stats` rows. spread: the 95% CI half-width of the mean
    (:func:`repana.analysis.report.judged_cell`: over seeds with 2+ seeds, else the validation's episode CI).
    ANIL's curve (mean and spread) is
    interpolated linearly when the two runs were validated at different iterations (they may train for
    different numbers of iterations)."""
    from repana.analysis.report import judged_cell

    curves = {name: stats[stats["algorithm"] == name].sort_values("step") for name in ("maml", "anil")}
    cells_of = {name: [judged_cell(row, "val_accuracy", "val_ci95") for _, row in frame.iterrows()] for name, frame in curves.items()}
    anil, anil_cells = curves["anil"], cells_of["anil"]
    cells = {}
    for (_, row), maml_cell in zip(curves["maml"].iterrows(), cells_of["maml"]):
        step = row["step"]
        if not anil["step"].min() <= step <= anil["step"].max():
            continue
        anil_mean = float(np.interp(step, anil["step"], [c[0] for c in anil_cells]))
        anil_spread = float(np.interp(step, anil["step"], [c[1] for c in anil_cells]))
        cells[int(step)] = {"MAML": maml_cell, "ANIL": (anil_mean, anil_spread)}
    return cells


def shared_grid(stats: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The curves on one grid of rows, for a compact table, and the sentence that says which grid.

    Rows: the validations of the algorithm with the fewest, at their fraction of its training (step / its
    last step); every other algorithm at its validation nearest that fraction of its own training.
    ``stats``: :func:`curve_stats` rows. Returns (table with "fraction of training" and per algorithm
    "<alg> % (step)" as "mean ± std (step)" strings, integer steps; caption sentence).
    """
    by = {name: group.sort_values("step") for name, group in stats.groupby("algorithm", sort=False)}
    fewest = min(by, key=lambda name: (len(by[name]), list(by).index(name)))
    fractions = by[fewest]["step"].to_numpy(dtype=np.float64) / float(by[fewest]["step"].max())
    table = {"fraction of training": [f"{f:.2f}" for f in fractions]}
    for name, group in by.items():
        own = group["step"].to_numpy(dtype=np.float64) / float(group["step"].max())
        nearest = [int(np.argmin(np.abs(own - f))) for f in fractions]
        mean, std = group["val_accuracy"].to_numpy(), group["val_accuracy_std"].to_numpy(dtype=np.float64)
        table[f"{name} % (step)"] = [f"{100 * mean[i]:.1f}" + (f" ± {100 * std[i]:.1f}" if np.isfinite(std[i]) else "")
                                     + f" ({int(group['step'].iloc[i])})" for i in nearest]
    caption = (f"Rows: the {len(fractions)} validations of {fewest} (the network validated fewest times), as a "
               "fraction of its training; every other network at its validation nearest the same fraction of its "
               "own training (its step in brackets). Accuracy: mean ± std over seeds, percent.")
    return pd.DataFrame(table), caption


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    return {NAME: lambda: plots.learning_curves_figure(tables[NAME])}


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    curves = tables[NAME]
    flat = flattening(curves, context.settings.get("flat_gain", FLAT_GAIN))
    findings = [Finding(f"{row['algorithm'].upper()} validation accuracy {100 * row['accuracy_from']:.1f}% at step "
                        f"{row['from_step']} -> {100 * row['accuracy_to']:.1f}% at step {row['to_step']}; a line through "
                        f"the last third rises {100 * row['rise']:+.1f} ± {100 * row['rise_se']:.1f} points: "
                        + ("the curve has flattened" if row["flattened"] else "still rising: longer training would "
                           "change the numbers"))
                for _, row in flat.iterrows()]
    stats = curve_stats(curves)
    if {"maml", "anil"} <= set(curves["algorithm"]):
        cells = paired_curves(stats)
        if not cells:
            findings.append(Finding("Figure 5: not judged (the MAML and ANIL runs were validated at no common "
                                    "iterations)"))
        else:
            judgement = paper_values.verdict_learning_curves(cells)
            last = max(cells)
            judged = [i for i in cells if i >= paper_values.LEARNING_CURVES_FROM * last]
            gaps = [cells[i]["ANIL"][0] - cells[i]["MAML"][0] for i in judged]
            findings.append(Finding.judged(
                judgement, claim="MAML and ANIL learn very similarly (validation accuracy, second half of training)",
                location="Figure 5; Section 4", paper="curves 'look very similar throughout training' (no numbers)",
                ours=f"ANIL - MAML from {min(gaps):+.1f} to {max(gaps):+.1f} points, iterations {min(judged)}-{last}"))
    grid, caption = shared_grid(stats)
    body = ("Validation accuracy written during training (the paper's Figure 5 shows MiniImageNet 5-way 5-shot "
            f"curves, no numbers). {caption}\n\n" + markdown_table(grid) + "\n\n"
            "Whether each curve has flattened (a line through the last third of its training; rise and its "
            "standard error in accuracy, fractions):\n\n" + markdown_table(flat) + "\n\n"
            + figure_markdown(NAME, "Validation accuracy along training, MAML vs ANIL (shaded: std over seeds)"))
    return Section("MAML and ANIL learn very similarly (paper Fig. 5)", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Learning curves", reference="Fig. 5",
    networks=("maml", "anil", "multiclass", "multitask", "nil", "boil"), n_checkpoints=(1, None), compute=compute,
    figures=figures, report=report, episode_offset=8, across_seeds=True))
