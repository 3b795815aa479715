"""The meta-training loop: run folder, metrics CSV, periodic validation, checkpoints, exact resume.

A run folder ``runs/<name>/`` holds::

    config.toml                  the resolved TrainConfig (every hyperparameter and convention)
    metrics.csv                  step, split ("train" | "val"), loss, accuracy, elapsed_s
    checkpoints/step_000500.pt   rolling checkpoints (the last ``keep_checkpoints``) and ``save_steps``
    checkpoints/latest.pt        the newest checkpoint (what ``resume`` reads)

Exact resume: the training batch of step ``s`` is drawn from a generator seeded by ``(seed, s)``
alone (:func:`step_seed`), so the sampler needs no state beyond the step; model, Adam moments and the
global RNGs come from the checkpoint. A run killed at any point and resumed ends with exactly the
parameters of an uninterrupted run, and ``metrics.csv`` is cut back to the checkpoint's step first.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from repana.errors import CheckpointError, ConfigError
from repana.io import atomic_write_bytes, atomic_write_text, remove_stale_temp_files
from repana.meta.checkpoint import (Checkpoint, capture_rng_state, load_checkpoint, load_weights,
                                    restore_rng_state, save_checkpoint)
from repana.meta.config import TrainConfig, from_dict, load_toml, to_toml
from repana.progress import progress
from repana.run_lock import locked_run_folder

METRICS_COLUMNS = ("step", "split", "loss", "accuracy", "elapsed_s")
from repana.runs.kinds import SUPERVISED_RESUMABLE as RESUMABLE_CHANGES
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
ALLOW_THREAD_CHANGE_ENV = "REPANA_ALLOW_THREAD_CHANGE"


class StopTraining(Exception):
    """Raised by a step callback to stop a run early (used to simulate a kill in tests)."""


@dataclass
class RunSummary:
    """What :func:`train` returns."""

    run_dir: Path
    steps: int                                  # optimizer steps completed in total
    resumed_from: int                           # step the run resumed from (0 for a fresh run)
    train_loss: float                           # mean over the last logged window
    train_accuracy: float
    val_accuracy: float | None                  # last validation (None if never validated)
    val_ci95: float | None
    elapsed_s: float                            # training time in seconds, across resumes
    checkpoints: list[Path] = field(default_factory=list)
    already_complete: bool = False              # resumed a run that had reached its iterations
    threads: int = 0                            # torch CPU threads the run trained with (training_threads)


# ----- determinism helpers -----

def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for the batch of ``step`` (1-based) that depends only on (seed, step)."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(2, np.uint64)[0] >> 1)


def set_global_seeds(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----- data and algorithm adapters (the only places that know the other modules' signatures) -----

def load_data(config: TrainConfig) -> dict:
    """``{"train", "val", "test"}`` ImageClassDatasets of the config's dataset."""
    from repana.data import load_splits

    options: dict[str, Any] = {}
    if config.split:
        options["split"] = config.split
    return load_splits(config.dataset, root=config.data_root or None, **options)


def make_algorithm(config: TrainConfig):
    """The algorithm object of ``repana.meta.algorithms`` configured from ``config``."""
    from repana.meta.algorithms import get_algorithm

    return get_algorithm(config.algorithm, ignore_unused=True, **algorithm_hyperparameters(config))


def algorithm_hyperparameters(config: TrainConfig) -> dict:
    """Keyword arguments of ``get_algorithm``; the inner lr is passed in mean-loss convention (the
    same number evaluation uses), which is exact: a "sum_over_shots" loss is ``ways`` x the mean."""
    return {"inner_lr": config.mean_loss_inner_lr(), "inner_steps": config.inner_steps_train,
            "inner_loss": "mean", "bn_support_query": config.bn_support_query,
            "bn_inner_loop": config.bn_inner_loop}


def eval_trainable(config: TrainConfig) -> Callable[[str], bool]:
    """Which parameters adapt at validation/test (:func:`repana.meta.algorithms.adapted_parameters`) for a
    run with ``config``: its algorithm's rule, batch norm left out when ``config.bn_inner_loop`` is false.
    The one place evaluation, ``predict`` and the analyses read it from a checkpoint's config."""
    from repana.meta.algorithms import adapted_parameters

    return adapted_parameters(config.algorithm, bn_inner_loop=config.bn_inner_loop)


