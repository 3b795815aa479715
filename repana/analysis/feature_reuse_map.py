"""Where feature reuse holds: the paper's freezing and inner-loop findings mapped across networks.

Raghu et al. (arXiv 1909.09157, Table 1 and Figure 2) find that MAML's body barely changes in the inner
loop and can be frozen at test time. Whether a given network lands in that regime depends on how it was
built and evaluated: a spatial-mean head on a narrow Conv4 needs many test-time steps to fit a fresh
support set on its own, and MAML can learn to let conv4 carry part of the adaptation instead. This
analysis measures the paper's quantities on a grid of networks (cells) so the report can say where the
paper's answer holds and where it flips.

A cell is a network shape, read from each checkpoint's config: the head's input (``flatten``: conv4's map
flattened, Table 1's MiniImageNet network; ``spatial_mean``: conv4's map averaged over space, Finn et al.'s
Omniglot network) x the width (filters per conv block). Per cell and seed (MAML and ANIL trained alike):

- ``drop``: MAML's accuracy with nothing frozen minus with all four conv blocks frozen, under the run's
  test-time steps, the paper's (10) and with the support loss converged
  (:func:`repana.analysis.freezing.freezing_by_protocol`);
- conv4's and the head's similarity before vs after MAML's inner loop (SVCCA and debiased CKA);
- ANIL - MAML accuracy (each with its own test-time rule, the run's steps);
- NIL: MAML's body with no head and no adaptation (cosine similarity to the support features), and
  NIL - MAML.

``repana reproduce --only feature_reuse_map`` trains the grid's networks (:data:`MAP_VARIANTS` x MAML and ANIL
x seeds, each a job of the plan); ``repana analyze feature_reuse_map --checkpoint ...`` maps any MAML and
ANIL checkpoints by their configs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from repana.analysis.freezing import (CONVERGENCE_LADDER, PAPER_TEST_STEPS, PROTOCOLS, freezing_by_protocol)
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError

NAME = "feature_reuse_map"
# The grid's network shapes: variant name -> TrainConfig values. Network "<run>-<variant>" of a reproduction
# is run <run> (maml, anil) trained with those values (repana.analysis.reproduce.training_plan).
MAP_VARIANTS: dict[str, dict] = {
    "flatten32": {"head_input": "flatten", "hidden": 32},
    "mean32": {"head_input": "spatial_mean", "hidden": 32},
    "flatten64": {"head_input": "flatten", "hidden": 64},
    "mean64": {"head_input": "spatial_mean", "hidden": 64},
    # Other factors, each changed alone on both width-32 shapes (the one where the body is reused and the one
    # where conv4 adapts), MAML only (the regime is MAML's): a 4x smaller inner learning rate (in training and
    # at test), a third of the training budget (MAP_BUDGET_FRACTIONS), a tenth of the glyphs' 1000 training
    # classes (on Omniglot: 120 of its 1200 characters).
    "flatten32-lr0.1": {"head_input": "flatten", "hidden": 32, "inner_lr": 0.1},
    "mean32-lr0.1": {"head_input": "spatial_mean", "hidden": 32, "inner_lr": 0.1},
    "flatten32-short": {"head_input": "flatten", "hidden": 32},
    "mean32-short": {"head_input": "spatial_mean", "hidden": 32},
    "flatten32-classes100": {"head_input": "flatten", "hidden": 32, "train_classes": 100},
    "mean32-classes100": {"head_input": "spatial_mean", "hidden": 32, "train_classes": 100},
}
# Variants trained for a fraction of the budget (at the quick preset and at the paper's).
MAP_BUDGET_FRACTIONS = {"flatten32-short": 1 / 3, "mean32-short": 1 / 3}
# The algorithms trained per variant: MAML and ANIL on the network shapes, MAML alone for the other factors.
MAP_RUNS = ("maml", "anil")
SHAPE_VARIANTS = ("flatten32", "mean32", "flatten64", "mean64")
MAP_VARIANT_RUNS = {name: (MAP_RUNS if name in SHAPE_VARIANTS else ("maml",)) for name in MAP_VARIANTS}
# The grid's budgets at the quick preset (meta-iterations of 4 tasks; the paper preset: its presets' 60000), equal
# for MAML and ANIL: at 3000 the flattened-head MAML networks still gained 5-14 points over the last third of
# training on the glyphs, so every cell trains 6000.
MAP_QUICK_ITERATIONS = {"maml": 6000, "anil": 6000}
# The grid's networks adapt batch norm's scale and offset in the inner loop with the other parameters.
MAP_QUICK_VALUES = {"bn_inner_loop": True}
NETWORKS = tuple(f"{run}-{variant}" for variant, runs in MAP_VARIANT_RUNS.items() for run in runs)
# What makes a cell, read from each network's config: its shape, then the other factors.
SHAPE_KEYS = ("head_input", "hidden")
FACTOR_KEYS = ("inner_lr", "iterations", "train_classes")
CELL_KEYS = SHAPE_KEYS + FACTOR_KEYS
SIMILARITY_LAYERS = ("conv4", "head")
SIMILARITY_MEASURES = ("svcca", "cka_debiased")
# a cell's regime, from its mean drops (points) against the tolerance of the freezing verdict
REGIMES = {"reused": "body reused (freezing costs nothing under the paper's protocol)",
           "head_steps": "body reused, the head needs more steps (the drop closes once the support loss converges)",
           "adapts": "conv4 takes over part of the adaptation (the drop stays at convergence)"}


def cell_of(config) -> tuple:
    """The map's cell of a :class:`repana.meta.config.TrainConfig`: its values of :data:`CELL_KEYS` (head input,
    width, inner learning rate on the mean support loss, meta-iterations, training classes with 0 for all)."""
    return (config.head_input, int(config.hidden), round(float(config.mean_loss_inner_lr()), 6),
            int(config.iterations), int(config.train_classes))


def _seed_of(label: str, index: int) -> int:
    tail = label.rsplit("/", 1)[-1]
    return int(tail[4:]) if tail.startswith("seed") and tail[4:].isdigit() else index


def _network_rows(context, label: str, seed: int, settings: dict) -> list[dict]:
    """The map's measurements of one network (MAML: freezing, similarity, NIL; ANIL: accuracy)."""
    from repana.analysis.inner_loop_similarity import inner_loop_similarity
    from repana.meta.evaluate import evaluate

    config = context.config(label)
    algorithm = context.algorithm(label)
    steps, lr = int(config.inner_steps_test), float(config.mean_loss_inner_lr())
    model, trainable = context.model(label), context.trainable(label)
    episodes = context.episodes(int(settings["episodes"]))
    base = {**dict(zip(CELL_KEYS, cell_of(config))), "algorithm": algorithm, "network": label, "seed": seed}
    rows = []
    if algorithm == "anil":
        result = evaluate(model, episodes, method="adapt", steps=steps, lr=lr, trainable=trainable)
        return [{**base, "quantity": "accuracy", "protocol": "run", "steps": steps,
                 "value": result.accuracy, "ci95": result.ci95}]
    freezing = freezing_by_protocol(model, episodes, run_steps=steps, lr=lr, trainable=trainable,
                                    frozen_sets=((), (1, 2, 3, 4)), paper_steps=int(settings.get("paper_steps", PAPER_TEST_STEPS)),
                                    ladder=tuple(settings.get("ladder", CONVERGENCE_LADDER)), label=label)
    for _, row in freezing.iterrows():
        quantity = "accuracy" if row["frozen"] == "none" else "accuracy_body_frozen"
        rows.append({**base, "quantity": quantity, "protocol": row["protocol"], "steps": int(row["steps"]),
                     "value": row["accuracy"], "ci95": row["ci95"]})
    nil = evaluate(model, episodes, method="nil")
    rows.append({**base, "quantity": "nil_accuracy", "protocol": "none", "steps": 0, "value": nil.accuracy,
                 "ci95": nil.ci95})
    few = context.episodes(int(settings.get("similarity_episodes", 20)), offset=7)
    detail = inner_loop_similarity(model, few, steps=steps, lr=lr, trainable=trainable,
                                   measures=list(settings.get("measures", SIMILARITY_MEASURES)),
                                   layers=list(SIMILARITY_LAYERS), null=False, every_step=False)
    for (layer, measure), group in detail.groupby(["layer_a", "measure"], sort=False):
        rows.append({**base, "quantity": f"{layer}_{measure}", "protocol": "run", "steps": steps,
                     "value": float(group["value"].mean()), "ci95": float("nan")})
    return rows


