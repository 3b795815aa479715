"""``repana reproduce``: train what is missing, run every analysis, write CSVs, figures and report.md.

Output folder layout::

    <out>/runs/<name>/          training runs (config.toml, metrics.csv, checkpoints/)
    <out>/tables/<analysis>.csv tidy results (+ <analysis>.key: what they were computed from)
    <out>/<figure>.png|pdf      figures, beside the report that shows them
    <out>/report.md

Everything is resumable: a run whose final checkpoint exists is reused, an interrupted run is
resumed from its newest checkpoint, and an analysis whose CSV was written from the same checkpoints
and settings is read back instead of recomputed. Deleting a CSV recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from repana.analysis.registry import (ANALYSIS_QUERIES, PRESETS, AnalysisContext, default_analyses_dir, get_analysis,
                                     list_analyses, load_entries)
from repana.errors import ConfigError
from repana.io import atomic_save_csv, atomic_write_text

__all__ = ["reproduce", "training_plan", "ensure_trained", "load_entries", "default_analyses_dir"]

DATASET_PRESETS = {"glyphs": "omniglot-5way-1shot", "omniglot": "omniglot-5way-1shot",
                   "miniimagenet": "miniimagenet-5way-1shot"}
# Training runs: name -> algorithm. "multiclass" is the trainer's "pretrain".
RUNS = {"maml": "maml", "anil": "anil", "multiclass": "pretrain", "multitask": "multitask", "nil": "nil"}
# Each run gets its own seed (base seed + offset): networks compared with each other (MAML vs ANIL
# similarity, the regimes table) must not share their random initialisation.
RUN_SEED_OFFSETS = {"maml": 0, "anil": 1, "multiclass": 2, "multitask": 3, "nil": 4}
# The quick preset: a few minutes of training per run on 2 CPU cores (budgets tuned to finish the
# whole pipeline in under 20 minutes); the paper preset keeps the bundled presets' settings.
QUICK_OVERRIDES = {"hidden": 32, "meta_batch_size": 4, "queries_train": 5, "val_every": 0, "log_every": 10,
                   "keep_checkpoints": 1}
QUICK_ITERATIONS = {"maml": 1500, "anil": 1500, "multiclass": 1500, "multitask": 1000, "nil": 1000}
QUICK_SAVE_FRACTIONS = (0.05, 0.3, 1.0)  # early / middle / final checkpoints of the MAML run
# Test-time inner steps of the accuracy analyses. The paper preset uses the checkpoint's own
# (inner_steps_test, 3 for Omniglot). A quick run's meta-initialisation is tuned for exactly the one
# step it was trained with: on the Omniglot subset, MAML after 1500 iterations scores 68% with 1 step
# at lr 2.0 but 46% with 2 and 36% with 3 (overshoot), so the quick preset evaluates with 1 step; the
# inner-loop analysis still follows 3 steps (its own ``steps`` setting) to show the drift.
EVAL_STEPS = {"quick": 1, "paper": None}


def training_plan(preset: str, dataset: str, data_root: str | Path | None = None,
                  iterations_scale: float = 1.0, overrides: dict | None = None) -> dict:
    """Run name -> resolved TrainConfig of every network the analyses need.

    ``overrides``: TrainConfig values applied to every run last (e.g. ``{"hidden": 16}``).
    """
    from repana.meta.config import load_config

    overrides_all = overrides
    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is not one of {PRESETS}")
    if dataset not in DATASET_PRESETS:
        raise ConfigError(f"dataset {dataset!r} is not one of {tuple(DATASET_PRESETS)}")
    plan = {}
    for name, algorithm in RUNS.items():
        overrides: dict = {"name": name, "algorithm": algorithm, "dataset": dataset,
                           "data_root": str(data_root) if data_root else ""}
        if preset == "quick":
            iterations = max(10, int(QUICK_ITERATIONS[name] * iterations_scale))
            overrides.update(QUICK_OVERRIDES, iterations=iterations, checkpoint_every=0)
            if name == "maml":
                overrides["save_steps"] = sorted({max(1, int(f * iterations)) for f in QUICK_SAVE_FRACTIONS})
            else:
                overrides["save_steps"] = []
        config = load_config(preset=DATASET_PRESETS[dataset], overrides={**overrides, **(overrides_all or {})})
        plan[name] = config.replace(seed=config.seed + RUN_SEED_OFFSETS[name])
    return plan


def final_checkpoint(run_dir: Path, iterations: int) -> Path:
    return run_dir / "checkpoints" / f"step_{iterations:06d}.pt"


def _check_same_run(saved, wanted, run_dir: Path) -> None:
    """ConfigError when an existing run folder was trained with other settings than the plan's."""
    from repana.meta.train import RESUMABLE_CHANGES

    saved_d, wanted_d = saved.to_dict(), wanted.to_dict()
    changed = sorted(k for k in wanted_d if saved_d.get(k) != wanted_d[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"{run_dir} was trained with other settings ("
                          + ", ".join(f"{k} = {saved_d.get(k)!r}, now {wanted_d[k]!r}" for k in changed)
                          + "): use another --out folder or delete that run folder to retrain it")


def ensure_trained(plan: dict, runs_dir: Path, data: dict, log: Callable[[str], None],
                   show_progress: bool | None = None) -> dict[str, Path]:
    """Train each run of ``plan`` whose final checkpoint is missing (resuming a partial run)."""
    from repana.meta.train import read_run_config, train

    finals = {}
    for name, config in plan.items():
        run_dir = runs_dir / name
        final = final_checkpoint(run_dir, config.iterations)
        if (run_dir / "config.toml").exists():
            _check_same_run(read_run_config(run_dir), config, run_dir)
        if final.exists():
            log(f"[train] {name}: reusing {final}")
        else:
            partial = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
            log(f"[train] {name} ({config.algorithm}): {config.iterations} iterations"
                + (" (resuming)" if partial else ""))
            start = time.perf_counter()
            train(config, run_dir, resume=partial, data=data, show_progress=show_progress)
            log(f"[train] {name}: done in {time.perf_counter() - start:.0f} s")
        finals[name] = final
    return finals


def _fingerprint(settings: dict, paths: list[Path]) -> str:
    parts = [json.dumps(settings, sort_keys=True, default=str)]
    for path in paths:
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class TableCache:
    """Reads back or computes the CSVs of ``<out>/tables``, one analysis (all its tables) at a time.

    ``<name>.key`` records what the tables were computed from (settings and checkpoint files) and which
    tables there are; it is written after the CSVs, so an interrupted analysis is recomputed.
    """

    folder: Path
    log: Callable[[str], None]
    reused: list[str] = field(default_factory=list)

    def get(self, name: str, key: str, compute: Callable[[], dict[str, pd.DataFrame]]) -> tuple[dict, bool]:
        """The analysis's tables, and whether they were read back (True) or computed (False)."""
        key_file = self.folder / f"{name}.key"
        if key_file.exists():
            saved_key, *table_names = key_file.read_text().split()
            csvs = [self.folder / f"{table}.csv" for table in table_names]
            if saved_key == key and table_names and all(csv.exists() for csv in csvs):
                self.log(f"[analysis] {name}: reusing {', '.join(str(csv) for csv in csvs)}")
                self.reused.append(name)
                return {table: pd.read_csv(csv) for table, csv in zip(table_names, csvs)}, True
        start = time.perf_counter()
        tables = compute()
        for table, frame in tables.items():
            atomic_save_csv(frame, self.folder / f"{table}.csv")
        atomic_write_text(key_file, " ".join([key, *tables]) + "\n")
        self.log(f"[analysis] {name}: {sum(len(f) for f in tables.values())} rows in "
                 f"{time.perf_counter() - start:.0f} s -> {self.folder}/{name}*.csv")
        return tables, False


def reproduce(preset: str = "quick", dataset: str = "glyphs", data_root: str | Path | None = None,
              out: str | Path = "reproduce", analyses_dir: str | Path | None = None,
              only: list[str] | None = None, iterations_scale: float = 1.0, train_overrides: dict | None = None,
              data: dict | None = None,
              threads: int | None = None, show_progress: bool | None = None,
              log: Callable[[str], None] | None = None) -> Path:
    """The whole pipeline: train what the selected analyses need, run each registered analysis, write
    its CSVs and figures, then ``report.md``; returns the report's path.

    ``only``: names of analyses to run (default every registered analysis with an entry). ``iterations_scale``
    multiplies the quick preset's training iterations (tests use a tiny value); ``train_overrides`` changes
    TrainConfig values of every run (e.g. ``{"hidden": 16}``). ``data``: the ``{"train", "val", "test"}``
    datasets, loaded from ``dataset`` / ``data_root`` when None. ``threads``: torch intra-op threads
    (default: torch's choice; 1 is faster on a CPU shared with other jobs).
    """
    from repana.analysis.maml_anil_nil import seconds_per_iteration
    from repana.analysis.report import write_report
    from repana.data import load_splits
    from repana.meta.checkpoint import load_checkpoint
    from repana.plots import paper as plots

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(out)
    entries = load_entries(preset, analyses_dir)
    unknown = sorted(set(only or []) - set(entries))
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; available: {sorted(entries)}")
    selected = [get_analysis(name) for name in list_analyses() if name in entries and (not only or name in only)]
    plan = training_plan(preset, dataset, data_root, iterations_scale, train_overrides)
    t_start = time.perf_counter()
    log(f"[reproduce] preset {preset}, dataset {dataset}, output {out}")
    if threads:
        torch.set_num_threads(threads)
    data = data if data is not None else load_splits(dataset, root=data_root)
    needed = {net for analysis in selected for net in analysis.networks}
    finals = ensure_trained({k: v for k, v in plan.items() if k in needed}, out / "runs", data, log,
                            show_progress)
    checkpoints = {name: load_checkpoint(path) for name, path in finals.items()}
    reference = "maml" if "maml" in checkpoints else next(iter(checkpoints))
    base = AnalysisContext(networks=checkpoints, settings={}, preset=preset, reference=reference,
                           steps=EVAL_STEPS[preset], data=data, dataset=dataset, data_root=data_root)
    cache = TableCache(out / "tables", log)
    sections = []
    for analysis in selected:
        context = base.with_settings(entries[analysis.name]["settings"], analysis.episode_offset,
                                     networks=analysis.networks)
        key = _fingerprint({"settings": context.settings, "dataset": dataset, "preset": preset,
                            "steps": context.steps, "lr": context.lr}, context.input_files(analysis))
        tables, reused = cache.get(analysis.name, key, lambda: _checked(analysis, analysis.compute(context)))
        for stem, build in analysis.figures(tables, context).items():
            target = out / stem
            if reused and target.with_suffix(".png").exists() and target.with_suffix(".pdf").exists():
                continue
            plots.save_figure(build(), target)
        sections.append(analysis.report(tables, context))
    context_facts = {
        "preset": preset, "dataset": dataset, "ways": base.reference_config.ways,
        "shots": base.reference_config.shots, "queries": ANALYSIS_QUERIES, "inner_steps_test": base.steps,
        "inner_lr": base.lr, "hidden": base.reference_config.hidden, "pooling": base.reference_config.pooling,
        "runs": {name: {"algorithm": plan[name].algorithm, "iterations": plan[name].iterations,
                        "train_s": seconds_per_iteration(out / "runs" / name) * plan[name].iterations}
                 for name in finals},
        "wall_clock_s": time.perf_counter() - t_start, "reused": cache.reused}
    report = write_report(out, sections, context_facts)
    log(f"[reproduce] report written to {report} ({time.perf_counter() - t_start:.0f} s)")
    return report


def _checked(analysis, tables: dict) -> dict:
    analysis.check_table_names(tables)
    return tables