class BatchSource:
    """The training batch of each step, a pure function of (config.seed, step).

    Episodes (``batch_kind == "episodes"``): ``meta_batch_size`` tasks from the train split.
    Classification (``"classification"``): ``(images float32 (batch_size, C, H, W) in [0, 1],
    labels int64 (batch_size,))`` drawn uniformly from the train split.
    """

    def __init__(self, config: TrainConfig, train_set, batch_kind: str):
        if batch_kind not in ("episodes", "classification"):
            raise ConfigError(f"algorithm {config.algorithm!r} has unknown batch kind {batch_kind!r}")
        self.config, self.train_set, self.batch_kind = config, train_set, batch_kind

    def __call__(self, step: int):
        seed = step_seed(self.config.seed, step)
        if self.batch_kind == "episodes":
            from repana.data import EpisodeSampler

            sampler = EpisodeSampler(self.train_set, ways=self.config.ways, shots=self.config.shots,
                                     queries=self.config.queries_train, seed=seed)
            return sampler.sample(tasks=self.config.meta_batch_size)
        generator = torch.Generator().manual_seed(seed)
        index = torch.randint(len(self.train_set.labels), (self.config.batch_size,), generator=generator)
        images = self.train_set.images[index].float() / 255.0
        return images, self.train_set.labels[index]


def batch_to(batch, device):
    if isinstance(batch, tuple):
        return tuple(t.to(device) for t in batch)
    return batch.to(device)


def batch_size_of(batch) -> int:
    return len(batch[0]) if isinstance(batch, tuple) else len(batch)


def shard_batch(batch, start: int, stop: int):
    """Tasks (or images) ``start:stop`` of a batch."""
    if isinstance(batch, tuple):
        return tuple(t[start:stop] for t in batch)
    return batch.index(slice(start, stop))


# ----- run folder -----

class MetricsLog:
    """``metrics.csv``: one row per logged step and split, appended line by line and fsynced."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def reset(self, keep_through_step: int) -> None:
        """Rewrite the file atomically with only the well-formed rows of steps <= ``keep_through_step``."""
        if not self.enabled:
            return
        rows = []
        if self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    try:
                        if int(row["step"]) <= keep_through_step and row["elapsed_s"] not in (None, ""):
                            float(row["elapsed_s"])
                            rows.append(row)
                    except (TypeError, ValueError, KeyError):
                        continue  # a torn last line from a kill mid-append
        lines = [",".join(METRICS_COLUMNS)] + [",".join(row[c] or "" for c in METRICS_COLUMNS) for row in rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def append(self, step: int, split: str, loss: float | None, accuracy: float | None, elapsed: float) -> None:
        if not self.enabled:
            return
        cells = [str(step), split, _fmt(loss), _fmt(accuracy), f"{elapsed:.3f}"]
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(",".join(cells) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class _Sinks:
    """Several metric sinks driven as one MetricsLog."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def reset(self, keep_through_step: int) -> None:
        for sink in self.sinks:
            sink.reset(keep_through_step)

    def append(self, *row) -> None:
        for sink in self.sinks:
            sink.append(*row)


