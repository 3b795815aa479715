"""Meta-training of an RL policy: run folder, metrics CSV, progress bar, atomic checkpoints, exact resume.

Run folder::

    config.toml                 the resolved RLConfig
    metrics.csv                 one row per meta-update (returns before / after adaptation, losses, KL...)
    checkpoints/latest.pt       the newest checkpoint (every ``checkpoint_every`` updates and the last)
    checkpoints/step_<N>.pt     the same checkpoint once the run's last update N = iterations is done
                                (a run plan's "job finished" mark, as for supervised runs)

Resuming reads ``latest.pt`` (policy, iteration, task-sampler and action-noise generator states,
metrics) and continues: the result is bitwise the same as an uninterrupted run. A NaN return or loss,
or a log-std beyond ``max_abs_log_std``, stops training with :class:`PolicyDivergedError` before
anything of that update is saved, so ``latest.pt`` stays the last good state.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import torch

from repana.errors import ConfigError, RepanaError
from repana.io import atomic_save_csv, atomic_write_text
from repana.progress import progress
from repana.run_lock import locked_run_folder
from repana.meta.checkpoint import load_checkpoint, save_rl_checkpoint
from repana.rl.config import RLConfig, resolve_config
from repana.rl.envs import action_size, observation_size
from repana.rl.metalearner import MetaLearner
from repana.rl.policy import GaussianMLPPolicy
from repana.rl.returns import advantages
from repana.rl.sampler import make_sampler
from repana.rl.tasks import TaskSampler


from repana.runs.kinds import RL_RESUMABLE as RESUMABLE_CHANGES


class PolicyDivergedError(RepanaError):
    """Training produced NaN returns / losses or an exploding log-std."""


def build_policy(config: RLConfig) -> GaussianMLPPolicy:
    torch.manual_seed(config.seed)
    policy = GaussianMLPPolicy(observation_size(config.env), action_size(config.env),
                               hidden_sizes=config.hidden_sizes, init_std=config.init_std)
    return policy.to(getattr(torch, config.dtype))


def build_learner(policy, config: RLConfig) -> MetaLearner:
    return MetaLearner(policy, config.algorithm, inner_lr=config.inner_lr, num_steps=config.num_steps,
                       adapt_log_std=config.adapt_log_std)


def detached(params: dict) -> dict:
    return {n: p.detach() for n, p in params.items()}


def rollouts_with_advantages(sampler, policy, params, tasks, config: RLConfig, generator):
    episodes = sampler.sample(policy, detached(params), tasks, config.fast_batch_size, generator)
    episodes.returns, episodes.advantages = advantages(episodes.observations, episodes.rewards,
                                                       episodes.mask, config.gamma, config.gae_lambda)
    return episodes


def meta_iteration(learner: MetaLearner, sampler, tasks: torch.Tensor, config: RLConfig,
                   generator: torch.Generator) -> dict:
    """Sample before adaptation, adapt, sample after, one TRPO meta-update; returns the metrics."""
    policy = learner.policy
    train = rollouts_with_advantages(sampler, policy, policy.params(), tasks, config, generator)
    adapted = learner.adapt(policy.params(), train, first_order=True)
    valid = rollouts_with_advantages(sampler, policy, adapted, tasks, config, generator)
    log = learner.step(train, valid, max_kl=config.max_kl, cg_iters=config.cg_iters,
                       cg_damping=config.cg_damping, ls_max_steps=config.ls_max_steps,
                       ls_backtrack_ratio=config.ls_backtrack_ratio)
    return {"return_before": float(train.total_rewards().mean()),
            "return_after": float(valid.total_rewards().mean()),
            **log, "log_std_max": float(policy.log_std.detach().abs().max()),
            "env_steps": train.n_steps + valid.n_steps}


def check_healthy(metrics: dict, config: RLConfig, iteration: int, run_dir: Path) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise PolicyDivergedError(f"meta-update {iteration} gave non-finite {', '.join(bad)}; stopped, "
                                  f"{run_dir / 'checkpoints' / 'latest.pt'} holds the last good policy")
    if metrics["log_std_max"] > config.max_abs_log_std:
        raise PolicyDivergedError(
            f"meta-update {iteration}: |log_std| reached {metrics['log_std_max']:.3g} > max_abs_log_std="
            f"{config.max_abs_log_std}; stopped, {run_dir / 'checkpoints' / 'latest.pt'} holds the last "
            "good policy (lower max_kl or inner_lr)")


def config_toml(config: RLConfig) -> str:
    """The config as the TOML text of a run's ``config.toml`` (what ``repana train --config`` reads)."""
    import tomli_w
    return tomli_w.dumps(config.to_dict())


#: Below this many multiply-adds per batched policy forward an RL run trains on one thread (tiny configs:
#: the threads would only wait for each other). 2-D navigation at the paper's size is 4.2e8.
RL_PARALLEL_MIN_MACS = 10 ** 8


def rl_forward_macs(config: RLConfig) -> int:
    """Multiply-adds of one policy forward over a whole meta-batch of rollouts
    (``meta_batch_size * fast_batch_size * horizon`` states through the MLP)."""
    from repana.rl.envs import action_size, observation_size

    sizes = [observation_size(config.env), *config.hidden_sizes, action_size(config.env)]
    per_state = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return config.meta_batch_size * config.fast_batch_size * config.horizon * per_state


