"""Feature reuse during training (paper Fig. 3): the inner-loop similarity and freezing analyses applied
to checkpoints saved along a run (early, middle, final), to see whether feature reuse appears early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from repana.analysis.common import DEFAULT_MEASURES, LAYERS, trainable_for
from repana.analysis.freezing import FROZEN_SETS, freezing_accuracy
from repana.analysis.inner_loop_similarity import inner_loop_similarity, summarize_inner_loop
from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError


def _step_of(source) -> int | None:
    from repana.meta.train import _STEP_FILE

    path = getattr(source, "path", source)
    match = _STEP_FILE.match(Path(path).name) if path is not None else None
    return int(match.group(1)) if match else None


def select_stages(checkpoints: Sequence) -> list[tuple[str, object]]:
    """Early, middle and final checkpoints of a run.

    ``checkpoints``: ``step_XXXXXX.pt`` paths or loaded :class:`repana.meta.checkpoint.Checkpoint` s
    (others are ignored). Returns ``[(stage, checkpoint or path)]`` ordered by step; fewer than three
    checkpoints give fewer stages.
    """
    stepped = sorted(((step, item) for item in checkpoints if (step := _step_of(item)) is not None),
                     key=lambda pair: pair[0])
    if not stepped:
        raise InputError("no step_XXXXXX.pt checkpoints given for the training-dynamics analysis")
    if len(stepped) < 3:
        names = ["early", "final"][-len(stepped):]
        return list(zip(names, [item for _, item in stepped]))
    return [("early", stepped[0][1]), ("middle", stepped[len(stepped) // 2][1]), ("final", stepped[-1][1])]


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
                                       trainable=trainable_for(checkpoint.algorithm), measures=measures,
                                       layers=layers, min_ratio=min_ratio, label=checkpoint.algorithm,
                                       every_step=False)
        summary = summarize_inner_loop(detail)
        summary.insert(0, "train_step", checkpoint.step)
        summary.insert(0, "stage", stage)
        frames.append(summary)
    return pd.concat(frames, ignore_index=True)


def freezing_over_training(stages: Sequence[tuple[str, object]], episodes, *,
                           frozen_sets=FROZEN_SETS, steps: int | None = None,
                           lr: float | None = None) -> pd.DataFrame:
    """:func:`freezing_accuracy` per training stage; rows gain columns stage and train_step."""
    frames = []
    for stage, source in stages:
        model, checkpoint = _load(source)
        n_steps, step_lr = _inner_loop(checkpoint, steps, lr)
        frame = freezing_accuracy(model, episodes, steps=n_steps, lr=step_lr,
                                  trainable=trainable_for(checkpoint.algorithm), frozen_sets=frozen_sets,
                                  label=checkpoint.algorithm)
        frame.insert(0, "train_step", checkpoint.step)
        frame.insert(0, "stage", stage)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ----- the registered analysis -------------------------------------------------------------------

NAME = "training_dynamics"
DYNAMICS_FROZEN_SETS = ((), (1, 2, 3, 4))


def compute(context) -> dict[str, pd.DataFrame]:
    """Stages of a run: the checkpoints given, or when one is given, the step checkpoints beside it."""
    settings = context.settings
    labels = list(context.networks)
    sources = [context.networks[label] for label in labels] if len(labels) > 1 else context.history(labels[0])
    stages = select_stages(sources)
    episodes = context.episodes(settings["episodes"])
    similarity = inner_loop_over_training(stages, episodes, measures=settings["measures"],
                                          steps=settings.get("steps", context.steps), lr=context.lr)
    freezing = freezing_over_training(stages, episodes, frozen_sets=DYNAMICS_FROZEN_SETS, steps=context.steps,
                                      lr=context.lr)
    return {NAME: similarity, f"{NAME}_freezing": freezing}


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    return {NAME: lambda: plots.dynamics_figure(tables[NAME], tables[f"{NAME}_freezing"])}


def report(tables, context) -> Section:
    from repana.analysis.report import figure_markdown, markdown_table

    similarity, freezing = tables[NAME], tables[f"{NAME}_freezing"]
    sim = similarity[["stage", "train_step", "layer", "measure", "mean", "ci95", "null_mean"]]
    frz = freezing[["stage", "train_step", "frozen", "accuracy", "ci95"]]
    early = similarity[(similarity["stage"] == similarity["stage"].iloc[0]) &
                       similarity["layer"].isin(["conv1", "conv2", "conv3"])]
    finding = Finding(f"At the earliest saved checkpoint (step {int(similarity['train_step'].min())}) conv1-conv3 "
                      f"before/after similarity is already {early['mean'].min():.3f}-{early['mean'].max():.3f} "
                      "(paper: feature reuse appears early in training)")
    body = (markdown_table(sim) + "\n\n" + markdown_table(frz) + "\n\n"
            + figure_markdown(NAME, "Inner-loop similarity and freezing along training"))
    return Section("Feature reuse during training (paper Fig. 3)", body, (finding,))


ANALYSIS = register(Analysis(
    name=NAME, title="Feature reuse during training", reference="Fig. 3", networks=("maml",),
    compute=compute, figures=figures, report=report, episode_offset=2,
    uses_history=True))
