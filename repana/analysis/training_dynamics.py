"""Feature reuse during training (paper Fig. 3): the inner-loop similarity and freezing analyses applied
to checkpoints saved along a run (early, middle, final), to see whether feature reuse appears early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from repana.analysis.common import DEFAULT_MEASURES, LAYERS
from repana.analysis.freezing import (CONVERGENCE_LADDER, FROZEN_SETS, PAPER_TEST_STEPS, freezing_by_protocol,
                                      freezing_reading)
from repana.analysis.inner_loop_similarity import inner_loop_similarity, summarize_inner_loop
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError
from repana.meta.train import eval_trainable


def _step_of(source) -> int | None:
    from repana.meta.train import _STEP_FILE

    path = getattr(source, "path", source)
    match = _STEP_FILE.match(Path(path).name) if path is not None else None
    return int(match.group(1)) if match else None


# The paper's Figure 3: checkpoints at 10000, 20000 and 30000 of 60000 iterations, and the trained network.
STAGE_FRACTIONS = (("1/6", 1 / 6), ("1/3", 1 / 3), ("1/2", 1 / 2), ("final", 1.0))


def _total_iterations(item) -> int | None:
    config = getattr(item, "config", None)
    return int(config["iterations"]) if isinstance(config, dict) and "iterations" in config else None


def select_stages(checkpoints: Sequence, iterations: int | None = None) -> list[tuple[str, object]]:
    """The checkpoints of a run nearest to the paper's Figure 3 stages: 1/6, 1/3 and 1/2 of training and
    the final network (:data:`STAGE_FRACTIONS`); the untrained network (step 0) is never a stage.

    ``checkpoints``: ``step_XXXXXX.pt`` paths or loaded :class:`repana.meta.checkpoint.Checkpoint` s
    (others are ignored). ``iterations``: the run's length (default: the checkpoints' config, else the
    last step). Returns ``[(stage, checkpoint or path)]`` ordered by step, each checkpoint once.
    """
    stepped = sorted(((step, item) for item in checkpoints
                      if (step := _step_of(item)) is not None and step > 0), key=lambda pair: pair[0])
    if not stepped:
        raise InputError("no step_XXXXXX.pt checkpoints after step 0 given for the training-dynamics analysis "
                         "(the untrained network is not a stage of training)")
    total = iterations or _total_iterations(stepped[-1][1]) or stepped[-1][0]
    stages, used = [], set()
    for name, fraction in STAGE_FRACTIONS:
        step, item = min(stepped, key=lambda pair: abs(pair[0] - fraction * total))
        if step not in used:
            used.add(step)
            stages.append((name, item))
    return stages


def _load(source):
    """(model in eval mode, Checkpoint) of a checkpoint path or Checkpoint."""
    from repana.meta.checkpoint import Checkpoint, load_checkpoint

    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    return checkpoint.model(), checkpoint


def _inner_loop(checkpoint, steps: int | None, lr: float | None) -> tuple[int, float]:
    config = checkpoint.train_config()
    return (int(steps if steps is not None else config.inner_steps_test),
            float(lr if lr is not None else config.mean_loss_inner_lr()))


def inner_loop_over_training(stages: Sequence[tuple[str, object]], episodes, *,
                             measures: Sequence[str] = DEFAULT_MEASURES, layers: Sequence[str] = LAYERS,
                             steps: int | None = None, lr: float | None = None,
                             min_ratio: float = 5.0) -> pd.DataFrame:
    """Summary of :func:`inner_loop_similarity` (final inner step) per training stage.

    ``steps`` / ``lr``: test-time inner loop (default: each checkpoint's own).
    Returns rows: stage, train_step, label, step, layer, measure, mean, ci95, n, null_mean, ...
    """
    frames = []
    for stage, source in stages:
        model, checkpoint = _load(source)
        n_steps, step_lr = _inner_loop(checkpoint, steps, lr)
        detail = inner_loop_similarity(model, episodes, steps=n_steps, lr=step_lr,
                                       trainable=eval_trainable(checkpoint.train_config()), measures=measures,
                                       layers=layers, min_ratio=min_ratio, label=checkpoint.algorithm,
                                       every_step=False)
        summary = summarize_inner_loop(detail)
        summary.insert(0, "train_step", checkpoint.step)
        summary.insert(0, "stage", stage)
        frames.append(summary)
    return pd.concat(frames, ignore_index=True)


def freezing_over_training(stages: Sequence[tuple[str, object]], episodes, *,
                           frozen_sets=FROZEN_SETS, steps: int | None = None,
                           lr: float | None = None, ladder: Sequence[int] = CONVERGENCE_LADDER,
                           paper_steps: int = PAPER_TEST_STEPS) -> pd.DataFrame:
    """:func:`repana.analysis.freezing.freezing_by_protocol` per training stage (the run's steps, the paper's
    and the support loss converged); rows gain columns stage and train_step."""
    frames = []
    for stage, source in stages:
        model, checkpoint = _load(source)
        n_steps, step_lr = _inner_loop(checkpoint, steps, lr)
        frame = freezing_by_protocol(model, episodes, run_steps=n_steps, lr=step_lr,
                                     trainable=eval_trainable(checkpoint.train_config()), frozen_sets=frozen_sets,
                                     ladder=ladder, paper_steps=paper_steps, label=checkpoint.algorithm)
        frame.insert(0, "train_step", checkpoint.step)
        frame.insert(0, "stage", stage)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ----- the registered analysis -------------------------------------------------------------------

NAME = "training_dynamics"


def compute(context) -> dict[str, pd.DataFrame]:
    """Stages of a run: the checkpoints given, or when one is given, the step checkpoints beside it."""
    settings = context.settings
    labels = list(context.networks)
    sources = [context.networks[label] for label in labels] if len(labels) > 1 else context.history(labels[0])
    stages = select_stages(sources)
    episodes = context.episodes(settings["episodes"])
    similarity = inner_loop_over_training(stages, episodes, measures=settings["measures"],
                                          steps=settings.get("steps", context.steps), lr=context.lr)
    freezing = freezing_over_training(stages, episodes, frozen_sets=FROZEN_SETS, steps=context.steps,
                                      lr=context.lr, ladder=tuple(settings.get("ladder", CONVERGENCE_LADDER)),
                                      paper_steps=int(settings.get("paper_steps", PAPER_TEST_STEPS)))
    return {NAME: similarity, f"{NAME}_freezing": freezing}


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    freezing = tables[f"{NAME}_freezing"]
    if "protocol" in freezing:
        freezing = freezing[freezing["protocol"] == "paper"]
    return {NAME: lambda: plots.dynamics_figure(tables[NAME], freezing)}


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, judged_cell, markdown_table, over_seeds

    keys = ["stage", "train_step", "layer", "measure"]
    similarity = over_seeds(tables[NAME], keys, "mean")
    every_protocol = tables[f"{NAME}_freezing"]
    if "protocol" not in every_protocol:   # tables of an older repana: the run's protocol only
        every_protocol = every_protocol.assign(protocol="paper")
    by_protocol = over_seeds(every_protocol, ["stage", "train_step", "protocol", "frozen"], "accuracy")
    freezing = by_protocol[by_protocol["protocol"] == "paper"]
    findings = []
    unjudged = sorted({a for a in tables[NAME]["label"] if not paper_values.judged(str(a))})
    if unjudged:   # Figure 3 is about MAML: no claim to test a network trained otherwise against
        findings.append(Finding(f"Figure 3: not judged (networks trained with {', '.join(unjudged)}, about "
                                "which the paper makes no claim)"))
    for measure, group in ([] if unjudged else similarity.groupby("measure", sort=False)):
        checkpoints = {}
        for step, at_step in freezing.groupby("train_step", sort=True):
            sim = group[group["train_step"] == step]
            checkpoints[int(step)] = {
                "freezing": {row["frozen"]: judged_cell(row) for _, row in at_step.iterrows()},
                "similarity": {row["layer"]: row["mean"] for _, row in sim.iterrows() if row["layer"] != "head"}}
        try:
            judgement = paper_values.verdict_training_dynamics(checkpoints, measure)
        except ValueError as error:
            findings.append(Finding(f"{measure}: not judged ({error})"))
            continue
        body_min = {step: min(cells["similarity"].values(), default=float("nan"))
                    for step, cells in checkpoints.items()}
        freeze_worst = {step: max((abs(v[0] - cells["freezing"]["none"][0]) for v in cells["freezing"].values()),
                                  default=float("nan")) for step, cells in checkpoints.items()}
        findings.append(Finding.judged(
            judgement, claim=f"Feature reuse from early in training ({measure})",
            location="Figure 3; Section 3.2.3",
            paper=f"body CCA > {paper_values.BODY_CCA_ABOVE}, freezing 'approximately the same', at 10k/20k/30k it.",
            ours="; ".join(f"it. {step}: body min {body_min[step]:.3f}, freezing max change {freeze_worst[step]:.1f} pt"
                           for step in checkpoints)))
    for step, at_step in by_protocol.groupby("train_step", sort=True):
        drops = {}
        for protocol in ("paper", "converged"):
            cells = {row["frozen"]: judged_cell(row) for _, row in at_step[at_step["protocol"] == protocol].iterrows()}
            if "none" in cells and "1,2,3,4" in cells:
                drops[protocol] = (cells["none"][0] - cells["1,2,3,4"][0], cells["1,2,3,4"][1])
        if len(drops) == 2:
            tolerance = max(paper_values.FREEZING_TOLERANCE_POINTS, drops["paper"][1])
            findings.append(Finding(f"checkpoint {int(step)}: "
                                    + freezing_reading(drops["paper"][0], drops["converged"][0], tolerance)))
    sim_view = similarity.rename(columns={"mean": "before vs after", "mean_std": "std over seeds",
                                          "ci95": "episode CI"})
    frz_view = by_protocol.rename(columns={"accuracy_std": "std over seeds", "ci95": "episode CI"})
    body = ("MAML checkpoints saved at the same fractions of training as the paper's Figure 3 (10000, 20000 and "
            "30000 iterations; the presets train 60000) and the final one: inner-loop similarity of each layer, "
            "and accuracy with contiguous blocks of conv layers frozen at test time, under the run's test-time steps, the "
            "paper's (10) and with the support loss converged (as the freezing section; the verdict uses the "
            "paper's protocol).\n\n"
            + markdown_table(sim_view) + "\n\n" + markdown_table(frz_view) + "\n\n"
            + figure_markdown(NAME, "Inner-loop similarity and freezing along training"))
    return Section("Feature reuse during training (paper Fig. 3)", body, tuple(findings))


ANALYSIS = register(Analysis(
    name=NAME, title="Feature reuse during training", reference="Fig. 3", networks=("maml",),
    compute=compute, figures=figures, report=report, episode_offset=2,
    uses_history=True))
