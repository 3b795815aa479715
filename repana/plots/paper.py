"""Figures of the paper's analyses, drawn from the analyses' tidy DataFrames (or their CSVs) only.

Every function takes a DataFrame (or a CSV path) and returns a ``matplotlib.figure.Figure``, drawn in
:func:`repana.plots.style.paper_style`; :func:`save_figure` writes it as PNG and PDF atomically.
Nothing here changes the user's rcParams or backend (figures are not made through pyplot).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from repana.io import atomic_savefig
from repana.plots.style import paper_style, styled

MEASURE_NAMES = {"svcca": "SVCCA", "cka": "CKA (linear)", "cka_debiased": "CKA (debiased)",
                 "cca": "mean CCA", "pwcca": "PWCCA", "cka_rbf": "CKA (RBF)", "procrustes": "Procrustes"}
COLORS = {"maml": "#1f77b4", "anil": "#ff7f0e", "boil": "#d62728", "nil": "#2ca02c", "multiclass": "#9467bd",
          "multitask": "#8c564b", "random": "#7f7f7f"}


def _frame(data) -> pd.DataFrame:
    return pd.read_csv(data) if isinstance(data, (str, Path)) else data


def save_figure(figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` atomically (tight bounding box); returns both
    paths. A figure made through pyplot is closed afterwards."""
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    with paper_style():
        atomic_savefig(figure, paths[0], dpi=150)
        atomic_savefig(figure, paths[1])
    if "matplotlib.pyplot" in sys.modules:  # only pyplot keeps figures alive; never import it here
        sys.modules["matplotlib.pyplot"].close(figure)
    return paths


def _errorbar(ax, x, mean, ci, **kwargs):
    ci = np.nan_to_num(np.asarray(ci, dtype=float), nan=0.0)
    ax.errorbar(x, mean, yerr=ci, capsize=3, **kwargs)


