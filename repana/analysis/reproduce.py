"""``repana reproduce``: train what is missing, run every analysis, write CSVs, figures and report.md.

Output folder layout::

    <out>/runs/<setting>/<network>/seed<k>/   training runs (config.toml, metrics.csv, checkpoints/)
    <out>/tables/<setting>/<analysis>*.csv     tidy results of every seed (a ``seed`` column)
    <out>/tables/<setting>/seed<k>/...         the per-seed tables (+ .key: what they were computed from)
    <out>/figures/<setting>/<analysis>*.png|pdf
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
from typing import TYPE_CHECKING, Callable

import pandas as pd
import torch

from repana.analysis.registry import (ANALYSIS_QUERIES, PRESETS, AnalysisContext, Section, default_analyses_dir,
                                     get_analysis, list_analyses, load_entries)
from repana.errors import ConfigError
from repana.io import atomic_save_csv, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from repana.meta.config import TrainConfig

__all__ = ["reproduce", "training_plan", "ensure_trained", "load_entries", "default_analyses_dir"]

DATASETS = ("glyphs", "omniglot", "miniimagenet")
# The cells of the paper's tables (Tables 2 and 4): dataset -> (ways, shots) it reports.
PAPER_CELLS = {"omniglot": ((20, 1), (20, 5)), "miniimagenet": ((5, 1), (5, 5))}
# Settings a reproduction can run: dataset -> (ways, shots) with a bundled preset (glyphs uses Omniglot's).
SETTING_CELLS = {"omniglot": ((5, 1), (5, 5), (20, 1), (20, 5)), "glyphs": ((5, 1), (5, 5), (20, 1), (20, 5)),
                 "miniimagenet": ((5, 1), (5, 5))}
DEFAULT_CELL = {"glyphs": (5, 1), "omniglot": (5, 1), "miniimagenet": (5, 1)}
# Training runs: name -> algorithm. "multiclass" is the trainer's "pretrain".
RUNS = {"maml": "maml", "anil": "anil", "multiclass": "pretrain", "multitask": "multitask", "nil": "nil"}
# Each run gets its own seed: the preset's seed + the network's offset + SEED_STRIDE x the seed index, so
# networks compared with each other (MAML vs ANIL, seed pairs, the regimes table) never share their
# random initialisation; seed index 0 keeps the seeds of single-seed reproductions.
RUN_SEED_OFFSETS = {"maml": 0, "anil": 1, "multiclass": 2, "multitask": 3, "nil": 4}
SEED_STRIDE = 10
# The quick preset: a few minutes of training per run on 2 CPU cores (budgets tuned to finish the
# whole pipeline in under 20 minutes); the paper preset keeps the bundled presets' settings.
QUICK_OVERRIDES = {"hidden": 32, "meta_batch_size": 4, "queries_train": 5, "log_every": 10, "keep_checkpoints": 1}
QUICK_ITERATIONS = {"maml": 1500, "anil": 1500, "multiclass": 1500, "multitask": 1000, "nil": 1000}
QUICK_VALIDATIONS = 15        # validation points along each MAML / ANIL quick run (the learning curves)
QUICK_VAL_EPISODES = 50
# MAML's saved checkpoints, as fractions of training: the paper's Figure 3 uses 10000, 20000 and 30000 of
# 60000 iterations (the presets' total), i.e. 1/6, 1/3 and 1/2; plus the final network.
SAVE_FRACTIONS = (1 / 6, 1 / 3, 1 / 2, 1.0)
# Test-time inner steps of the accuracy analyses. The paper preset uses the checkpoint's own
# (inner_steps_test, 3 for Omniglot). A quick run's meta-initialisation is tuned for exactly the one
# step it was trained with: on the Omniglot subset, MAML after 1500 iterations scores 68% with 1 step
# at lr 2.0 but 46% with 2 and 36% with 3 (overshoot), so the quick preset evaluates with 1 step; the
# inner-loop analysis still follows 3 steps (its own ``steps`` setting) to show the drift.
EVAL_STEPS = {"quick": 1, "paper": None}


@dataclass(frozen=True)
class Setting:
    """One cell of the paper's tables: a dataset with N ways and K shots."""

    dataset: str
    ways: int
    shots: int

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.ways}way-{self.shots}shot"

    @property
    def preset(self) -> str:
        """The bundled training preset of this cell (glyphs train like Omniglot)."""
        return f"{'omniglot' if self.dataset == 'glyphs' else self.dataset}-{self.ways}way-{self.shots}shot"


