"""Feature reuse during training: the inner-loop similarity and freezing analyses applied to
checkpoints saved along a run (early, middle, final), to see whether feature reuse appears early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from repana.analysis.common import DEFAULT_MEASURES, LAYERS, inner_loop_settings, load_model, trainable_for
from repana.analysis.freezing import FROZEN_SETS, freezing_accuracy
from repana.analysis.inner_loop import inner_loop_similarity, summarize_inner_loop
from repana.errors import InputError


def select_stages(checkpoint_paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """Early, middle and final checkpoints of a run, from ``step_XXXXXX.pt`` paths.

    Returns ``[(stage, path)]`` ordered by step; fewer than three checkpoints give fewer stages.
    """
    from repana.meta.train import _STEP_FILE

    stepped = sorted((int(m.group(1)), Path(p)) for p in checkpoint_paths
                     if (m := _STEP_FILE.match(Path(p).name)))
    if not stepped:
        raise InputError("no step_XXXXXX.pt checkpoints given for the training-dynamics analysis")
    if len(stepped) < 3:
        names = ["early", "final"][-len(stepped):]
        return list(zip(names, [p for _, p in stepped]))
    return [("early", stepped[0][1]), ("middle", stepped[len(stepped) // 2][1]), ("final", stepped[-1][1])]


def inner_loop_over_training(stages: Sequence[tuple[str, Path]], episodes, *,
                             measures: Sequence[str] = DEFAULT_MEASURES, layers: Sequence[str] = LAYERS,
                             steps: int | None = None, lr: float | None = None,
                             min_ratio: float = 5.0) -> pd.DataFrame:
    """Summary of :func:`inner_loop_similarity` (final inner step) per training stage.

    Returns rows: stage, train_step, label, step, layer, measure, mean, ci95, n, null_mean, ...
    """
    frames = []
    for stage, path in stages:
        model, meta = load_model(path)
        n_steps, step_lr = inner_loop_settings(meta, steps, lr)
        detail = inner_loop_similarity(model, episodes, steps=n_steps, lr=step_lr,
                                       trainable=trainable_for(meta["algorithm"]), measures=measures,
                                       layers=layers, min_ratio=min_ratio, label=meta["algorithm"],
                                       every_step=False)
        summary = summarize_inner_loop(detail)
        summary.insert(0, "train_step", meta["step"])
        summary.insert(0, "stage", stage)
        frames.append(summary)
    return pd.concat(frames, ignore_index=True)


def freezing_over_training(stages: Sequence[tuple[str, Path]], episodes, *,
                           frozen_sets=FROZEN_SETS, steps: int | None = None,
                           lr: float | None = None) -> pd.DataFrame:
    """:func:`freezing_accuracy` per training stage; rows gain columns stage and train_step."""
    frames = []
    for stage, path in stages:
        model, meta = load_model(path)
        n_steps, step_lr = inner_loop_settings(meta, steps, lr)
        frame = freezing_accuracy(model, episodes, steps=n_steps, lr=step_lr,
                                  trainable=trainable_for(meta["algorithm"]), frozen_sets=frozen_sets,
                                  label=meta["algorithm"])
        frame.insert(0, "train_step", meta["step"])
        frame.insert(0, "stage", stage)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