@styled
def inner_loop_figure(summary, step: int | None = None) -> Figure:
    """Similarity before vs after the inner loop per layer: one panel per measure, one line per
    network (label), with 95% CI bars and the null baseline (dotted), after inner step ``step``
    (default: each network's last step).

    ``summary``: output of :func:`repana.analysis.inner_loop_similarity.summarize_inner_loop`.
    """
    frame = _frame(summary)
    if step is None:
        frame = frame[frame["step"] == frame.groupby("label")["step"].transform("max")]
    else:
        frame = frame[frame["step"] == step]
    measures = list(dict.fromkeys(frame["measure"]))
    figure = Figure(figsize=(3.4 * len(measures), 2.9))
    axes = figure.subplots(1, len(measures), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        part = frame[frame["measure"] == measure]
        for offset, (label, group) in enumerate(part.groupby("label", sort=False)):
            x = np.arange(len(group)) + 0.08 * (offset - 0.5)
            color = COLORS.get(str(label).lower())
            _errorbar(ax, x, group["mean"], group["ci95"], marker="o", label=f"{label}", color=color)
            if "null_mean" in group:
                ax.plot(x, group["null_mean"], ls=":", marker="x", color=color, alpha=0.7,
                        label=f"{label} null")
        ax.set_xticks(range(len(part["layer"].unique())), part["layer"].unique())
        ax.set_ylim(min(-0.05, float(np.nanmin(part.get("null_mean", part["mean"])) - 0.05)), 1.05)
        steps = sorted(set(part["step"]))
        ax.set_title(f"{MEASURE_NAMES.get(measure, measure)}: before vs after "
                     f"{steps[0] if len(steps) == 1 else ''} step{'s' if steps[-1] > 1 else ''}".replace("  ", " "))
        ax.set_ylabel("similarity")
        ax.axhline(1.0, color="0.8", lw=0.8)
    axes[0][-1].legend(fontsize=7, frameon=False, loc="center left")
    figure.tight_layout()
    return figure


@styled
def inner_steps_figure(summary) -> Figure:
    """Similarity to the initial representation after each inner step, one line per layer;
    one panel per (network, measure)."""
    frame = _frame(summary)
    panels = list(frame.groupby(["label", "measure"], sort=False))
    figure = Figure(figsize=(3.0 * len(panels), 2.7))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for ax, ((label, measure), group) in zip(axes[0], panels):
        for layer, part in group.groupby("layer", sort=False):
            _errorbar(ax, part["step"], part["mean"], part["ci95"], marker="o", ms=3, label=layer)
        ax.set_title(f"{label}: {MEASURE_NAMES.get(measure, measure)}")
        ax.set_xlabel("inner step")
        ax.set_ylabel("similarity to step 0")
        ax.set_xticks(sorted(group["step"].unique()))
    axes[0][-1].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def freezing_figure(freezing, paper: Sequence[float] | None = None) -> Figure:
    """Accuracy (%) with 95% CI per frozen set; the paper's values as hollow markers when given."""
    frame = _frame(freezing)
    figure = Figure(figsize=(4.2, 2.8))
    ax = figure.subplots()
    labels = list(dict.fromkeys(frame["label"]))
    width = 0.8 / max(len(labels), 1)
    for i, (label, group) in enumerate(frame.groupby("label", sort=False)):
        x = np.arange(len(group)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, 100 * group["accuracy"], width, yerr=100 * group["ci95"].fillna(0), capsize=3,
               label=label, color=COLORS.get(str(label).lower()))
    groups = list(dict.fromkeys(frame["frozen"]))
    if paper is not None:
        ax.plot(range(len(paper)), paper, "k_", ms=18, mew=2, label="paper (MiniImageNet 5w1s)")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlabel("conv blocks frozen at test time")
    ax.set_ylabel("query accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2)
    figure.tight_layout()
    return figure


@styled
def accuracy_bars_figure(frame, label_column: str, title: str, paper: dict | None = None) -> Figure:
    """Bars of accuracy (%) with 95% CI, one per row of ``frame`` (``label_column`` names them);
    ``paper``: label -> published accuracy (%), drawn as black ticks."""
    frame = _frame(frame)
    figure = Figure(figsize=(0.9 * len(frame) + 1.8, 2.8))
    ax = figure.subplots()
    x = np.arange(len(frame))
    colors = [COLORS.get(str(v).lower(), "#4c72b0") for v in frame[label_column]]
    ax.bar(x, 100 * frame["accuracy"], 0.6, yerr=100 * frame["ci95"].fillna(0), capsize=3, color=colors)
    if paper:
        for i, key in enumerate(frame[label_column]):
            if key in paper:
                ax.plot(i, paper[key], "k_", ms=16, mew=2, label="paper" if i == 0 else None)
    names = frame["name"] if "name" in frame else frame[label_column]
    ax.set_xticks(x, names, rotation=20 if len(frame) > 3 else 0, ha="right" if len(frame) > 3 else "center")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(title)
    figure.tight_layout()
    return figure


@styled
def cross_model_figure(summary) -> Figure:
    """MAML vs ANIL similarity per layer (one line per measure) with CI and null baseline."""
    frame = _frame(summary)
    figure = Figure(figsize=(3.8, 2.8))
    ax = figure.subplots()
    for measure, group in frame.groupby("measure", sort=False):
        x = np.arange(len(group))
        _errorbar(ax, x, group["mean"], group["ci95"], marker="o", label=MEASURE_NAMES.get(measure, measure))
        if "null_mean" in group:
            ax.plot(x, group["null_mean"], ls=":", marker="x", color="0.5")
        ax.set_xticks(x, group["layer"])
    pair = frame.iloc[0]
    ax.set_title(f"{pair['model_a']} vs {pair['model_b']} (dotted: null)")
    ax.set_ylabel("similarity")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def convergence_figure(frame) -> Figure:
    """ANIL with a strongly-convex vs nonconvex head: meta-training loss against iterations and
    wall-clock, and test accuracy against iterations, one line per (head, N)."""
    frame = _frame(frame)
    figure = Figure(figsize=(10.5, 2.9))
    axes = figure.subplots(1, 3)
    styles = {"linear_l2": "-", "two_layer": "--"}
    for (head, n), group in frame.groupby(["head", "inner_steps"], sort=False):
        loss = group[group["metric"] == "train_loss"]
        smooth = loss["value"].rolling(max(1, len(loss) // 20), min_periods=1).mean()
        label = f"{head} N={n}"
        line, = axes[0].plot(loss["iteration"], smooth, styles.get(head, "-"), label=label)
        axes[1].plot(loss["elapsed_s"], smooth, styles.get(head, "-"), color=line.get_color())
        acc = group[group["metric"] == "test_accuracy"]
        axes[2].plot(acc["iteration"], 100 * acc["value"], styles.get(head, "-"), marker="o", ms=3,
                     color=line.get_color())
    axes[0].set(xlabel="meta-iteration", ylabel="meta-training loss", title="loss vs iterations")
    axes[1].set(xlabel="wall-clock (s)", ylabel="meta-training loss", title="loss vs time")
    axes[2].set(xlabel="meta-iteration", ylabel="test accuracy (%)", title="test accuracy")
    axes[0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def cost_figure(frame) -> Figure:
    """Seconds per meta-step of MAML and ANIL against the number of inner steps N."""
    frame = _frame(frame)
    figure = Figure(figsize=(3.6, 2.8))
    ax = figure.subplots()
    for alg, group in frame.groupby("algorithm", sort=False):
        ax.plot(group["inner_steps"], group["seconds"], marker="o", label=alg.upper(),
                color=COLORS.get(alg))
    ax.set(xlabel="inner steps N", ylabel="seconds per meta-step", title="cost vs N")
    ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def dynamics_figure(similarity_summary, freezing) -> Figure:
    """Feature reuse along training: before/after similarity per layer and the accuracy cost of
    freezing all conv blocks, at each saved training stage."""
    sim = _frame(similarity_summary)
    frz = _frame(freezing)
    measures = list(dict.fromkeys(sim["measure"]))
    figure = Figure(figsize=(3.3 * (len(measures) + 1), 2.8))
    axes = figure.subplots(1, len(measures) + 1)
    for ax, measure in zip(axes, measures):
        for (label, stage), group in sim[sim["measure"] == measure].groupby(["label", "stage"], sort=False):
            train_step = int(group["train_step"].iloc[0])
            _errorbar(ax, np.arange(len(group)), group["mean"], group["ci95"], marker="o", ms=3,
                      label=f"{label} {stage} (step {train_step})")
            ax.set_xticks(range(len(group)), group["layer"])
        ax.set_title(f"{MEASURE_NAMES.get(measure, measure)} before vs after")
        ax.set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=6, frameon=False, loc="lower left")
    ax = axes[-1]
    for label, group in frz.groupby("label", sort=False):
        for stage, part in group.groupby("stage", sort=False):
            ax.plot(part["frozen"], 100 * part["accuracy"], marker="o", label=f"{label} {stage}")
    ax.set(xlabel="conv blocks frozen", ylabel="accuracy (%)", title="freezing along training")
    ax.legend(fontsize=6, frameon=False)
    figure.tight_layout()
    return figure


@styled
def pair_similarity_figure(table) -> Figure:
    """Seed pairs (paper Table 3): similarity per layer, one panel per measure, one line per kind of pair
    (MAML-MAML, ANIL-ANIL, ANIL-MAML) with the std over pairs as error bars.

    ``table``: columns pair, measure, layer, mean, std (see
    :func:`repana.analysis.seed_pair_similarity.pair_table`).
    """
    frame = _frame(table)
    measures = list(dict.fromkeys(frame["measure"]))
    figure = Figure(figsize=(3.4 * len(measures), 2.8))
    axes = figure.subplots(1, len(measures), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        for pair, group in frame[frame["measure"] == measure].groupby("pair", sort=False):
            x = np.arange(len(group))
            _errorbar(ax, x, group["mean"], group["std"], marker="o", label=pair)
            ax.set_xticks(x, group["layer"], rotation=20)
        ax.set_title(MEASURE_NAMES.get(measure, measure))
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("similarity")
        ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def learning_curves_figure(curves) -> Figure:
    """Validation accuracy (%) vs meta-iteration, one line per algorithm, mean ± std over seeds (shaded).

    ``curves``: columns algorithm, step, val_accuracy (fraction), and seed (optional).
    """
    frame = _frame(curves)
    figure = Figure(figsize=(4.2, 2.8))
    ax = figure.subplots()
    for algorithm, group in frame.groupby("algorithm", sort=False):
        stats = group.groupby("step")["val_accuracy"].agg(["mean", "std", "count"]).reset_index()
        color = COLORS.get(str(algorithm).lower())
        ax.plot(stats["step"], 100 * stats["mean"], marker=".", color=color,
                label=f"{str(algorithm).upper()} ({int(stats['count'].max())} seed(s))")
        spread = 100 * stats["std"].fillna(0)
        ax.fill_between(stats["step"], 100 * stats["mean"] - spread, 100 * stats["mean"] + spread, alpha=0.25,
                        color=color)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Learning curves (mean ± std over seeds)")
    ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure


@styled
def rl_returns_figure(table) -> Figure:
    """Table 2's RL rows: per environment, bars of the return before and after adaptation for each
    algorithm (mean over seeds, error bars std over seeds), the paper's return after as black ticks.
    ``table``: :func:`repana.analysis.rl_returns.table2`'s frame (or its CSV)."""
    table = _frame(table)
    envs = list(dict.fromkeys(table["env"]))
    figure = Figure(figsize=(3.2 * len(envs) + 0.4, 3.0))
    axes = np.atleast_1d(figure.subplots(1, len(envs), squeeze=False)[0])
    for ax, env in zip(axes, envs):
        rows = table[table["env"] == env].reset_index(drop=True)
        x = np.arange(len(rows))
        colors = [COLORS.get(str(a).lower(), "#4c72b0") for a in rows["algorithm"]]
        ax.bar(x - 0.2, rows["return_before"], 0.38, yerr=rows["return_before_std"].fillna(0), capsize=3,
               color=colors, alpha=0.4, label="before adaptation")
        ax.bar(x + 0.2, rows["return_after"], 0.38, yerr=rows["return_after_std"].fillna(0), capsize=3,
               color=colors, label="after adaptation")
        for i, value in enumerate(rows["paper_mean"]):
            if np.isfinite(value):
                ax.plot(i + 0.2, value, "k_", ms=16, mew=2, label="paper (after)" if i == 0 else None)
        ax.set_xticks(x, [str(a).upper() for a in rows["algorithm"]])
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_title(env)
        ax.set_ylabel("average return")
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    return figure


@styled
def rl_similarity_figure(summary) -> Figure:
    """Per measure, the similarity of each policy layer before vs after adaptation, one line per
    (environment, algorithm) (mean over seeds, error bars std). ``summary``:
    :func:`repana.analysis.rl_policy_similarity.layer_summary`'s frame (or its CSV)."""
    summary = _frame(summary)
    measures = list(dict.fromkeys(summary["measure"]))
    figure = Figure(figsize=(3.0 * len(measures) + 0.4, 2.8))
    axes = np.atleast_1d(figure.subplots(1, len(measures), squeeze=False)[0])
    for ax, measure in zip(axes, measures):
        part = summary[summary["measure"] == measure]
        for index, ((env, algorithm), group) in enumerate(part.groupby(["env", "algorithm"], sort=False)):
            layers = list(group["layer"])
            # lines that coincide (every measure near 1) stay visible: later ones dashed, smaller markers
            _errorbar(ax, np.arange(len(layers)), group["value"], group["value_std"], marker="os^D"[index % 4],
                      ms=7 - 2 * (index % 3), ls="-" if index == 0 else "--",
                      color=COLORS.get(str(algorithm).lower()), label=f"{str(algorithm).upper()} {env}")
            ax.set_xticks(np.arange(len(layers)), layers)
        title = MEASURE_NAMES.get(measure, measure)
        ax.set_title(f"{title} (misleading here)" if measure == "cca" else title)
        ax.set_ylim(min(0.0, float(np.nanmin(part["value"])) - 0.05), 1.05)
    axes[0].set_ylabel("similarity before vs after")
    axes[0].legend(fontsize="small")
    figure.tight_layout()
    return figure


@styled
def feature_reuse_map_figure(cells) -> Figure:
    """Heatmaps over the map's cells (rows: head input, columns: width): the drop from freezing conv1-4 at
    the run's steps, at 10 steps and at convergence (points), conv4's debiased CKA before vs after the inner
    loop, ANIL - MAML and NIL - MAML (points). ``cells``: :func:`repana.analysis.feature_reuse_map.summarize_cells`."""
    frame = _frame(cells)
    heads = sorted(frame["head_input"].unique())
    widths = sorted(int(w) for w in frame["hidden"].unique())
    panels = [("drop_run", "drop, run's steps", "pts"), ("drop_paper", "drop, 10 steps", "pts"),
              ("drop_converged", "drop, converged", "pts"), ("conv4_cka_debiased", "conv4 CKA before/after", ""),
              ("anil_minus_maml", "ANIL - MAML", "pts"), ("nil_minus_maml", "NIL - MAML", "pts")]
    figure = Figure(figsize=(2.1 * len(panels), 0.7 * len(heads) + 1.5))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (column, title, unit) in zip(axes, panels):
        grid = np.full((len(heads), len(widths)), np.nan)
        for _, row in frame.iterrows():
            grid[heads.index(row["head_input"]), widths.index(int(row["hidden"]))] = row[column]
        if column.startswith("conv4"):
            image = ax.imshow(grid, cmap="viridis", vmin=min(0.5, np.nanmin(grid)), vmax=1.0)
        else:
            bound = max(5.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 5.0
            image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound)
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                text = f"{value:.3f}" if column.startswith("conv4") else f"{value:+.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if abs(image.norm(value) - 0.5) > 0.3 else "black")
        ax.set_xticks(range(len(widths)), [str(w) for w in widths])
        ax.set_yticks(range(len(heads)), [h.replace("_", " ") for h in heads])
        ax.set_xlabel("width")
        ax.set_title(title + (f" ({unit})" if unit else ""), fontsize=8)
    figure.tight_layout()
    return figure