def _fmt(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


def list_step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of ``step_XXXXXX.pt`` files, sorted by step."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(found)


def find_resume_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint of a run (``latest.pt``, else the newest ``step_*.pt``)."""
    folder = run_dir / "checkpoints"
    candidates = [folder / "latest.pt"] + [p for _, p in reversed(list_step_checkpoints(folder))]
    errors = []
    for path in candidates:
        if path.exists():
            try:
                found = load_checkpoint(path)
            except CheckpointError as error:
                errors.append(str(error))
                continue
            if errors:
                print(f"repana: skipping unreadable checkpoints ({'; '.join(errors)}); resuming from {path} "
                      f"(step {found.step}) instead", file=sys.stderr, flush=True)
            return found
    if errors:
        raise CheckpointError(f"no readable checkpoint in {folder}: " + "; ".join(errors))
    return None


def _check_resume_threads(checkpoint: Checkpoint, threads: int, allow_change: bool) -> None:
    """:func:`check_resume_threads` for a supervised checkpoint."""
    check_resume_threads(checkpoint.runtime.get("threads"), threads, checkpoint.path, allow_change)


def check_resume_threads(saved: int | None, threads: int, path, allow_change: bool) -> None:
    """ConfigError when a run would continue with another torch thread count (``threads``) than its checkpoint
    at ``path`` records (``saved``; None: not recorded): floating-point sums are split per thread, so the
    parameters would no longer be bit-identical to an uninterrupted run (the error names the config key
    ``threads`` of supervised and RL runs)."""
    if saved is None or int(saved) == threads or allow_change:
        return
    raise ConfigError(
        f"{path} was trained with {saved} torch threads, this process would continue with {threads}: "
        f"results are bit-identical to an uninterrupted run only at the same thread count. Pass "
        f"--set threads={saved} to continue exactly, or set {ALLOW_THREAD_CHANGE_ENV}=1 "
        f"to continue with {threads} threads anyway")


def images_per_forward(config: TrainConfig) -> int:
    """Images one forward pass of training sees: one task's ways x (shots + queries), or a multiclass batch."""
    if config.algorithm == "multiclass":
        return config.batch_size
    return config.ways * (config.shots + config.queries_train)


def training_threads(config: TrainConfig, resume_from: Checkpoint | None = None, environ=None) -> tuple[int, str]:
    """The torch CPU thread count of a run and where it comes from: ``config.threads`` ("config"),
    ``$REPANA_THREADS`` ("REPANA_THREADS"), an ``OMP_NUM_THREADS`` set outside repana ("OMP_NUM_THREADS":
    a job script, ``torchrun``), the count the resumed checkpoint records ("checkpoint": a
    resumed run continues bit-identically), else the automatic count for one forward pass of the network
    (:func:`repana.runtime.run_threads`: one thread for Omniglot-size networks, the idle cores for
    MiniImageNet-size ones; docs/training.md)."""
    from repana.models import forward_macs
    from repana.runtime import run_threads

    saved = resume_from.runtime.get("threads") if resume_from is not None else None
    work = forward_macs(config.model_config(), images_per_forward(config))
    return run_threads(config.threads, saved, work, environ)


def _last_train_row(path: Path) -> dict:
    """The last ``train`` row of a metrics.csv as floats (empty when there is none)."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("split") == "train"]
    try:
        return {"loss": float(rows[-1]["loss"] or "nan"), "accuracy": float(rows[-1]["accuracy"] or "nan")}
    except (IndexError, KeyError, ValueError):
        return {}


def _check_resume_config(saved: TrainConfig, given: TrainConfig, run_dir: Path) -> None:
    saved_d, given_d = saved.to_dict(), given.to_dict()
    changed = sorted(k for k in saved_d if saved_d[k] != given_d[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(
            f"cannot resume {run_dir} with a different config: " + ", ".join(
                f"{k} = {given_d[k]!r} (run has {saved_d[k]!r})" for k in changed)
            + f"; only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume")


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config of an existing run folder."""
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise ConfigError(f"{run_dir} has no config.toml; it is not a repana run folder")
    return from_dict(load_toml(path), source=str(path))


# ----- the loop -----

def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# The subset of training classes a run with ``train_classes = N`` meta-learns from: fixed, whatever the run's seed,
# so that runs of one size differ only in their own randomness.
TRAIN_CLASS_SUBSET_SEED = 20_200_426


def training_classes(dataset, count: int):
    """``count`` classes of ``dataset`` (an :class:`repana.data.ImageClassDataset`), drawn without replacement
    by a generator of fixed seed (:data:`TRAIN_CLASS_SUBSET_SEED`) and kept in the dataset's order: the training
    split of a run with ``train_classes = count``."""
    chosen = np.random.default_rng(TRAIN_CLASS_SUBSET_SEED).choice(dataset.n_classes, size=int(count), replace=False)
    return dataset.subset(np.sort(chosen))


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, device: str | torch.device = "cpu",
          data: Mapping | None = None, algorithm=None,
          callback: Callable[[int, dict], None] | None = None, show_progress: bool | None = None,
          dist=None, loggers: Sequence = (), allow_thread_change: bool | None = None) -> RunSummary:
    """Meta-train ``config`` in ``run_dir``; with ``resume`` continue from its newest checkpoint.

    ``data``: ``{"train", "val"}`` datasets (loaded from ``config`` when None). ``algorithm``: an
    object with ``batch_kind`` and ``meta_gradients(model, batch) -> (grads, metrics)`` (built from
    ``config`` when None). ``callback(step, metrics)`` runs after each optimizer step; raising
    :class:`StopTraining` there ends the run early (files stay as after that step's writes).
    ``dist``: a :class:`repana.meta.distributed.DistributedContext` (episodes split across ranks,
    only rank 0 writes). ``loggers``: more sinks of the metrics.csv rows, with MetricsLog's
    ``reset(keep_through_step)`` and ``append(step, split, loss, accuracy, elapsed)`` (e.g.
    :class:`repana.tensorboard.TensorBoardLog`). ``allow_thread_change``: resume with another torch
    thread count than the run's checkpoint records (default: ``$REPANA_ALLOW_THREAD_CHANGE`` = 1; else a
    ConfigError, as results are bit-identical only at the same count). Torch threads while training:
    :func:`training_threads` (``config.threads = 0``: automatic, or the resumed checkpoint's count).
    The writer holds the run folder's lock (:mod:`repana.run_lock`) while it trains: a second process
    training in the same folder gets :class:`repana.run_lock.RunFolderBusy` naming this one's pid.
    Returns a :class:`RunSummary`.
    """
    config = config.validate()
    writer = dist is None or dist.rank == 0
    with locked_run_folder(run_dir) if writer else contextlib.nullcontext():
        return _train_holding_the_folder(config, Path(run_dir), resume, device, data, algorithm, callback,
                                         show_progress, dist, loggers, allow_thread_change)


