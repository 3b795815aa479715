"""``repana reproduce``: train what is missing, run every analysis, write CSVs, figures and report.md.

Output folder layout::

    <out>/runs/<setting>/<network>/seed<k>/   training runs (config.toml, metrics.csv, checkpoints/);
                                               RL runs (``rl_envs``): setting ``rl-<env>``, e.g. rl-2d-navigation
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from repana.analysis.registry import (ANALYSIS_QUERIES, PRESETS, AnalysisContext, Section, default_analyses_dir,
                                     get_analysis, list_analyses, load_entries)
from repana.errors import ConfigError, InputError
from repana.io import atomic_save_csv, atomic_write_text
from repana.rl.presets import PRESETS as RL_PRESET_ENVIRONMENTS
from repana.runs.plan import Job
from repana.analysis.feature_reuse_map import MAP_BUDGET_FRACTIONS, MAP_QUICK_ITERATIONS, MAP_QUICK_VALUES, split_network

__all__ = ["Reproduction", "training_plan", "rl_training_plan", "load_entries", "default_analyses_dir"]

DATASETS = ("glyphs", "omniglot", "miniimagenet")
DEFAULT_SETTING = "5way-1shot"
# Training runs: name -> algorithm. "multiclass" is the trainer's "pretrain".
RUNS = {"maml": "maml", "anil": "anil", "multiclass": "pretrain", "multitask": "multitask", "nil": "nil",
        "boil": "boil"}
# Each run gets its own seed (the preset's seed + the network's offset; seed k adds k x
# repana.runs.plan.SEED_STRIDE): networks compared with each other (MAML vs ANIL, seed pairs, the regimes
# table) never share their random initialisation, and seed 0 keeps the seeds of single-seed reproductions.
# (5 is the random body's, repana.analysis.training_regimes.RANDOM_BODY_SEED_OFFSET, so BOIL takes 6.)
RUN_SEED_OFFSETS = {"maml": 0, "anil": 1, "multiclass": 2, "multitask": 3, "nil": 4, "boil": 6}
# The quick preset: a few minutes of training per run on 2 CPU cores; the paper preset keeps the bundled
# presets' settings. QUICK_OVERRIDES apply to every quick run, the feature-reuse map's grid included.
QUICK_OVERRIDES = {"hidden": 32, "meta_batch_size": 4, "queries_train": 5, "log_every": 10, "keep_checkpoints": 1}
# The default networks of the quick preset test the paper's claims in the paper's regime: Table 1's network shape
# (MiniImageNet's Conv4: conv4's map flattened before the head) and its test-time protocol (10 steps, Finn et al.'s
# MiniImageNet evaluation). Finn et al.'s Omniglot network (spatial mean, 3 test steps) is a cell of the
# feature-reuse map, which shows how the answer changes with the head's input.
QUICK_SHAPE = {"head_input": "flatten", "inner_steps_test": 10}
# Budgets (meta-iterations of 4 tasks; learning_curves.flattening judges each curve over its last third, and
# the report lists the budgets among its deviations). MAML, ANIL and NIL training alike: with the flattened head
# MAML still gained 5-14 points over the last third of 3000 on the glyphs, and NIL training 3 points over the
# last third of 2000 (it levels off at 88-90 % from about 3600 on, 2 seeds), so they train 5000. BOIL's
# validation accuracy reached 97-98 % by iteration 2400 and stayed there (2 seeds), so it trains 3000.
# Multiclass pretraining (64 images a step) levels off at 92-94 % from iteration 1800 on, so it trains 2400;
# multitask training had flattened by 1000.
QUICK_ITERATIONS = {"maml": 5000, "anil": 5000, "multiclass": 2400, "multitask": 1000, "nil": 5000, "boil": 3000}
QUICK_VALIDATIONS = 15        # validation points along each quick run (the learning curves)
QUICK_VAL_EPISODES = 50
# MAML's saved checkpoints, as fractions of training: the paper's Figure 3 uses 10000, 20000 and 30000 of
# 60000 iterations (the presets' total), i.e. 1/6, 1/3 and 1/2; plus the final network.
SAVE_FRACTIONS = (1 / 6, 1 / 3, 1 / 2, 1.0)

# ----- RL (Table 2's RL rows; repana.rl) -----
RL_PRESETS = {env: name for name, env in RL_PRESET_ENVIRONMENTS.items()}   # environment -> its bundled preset
RL_ENVS = tuple(RL_PRESETS)
RL_RUNS = ("maml", "anil")          # seeds offset as RUN_SEED_OFFSETS (maml 0, anil 1)
# The quick preset's RL budgets. 2-D navigation keeps the paper's per-update size (20 tasks x 20
# trajectories x 100 steps) for 40 of its 500 meta-updates: both algorithms reached about -14 there
# (~6 s per update on one core). HalfCheetah: 10 meta-updates of 10 tasks x 10 trajectories (horizon 200,
# 40k environment steps per update, ~25 s on one loaded core) instead of 500 of 40 x 20: far too short
# for the paper's gap, a smoke run of the pipeline with a measured cost. The paper preset: the bundled
# presets (500 meta-updates).
RL_QUICK = {"2d-navigation": {"iterations": 40, "checkpoint_every": 5},
            "halfcheetah-dir": {"iterations": 10, "meta_batch_size": 10, "fast_batch_size": 10,
                                "checkpoint_every": 2, "vector_mode": "sync"},
            "halfcheetah-vel": {"iterations": 10, "meta_batch_size": 10, "fast_batch_size": 10,
                                "checkpoint_every": 2, "vector_mode": "sync"}}


def _chosen(name: str, only: list[str] | None) -> bool:
    """Whether analysis ``name`` runs: named in ``only``, or (no ``only``) not an optional analysis."""
    return name in only if only else not get_analysis(name).optional


def network_order(network: str) -> tuple[int, str]:
    """Sort key of a reproduction's network names: :data:`RUNS` order, then map variants by name."""
    from repana.analysis.feature_reuse_map import split_network

    run, variant = split_network(network)
    return list(RUNS).index(run), variant or ""