def parse_setting(text: str, dataset: str | None = None) -> Setting:
    """``"omniglot-20way-1shot"`` or ``"20way-1shot"`` (on ``dataset``) -> :class:`Setting`."""
    import re

    match = re.fullmatch(r"(?:([a-z]+)-)?(\d+)way-(\d+)shot", text.strip().lower())
    name = (match.group(1) or dataset) if match else None
    if not match or name is None:
        raise ConfigError(f"setting {text!r} is not DATASET-Nway-Kshot (e.g. omniglot-20way-1shot) or Nway-Kshot")
    if name not in SETTING_CELLS:
        raise ConfigError(f"setting {text!r}: unknown dataset {name!r}; choose one of {', '.join(SETTING_CELLS)}")
    cell = (int(match.group(2)), int(match.group(3)))
    if cell not in SETTING_CELLS[name]:
        choices = ", ".join(f"{name}-{w}way-{k}shot" for w, k in SETTING_CELLS[name])
        raise ConfigError(f"setting {text!r} is not one of the paper's cells for {name}: {choices}")
    return Setting(name, *cell)


@dataclass(frozen=True)
class PlannedRun:
    """One training job of a reproduction: a network of a setting, trained from seed index ``seed``."""

    setting: Setting
    network: str
    seed: int
    config: "TrainConfig"

    @property
    def folder(self) -> str:
        """Run folder under ``<out>/runs``."""
        return f"{self.setting.name}/{self.network}/seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.network}/seed{self.seed}"