def rl_training_threads(config: RLConfig, saved: int | None = None, environ=None) -> tuple[int, str]:
    """The torch CPU thread count of an RL run and where it comes from: ``config.threads`` ("config"),
    ``$REPANA_THREADS`` or an ``OMP_NUM_THREADS`` set outside repana, the count the resumed checkpoint
    records (``saved``: "checkpoint", so a resumed run continues bit-identically), else ("automatic") one
    thread below :data:`RL_PARALLEL_MIN_MACS` per batched forward (:func:`rl_forward_macs`) and the idle
    cores above (:func:`repana.runtime.run_threads`).

    Why: the policy runs on the whole meta-batch at once (2-D navigation: 40,000 states per forward,
    HalfCheetah 160,000), large products that parallelise. Measured on 2 cores
    (``repana train --preset rl-2dnav --set iterations=3``, MAML): 19.7 s on 1 thread, 12.8-13.6 s on 2
    when idle; next to a busy process 19.8 s vs 21.3 s, so the idle-core count (1 then) loses nothing.
    """
    from repana.runtime import run_threads

    return run_threads(config.threads, saved, rl_forward_macs(config), environ,
                       parallel_min_macs=RL_PARALLEL_MIN_MACS)


def final_checkpoint_path(run_dir, iterations: int) -> Path:
    """``<run>/checkpoints/step_<iterations>.pt``: written when the run's last update is done."""
    return Path(run_dir) / "checkpoints" / f"step_{int(iterations):06d}.pt"


def train_rl(config_or_preset, run_dir, resume: bool = True, show_progress: bool | None = None,
             callback=None, **overrides) -> dict:
    """Meta-train (or resume) a policy in ``run_dir``; returns the last metrics row.

    ``config_or_preset``: an RLConfig, a dict, a preset name (``rl-2dnav``...) or a TOML path;
    ``overrides`` replace config fields (``iterations=50, algorithm="anil"``). With ``resume`` a run
    folder holding ``checkpoints/latest.pt`` continues from it (its config must match except for
    ``iterations``, ``checkpoint_every`` and ``threads``); without, such a folder is refused.
    ``show_progress``: draw the progress bar (None: :func:`repana.progress.progress_enabled` decides).
    ``callback(iteration, metrics)`` runs after each meta-update (tests use it to interrupt). The run
    folder's lock is held while it trains: a second process in the same folder gets
    :class:`repana.run_lock.RunFolderBusy` naming this one's pid.
    """
    config = resolve_config(config_or_preset)
    if overrides:
        config = config.replace(**overrides)
    with locked_run_folder(run_dir):
        return _train_rl_holding_the_folder(config, Path(run_dir), resume, show_progress, callback)


def _train_rl_holding_the_folder(config: RLConfig, run_dir: Path, resume: bool, show_progress: bool | None,
                                 callback) -> dict:
    """:func:`train_rl` once the run folder's lock (:mod:`repana.run_lock`) is held."""
    latest = run_dir / "checkpoints" / "latest.pt"
    if latest.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds an RL run; pass resume=True or use a new folder")
    saved_run = load_checkpoint(latest, kind="rl") if latest.exists() else None
    saved_threads = saved_run.runtime.get("threads") if saved_run is not None else None
    threads, source = rl_training_threads(config, saved_threads)
    if source != "checkpoint":
        from repana.meta.train import ALLOW_THREAD_CHANGE_ENV, check_resume_threads
        check_resume_threads(saved_threads, threads, latest,
                             allow_change=os.environ.get(ALLOW_THREAD_CHANGE_ENV, "") not in ("", "0"))
    torch.set_num_threads(threads)

    policy = build_policy(config)
    learner = build_learner(policy, config)
    tasks = TaskSampler(config.env, config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    rows: list[dict] = []
    start = 0
    if saved_run is not None:
        saved = saved_run.train_config().to_dict()
        changed = sorted(k for k, v in config.to_dict().items()
                         if saved.get(k) != v and k not in RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(f"cannot resume {run_dir}: the config differs in {changed}; use a new run folder")
        policy.load_state_dict(saved_run.state_dict)
        tasks.load_state_dict(json.loads(saved_run.rng["tasks"]))
        generator.set_state(saved_run.rng["actions"])
        rows = [dict(r) for r in saved_run.history]
        start = saved_run.step
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", config_toml(config))

    def checkpoint(iteration: int) -> None:
        for path in [latest] + ([final_checkpoint_path(run_dir, iteration)] if iteration == config.iterations else []):
            save_rl_checkpoint(path, config=config.to_dict(), policy_config=policy.config,
                               state_dict=policy.state_dict(), iteration=iteration,
                               rng={"tasks": json.dumps(tasks.state_dict()), "actions": generator.get_state()},
                               metrics=rows, runtime={"threads": threads})
        atomic_save_csv(pd.DataFrame(rows), run_dir / "metrics.csv")

    elapsed_before = rows[-1]["elapsed_s"] if rows else 0.0
    began = time.perf_counter()
    sampler = make_sampler(config.env, config.horizon, n_envs=config.n_envs, mode=config.vector_mode)
    bar = progress(range(start, config.iterations), desc=f"{config.algorithm} {config.env}",
                   total=config.iterations, initial=start, enabled=show_progress, unit="update")
    try:
        for iteration in bar:
            metrics = meta_iteration(learner, sampler, tasks.sample(config.meta_batch_size), config, generator)
            check_healthy(metrics, config, iteration, run_dir)
            metrics = {"iteration": iteration, **metrics,
                       "elapsed_s": elapsed_before + time.perf_counter() - began}
            rows.append(metrics)
            bar.set_postfix(before=f"{metrics['return_before']:.1f}", after=f"{metrics['return_after']:.1f}")
            done = iteration + 1
            if done % config.checkpoint_every == 0 or done == config.iterations:
                checkpoint(done)
            if callback is not None:
                callback(iteration, metrics)
    finally:
        sampler.close()
        bar.close()
    if start == config.iterations and rows and not final_checkpoint_path(run_dir, start).exists():
        checkpoint(start)   # a finished run from before step files were written: mark it finished
    return rows[-1] if rows else {}
