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

from repana.errors import ConfigError
from repana.io import atomic_save_csv, atomic_write_text

PRESETS = ("quick", "paper")
DATASET_PRESETS = {"glyphs": "omniglot-5way-1shot", "omniglot": "omniglot-5way-1shot",
                   "miniimagenet": "miniimagenet-5way-1shot"}
# Training runs: name -> algorithm. "multiclass" is the trainer's "pretrain".
RUNS = {"maml": "maml", "anil": "anil", "multiclass": "pretrain", "multitask": "multitask", "nil": "nil"}
# Each run gets its own seed (base seed + offset): networks compared with each other (MAML vs ANIL
# similarity, the regimes table) must not share their random initialisation.
RUN_SEED_OFFSETS = {"maml": 0, "anil": 1, "multiclass": 2, "multitask": 3, "nil": 4}
RANDOM_BODY_SEED_OFFSET = 5
# The quick preset: a few minutes of training per run on 2 CPU cores (budgets tuned to finish the
# whole pipeline in under 20 minutes); the paper preset keeps the bundled presets' settings.
QUICK_OVERRIDES = {"hidden": 32, "meta_batch_size": 4, "queries_train": 5, "val_every": 0, "log_every": 10,
                   "keep_checkpoints": 1}
QUICK_ITERATIONS = {"maml": 1500, "anil": 1500, "multiclass": 1500, "multitask": 1000, "nil": 1000}
QUICK_SAVE_FRACTIONS = (0.05, 0.3, 1.0)  # early / middle / final checkpoints of the MAML run
ANALYSIS_QUERIES = 15   # query images per class in the analyses' test episodes (datapoints)
# Test-time inner steps of the accuracy analyses. The paper preset uses the checkpoint's own
# (inner_steps_test, 3 for Omniglot). A quick run's meta-initialisation is tuned for exactly the one
# step it was trained with: on the Omniglot subset, MAML after 1500 iterations scores 68% with 1 step
# at lr 2.0 but 46% with 2 and 36% with 3 (overshoot), so the quick preset evaluates with 1 step; the
# inner-loop analysis still follows 3 steps (its own ``steps`` setting) to show the drift.
EVAL_STEPS = {"quick": 1, "paper": None}
ANALYSIS_SEED = 12345


def default_analyses_dir() -> Path:
    """``analyses/`` of the source checkout, else the copy installed with the package (``repana._analyses``)."""
    source = Path(__file__).resolve().parents[2] / "analyses"
    if source.is_dir():
        return source
    return Path(__file__).resolve().parents[1] / "_analyses"