def training_plan(preset: str, dataset: str, data_root: str | Path | None = None,
                  iterations_scale: float = 1.0, overrides: dict | None = None,
                  settings: list[str] | None = None, seeds: int = 1,
                  networks: list[str] | None = None) -> list[PlannedRun]:
    """Every training job of a reproduction: setting x network x seed, each a resolved TrainConfig.

    ``settings``: cells such as ``"20way-1shot"`` on ``dataset`` (default: its 5-way 1-shot cell).
    ``networks``: run names of :data:`RUNS` (default all). ``overrides``: TrainConfig values applied to
    every run last (e.g. ``{"hidden": 16}``).
    """
    from repana.meta.config import load_config

    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is not one of {PRESETS}")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is not one of {DATASETS}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds = {seeds!r}: a reproduction needs at least 1 seed per network (the paper: 3)")
    cells = [parse_setting(s, dataset) for s in settings] if settings else [Setting(dataset, *DEFAULT_CELL[dataset])]
    unknown = sorted(set(networks or []) - set(RUNS))
    if unknown:
        raise ConfigError(f"unknown networks {unknown}; choose from {list(RUNS)}")
    plan = []
    for cell in dict.fromkeys(cells):
        for name in (n for n in RUNS if networks is None or n in networks):
            values: dict = {"name": name, "algorithm": RUNS[name], "dataset": cell.dataset,
                            "data_root": str(data_root) if data_root else ""}
            if preset == "quick":
                iterations = max(10, int(QUICK_ITERATIONS[name] * iterations_scale))
                values.update(QUICK_OVERRIDES, iterations=iterations, checkpoint_every=0,
                              val_every=max(1, iterations // QUICK_VALIDATIONS) if name in ("maml", "anil") else 0,
                              val_episodes=QUICK_VAL_EPISODES)
                values["save_steps"] = (sorted({max(1, round(f * iterations)) for f in SAVE_FRACTIONS})
                                        if name == "maml" else [])
            config = load_config(preset=cell.preset, overrides={**values, **(overrides or {})})
            if preset == "paper" and name == "maml":
                config = config.replace(save_steps=sorted(set(config.save_steps) | {
                    round(f * config.iterations) for f in SAVE_FRACTIONS}))
            for seed in range(seeds):
                plan.append(PlannedRun(cell, name, seed, config.replace(
                    seed=config.seed + RUN_SEED_OFFSETS[name] + SEED_STRIDE * seed)))
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


def ensure_trained(plan: list[PlannedRun], runs_dir: Path, data_for: Callable[[str], dict],
                   log: Callable[[str], None], show_progress: bool | None = None) -> dict[str, Path]:
    """Train, in this process, each run of ``plan`` whose final checkpoint is missing (resuming a partial
    run); returns run folder -> final checkpoint. ``data_for(dataset)``: the splits of a dataset."""
    from repana.meta.train import read_run_config, train

    finals = {}
    for job in plan:
        name, config = job.folder, job.config
        run_dir = runs_dir / name
        data = data_for(config.dataset)
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

    def get(self, name: str, key: str, compute: Callable[[], dict[str, pd.DataFrame]],
            subfolder: str = "") -> tuple[dict, bool]:
        """The analysis's tables (CSVs in ``folder/subfolder``), and whether they were read back (True)
        or computed (False)."""
        folder = self.folder / subfolder
        key_file = folder / f"{name}.key"
        if key_file.exists():
            saved_key, *table_names = key_file.read_text().split()
            csvs = [folder / f"{table}.csv" for table in table_names]
            if saved_key == key and table_names and all(csv.exists() for csv in csvs):
                self.log(f"[analysis] {name}: reusing {', '.join(str(csv) for csv in csvs)}")
                self.reused.append(name)
                return {table: pd.read_csv(csv) for table, csv in zip(table_names, csvs)}, True
        start = time.perf_counter()
        tables = compute()
        for table, frame in tables.items():
            atomic_save_csv(frame, folder / f"{table}.csv")
        atomic_write_text(key_file, " ".join([key, *tables]) + "\n")
        self.log(f"[analysis] {name}{' ' + subfolder if subfolder else ''}: {sum(len(f) for f in tables.values())} "
                 f"rows in {time.perf_counter() - start:.0f} s -> {folder}/{name}*.csv")
        return tables, False


def reproduce(preset: str = "quick", dataset: str = "glyphs", data_root: str | Path | None = None,
              out: str | Path = "reproduce", analyses_dir: str | Path | None = None,
              only: list[str] | None = None, iterations_scale: float = 1.0, train_overrides: dict | None = None,
              data: dict | None = None, threads: int | None = None, show_progress: bool | None = None,
              log: Callable[[str], None] | None = None, settings: list[str] | None = None, seeds: int = 1,
              train_jobs: Callable[[list[PlannedRun], Path], None] | None = None) -> Path:
    """The whole pipeline: train what the selected analyses need (every setting x network x seed), run
    each registered analysis, write its CSVs and figures, then ``report.md``; returns the report's path.

    ``only``: names of analyses to run (default every registered analysis with an entry). ``settings``:
    table cells such as ``"20way-1shot"`` (default: the dataset's 5-way 1-shot). ``seeds``: training seeds
    per network (the paper: 3); tables get a ``seed`` column and the report gives mean ± std over seeds.
    ``iterations_scale`` multiplies the quick preset's training iterations (tests use a tiny value);
    ``train_overrides`` changes TrainConfig values of every run (e.g. ``{"hidden": 16}``). ``data``: the
    ``{"train", "val", "test"}`` datasets of ``dataset``, loaded when None. ``threads``: torch intra-op
    threads. ``train_jobs(jobs, runs_dir)``: trains the missing runs elsewhere (an executor, see
    :mod:`repana.runs`); default: one after another in this process.
    """
    from repana.analysis.report import write_report
    from repana.data import load_splits

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(out)
    entries = load_entries(preset, analyses_dir)
    unknown = sorted(set(only or []) - set(entries))
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; available: {sorted(entries)}")
    selected = [get_analysis(name) for name in list_analyses() if name in entries and (not only or name in only)]
    needed = sorted({net for analysis in selected for net in analysis.networks}, key=list(RUNS).index)
    plan = training_plan(preset, dataset, data_root, iterations_scale, train_overrides, settings, seeds, needed)
    t_start = time.perf_counter()
    log(f"[reproduce] preset {preset}, {', '.join(dict.fromkeys(job.setting.name for job in plan))}, "
        f"{seeds} seed(s), {len(plan)} training runs, output {out}")
    if threads:
        torch.set_num_threads(threads)
    loaded = {dataset: data} if data is not None else {}

    def data_for(name: str) -> dict:
        if name not in loaded:
            loaded[name] = load_splits(name, root=data_root)
        return loaded[name]

    runs_dir = out / "runs"
    if train_jobs is not None:
        train_jobs(plan, runs_dir)
    finals = ensure_trained(plan, runs_dir, data_for, log, show_progress)
    sections, facts, results = [], [], {}
    for setting in dict.fromkeys(job.setting for job in plan):
        jobs = [job for job in plan if job.setting == setting]
        found, setting_facts, computed = _analyse_setting(setting, jobs, finals, selected, entries, preset,
                                                          data_for(setting.dataset), data_root, out, log)
        sections += found
        facts.append(setting_facts)
        for name, result in computed.items():
            results.setdefault(name, {})[setting.name] = result
    sections += [analysis.across_settings(results[analysis.name]) for analysis in selected
                 if analysis.across_settings is not None and analysis.name in results]
    context_facts = {**facts[0], "settings": facts, "wall_clock_s": time.perf_counter() - t_start,
                     "seeds": seeds, "preset": preset}
    report = write_report(out, sections, context_facts)
    log(f"[reproduce] report written to {report} ({time.perf_counter() - t_start:.0f} s)")
    return report


def _analyse_setting(setting: Setting, jobs: list[PlannedRun], finals: dict[str, Path], selected: list,
                     entries: dict, preset: str, data: dict, data_root, out: Path,
                     log: Callable[[str], None]) -> tuple[list, dict, dict]:
    """Every selected analysis on one setting's runs: per seed (tables gain a ``seed`` column) or, for
    analyses that compare seeds, on all of them at once. Returns the report sections, the setting's facts
    and {analysis: (tables, context)}."""
    from repana.analysis.maml_anil_nil import seconds_per_iteration
    from repana.meta.checkpoint import load_checkpoint
    from repana.plots import paper as plots

    seeds = sorted({job.seed for job in jobs})
    checkpoints = {(job.network, job.seed): load_checkpoint(finals[job.folder]) for job in jobs}

    def context_for(networks: dict) -> AnalysisContext:
        reference = next((label for label in networks if label.split("/")[0] == "maml"), next(iter(networks)))
        return AnalysisContext(networks=networks, settings={}, preset=preset, reference=reference,
                               steps=EVAL_STEPS[preset], data=data, dataset=setting.dataset, data_root=data_root)

    per_seed = {seed: context_for({net: ckpt for (net, k), ckpt in checkpoints.items() if k == seed})
                for seed in seeds}
    every_seed = context_for({f"{net}/seed{k}": ckpt for (net, k), ckpt in checkpoints.items()})
    cache = TableCache(out / "tables" / setting.name, log)
    figures_dir = out / "figures" / setting.name
    sections, computed = [], {}
    for analysis in selected:
        settings = entries[analysis.name]["settings"]
        if len(seeds) < analysis.min_seeds:
            log(f"[analysis] {analysis.name}: not run ({len(seeds)} seed(s); it needs {analysis.min_seeds})")
            sections.append(Section(f"{analysis.title} (paper {analysis.reference})",
                                    f"Not run: this analysis compares networks of {analysis.min_seeds} or more seeds; "
                                    f"this reproduction trained {len(seeds)} (`--seeds`).", (), setting.name))
            continue
        if analysis.across_seeds:
            labels = tuple(label for label in every_seed.networks if label.split("/")[0] in analysis.networks)
            contexts = {None: every_seed.with_settings(settings, analysis.episode_offset, networks=labels)}
        else:
            contexts = {seed: per_seed[seed].with_settings(settings, analysis.episode_offset,
                                                           networks=analysis.networks) for seed in seeds}
        parts, all_reused = {}, True
        for seed, context in contexts.items():
            key = _fingerprint({"settings": context.settings, "setting": setting.name, "preset": preset,
                                "steps": context.steps, "lr": context.lr}, context.input_files(analysis))
            tables, reused = cache.get(analysis.name, key, lambda: _checked(analysis, analysis.compute(context)),
                                       subfolder="" if seed is None else f"seed{seed}")
            all_reused &= reused
            parts[seed] = tables
        tables = _combine_seeds(parts)
        for table, frame in tables.items():
            atomic_save_csv(frame, cache.folder / f"{table}.csv")
        context = next(iter(contexts.values()))
        for stem, build in analysis.figures(tables, context).items():
            target = figures_dir / stem
            if all_reused and target.with_suffix(".png").exists() and target.with_suffix(".pdf").exists():
                continue
            plots.save_figure(build(), target)
        computed[analysis.name] = (tables, context)
        section = analysis.report(tables, context)
        sections.append(section.for_setting(setting.name, f"figures/{setting.name}/"))
    reference = per_seed[seeds[0]]
    facts = {"setting": setting.name, "dataset": setting.dataset, "ways": setting.ways, "shots": setting.shots,
             "queries": ANALYSIS_QUERIES, "inner_steps_test": reference.steps, "inner_lr": reference.lr,
             "hidden": reference.reference_config.hidden, "pooling": reference.reference_config.pooling,
             "runs": {job.folder: {"algorithm": job.config.algorithm, "iterations": job.config.iterations,
                                   "train_s": seconds_per_iteration(out / "runs" / job.folder) * job.config.iterations}
                      for job in jobs},
             "reused": cache.reused}
    return sections, facts, computed


def _combine_seeds(parts: dict) -> dict:
    """Tables of each seed -> one table per name with a ``seed`` column (cross-seed tables as they are)."""
    if list(parts) == [None]:
        return parts[None]
    combined = {}
    for seed, tables in parts.items():
        for table, frame in tables.items():
            combined.setdefault(table, []).append(frame.assign(seed=seed))
    return {table: pd.concat(frames, ignore_index=True) for table, frames in combined.items()}


def _checked(analysis, tables: dict) -> dict:
    analysis.check_table_names(tables)
    return tables