def compute(context) -> dict[str, pd.DataFrame]:
    """Every MAML and ANIL network of ``context``, measured (one row per network and quantity), and the cells'
    summary (:func:`summarize_cells`)."""
    labels = [label for label in context.networks if context.algorithm(label) in MAP_RUNS]
    if not any(context.algorithm(label) == "maml" for label in labels):
        raise InputError("feature_reuse_map needs MAML checkpoints (and ANIL ones of the same cells for ANIL - MAML); "
                         f"got {', '.join(f'{label} ({context.algorithm(label)})' for label in context.networks)}")
    counters: dict = {}
    rows = []
    for label in labels:
        key = (cell_of(context.config(label)), context.algorithm(label))
        seed = _seed_of(label, counters.get(key, 0))
        counters[key] = counters.get(key, 0) + 1
        rows += _network_rows(context, label, seed, context.settings)
    detail = pd.DataFrame.from_records(rows)
    return {NAME: detail, f"{NAME}_cells": summarize_cells(detail, tolerance=_tolerance())}


def _tolerance() -> float:
    from repana.analysis import paper_values

    return float(paper_values.FREEZING_TOLERANCE_POINTS)


def _per_seed(detail: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, seed): the map's quantities in percent / similarity units (NaN where the cell has no
    such network, e.g. ANIL - MAML in a MAML-only cell)."""
    records = []
    for (*cell, seed), group in detail.groupby([*_cell_keys(detail), "seed"], sort=False):
        def value(quantity, protocol=None, algorithm="maml"):
            chosen = group[(group["quantity"] == quantity) & (group["algorithm"] == algorithm)]
            if protocol is not None:
                chosen = chosen[chosen["protocol"] == protocol]
            return float(chosen["value"].mean()) if len(chosen) else float("nan")

        record = {**dict(zip(_cell_keys(detail), cell)), "seed": int(seed),
                  "maml_accuracy": 100 * value("accuracy", "run")}
        for protocol in PROTOCOLS:
            record[f"drop_{protocol}"] = 100 * (value("accuracy", protocol) - value("accuracy_body_frozen", protocol))
        steps = group[(group["quantity"] == "accuracy_body_frozen") & (group["protocol"] == "converged")]["steps"]
        record["converged_steps"] = int(steps.max()) if len(steps) else -1
        record["anil_minus_maml"] = 100 * (value("accuracy", "run", "anil") - value("accuracy", "run"))
        record["nil_accuracy"] = 100 * value("nil_accuracy")
        record["nil_minus_maml"] = record["nil_accuracy"] - record["maml_accuracy"]
        for layer in SIMILARITY_LAYERS:
            for measure in SIMILARITY_MEASURES:
                record[f"{layer}_{measure}"] = value(f"{layer}_{measure}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _cell_keys(frame: pd.DataFrame) -> list[str]:
    """The cell columns ``frame`` has (tables written before the other factors have the shape's alone)."""
    return [key for key in CELL_KEYS if key in frame.columns]


def regime(drop_paper: float, drop_converged: float, tolerance: float,
           converged_tolerance: float | None = None) -> str:
    """A cell's regime (a key of :data:`REGIMES`) from its mean drops in points: ``tolerance`` is the allowance
    of the paper-protocol drop, ``converged_tolerance`` (default the same) that of the converged drop."""
    if drop_paper <= tolerance:
        return "reused"
    allowed = tolerance if converged_tolerance is None else converged_tolerance
    return "head_steps" if drop_converged <= allowed else "adapts"


def summarize_cells(detail: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per cell (:data:`CELL_KEYS`): every quantity's mean and std over seeds (``<quantity>_std``), the number
    of seeds and the regime (:func:`regime`; ``tolerance``: points within which freezing costs nothing, or the
    std over seeds of that drop when larger: each protocol's drop against its own spread)."""
    per_seed = _per_seed(detail)
    keys = _cell_keys(per_seed)
    quantities = [c for c in per_seed.columns if c not in (*keys, "seed")]
    records = []
    for cell, group in per_seed.groupby(keys, sort=True):
        if not np.isfinite(group["maml_accuracy"].to_numpy(dtype=np.float64)).any():
            continue   # no MAML network of this cell (an ANIL network trained unlike every MAML one)
        record = {**dict(zip(keys, cell)), "n_seeds": int(group["seed"].nunique())}
        record["hidden"] = int(record["hidden"])
        for quantity in quantities:
            values = group[quantity].to_numpy(dtype=np.float64)
            record[quantity] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            record[f"{quantity}_std"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else float("nan")
        # step counts are not averaged: the range over seeds
        record["converged_steps"] = int(group["converged_steps"].max())
        record["converged_steps_min"] = int(group["converged_steps"].min())
        record["regime"] = regime(record["drop_paper"], record["drop_converged"],
                                  max(tolerance, np.nan_to_num(record["drop_paper_std"])),
                                  max(tolerance, np.nan_to_num(record["drop_converged_std"])))
        records.append(record)
    return pd.DataFrame.from_records(records)


def base_cells(cells: pd.DataFrame) -> pd.Series:
    """Which cells are the network-shape grid (True) and which change another factor (False): a cell is on
    the grid when its values of :data:`FACTOR_KEYS` are the ones most cells share."""
    factors = [key for key in FACTOR_KEYS if key in cells.columns]
    if not factors or cells.empty:
        return pd.Series(True, index=cells.index)
    common = cells[factors].apply(tuple, axis=1).value_counts().idxmax()
    return cells[factors].apply(tuple, axis=1) == common


def factor_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """Each cell off the grid beside the grid cell of its shape: columns shape ("flatten/32"), change (what
    differs, e.g. "inner lr 0.5 (grid 2)"), drop at 10 steps and converged for both, conv4 debiased CKA for
    both, the regimes, and ``moves`` (True when the regime differs from the grid cell's)."""
    on_grid = base_cells(cells)
    grid = cells[on_grid].set_index(list(SHAPE_KEYS))
    names = {"inner_lr": "inner lr", "iterations": "meta-iterations", "train_classes": "training classes"}
    rows = []
    for _, cell in cells[~on_grid].iterrows():
        shape = (cell["head_input"], int(cell["hidden"]))
        reference = grid.loc[shape] if shape in grid.index else None
        if reference is None:
            continue
        changes = [f"{names[key]} {_factor_text(key, cell[key])} (grid {_factor_text(key, reference[key])})"
                   for key in FACTOR_KEYS if key in cells.columns and cell[key] != reference[key]]
        rows.append({"shape": f"{shape[0]}/{shape[1]}", "change": "; ".join(changes),
                     "maml_accuracy": cell["maml_accuracy"], "grid_maml_accuracy": reference["maml_accuracy"],
                     "drop_paper": cell["drop_paper"], "grid_drop_paper": reference["drop_paper"],
                     "drop_converged": cell["drop_converged"], "grid_drop_converged": reference["drop_converged"],
                     "conv4_cka_debiased": cell["conv4_cka_debiased"],
                     "grid_conv4_cka_debiased": reference["conv4_cka_debiased"],
                     "regime": cell["regime"], "grid_regime": reference["regime"],
                     "moves": bool(cell["regime"] != reference["regime"])})
    return pd.DataFrame.from_records(rows)


def _factor_text(key: str, value) -> str:
    if key == "train_classes":
        return "all" if int(value) == 0 else str(int(value))
    return f"{float(value):g}" if key == "inner_lr" else str(int(value))


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    cells = tables[f"{NAME}_cells"]
    return {NAME: lambda: plots.feature_reuse_map_figure(cells[base_cells(cells)])}


def _fmt(mean: float, std: float, digits: int = 1) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")


def _steps_range(low, high) -> str:
    return f"{int(low)}" if int(low) == int(high) else f"{int(low)}-{int(high)}"


def cells_view(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells' table as the report prints it (points, mean ± std over seeds)."""
    return pd.DataFrame({
        "head input": cells["head_input"], "width": cells["hidden"].astype(int), "seeds": cells["n_seeds"].astype(int),
        "MAML (%)": [_fmt(m, s) for m, s in zip(cells["maml_accuracy"], cells["maml_accuracy_std"])],
        "drop, run's steps": [_fmt(m, s) for m, s in zip(cells["drop_run"], cells["drop_run_std"])],
        "drop, 10 steps": [_fmt(m, s) for m, s in zip(cells["drop_paper"], cells["drop_paper_std"])],
        "drop, converged": [_fmt(m, s) + f" ({_steps_range(low, high)} st.)" for m, s, low, high in
                            zip(cells["drop_converged"], cells["drop_converged_std"],
                                cells.get("converged_steps_min", cells["converged_steps"]), cells["converged_steps"])],
        "conv4 SVCCA / CKA": [f"{a:.3f} / {b:.3f}" for a, b in zip(cells["conv4_svcca"], cells["conv4_cka_debiased"])],
        "head SVCCA / CKA": [f"{a:.3f} / {b:.3f}" for a, b in zip(cells["head_svcca"], cells["head_cka_debiased"])],
        "ANIL - MAML": [_fmt(m, s) for m, s in zip(cells["anil_minus_maml"], cells["anil_minus_maml_std"])],
        "NIL - MAML": [_fmt(m, s) for m, s in zip(cells["nil_minus_maml"], cells["nil_minus_maml_std"])],
        "regime": cells["regime"]})


def factors_view(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`factor_rows` as the report prints it (each quantity "changed cell (grid cell)")."""
    def pair(column: str, digits: int = 1) -> list[str]:
        return [f"{a:.{digits}f} ({b:.{digits}f})" for a, b in zip(rows[column], rows[f"grid_{column}"])]

    return pd.DataFrame({"shape": rows["shape"], "change (grid value)": rows["change"],
                         "MAML % (grid)": pair("maml_accuracy"), "drop, 10 steps (grid)": pair("drop_paper"),
                         "drop, converged (grid)": pair("drop_converged"),
                         "conv4 CKA (grid)": pair("conv4_cka_debiased", 3),
                         "regime (grid)": [f"{a} ({b})" for a, b in zip(rows["regime"], rows["grid_regime"])],
                         "moves the answer": ["yes" if moves else "no" for moves in rows["moves"]]})


def report(tables, context) -> Section:
    from repana.analysis.report import figure_markdown, markdown_table

    every_cell = tables[f"{NAME}_cells"]
    cells = every_cell[base_cells(every_cell)]
    findings = []
    for _, cell in cells.iterrows():
        findings.append(Finding(
            f"{cell['head_input']} head, width {int(cell['hidden'])}: {REGIMES[cell['regime']]}; freezing all four conv "
            f"blocks costs {cell['drop_run']:.1f} / {cell['drop_paper']:.1f} / {cell['drop_converged']:.1f} points at the "
            f"run's steps / 10 steps / convergence; conv4 debiased CKA before vs after {cell['conv4_cka_debiased']:.3f}; "
            f"ANIL - MAML {cell['anil_minus_maml']:+.1f}; NIL - MAML {cell['nil_minus_maml']:+.1f} points"))
    holds = [f"{c['head_input']}/{int(c['hidden'])}" for _, c in cells.iterrows() if c["regime"] != "adapts"]
    flips = [f"{c['head_input']}/{int(c['hidden'])}" for _, c in cells.iterrows() if c["regime"] == "adapts"]
    summary = ("Feature reuse holds (the frozen body loses nothing once the head has the steps it needs) in "
               + (", ".join(holds) if holds else "no cell") + "; the last conv block takes over part of the adaptation in "
               + (", ".join(flips) if flips else "no cell") + ".")
    configs = [context.config(label) for label in context.networks]
    budgets = ", ".join(f"{algorithm} {iterations}" for algorithm, iterations in
                        sorted({(c.algorithm, c.iterations) for c in configs}))
    bn = sorted({c.bn_inner_loop for c in configs})
    trained = (f"Budgets: {budgets} meta-iterations of {configs[0].meta_batch_size} tasks; batch norm "
               + ("adapts in the inner loop" if bn == [True] else "stays out of the inner loop" if bn == [False]
                  else "in the inner loop for some networks only")
               + f"; each network's own test-time steps ({', '.join(sorted({str(c.inner_steps_test) for c in configs}))}) "
               "are the run's protocol. ")
    body = (trained + "MAML and ANIL trained alike on each network shape (head input x width); per cell, mean ± std over seeds. "
            "`drop`: MAML's accuracy with nothing frozen minus with conv1-4 frozen at test time, in points, under the "
            "run's test-time steps, the paper's (10) and with the support loss converged (steps used in brackets). "
            "conv4 / head: similarity of MAML's activations before vs after its inner loop (1 = unchanged). "
            "NIL: MAML's body with no head and no adaptation. Regime: 'reused' when freezing costs at most "
            f"max({_tolerance():g}, its std over seeds) points under the paper's protocol, 'head_steps' when that holds "
            "only with the support loss converged, 'adapts' otherwise.\n\n" + summary + "\n\n" + markdown_table(cells_view(cells))
            + "\n\n" + figure_markdown(NAME, "Where feature reuse holds"))
    factors = factor_rows(every_cell)
    if len(factors):
        moved = [f"{row['shape']} with {row['change']}" for _, row in factors.iterrows() if row["moves"]]
        kept = [f"{row['shape']} with {row['change']}" for _, row in factors.iterrows() if not row["moves"]]
        body += ("\n\n**Other factors**, each changed alone on a grid shape (MAML only; inner lr on the mean support "
                 "loss, used in training and at test). The regime moves for "
                 + ("; ".join(moved) if moved else "none of them") + ", and stays for "
                 + ("; ".join(kept) if kept else "none") + ".\n\n" + markdown_table(factors_view(factors)))
        for _, row in factors.iterrows():
            findings.append(Finding(
                f"{row['shape']} with {row['change']}: regime {row['regime']} (grid: {row['grid_regime']}); freezing "
                f"costs {row['drop_paper']:.1f} points at 10 steps and {row['drop_converged']:.1f} converged "
                f"(grid {row['grid_drop_paper']:.1f} / {row['grid_drop_converged']:.1f})"))
    return Section("Where feature reuse holds: a map across networks", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Where feature reuse holds", reference="Table 1, Figure 2", networks=NETWORKS,
    compute=compute, figures=figures, report=report, episode_offset=9, across_seeds=True,
    n_checkpoints=(1, None), summary_table=f"{NAME}_cells", optional=True))


def variant_values(name: str) -> dict:
    """TrainConfig values of map variant ``name`` (ConfigError-free: InputError naming the variants)."""
    if name not in MAP_VARIANTS:
        raise InputError(f"unknown map variant {name!r}; choose from {', '.join(MAP_VARIANTS)}")
    return dict(MAP_VARIANTS[name])


def split_network(name: str) -> tuple[str, str | None]:
    """``"maml-flatten32"`` -> ``("maml", "flatten32")``; ``"maml"`` -> ``("maml", None)``."""
    run, _, variant = name.partition("-")
    return run, (variant or None)


__all__: Sequence[str] = ("MAP_VARIANTS", "NETWORKS", "compute", "summarize_cells", "regime", "cell_of",
                          "split_network", "variant_values")