def network_values(network: str) -> tuple[str, dict]:
    """``(run, TrainConfig values)`` of a network name: a run of :data:`RUNS` (no values), or
    ``"<run>-<variant>"``, run trained as a network shape of the feature-reuse map
    (:data:`repana.analysis.feature_reuse_map.MAP_VARIANTS`)."""
    from repana.analysis.feature_reuse_map import split_network, variant_values

    run, variant = split_network(network)
    if run not in RUNS:
        raise ConfigError(f"unknown network {network!r}; choose from {list(RUNS)} (or <run>-<map variant>)")
    try:
        return run, (variant_values(variant) if variant else {})
    except InputError as error:
        raise ConfigError(str(error)) from None


def variant_seed_offset(network: str) -> int:
    """Seed offset of a map variant's networks (10, 20, ...: above every :data:`RUN_SEED_OFFSETS`, below
    :data:`repana.runs.plan.SEED_STRIDE`), 0 for a plain run: no two networks share an initialisation."""
    from repana.analysis.feature_reuse_map import MAP_VARIANTS, split_network

    variant = split_network(network)[1]
    return 0 if variant is None else 10 * (list(MAP_VARIANTS).index(variant) + 1)


def setting_name(job: Job) -> str:
    """The folder of a job's tables and figures and its report title: ``<dataset>-<N>way-<K>shot``, or an RL
    job's ``rl-<env>``."""
    return job.setting if job.kind == "rl" else f"{job.config.dataset}-{job.setting}"


