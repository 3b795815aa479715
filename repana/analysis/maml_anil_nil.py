"""MAML vs ANIL vs NIL on the same test episodes, and ANIL's speed-up over MAML.

Accuracy: each network is evaluated the way it was trained (MAML adapts every parameter, ANIL only
the head) and NIL (no inner loop: cosine similarity of query features to the support features of
each class, with a body trained by ANIL or MAML). Speed: seconds per meta-training step (inner loop
plus meta-gradient) and per test episode (inner loop plus query prediction) of ANIL and MAML on the
same network and the same batch, measured back to back in one process, so machine load affects
both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from repana.meta.inner import all_parameters, head_parameters
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError


@dataclass
class EvalSpec:
    """One line of a comparison table: a network and how to evaluate it.

    ``method``: "adapt" (inner loop on ``trainable`` for ``steps`` steps of size ``lr``) or "nil".
    """

    label: str
    model: torch.nn.Module
    method: str = "adapt"
    steps: int = 0
    lr: float = 0.0
    trainable: Callable[[str], bool] | None = None
    trained_with: str = ""
    inner_loss: str = "mean"


def evaluate_specs(specs: list[EvalSpec], episodes) -> pd.DataFrame:
    """Accuracy of each spec on the same ``episodes``.

    Returns one row per spec: label, trained_with, method, accuracy (fraction), ci95, n_episodes,
    seconds_per_episode (wall-clock of the evaluation divided by the number of episodes).
    """
    from repana.meta.evaluate import evaluate

    rows = []
    for spec in specs:
        if spec.method not in ("adapt", "nil"):
            raise InputError(f"{spec.label}: method {spec.method!r} is not 'adapt' or 'nil'")
        start = time.perf_counter()
        if spec.method == "nil":
            result = evaluate(spec.model, episodes, method="nil")
        else:
            result = evaluate(spec.model, episodes, method="adapt", steps=spec.steps, lr=spec.lr,
                              trainable=spec.trainable, inner_loss=spec.inner_loss)
        seconds = time.perf_counter() - start
        rows.append({"label": spec.label, "trained_with": spec.trained_with, "method": spec.method,
                     "accuracy": float(result.accuracy), "ci95": float(result.ci95),
                     "n_episodes": len(episodes), "seconds_per_episode": seconds / max(len(episodes), 1)})
    return pd.DataFrame.from_records(rows)


def _meta_step_seconds(model, batch, algorithm: str, steps: int, lr: float, repeats: int) -> float:
    """Median seconds of one meta-gradient computation of ``algorithm`` on ``batch``."""
    from repana.meta.algorithms import get_algorithm

    learner = get_algorithm(algorithm, inner_lr=lr, inner_steps=steps)
    times = []
    for _ in range(repeats + 1):  # the first call warms up allocators and is dropped
        start = time.perf_counter()
        learner.meta_gradients(model, batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def _inference_seconds(model, episodes, trainable, steps: int, lr: float, repeats: int) -> float:
    from repana.meta.evaluate import evaluate

    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        evaluate(model, episodes, method="adapt", steps=steps, lr=lr, trainable=trainable)
        times.append((time.perf_counter() - start) / len(episodes))
    return float(np.median(times[1:]))


# Inner steps in training and at test time of the paper's ANIL speed-up (MiniImageNet: 5 and 10):
# the setting in which its 1.7x (training) and 4.1x (inference) were measured.
PAPER_SPEED_STEPS = (5, 10)


def speed_comparison(model: torch.nn.Module, train_batch, test_episodes, *, train_steps: int,
                     test_steps: int, lr: float, repeats: int = 3) -> pd.DataFrame:
    """Seconds per meta-training step and per test episode of MAML and ANIL on the same network.

    ``train_batch``: :class:`repana.data.Episodes` (one meta-batch). Both algorithms run on the same
    ``model`` (its weights do not matter for cost) and batch, alternately, in this process.
    Returns rows: phase ("train" | "inference"), algorithm, seconds, and speedup (MAML seconds /
    ANIL seconds, on the ANIL rows).
    """
    if repeats < 1:
        raise InputError("repeats must be at least 1")
    model.train()
    train = {alg: _meta_step_seconds(model, train_batch, alg, train_steps, lr, repeats)
             for alg in ("maml", "anil")}
    model.eval()
    infer = {"maml": _inference_seconds(model, test_episodes, all_parameters, test_steps, lr, repeats),
             "anil": _inference_seconds(model, test_episodes, head_parameters, test_steps, lr, repeats)}
    rows = []
    for phase, seconds in (("train", train), ("inference", infer)):
        for alg in ("maml", "anil"):
            rows.append({"phase": phase, "algorithm": alg, "seconds": seconds[alg],
                         "speedup": seconds["maml"] / seconds[alg] if alg == "anil" else 1.0,
                         "inner_steps": train_steps if phase == "train" else test_steps})
    return pd.DataFrame.from_records(rows)


# ----- the registered analysis -------------------------------------------------------------------

NAME = "maml_anil_nil"
SPEED_BATCH_SEED = 7   # the meta-batch on which meta-steps are timed


def compute(context) -> dict[str, pd.DataFrame]:
    """Each network evaluated its own way, then NIL on each body; and ANIL vs MAML cost."""
    settings = context.settings
    episodes = context.episodes(settings["episodes"])
    labels = list(context.networks)
    specs = [EvalSpec(label.upper(), context.model(label), "adapt", context.steps, context.lr,
                      context.trainable(label), context.algorithm(label)) for label in labels]
    specs += [EvalSpec(f"NIL ({label.upper()} body)", context.model(label), "nil",
                       trained_with=context.algorithm(label)) for label in reversed(labels)]
    tables = {NAME: evaluate_specs(specs, episodes)}
    if settings.get("speed_repeats", 0):
        tables[f"{NAME}_speed"] = _speed_table(context, episodes)
    return tables


def _speed_table(context, episodes) -> pd.DataFrame:
    from repana.data import EpisodeSampler

    base = context.reference_config
    train_batch = EpisodeSampler(context.splits()["train"], ways=base.ways, shots=base.shots,
                                 queries=base.queries_train, seed=SPEED_BATCH_SEED).sample(tasks=base.meta_batch_size)
    # the run's own inner steps, and the paper's (its speed-ups were measured with 5 / 10 steps)
    step_settings = {"paper": PAPER_SPEED_STEPS}
    if (base.inner_steps_train, context.steps) != PAPER_SPEED_STEPS:
        step_settings = {"this run": (base.inner_steps_train, context.steps), **step_settings}
    model = context.model(context.reference)
    frames = [speed_comparison(model, train_batch, episodes.index(slice(0, 20)), train_steps=train_steps,
                               test_steps=test_steps, lr=context.lr,
                               repeats=context.settings["speed_repeats"]).assign(steps_of=name)
              for name, (train_steps, test_steps) in step_settings.items()]
    per_iteration = {label: seconds_per_iteration(context.run_dir(label)) for label in context.networks
                     if context.algorithm(label) in ("maml", "anil")}
    maml_seconds = next((s for label, s in per_iteration.items() if context.algorithm(label) == "maml"), np.nan)
    extra = pd.DataFrame([{"phase": "training_run", "algorithm": context.algorithm(label), "seconds": seconds,
                           "speedup": maml_seconds / seconds if context.algorithm(label) == "anil" else 1.0,
                           "inner_steps": base.inner_steps_train, "steps_of": "this run"}
                          for label, seconds in per_iteration.items() if np.isfinite(seconds)])
    return pd.concat([*frames, extra], ignore_index=True)


def seconds_per_iteration(run_dir) -> float:
    """Training seconds per iteration from a run's metrics.csv (NaN when there is none)."""
    from pathlib import Path

    path = Path(run_dir) / "metrics.csv" if run_dir is not None else None
    if path is None or not path.exists():
        return float("nan")
    metrics = pd.read_csv(path)
    train = metrics[metrics["split"] == "train"]
    return float(train["elapsed_s"].iloc[-1] / train["step"].iloc[-1]) if len(train) else float("nan")