def _resume_point(config: TrainConfig, run_dir: Path, resume: bool, writer: bool) -> Checkpoint | None:
    """The checkpoint a run continues from (None: it starts); ConfigError when ``resume`` is off and the folder
    already holds checkpoints, or when the saved run's config differs in a key that may not change."""
    ckpt_dir = run_dir / "checkpoints"
    if not resume:
        if ckpt_dir.exists() and list_step_checkpoints(ckpt_dir) or (ckpt_dir / "latest.pt").exists():
            raise ConfigError(f"run folder {run_dir} already holds checkpoints: pass resume=True "
                              "(--resume) to continue it, or choose another output folder")
        return None
    if writer:  # temporary files of writes a kill interrupted (only repana's, only older than us)
        for folder in (run_dir, ckpt_dir):
            remove_stale_temp_files(folder)
    resume_from = find_resume_checkpoint(run_dir)
    if resume_from is not None:
        _check_resume_config(resume_from.train_config(), config, run_dir)
    return resume_from


def _run_threads(config: TrainConfig, resume_from: Checkpoint | None, allow_thread_change: bool | None) -> int:
    """:func:`training_threads`, checked against the resumed checkpoint's count when it was chosen otherwise."""
    threads, threads_source = training_threads(config, resume_from)
    if resume_from is not None and threads_source != "checkpoint":   # an explicit count: exact only if equal
        if allow_thread_change is None:
            allow_thread_change = os.environ.get(ALLOW_THREAD_CHANGE_ENV, "") not in ("", "0")
        _check_resume_threads(resume_from, threads, allow_thread_change)
    return threads


def _training_data(config: TrainConfig, data: Mapping | None, batch_kind: str) -> tuple[dict, int]:
    """``(datasets, classes of the network's head)``: the run's datasets (loaded when None) with its classes
    checked and, with ``train_classes``, its training split cut to the fixed subset."""
    data = dict(data) if data is not None else load_data(config)
    config.check_classes({s: data[s].n_classes for s in ("train", "val")
                          if s in data and (s == "val" or batch_kind == "episodes" or config.train_classes)})
    if config.train_classes:
        data["train"] = training_classes(data["train"], config.train_classes)
    return data, data["train"].n_classes if batch_kind == "classification" else config.ways