def load_entries(preset: str, analyses_dir: str | Path | None = None) -> dict[str, dict]:
    """Settings of every ``analyses/*.toml`` entry for ``preset``: name -> {title, paper, ..., settings}."""
    import tomllib

    folder = Path(analyses_dir) if analyses_dir else default_analyses_dir()
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"no analysis entries (*.toml) in {folder}: pass --analyses DIR pointing at the "
                          "analyses/ folder of the repana source")
    entries = {}
    for path in files:
        with open(path, "rb") as handle:
            entry = tomllib.load(handle)
        if preset not in entry:
            raise ConfigError(f"{path} has no [{preset}] settings")
        entries[entry["name"]] = {**{k: v for k, v in entry.items() if k not in PRESETS},
                                  "settings": entry[preset]}
    return entries


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
        # split "": the runs train on the dataset's default split, which is what reproduce() loads
        # (load_splits(dataset, root)); the preset's "maml" would be recorded but not used
        overrides: dict = {"name": name, "algorithm": algorithm, "dataset": dataset, "split": "",
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
class Tables:
    """Reads back or computes the CSVs of ``<out>/tables``."""

    folder: Path
    log: Callable[[str], None]
    reused: list[str] = field(default_factory=list)
    fresh: set[str] = field(default_factory=set)

    def get(self, name: str, key: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        csv, key_file = self.folder / f"{name}.csv", self.folder / f"{name}.key"
        if csv.exists() and key_file.exists() and key_file.read_text().strip() == key:
            self.log(f"[analysis] {name}: reusing {csv}")
            self.reused.append(name)
            return pd.read_csv(csv)
        start = time.perf_counter()
        frame = compute()
        self.fresh.add(name)
        atomic_save_csv(frame, csv)
        atomic_write_text(key_file, key + "\n")
        self.log(f"[analysis] {name}: {len(frame)} rows in {time.perf_counter() - start:.0f} s -> {csv}")
        return frame


def _seconds_per_iteration(run_dir: Path) -> float:
    """Training seconds per iteration from a run's metrics.csv (elapsed_s of the last train row)."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    train = metrics[metrics["split"] == "train"]
    return float(train["elapsed_s"].iloc[-1] / train["step"].iloc[-1]) if len(train) else float("nan")


def reproduce(preset: str = "quick", dataset: str = "glyphs", data_root: str | Path | None = None,
              out: str | Path = "reproduce", analyses_dir: str | Path | None = None,
              only: list[str] | None = None, iterations_scale: float = 1.0, train_overrides: dict | None = None,
              data: dict | None = None,
              threads: int | None = None, show_progress: bool | None = None,
              log: Callable[[str], None] | None = None) -> Path:
    """The whole pipeline; returns the path of ``report.md``.

    ``only``: names of analyses to run (default all entries). ``iterations_scale`` multiplies the quick
    preset's training iterations (tests use a tiny value); ``train_overrides`` changes TrainConfig values
    of every run (e.g. ``{"hidden": 16}``). ``data``: the ``{"train", "val", "test"}``
    datasets, loaded from ``dataset`` / ``data_root`` when None. ``threads``: torch intra-op threads
    (default: torch's choice; 1 is faster on a CPU shared with other jobs).
    """
    from repana.analysis import (comparison, convergence, freezing, head_needed, inner_loop, regimes,
                                 representation_similarity, training_dynamics)
    from repana.analysis.common import head_only, all_parameters, inner_loop_settings, load_model
    from repana.analysis.report import write_report
    from repana.data import EpisodeSampler, fixed_episodes, load_splits
    from repana.meta.train import list_step_checkpoints, step_seed
    from repana.plots import paper as plots

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(out)
    entries = load_entries(preset, analyses_dir)
    unknown = sorted(set(only or []) - set(entries))
    if unknown:
        raise ConfigError(f"unknown analyses {unknown}; available: {sorted(entries)}")
    selected = [name for name in entries if not only or name in only]
    plan = training_plan(preset, dataset, data_root, iterations_scale, train_overrides)
    base = plan["maml"]
    t_start = time.perf_counter()
    log(f"[reproduce] preset {preset}, dataset {dataset}, output {out}")
    if threads:
        torch.set_num_threads(threads)
    data = data if data is not None else load_splits(dataset, root=data_root)
    needed = {net for name in selected for net in entries[name].get("networks", [])}
    if "training_regimes" in selected or "convergence" in selected:
        needed |= {"maml"}
    finals = ensure_trained({k: v for k, v in plan.items() if k in needed}, out / "runs", data, log,
                            show_progress)
    tables = Tables(out / "tables", log)
    figures_dir = out

    class _Figures:
        """Draws a figure unless both files exist and none of its tables was recomputed."""

        @staticmethod
        def save_figure(build, stem, sources=()):
            stem = Path(stem)
            done = stem.with_suffix(".png").exists() and stem.with_suffix(".pdf").exists()
            if done and sources and not (set(sources) & tables.fresh):
                return
            plots.save_figure(build(), stem)

    figures = _Figures()
    results: dict[str, pd.DataFrame] = {}
    models, metas = {}, {}
    for name, path in finals.items():
        models[name], metas[name] = load_model(path)

    def episodes_for(count: int, offset: int = 0):
        return fixed_episodes(data["test"], n_episodes=count, ways=base.ways, shots=base.shots,
                              queries=ANALYSIS_QUERIES, seed=ANALYSIS_SEED + offset)

    def key(name: str, nets: list[str]) -> str:
        return _fingerprint({"settings": entries[name]["settings"], "dataset": dataset, "preset": preset,
                             "steps": steps, "lr": lr}, [finals[n] for n in nets])

    settings = {name: entries[name]["settings"] for name in selected}
    steps, lr = (inner_loop_settings(metas["maml"], steps=EVAL_STEPS[preset]) if "maml" in metas
                 else (EVAL_STEPS[preset] or base.inner_steps_test, base.mean_loss_inner_lr()))

    if "inner_loop_similarity" in selected:
        s = settings["inner_loop_similarity"]
        episodes = episodes_for(s["episodes"])

        inner_steps = s.get("steps", steps)

        def compute_inner():
            frames = [inner_loop.inner_loop_similarity(models[net], episodes, steps=inner_steps, lr=lr,
                                                       trainable=all_parameters if net == "maml" else head_only,
                                                       measures=s["measures"], min_ratio=s["min_ratio"],
                                                       label=net.upper()) for net in ("maml", "anil")]
            return pd.concat(frames, ignore_index=True)

        detail = tables.get("inner_loop_similarity", key("inner_loop_similarity", ["maml", "anil"]),
                            compute_inner)
        summary = inner_loop.summarize_inner_loop(detail)
        atomic_save_csv(summary, out / "tables" / "inner_loop_summary.csv")
        results["inner_loop_summary"] = summary
        figures.save_figure(lambda: plots.inner_loop_figure(summary, step=steps if steps <= inner_steps else None),
                            figures_dir / "inner_loop_similarity", ["inner_loop_similarity"])
        figures.save_figure(lambda: plots.inner_steps_figure(summary), figures_dir / "inner_loop_steps",
                            ["inner_loop_similarity"])

    if "freezing" in selected:
        episodes = episodes_for(settings["freezing"]["episodes"], 1)
        results["freezing"] = tables.get("freezing", key("freezing", ["maml"]), lambda: freezing.freezing_accuracy(
            models["maml"], episodes, steps=steps, lr=lr, label="MAML"))
        figures.save_figure(lambda: plots.freezing_figure(results["freezing"]), figures_dir / "freezing",
                            ["freezing"])

    if "training_dynamics" in selected:
        s = settings["training_dynamics"]
        stages = training_dynamics.select_stages(
            [p for step, p in list_step_checkpoints(out / "runs" / "maml" / "checkpoints")
             if step in plan["maml"].save_steps or step == plan["maml"].iterations])
        episodes = episodes_for(s["episodes"], 2)
        dyn_key = _fingerprint({"settings": s, "dataset": dataset, "steps": steps, "lr": lr}, [p for _, p in stages])
        results["dynamics_similarity"] = tables.get(
            "dynamics_similarity", dyn_key, lambda: training_dynamics.inner_loop_over_training(
                stages, episodes, measures=s["measures"], steps=s.get("steps", steps), lr=lr))
        results["dynamics_freezing"] = tables.get(
            "dynamics_freezing", dyn_key, lambda: training_dynamics.freezing_over_training(
                stages, episodes, frozen_sets=((), (1, 2, 3, 4)), steps=steps, lr=lr))
        figures.save_figure(lambda: plots.dynamics_figure(results["dynamics_similarity"], results["dynamics_freezing"]),
                            figures_dir / "training_dynamics", ["dynamics_similarity", "dynamics_freezing"])

    if "maml_anil_nil" in selected:
        s = settings["maml_anil_nil"]
        episodes = episodes_for(s["episodes"], 3)
        specs = [comparison.EvalSpec("MAML", models["maml"], "adapt", steps, lr, all_parameters, "maml"),
                 comparison.EvalSpec("ANIL", models["anil"], "adapt", steps, lr, head_only, "anil"),
                 comparison.EvalSpec("NIL (ANIL body)", models["anil"], "nil", trained_with="anil"),
                 comparison.EvalSpec("NIL (MAML body)", models["maml"], "nil", trained_with="maml")]
        results["comparison"] = tables.get("comparison", key("maml_anil_nil", ["maml", "anil"]),
                                           lambda: comparison.evaluate_specs(specs, episodes))
        train_batch = EpisodeSampler(data["train"], ways=base.ways, shots=base.shots,
                                     queries=base.queries_train, seed=7).sample(tasks=base.meta_batch_size)

        def compute_speed():
            # the run's own inner steps, and the paper's (its speed-ups were measured with 5 / 10 steps)
            settings = {"paper": comparison.PAPER_SPEED_STEPS}
            if (base.inner_steps_train, steps) != comparison.PAPER_SPEED_STEPS:
                settings = {"this run": (base.inner_steps_train, steps), **settings}
            frames = [comparison.speed_comparison(models["maml"], train_batch, episodes.index(slice(0, 20)),
                                                  train_steps=train_steps, test_steps=test_steps, lr=lr,
                                                  repeats=s["speed_repeats"]).assign(steps_of=name)
                      for name, (train_steps, test_steps) in settings.items()]
            speed = pd.concat(frames, ignore_index=True)
            per_iteration = {net: _seconds_per_iteration(out / "runs" / net) for net in ("maml", "anil")}
            extra = pd.DataFrame([{"phase": "training_run", "algorithm": net, "seconds": sec,
                                   "speedup": per_iteration["maml"] / sec if net == "anil" else 1.0,
                                   "inner_steps": base.inner_steps_train, "steps_of": "this run"}
                                  for net, sec in per_iteration.items()])
            return pd.concat([speed, extra], ignore_index=True)

        results["speed"] = tables.get("speed", key("maml_anil_nil", ["maml", "anil"]) + "speed-v2", compute_speed)
        figures.save_figure(lambda: plots.accuracy_bars_figure(results["comparison"], "label", "MAML vs ANIL vs NIL"),
                            figures_dir / "comparison", ["comparison"])

    if "maml_anil_similarity" in selected:
        s = settings["maml_anil_similarity"]
        episodes = episodes_for(s["episodes"], 4)
        detail = tables.get("maml_anil_similarity", key("maml_anil_similarity", ["maml", "anil"]),
                            lambda: representation_similarity.cross_model_similarity(
                                models["maml"], models["anil"], episodes, measures=s["measures"],
                                min_ratio=s["min_ratio"], label_a="MAML", label_b="ANIL"))
        summary = representation_similarity.summarize_cross_model(detail)
        atomic_save_csv(summary, out / "tables" / "maml_anil_summary.csv")
        results["maml_anil_summary"] = summary
        figures.save_figure(lambda: plots.cross_model_figure(summary), figures_dir / "maml_anil_similarity",
                            ["maml_anil_similarity"])

    if "training_regimes" in selected:
        episodes = episodes_for(settings["training_regimes"]["episodes"], 5)
        bodies = {"maml": models["maml"], "anil": models["anil"], "multiclass": models["multiclass"],
                  "multitask": models["multitask"], "nil": models["nil"],
                  "random": regimes.random_init_model(base.model_config(), seed=base.seed + RANDOM_BODY_SEED_OFFSET)}
        results["regimes"] = tables.get("regimes", key("training_regimes", list(RUNS)),
                                        lambda: regimes.regimes_accuracy(bodies, episodes))
        figures.save_figure(lambda: plots.accuracy_bars_figure(results["regimes"], "regime",
                                                               "NIL accuracy by training regime"),
                            figures_dir / "regimes", ["regimes"])

    if "head_needed" in selected:
        episodes = episodes_for(settings["head_needed"]["episodes"], 5)
        results["head_needed"] = tables.get("head_needed", key("head_needed", ["anil", "nil"]),
                                            lambda: head_needed.head_needed(models["anil"], models["nil"],
                                                                            episodes))

    if "convergence" in selected:
        s = settings["convergence"]
        episodes = episodes_for(s["episodes"], 6)

        def batches(step: int):
            return EpisodeSampler(data["train"], ways=base.ways, shots=base.shots, queries=base.queries_train,
                                  seed=step_seed(base.seed + 1, step)).sample(tasks=s["meta_batch_size"])

        def make_model():
            from repana.models import build_model

            torch.manual_seed(base.seed)
            return build_model(base.model_config())

        results["convergence"] = tables.get(
            "convergence", _fingerprint({"settings": s, "dataset": dataset, "base": base.to_dict()}, []),
            lambda: convergence.convergence_study(
                make_model, batches, episodes, inner_steps=s["inner_steps"], iterations=s["iterations"],
                inner_lr=s["inner_lr"], l2=s["l2"], head_hidden=s["head_hidden"], eval_every=s["eval_every"],
                seed=base.seed))
        results["cost"] = tables.get(
            "cost", _fingerprint({"settings": s, "dataset": dataset, "base": base.to_dict()}, []) + "c",
            lambda: convergence.cost_vs_inner_steps(make_model(), batches(1), inner_steps=s["inner_steps"],
                                                    lr=lr, repeats=s["cost_repeats"]))
        figures.save_figure(lambda: plots.convergence_figure(results["convergence"]), figures_dir / "convergence",
                            ["convergence"])
        figures.save_figure(lambda: plots.cost_figure(results["cost"]), figures_dir / "cost", ["cost"])

    context = {"preset": preset, "dataset": dataset, "ways": base.ways, "shots": base.shots,
               "queries": ANALYSIS_QUERIES, "inner_steps_test": steps, "inner_lr": lr,
               "runs": {name: {"algorithm": plan[name].algorithm, "iterations": plan[name].iterations,
                               "train_s": _seconds_per_iteration(out / "runs" / name) * plan[name].iterations}
                        for name in finals},
               "hidden": base.hidden, "pooling": base.pooling, "entries": {n: entries[n] for n in selected},
               "wall_clock_s": time.perf_counter() - t_start, "reused": tables.reused}
    report = write_report(out, results, context)
    log(f"[reproduce] report written to {report} ({time.perf_counter() - t_start:.0f} s)")
    return report
