"""RL speed: environment steps per second, and ANIL vs MAML seconds per TRPO meta-update.

1. 2-D navigation: repana's batched torch environment (``--nav-envs`` points in one tensor) against a
   plain per-environment Python/numpy step (what a gym-style single environment does), env steps/s.
2. HalfCheetah (needs ``pip install repana[rl]``): repana's sampler (policy forward + gymnasium
   ``SyncVectorEnv`` and ``AsyncVectorEnv`` of ``--cheetah-envs`` sub-environments, explicit resets)
   against stepping one gymnasium ``HalfCheetah-v5`` directly with random actions (no policy), env steps/s.
3. ANIL vs MAML: seconds of one meta-update, i.e. ``MetaLearner.step`` = the second-order surrogate
   (adaptation + post-adaptation loss), its gradient, ``cg_iters`` Hessian-vector products through the
   adaptation, and the line search, on the same fixed 2-D navigation rollouts (sampling excluded).
   MAML differentiates through the inner gradient of every layer, ANIL through the head's only.

Each comparison is interleaved (A, B, A, B...) and printed as a ratio measured in this run, since the
machine's load changes between runs.

    python benchmarks/rl.py [--tasks 20] [--trajectories 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from repana.rl.config import load_preset
from repana.rl.envs import Navigation2D
from repana.rl.train import build_learner, build_policy, rollouts_with_advantages
from repana.rl.sampler import make_sampler
from repana.rl.tasks import TaskSampler


def interleaved(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, called in turn ``repeats`` times after one warm-up each."""
    for f in functions.values():
        f()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def navigation_benchmark(n_envs: int, repeats: int) -> None:
    steps = 100
    goals = torch.rand(n_envs, 2) - 0.5
    actions = torch.randn(steps, n_envs, 2) * 0.1
    n_loop = 200  # per-env loop on fewer environments; steps/s is what is compared

    def batched():
        env = Navigation2D(goals)
        env.reset()
        for t in range(steps):
            env.step(actions[t])

    goals_np, actions_np = goals.numpy()[:n_loop], actions.numpy()[:, :n_loop]

    def per_env():
        for i in range(n_loop):
            state = np.zeros(2, dtype=np.float32)
            for t in range(steps):
                state = state + np.clip(actions_np[t, i], -0.1, 0.1)
                offset = state - goals_np[i]
                _ = -np.sqrt(offset[0] ** 2 + offset[1] ** 2)
                _ = (abs(offset[0]) < 0.01) and (abs(offset[1]) < 0.01)

    t = interleaved({"batched": batched, "per_env": per_env}, repeats)
    fast, slow = n_envs * steps / t["batched"], n_loop * steps / t["per_env"]
    print(f"2-D navigation env steps/s: batched torch ({n_envs} envs) {fast:,.0f} | per-env numpy loop "
          f"{slow:,.0f} | ratio {fast / slow:.1f}x")


def cheetah_benchmark(n_envs: int, repeats: int) -> None:
    try:
        import gymnasium
        import mujoco  # noqa: F401
    except ImportError:
        print("HalfCheetah: skipped (pip install repana[rl])")
        return
    from repana.rl.policy import GaussianMLPPolicy
    horizon, n_traj = 100, n_envs
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6)
    params = {n: p.detach() for n, p in policy.params().items()}
    tasks = torch.ones(1, 1)
    env = gymnasium.make("HalfCheetah-v5")
    rng = np.random.default_rng(0)
    raw_actions = rng.uniform(-1, 1, size=(horizon * n_traj, 6)).astype(np.float32)

    def direct():
        env.reset(seed=0)
        for i in range(horizon * n_traj):
            if i % horizon == 0:
                env.reset(seed=i)
            env.step(raw_actions[i])

    samplers = {mode: make_sampler("halfcheetah-vel", horizon, n_envs=n_envs, mode=mode)
                for mode in ("sync", "async")}
    functions = {"direct": direct}
    for mode, sampler in samplers.items():
        functions[mode] = (lambda s=sampler: s.sample(policy, params, tasks, n_traj, torch.Generator().manual_seed(0)))
    try:
        t = interleaved(functions, repeats)
    finally:
        for sampler in samplers.values():
            sampler.close()
        env.close()
    n_steps = horizon * n_traj
    rates = {name: n_steps / seconds for name, seconds in t.items()}
    print(f"HalfCheetah env steps/s: gymnasium directly (random actions, no policy) {rates['direct']:,.0f} | "
          f"repana sampler sync x{n_envs} {rates['sync']:,.0f} ({rates['sync'] / rates['direct']:.2f}x) | "
          f"async x{n_envs} workers {rates['async']:,.0f} ({rates['async'] / rates['direct']:.2f}x)")


def meta_update_benchmark(n_tasks: int, n_traj: int, repeats: int) -> None:
    config = load_preset("rl-2dnav").replace(meta_batch_size=n_tasks, fast_batch_size=n_traj)
    policy = build_policy(config)
    start_state = {k: v.clone() for k, v in policy.state_dict().items()}
    sampler = make_sampler(config.env, config.horizon)
    tasks = TaskSampler(config.env, 0).sample(n_tasks)
    generator = torch.Generator().manual_seed(0)
    maml = build_learner(policy, config.replace(algorithm="maml"))
    anil = build_learner(policy, config.replace(algorithm="anil"))
    train = rollouts_with_advantages(sampler, policy, policy.params(), tasks, config, generator)
    adapted = maml.adapt(policy.params(), train, first_order=True)
    valid = rollouts_with_advantages(sampler, policy, adapted, tasks, config, generator)

    def update(learner):
        policy.load_state_dict(start_state)
        learner.step(train, valid, max_kl=config.max_kl, cg_iters=config.cg_iters, cg_damping=config.cg_damping,
                     ls_max_steps=config.ls_max_steps, ls_backtrack_ratio=config.ls_backtrack_ratio)

    t = interleaved({"maml": lambda: update(maml), "anil": lambda: update(anil)}, repeats)
    print(f"TRPO meta-update on 2-D navigation ({n_tasks} tasks x {n_traj} trajectories x 100 steps, "
          f"{config.cg_iters} CG iterations): MAML {t['maml']:.2f} s | ANIL {t['anil']:.2f} s | "
          f"ANIL speed-up {t['maml'] / t['anil']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--trajectories", type=int, default=20)
    parser.add_argument("--nav-envs", type=int, default=4000)
    parser.add_argument("--cheetah-envs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    navigation_benchmark(args.nav_envs, args.repeats)
    cheetah_benchmark(args.cheetah_envs, args.repeats)
    meta_update_benchmark(args.tasks, args.trajectories, args.repeats)


if __name__ == "__main__":
    main()