def training_plan(preset: str, dataset: str, data_root: str | Path | None = None,
                  iterations_scale: float = 1.0, overrides: dict | None = None,
                  settings: list[str] | None = None, seeds: int = 1, networks: list[str] | None = None,
                  runs_dir: str | Path = "runs", device: str = "cpu") -> list[Job]:
    """Every training job of a reproduction: setting x network x seed, ``<runs_dir>/<N>way-<K>shot/<network>/seed<k>``.

    Each setting's configs come from its bundled preset (``omniglot-20way-1shot``...; glyphs train like
    Omniglot), then the preset's quick budget, then ``overrides`` (TrainConfig values applied to every run
    last, e.g. ``{"hidden": 16}``). ``settings``: ``"20way-1shot"`` or ``"omniglot-20way-1shot"`` (default
    5-way 1-shot); ``networks``: run names of :data:`RUNS` (default all); ``seeds``: per network.
    """
    from repana.meta.config import load_config
    from repana.runs.plan import expand_jobs, parse_setting

    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is not one of {PRESETS}")
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is not one of {DATASETS}")
    for network in networks or []:
        network_values(network)
    cells = list(dict.fromkeys(parse_setting(s, dataset)[0] for s in (settings or [DEFAULT_SETTING])))
    family = "omniglot" if dataset == "glyphs" else dataset
    jobs = []
    for cell in cells:
        base = {}
        for name in (networks if networks is not None else list(RUNS)):
            run, variant = network_values(name)
            # split "": the runs train on the dataset's default split, which is what the analyses load
            # (load_splits(dataset, root)); the preset's "maml" split needs all 1623 Omniglot characters
            values: dict = {"name": name, "algorithm": RUNS[run], "dataset": dataset, "split": "",
                            "data_root": str(data_root) if data_root else ""}
            fraction = MAP_BUDGET_FRACTIONS.get(split_network(name)[1], 1.0)
            if preset == "quick":
                budget = MAP_QUICK_ITERATIONS[run] * fraction if variant else QUICK_ITERATIONS[run]
                iterations = max(10, int(budget * iterations_scale))
                values.update(QUICK_OVERRIDES, **(MAP_QUICK_VALUES if variant else QUICK_SHAPE), iterations=iterations,
                              checkpoint_every=0,
                              val_every=max(1, iterations // QUICK_VALIDATIONS),
                              val_episodes=QUICK_VAL_EPISODES)
                values["save_steps"] = (sorted({max(1, round(f * iterations)) for f in SAVE_FRACTIONS})
                                        if name == "maml" else [])
            # a map variant's shape wins over the run-wide overrides: it is what the grid varies
            config = load_config(preset=f"{family}-{cell}", overrides={**values, **(overrides or {}), **variant})
            if preset == "paper" and fraction != 1.0:
                iterations = max(1, round(config.iterations * fraction))
                config = config.replace(iterations=iterations,
                                        save_steps=[step for step in config.save_steps if step <= iterations])
            if preset == "paper" and name == "maml":
                config = config.replace(save_steps=sorted(set(config.save_steps) | {
                    round(f * config.iterations) for f in SAVE_FRACTIONS}))
            config = config.replace(seed=config.seed + RUN_SEED_OFFSETS[run] + variant_seed_offset(name))
            base[name] = config
        jobs += expand_jobs(base, seeds, [cell], runs_dir=runs_dir, device=device)
    return jobs


def parse_rl_envs(envs) -> list[str]:
    """``["2d-navigation", "halfcheetah-dir,halfcheetah-vel"]`` -> the environment names, in order, checked."""
    names = list(dict.fromkeys(part.strip() for value in envs for part in str(value).split(",") if part.strip()))
    unknown = [name for name in names if name not in RL_ENVS]
    if unknown or not names:
        raise ConfigError(f"unknown RL environment(s) {unknown or envs}; choose from {', '.join(RL_ENVS)}")
    return names


def rl_training_plan(preset: str, envs=("2d-navigation",), iterations_scale: float = 1.0,
                     overrides: dict | None = None, seeds: int = 1, networks=RL_RUNS,
                     runs_dir: str | Path = "runs") -> list[Job]:
    """Every RL training job: environment x network (MAML, ANIL) x seed, ``<runs_dir>/rl-<env>/<network>/seed<k>``.

    Configs come from the environment's bundled preset (``rl-2dnav``...), then the quick preset's budget
    (:data:`RL_QUICK`; its meta-updates times ``iterations_scale``), then ``overrides`` (RLConfig values of
    every run, e.g. ``{"horizon": 10}``). Seeds as :func:`training_plan`'s: maml's base seed 0, anil's 1,
    seed k adds k x SEED_STRIDE.
    """
    from repana.rl.config import load_preset
    from repana.runs.plan import expand_rl_jobs

    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is not one of {PRESETS}")
    unknown = sorted(set(networks) - set(RL_RUNS))
    if unknown:
        raise ConfigError(f"unknown RL networks {unknown}; choose from {list(RL_RUNS)}")
    base = {}
    for env in parse_rl_envs(envs):
        values = {}
        if preset == "quick":
            values.update(RL_QUICK[env])
            values["iterations"] = max(1, int(round(values["iterations"] * iterations_scale)))
        values.update(overrides or {})
        config = load_preset(RL_PRESETS[env]).replace(**values)
        base[env] = {name: config.replace(algorithm=name, seed=config.seed + RUN_SEED_OFFSETS[name])
                     for name in RL_RUNS if name in networks}
    return expand_rl_jobs(base, seeds, runs_dir=runs_dir)


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

    def read(self, name: str, key: str, subfolder: str = "") -> dict[str, pd.DataFrame] | None:
        """The analysis's tables read back from ``folder/subfolder`` when they were computed from ``key``, else None."""
        folder = self.folder / subfolder
        key_file = folder / f"{name}.key"
        if not key_file.exists():
            return None
        saved_key, *table_names = key_file.read_text().split()
        csvs = [folder / f"{table}.csv" for table in table_names]
        if saved_key != key or not table_names or not all(csv.exists() for csv in csvs):
            return None
        self.log(f"[analysis] {name}: reusing {', '.join(str(csv) for csv in csvs)}")
        self.reused.append(name)
        return {table: pd.read_csv(csv) for table, csv in zip(table_names, csvs)}

    def write(self, name: str, key: str, tables: dict[str, pd.DataFrame], subfolder: str = "",
              seconds: float | None = None) -> None:
        """Write computed tables (each CSV atomically), then the key file that marks them complete."""
        folder = self.folder / subfolder
        for table, frame in tables.items():
            atomic_save_csv(frame, folder / f"{table}.csv")
        atomic_write_text(folder / f"{name}.key", " ".join([key, *tables]) + "\n")
        took = "" if seconds is None else f" in {seconds:.0f} s"
        self.log(f"[analysis] {name}{' ' + subfolder if subfolder else ''}: {sum(len(f) for f in tables.values())} "
                 f"rows{took} -> {folder}/{name}*.csv")



def _timed(compute: Callable[[], dict]) -> Callable[[], tuple[dict, float]]:
    def run():
        start = time.perf_counter()
        return compute(), time.perf_counter() - start
    return run


@dataclass(frozen=True)
class Reproduction:
    """The settings of a reproduction; :meth:`run` does it, :meth:`write_plan` only plans its training.

    ``preset``: ``"quick"`` (minutes per run on a CPU) or ``"paper"`` (the paper's training lengths).
    ``dataset``, ``data_root``: the supervised data (glyphs need no files). ``settings``: table cells such
    as ``"20way-1shot"`` (default 5-way 1-shot). ``rl_envs``: environments of :data:`RL_ENVS` to reproduce
    Table 2's RL rows instead (the RL analyses only; ``dataset`` and ``settings`` are then unused).
    ``seeds``: training seeds per network (the paper: 3); tables get a ``seed`` column and the report gives
    mean ± std over seeds. ``only``: names of analyses to run (default every registered analysis of the
    kind with an entry in ``analyses_dir``). ``iterations_scale`` multiplies the quick preset's training
    lengths (tests use a tiny value); ``overrides``: config values of every training run (TrainConfig keys,
    or RLConfig keys with ``rl_envs``, e.g. ``{"hidden": 16}``). ``executor``: how the training jobs run
    (:func:`repana.runs.run_jobs`: ``"inline"`` one after another in this process, ``"local"`` worker
    processes, ``"ray"`` a Ray cluster at ``address``), on ``device``, at most ``max_workers`` at once (which
    also caps the analysis worker processes). ``threads``: torch intra-op threads of the analyses and of
    every training run (None: ``$REPANA_THREADS``, else automatic: :func:`repana.runtime.choose_threads` for
    the analyses, each run its own). ``show_progress``: progress bars (None: when the output is a terminal).
    """

    preset: str = "quick"
    dataset: str = "glyphs"
    data_root: str | Path | None = None
    out: str | Path = "reproduce"
    analyses_dir: str | Path | None = None
    only: tuple[str, ...] | None = None
    settings: tuple[str, ...] | None = None
    rl_envs: tuple[str, ...] | None = None
    seeds: int = 1
    iterations_scale: float = 1.0
    overrides: dict | None = None
    executor: str = "inline"
    max_workers: int | None = None
    address: str | None = None
    device: str = "cpu"
    threads: int | None = None
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        for name in ("only", "settings", "rl_envs"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value) if not isinstance(value, str) else (value,))
        object.__setattr__(self, "out", Path(self.out))
        if self.rl_envs is not None:
            object.__setattr__(self, "rl_envs", tuple(parse_rl_envs(self.rl_envs)))

    @property
    def kind(self) -> str:
        """``"rl"`` with ``rl_envs``, else ``"supervised"``: the kind of its runs and analyses."""
        return "rl" if self.rl_envs else "supervised"

    def selected_analyses(self) -> tuple[list, dict]:
        """``(analyses to run, in report order; the analyses' TOML entries)``; ConfigError for an unknown name
        in ``only`` or one of the other kind."""
        entries = load_entries(self.preset, self.analyses_dir)
        available = set(entries) & set(list_analyses(self.kind))
        unknown = sorted(set(self.only or []) - available)
        if unknown:
            raise ConfigError(f"unknown analyses {unknown} for a {self.kind} reproduction; available: "
                              f"{sorted(available)}" + ("" if self.kind == "rl" else " (the rl_* analyses run with --rl)"))
        only = list(self.only) if self.only else None
        return [get_analysis(name) for name in list_analyses(self.kind) if name in entries and _chosen(name, only)], entries

    def plan(self, analyses: list, runs_dir: Path, overrides: dict | None = None) -> list[Job]:
        """The training jobs ``analyses`` need (setting x network x seed, or environment x network x seed)."""
        needed = sorted({net for analysis in analyses for net in analysis.networks}, key=network_order)
        overrides = {**(self.overrides or {}), **(overrides or {})} or None
        if self.kind == "rl":
            return rl_training_plan(self.preset, self.rl_envs, self.iterations_scale, overrides, self.seeds,
                                    [n for n in RL_RUNS if n in needed], runs_dir=runs_dir)
        return training_plan(self.preset, self.dataset, self.data_root, self.iterations_scale, overrides,
                             list(self.settings) if self.settings else None, self.seeds, needed, runs_dir=runs_dir,
                             device=self.device)

    def write_plan(self, plan_dir: str | Path) -> Path:
        """The training jobs :meth:`run` would run, written as a plan for another scheduler (SLURM arrays, GNU
        parallel: :func:`repana.runs.write_plan`); returns the plan file. Run folders are those of
        ``<out>/runs``, so :meth:`run` with the same settings afterwards reuses them. ``threads`` goes into
        every job (its config's ``threads`` and the SLURM array's ``--cpus-per-task``; None: automatic, one CPU
        per SLURM task). The dataset's files are checked first: a plan whose jobs cannot find their data is
        not written."""
        from repana.runs import write_plan

        analyses, _ = self.selected_analyses()
        self._check_data()
        resolved = replace(self, data_root=str(Path(self.data_root).resolve())) if self.data_root else self
        plan = resolved.plan(analyses, self.out.resolve() / "runs", {"threads": self.threads} if self.threads else None)
        return write_plan(plan, plan_dir, **({"cpus_per_job": self.threads} if self.threads else {}))

    def _check_data(self) -> None:
        if self.kind == "supervised":
            from repana.data.registry import check_dataset_files

            check_dataset_files(self.dataset, Path(self.data_root).resolve() if self.data_root else None)

    def run(self, data: dict | None = None, log: Callable[[str], None] | None = None) -> Path:
        """The whole pipeline: train what the selected analyses need, run each analysis, write its CSVs and
        figures, then ``report.md``; returns the report's path. ``data``: the ``{"train", "val", "test"}``
        datasets of ``dataset`` (loaded when None). A failed job leaves the others' runs intact; rerunning
        trains only what is missing and reads back every table already computed from the same runs."""
        from repana.analysis.report import write_report
        from repana.runs import run_jobs

        log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        analyses, entries = self.selected_analyses()
        if data is None:
            self._check_data()   # before any job is started on data it would not find
        plan = self.plan(analyses, self.out / "runs")
        t_start = time.perf_counter()
        what = ("RL: " if self.kind == "rl" else "") + ", ".join(dict.fromkeys(setting_name(job) for job in plan))
        log(f"[reproduce] preset {self.preset}, {what}, {self.seeds} seed(s), {len(plan)} training runs "
            f"({self.executor}), output {self.out}")

        def data_for() -> dict | None:   # loaded once, when first needed (RL runs read none)
            nonlocal data
            if data is None and self.kind == "supervised":
                from repana.data import load_splits

                data = load_splits(self.dataset, root=self.data_root)
            return data

        inline = {"data": data_for(), "cpus_per_job": self.threads} if self.executor == "inline" else {}
        run_jobs(plan, executor=self.executor, max_workers=self.max_workers, address=self.address,
                 device=self.device if self.kind == "supervised" else "cpu",
                 log=lambda message: log(f"[train] {message}"), show_progress=self.show_progress, **inline)
        self._set_analysis_threads(plan)
        sections, facts, results = [], [], {}
        for setting in dict.fromkeys(setting_name(job) for job in plan):
            jobs = [job for job in plan if setting_name(job) == setting]
            found, setting_facts, computed = _analyse_setting(self, setting, jobs, analyses, entries, data_for(), log)
            sections += found
            facts.append(setting_facts)
            for name, result in computed.items():
                results.setdefault(name, {})[setting] = result
        sections += [analysis.across_settings(results[analysis.name]) for analysis in analyses
                     if analysis.across_settings is not None and analysis.name in results]
        report = write_report(self.out, sections, {"settings": facts, "wall_clock_s": time.perf_counter() - t_start,
                                                   "seeds": self.seeds, "preset": self.preset})
        log(f"[reproduce] report written to {report} ({time.perf_counter() - t_start:.0f} s)")
        return report

    def _set_analysis_threads(self, plan: list[Job]) -> None:
        """Torch threads of this process's analyses: ``threads``, else for supervised networks the automatic
        count for one episode of the plan's network (:func:`repana.runtime.choose_threads`); RL analyses keep
        torch's."""
        threads = self.threads
        if not threads and plan and self.kind == "supervised":
            from repana.models import forward_macs   # the analyses evaluate these networks episode by episode
            from repana.runtime import choose_threads

            config = plan[0].config
            threads = choose_threads(forward_macs(config.model_config(),
                                                  config.ways * (config.shots + config.queries_test)))
        if threads:
            torch.set_num_threads(threads)