def figures(tables, context) -> dict:
    from repana.analysis.report import for_figure
    from repana.plots import paper as plots

    frame = for_figure(tables[NAME], ["label"], "accuracy")
    return {NAME: lambda: plots.accuracy_bars_figure(frame, "label", "MAML vs ANIL vs NIL")}


def speed_finding(speed: pd.DataFrame) -> Finding:
    """ANIL's measured speed-ups beside the paper's, in the paper's step setting when it was measured
    (median over seeds when the table has several)."""
    from repana.analysis import paper_values

    anil = speed[speed["algorithm"] == "anil"]
    if "steps_of" in anil and (anil["steps_of"] == "paper").any():
        anil, setting = anil[anil["steps_of"] == "paper"], "with 5 training / 10 test steps"
    else:
        anil, setting = anil[anil["phase"] != "training_run"], "with this run's inner steps"
    ratio = anil.groupby("phase", sort=False)["speedup"].median()
    judgement = paper_values.verdict_anil_speedup(float(ratio.get("train", np.nan)),
                                                  float(ratio.get("inference", np.nan)))
    measured = f"training {ratio.get('train', np.nan):.2f}x, inference {ratio.get('inference', np.nan):.2f}x"
    return Finding.judged(judgement, prefix=f"ANIL speed-up over MAML {setting}: {measured}; ",
                          claim="ANIL is faster than MAML in training and inference",
                          location="Section 4, 'Computational benefit of ANIL'", paper="1.7x training, 4.1x inference",
                          ours=f"{ratio.get('train', np.nan):.2f}x training, {ratio.get('inference', np.nan):.2f}x "
                               f"inference ({setting})")