def _restore(resume_from: Checkpoint, model: torch.nn.Module, optimizer, model_config: dict) -> tuple[int, float]:
    """Load a checkpoint's weights, optimizer and RNG states; returns ``(its step, training seconds so far)``."""
    if resume_from.model_config != model_config:
        raise CheckpointError(f"{resume_from.path} holds another architecture "
                              f"({resume_from.model_config}) than the config ({model_config})")
    load_weights(model, resume_from.state_dict, where=str(resume_from.path))
    optimizer.load_state_dict(resume_from.optimizer_state)
    restore_rng_state(resume_from.rng)
    return resume_from.step, float(resume_from.metrics.get("elapsed_s", 0.0))


def _complete_run(config: TrainConfig, run_dir: Path, resume_from: Checkpoint, threads: int) -> RunSummary:
    """The summary of a run that has already trained all its iterations (nothing more to do)."""
    start, metrics = resume_from.step, resume_from.metrics
    last_row = _last_train_row(run_dir / "metrics.csv")
    print(f"repana: run {run_dir} is already complete (step {start} of {config.iterations}); nothing to "
          "train (raise iterations to extend it)", file=sys.stderr, flush=True)
    return RunSummary(run_dir=run_dir, steps=start, resumed_from=start,
                      train_loss=last_row.get("loss", float(metrics.get("train_loss", "nan"))),
                      train_accuracy=last_row.get("accuracy", float(metrics.get("train_accuracy", "nan"))),
                      val_accuracy=metrics.get("val_accuracy"), val_ci95=metrics.get("val_ci95"),
                      elapsed_s=float(metrics.get("elapsed_s", 0.0)), already_complete=True, threads=threads)


def _validation_episodes(config: TrainConfig, data: Mapping):
    """The fixed validation episodes of a run (None when it does not validate)."""
    if not (config.val_every and "val" in data):
        return None
    from repana.data import fixed_episodes

    return fixed_episodes(data["val"], n_episodes=config.val_episodes, ways=config.ways, shots=config.shots,
                          queries=config.queries_test, seed=step_seed(config.seed, 0))  # step 0 never trains


def _apply_gradients(model: torch.nn.Module, optimizer, grads: Mapping[str, torch.Tensor]) -> None:
    """One optimizer step with the meta-gradients (parameters without one keep no gradient)."""
    optimizer.zero_grad(set_to_none=True)
    for name, param in model.named_parameters():
        grad = grads.get(name)
        param.grad = None if grad is None else grad.detach().to(param.dtype)
    optimizer.step()


def _validate(model: torch.nn.Module, episodes, config: TrainConfig):
    """Accuracy of ``model`` on the validation episodes with the run's test-time protocol (left in train mode)."""
    from repana.meta.evaluate import evaluate

    result = evaluate(model, episodes, method=config.eval_method, steps=config.inner_steps_test,
                      lr=config.mean_loss_inner_lr(), trainable=eval_trainable(config),
                      bn_support_query=config.bn_support_query, show_progress=False)
    model.train()
    return result