def analysis_workers(executor: str, max_workers: int | None = None) -> int:
    """Worker processes for a reproduction's analyses: one (this process) with the inline executor, else the
    usable cores divided by this process's torch threads, at most ``max_workers``. One-threaded workers share
    the cores without spinning thread pools, so a busy core slows them and nothing more."""
    from repana.runtime import usable_cores

    if executor == "inline":
        return 1
    workers = max(1, usable_cores() // max(1, torch.get_num_threads()))
    return min(workers, max_workers) if max_workers else workers


def _analysis_contexts(reproduction: Reproduction, jobs: list[Job], data: dict | None) -> tuple[dict, AnalysisContext]:
    """``({seed: context of that seed's networks}, context of every seed's networks labelled
    ``<network>/seed<k>``)`` of one setting's runs; the reference network is MAML's where there is one."""
    from repana.meta.checkpoint import load_checkpoint

    checkpoints = {(job.network, job.seed_index): load_checkpoint(job.final_checkpoint, kind=job.kind) for job in jobs}
    supervised = {} if reproduction.kind == "rl" else {
        "data": data, "dataset": jobs[0].config.dataset, "data_root": reproduction.data_root}

    def context_for(networks: dict) -> AnalysisContext:
        reference = next((label for label in networks if label.split("/")[0] == "maml"), next(iter(networks)))
        return AnalysisContext(networks=networks, settings={}, preset=reproduction.preset, reference=reference,
                               **supervised)

    seeds = sorted({job.seed_index for job in jobs})
    per_seed = {seed: context_for({net: ckpt for (net, k), ckpt in checkpoints.items() if k == seed}) for seed in seeds}
    return per_seed, context_for({f"{net}/seed{k}": ckpt for (net, k), ckpt in checkpoints.items()})


def _analyse_setting(reproduction: Reproduction, setting: str, jobs: list[Job], selected: list, entries: dict,
                     data: dict | None, log: Callable[[str], None]) -> tuple[list, dict, dict]:
    """Every selected analysis on one setting's runs: per seed (tables gain a ``seed`` column) or, for
    analyses that compare seeds, on all of them at once. The analyses whose tables are not on disk yet run
    in forked worker processes (:func:`analysis_workers`, :func:`repana.runs.forked.run_forked`),
    each with this process's torch thread count; tables are written as each finishes, then figures and
    report sections in order. Returns the report sections, the setting's facts and {analysis: (tables, context)}."""
    from repana.runs.forked import run_forked

    preset, out = reproduction.preset, reproduction.out
    per_seed, every_seed = _analysis_contexts(reproduction, jobs, data)
    seeds = sorted(per_seed)
    cache = TableCache(out / "tables" / setting, log)
    units = []    # (analysis, seed or None, context, key)
    for analysis in selected:
        settings = entries[analysis.name]["settings"]
        if len(seeds) < analysis.min_seeds:
            log(f"[analysis] {analysis.name}: not run ({len(seeds)} seed(s); it needs {analysis.min_seeds})")
            continue
        if analysis.across_seeds:
            labels = tuple(label for label in every_seed.networks if label.split("/")[0] in analysis.networks)
            contexts = {None: every_seed.with_settings(settings, analysis.episode_offset, networks=labels)}
        else:
            contexts = {seed: per_seed[seed].with_settings(settings, analysis.episode_offset,
                                                           networks=analysis.networks) for seed in seeds}
        for seed, context in contexts.items():
            key = _fingerprint({"settings": context.settings, "setting": setting, "preset": preset,
                                "steps": context.steps, "lr": context.lr}, context.input_files(analysis))
            units.append((analysis, seed, context, key))
    subfolder = lambda seed: "" if seed is None else f"seed{seed}"
    tables_of = {(analysis.name, seed): cache.read(analysis.name, key, subfolder(seed))
                 for analysis, seed, _, key in units}
    missing = [unit for unit in units if tables_of[(unit[0].name, unit[1])] is None]

    def finished(index: int, result: tuple[dict, float]) -> None:
        analysis, seed, _, key = missing[index]
        tables_of[(analysis.name, seed)] = result[0]
        cache.write(analysis.name, key, result[0], subfolder(seed), result[1])

    run_forked([_timed(lambda a=analysis, c=context: compute_tables(a, c)) for analysis, _, context, _ in missing],
               workers=analysis_workers(reproduction.executor, reproduction.max_workers), threads=max(1, torch.get_num_threads()), on_done=finished)
    sections, computed = [], {}
    for analysis in selected:
        if len(seeds) < analysis.min_seeds:
            sections.append(Section(f"{analysis.title} (paper {analysis.reference})",
                                    f"Not run: this analysis compares networks of {analysis.min_seeds} or more seeds; "
                                    f"this reproduction trained {len(seeds)} (`--seeds`).", (), setting))
            continue
        mine = [unit for unit in units if unit[0] is analysis]
        tables = _combine_seeds({seed: tables_of[(analysis.name, seed)] for _, seed, _, _ in mine})
        context = mine[0][2]
        recomputed = any(unit[0] is analysis for unit in missing)
        write_tables_and_figures(analysis, tables, context, cache.folder, out / "figures" / setting,
                                 redraw=recomputed)
        computed[analysis.name] = (tables, context)
        sections.append(analysis.report(tables, context).for_setting(setting, f"figures/{setting}/"))
    return sections, _setting_facts(reproduction, setting, jobs, per_seed[seeds[0]], cache), computed


def compute_tables(analysis, context: AnalysisContext) -> dict:
    """``analysis.compute(context)``, its table names checked against the analysis's declaration."""
    tables = analysis.compute(context)
    analysis.check_table_names(tables)
    return tables


def write_tables_and_figures(analysis, tables: dict, context: AnalysisContext, tables_dir: Path, figures_dir: Path,
                             redraw: bool = True) -> None:
    """Write an analysis's tables (``<tables_dir>/<table>.csv``, atomically) and draw its figures
    (``<figures_dir>/<stem>.png`` and ``.pdf``); with ``redraw=False`` a figure whose two files exist is kept.
    The one "write, draw" step of ``repana reproduce`` and ``repana analyze``."""
    from repana.plots import paper as plots

    for table, frame in tables.items():
        atomic_save_csv(frame, Path(tables_dir) / f"{table}.csv")
    for stem, build in analysis.figures(tables, context).items():
        target = Path(figures_dir) / stem
        if not redraw and target.with_suffix(".png").exists() and target.with_suffix(".pdf").exists():
            continue
        plots.save_figure(build(), target)


def _setting_facts(reproduction: Reproduction, setting: str, jobs: list[Job], reference: AnalysisContext,
                   cache: "TableCache") -> dict:
    """What the report states about one setting: its configs (and the paper's), its runs and their
    training seconds, and which tables were read back."""
    if reproduction.kind == "rl":
        config = jobs[0].config
        return {"kind": "rl", "setting": setting, "env": config.env, "meta_batch_size": config.meta_batch_size,
                "fast_batch_size": config.fast_batch_size, "horizon": config.horizon,
                "hidden_sizes": config.hidden_sizes, "inner_lr": config.inner_lr,
                "adapt_log_std": config.adapt_log_std,
                "runs": {job.name: {"algorithm": job.config.algorithm, "iterations": job.config.iterations,
                                    "train_s": rl_seconds_per_update(job.run_dir) * job.config.iterations}
                         for job in jobs},
                "reused": cache.reused}
    from repana.analysis.maml_anil_nil import seconds_per_iteration

    config = reference.reference_config
    return {"config": config.to_dict(), "paper_config": _paper_config(config).to_dict(),
            "setting": setting, "dataset": config.dataset, "ways": config.ways, "shots": config.shots,
            "queries": ANALYSIS_QUERIES, "inner_steps_test": reference.steps, "inner_lr": reference.lr,
            "hidden": "/".join(str(h) for h in sorted({job.config.hidden for job in jobs})), "pooling": config.pooling,
            "runs": {job.name: {"algorithm": job.config.algorithm, "iterations": job.config.iterations,
                                "train_s": seconds_per_iteration(job.run_dir) * job.config.iterations}
                     for job in jobs},
            "reused": cache.reused}


def _paper_config(config):
    """The bundled paper preset of ``config``'s dataset and cell (Finn et al.'s settings; glyphs train as Omniglot)."""
    from repana.meta.config import load_config

    family = "omniglot" if config.dataset == "glyphs" else config.dataset
    return load_config(preset=f"{family}-{config.ways}way-{config.shots}shot")


def _combine_seeds(parts: dict) -> dict:
    """Tables of each seed -> one table per name with a ``seed`` column (cross-seed tables as they are)."""
    if list(parts) == [None]:
        return parts[None]
    combined = {}
    for seed, tables in parts.items():
        for table, frame in tables.items():
            combined.setdefault(table, []).append(frame.assign(seed=seed))
    return {table: pd.concat(frames, ignore_index=True) for table, frames in combined.items()}


def rl_seconds_per_update(run_dir) -> float:
    """Training seconds per meta-update from an RL run's metrics.csv (NaN when there is none)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return float("nan")
    metrics = pd.read_csv(path)
    return float(metrics["elapsed_s"].iloc[-1] / len(metrics)) if len(metrics) else float("nan")