def paper_column(context) -> str | None:
    """The column of Tables 2 and 4 for this run's setting, or None when the paper has no such cell."""
    config = context.reference_config
    name = {"omniglot": "Omniglot", "miniimagenet": "MiniImageNet"}.get(config.dataset)
    column = f"{name}-{config.ways}way-{config.shots}shot" if name else None
    from repana.analysis import paper_values

    return column if column in {cell.column for cell in paper_values.table("Table 4")} else None


def method_cells(frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """{"MAML", "ANIL", "NIL": (percent, spread)} of a maml_anil_nil table (NIL on the ANIL body, as
    the paper's Table 4); spread as :func:`repana.analysis.report.judged_cell` defines it."""
    from repana.analysis.report import judged_cell, over_seeds

    summary = over_seeds(frame, ["label"], "accuracy")
    rows = {row["label"]: row for _, row in summary.iterrows()}
    cells = {}
    for method, label in (("MAML", "MAML"), ("ANIL", "ANIL"), ("NIL", "NIL (ANIL body)")):
        if label in rows:
            cells[method] = judged_cell(rows[label])
    return cells


def _paper_cells(column: str | None, methods: tuple[str, ...]) -> str:
    """"ANIL 96.2, MAML 93.7 % (Omniglot-20way-1shot)" from Table 4, or a dash when the paper has no such cell."""
    from repana.analysis import paper_values

    if column is None:
        return "- (no such cell in the paper)"
    return ", ".join(f"{m} {paper_values.value('Table 4', m, column).value:.1f}" for m in methods) + f" % ({column})"


def _our_cells(cells: dict[str, tuple[float, float]], methods: tuple[str, ...]) -> str:
    return ", ".join(f"{m} {cells[m][0]:.1f}" for m in methods) + " %"


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table, over_seeds, pct_seeds

    frame, speed = tables[NAME], tables.get(f"{NAME}_speed")
    summary = over_seeds(frame, ["label", "method"], "accuracy")
    seconds = frame.groupby("label", sort=False)["seconds_per_episode"].mean()
    view = pd.DataFrame({"method": summary["label"], "evaluation": summary["method"],
                         "ours (%)": [pct_seeds(row) for _, row in summary.iterrows()],
                         "s / episode": summary["label"].map(seconds).map(lambda s: f"{s:.3f}")})
    column = paper_column(context)
    setting = f"{context.reference_config.dataset}-{context.reference_config.ways}way-{context.reference_config.shots}shot"
    cells = method_cells(frame)
    findings = []
    if {"MAML", "ANIL"} <= set(cells):
        findings.append(Finding.judged(
            paper_values.verdict_anil_matches_maml({setting: cells}), prefix="ANIL vs MAML: ",
            claim="ANIL matches MAML's accuracy", location="Table 2; Section 4",
            paper=_paper_cells(column, ("ANIL", "MAML")), ours=_our_cells(cells, ("ANIL", "MAML"))))
    if "NIL" in cells:
        findings.append(Finding.judged(
            paper_values.verdict_nil_matches({setting: cells}), prefix="NIL vs MAML / ANIL: ",
            claim="NIL (no head, no inner loop) performs as well as MAML and ANIL", location="Table 4; Section 5.1",
            paper=_paper_cells(column, ("NIL", "MAML", "ANIL")),
            ours=_our_cells(cells, tuple(m for m in ("NIL", "MAML", "ANIL") if m in cells))))
    paper_rows = pd.DataFrame([{"method": method, **{c: paper_values.value("Table 4", method, c).printed
                                                     for c in PAPER_COLUMNS}} for method in ("MAML", "ANIL", "NIL")])
    body = (markdown_table(view) + "\n\nPaper, Tables 2 and 4 (MAML and ANIL: mean ± std over three random "
            "initialisations, Section 4; NIL's ± is not stated)"
            + (f"; this run's cell is {column}" if column else "; the paper has no cell for this setting") + ":\n\n"
            + markdown_table(paper_rows) + "\n\n" + figure_markdown(NAME, "Accuracy on the same test episodes") + "\n")
    if speed is not None and len(speed):
        speed_view = speed.copy()
        speed_view["seconds"] = speed_view["seconds"].map(lambda s: f"{s:.4f}")
        speed_view["speedup"] = speed_view["speedup"].map(lambda s: f"{s:.2f}x")
        body += ("ANIL vs MAML cost, measured back to back in this run on this machine (`train`: one "
                 "meta-step on the same meta-batch; `inference`: one test episode; `training_run`: seconds "
                 "per iteration of the whole training runs, from their metrics.csv; `steps_of`: the inner "
                 "steps of this run, or 5 in training and 10 at test (the MiniImageNet inner loop); the paper's "
                 "1.7x / 4.1x are averages over its benchmarks, Section 4):\n\n" + markdown_table(speed_view) + "\n")
        findings.append(speed_finding(speed))
    return Section("MAML vs ANIL vs NIL (paper Tables 2 and 4)", body, tuple(findings))


PAPER_COLUMNS = ("Omniglot-20way-1shot", "Omniglot-20way-5shot", "MiniImageNet-5way-1shot", "MiniImageNet-5way-5shot")


def across_settings(results: dict[str, tuple[dict, object]]) -> Section:
    """Tables 2 and 4 cell by cell: ours where the setting was run, "not run" elsewhere, the paper's beside.

    ``results``: setting name -> (this analysis's tables, its context) for every setting of a reproduction.
    """
    from repana.analysis import paper_values
    from repana.analysis.report import markdown_table

    ours = {}
    for tables, context in results.values():
        column = paper_column(context)
        config = context.reference_config
        name = column or f"{config.dataset}-{config.ways}way-{config.shots}shot"
        ours[name] = method_cells(tables[NAME])
    columns = list(PAPER_COLUMNS) + [name for name in ours if name not in PAPER_COLUMNS]
    rows = []
    for method in ("MAML", "ANIL", "NIL"):
        row = {"method": method}
        for column in columns:
            cell = ours.get(column, {}).get(method)
            mine = f"{cell[0]:.1f} ± {cell[1]:.1f}" if cell else "not run"
            paper = (paper_values.value("Table 4", method, column).printed if column in PAPER_COLUMNS else "-")
            row[column] = f"{mine} (paper {paper})"
        rows.append(row)
    findings = []
    runnable = {name: cells for name, cells in ours.items() if {"MAML", "ANIL"} <= set(cells)}
    if runnable:
        findings.append(Finding.judged(
            paper_values.verdict_anil_matches_maml(runnable), prefix="Every setting run, ANIL vs MAML: ",
            claim="ANIL matches MAML's accuracy in every setting run", location="Table 2; Section 4",
            paper="; ".join(_paper_cells(name, ("ANIL", "MAML")) for name in runnable if name in PAPER_COLUMNS)
            or "- (no such cell in the paper)",
            ours="; ".join(f"{_our_cells(cells, ('ANIL', 'MAML'))} ({name})" for name, cells in runnable.items())))
    body = ("Ours: mean ± the 95% CI half-width of the mean, the spread the verdicts use (percent; t quantile x "
            "std over seeds / sqrt(seeds), or with one seed the episode CI); the paper's ± is the std over three "
            "initialisations. Cells of the paper's Tables 2 and 4 that this reproduction did not run say so.\n\n" + markdown_table(pd.DataFrame(rows)))
    return Section("Tables 2 and 4, every cell", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="MAML vs ANIL vs NIL", reference="Tables 2 and 4, Sec. 4.3", networks=("maml", "anil"),
    compute=compute, figures=figures, report=report, episode_offset=3, across_settings=across_settings))