@dataclass
class _Checkpoints:
    """Writes a run's ``step_<N>.pt`` (and ``latest.pt``), keeping ``keep_checkpoints`` rolling ones besides
    the ``save_steps``; only the writing rank writes."""

    folder: Path
    config: TrainConfig
    model: torch.nn.Module
    model_config: dict
    optimizer: torch.optim.Optimizer
    enabled: bool
    saved: list = field(default_factory=list)

    def __call__(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        config = self.config
        sampler_state = {"kind": "step_seeded", "seed": config.seed, "step": step}
        path = save_checkpoint(self.folder / f"step_{step:06d}.pt", model=self.model, model_config=self.model_config,
                               algorithm=config.algorithm, config=config.to_dict(), step=step,
                               optimizer=self.optimizer, rng=capture_rng_state(sampler_state), metrics=metrics)
        atomic_write_bytes(self.folder / "latest.pt", path.read_bytes())
        self.saved.append(path)
        rolling = [(s, p) for s, p in list_step_checkpoints(self.folder) if s not in config.save_steps]
        for _, old in rolling[:-config.keep_checkpoints]:
            old.unlink(missing_ok=True)


def _train_holding_the_folder(config: TrainConfig, run_dir: Path, resume: bool, device, data, algorithm, callback,
                              show_progress, dist, loggers, allow_thread_change) -> RunSummary:
    """:func:`train` once the run folder's lock is held (rank 0) or not needed (other ranks)."""
    from repana.models import build_model

    device = torch.device(device)
    writer = dist is None or dist.rank == 0
    metrics_log = _Sinks([MetricsLog(run_dir / "metrics.csv", enabled=writer), *(loggers if writer else ())])
    resume_from = _resume_point(config, run_dir, resume, writer)
    threads = _run_threads(config, resume_from, allow_thread_change)
    algorithm = algorithm if algorithm is not None else make_algorithm(config)
    data, n_classes = _training_data(config, data, algorithm.batch_kind)

    set_global_seeds(config.seed)
    model_config = config.model_config(n_classes)
    model = build_model(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    batches = BatchSource(config, data["train"], algorithm.batch_kind)
    start, elapsed_before = 0, 0.0
    if resume_from is not None:
        start, elapsed_before = _restore(resume_from, model, optimizer, model_config)
        if start >= config.iterations:
            return _complete_run(config, run_dir, resume_from, threads)
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.toml", to_toml(config))
        metrics_log.reset(keep_through_step=start)
    val_episodes = _validation_episodes(config, data)
    checkpoint = _Checkpoints(run_dir / "checkpoints", config, model, model_config, optimizer, enabled=writer)
    window_loss: list[float] = []
    window_acc: list[float] = []
    last = {"loss": float("nan"), "accuracy": float("nan")}
    val_accuracy = val_ci = None
    t0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)   # recorded in every checkpoint (runtime_record): resume keeps it
    bar = progress(total=config.iterations, initial=start, desc=f"{config.algorithm} {config.name}",
                   enabled=show_progress if writer else False, unit="step")
    model.train()
    steps_done = start
    if start == 0 and 0 in config.save_steps:
        checkpoint(0, {"elapsed_s": elapsed()})
    try:
        for step in range(start + 1, config.iterations + 1):
            batch = batches(step)
            if dist is not None:
                grads, metrics = dist.meta_gradients(algorithm, model, batch, device)
            else:
                grads, metrics = algorithm.meta_gradients(model, batch_to(batch, device))
            _apply_gradients(model, optimizer, grads)
            loss = float(metrics.get("loss", float("nan")))
            accuracy = float(metrics.get("accuracy", float("nan")))
            window_loss.append(loss)
            window_acc.append(accuracy)
            step_metrics = {"train_loss": loss, "train_accuracy": accuracy}
            if step % config.log_every == 0 or step == config.iterations:
                last = {"loss": _mean(window_loss), "accuracy": _mean(window_acc)}
                metrics_log.append(step, "train", last["loss"], last["accuracy"], elapsed())
                window_loss, window_acc = [], []
                bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['accuracy']:.3f}")
            if val_episodes is not None and writer and (step % config.val_every == 0 or step == config.iterations):
                result = _validate(model, val_episodes, config)
                val_accuracy, val_ci = float(result.accuracy), float(result.ci95)
                val_loss = getattr(result, "loss", None)
                metrics_log.append(step, "val", None if val_loss is None else float(val_loss), val_accuracy,
                                   elapsed())
                step_metrics.update(val_accuracy=val_accuracy, val_ci95=val_ci)
            if ((config.checkpoint_every and step % config.checkpoint_every == 0)
                    or step in config.save_steps or step == config.iterations):
                checkpoint(step, {**step_metrics, "elapsed_s": elapsed()})
            steps_done = step
            bar.update(1)
            if callback is not None:
                callback(step, step_metrics)
    except StopTraining:
        pass
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    return RunSummary(run_dir=run_dir, steps=steps_done, resumed_from=start, train_loss=last["loss"],
                      train_accuracy=last["accuracy"], val_accuracy=val_accuracy, val_ci95=val_ci,
                      elapsed_s=elapsed(), checkpoints=checkpoint.saved, threads=threads)
