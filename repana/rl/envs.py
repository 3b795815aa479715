"""Environments: batched torch 2-D navigation and HalfCheetah direction / velocity tasks (gymnasium).

2-D navigation (Finn et al. 2017, Sec. 5.3): a point starts at the origin, its action (a velocity) is
clipped to [-0.1, 0.1]^2, the reward is minus the Euclidean distance to the goal after the move and an
episode ends once both coordinates are within 0.01 of the goal. :class:`Navigation2D` steps thousands of
such points as one tensor.

HalfCheetah (gymnasium's ``HalfCheetah-v5`` on MuJoCo, built with ``ctrl_cost_weight=0.05``):
direction task ``d`` in {-1, +1}: reward ``d * v_x - 0.05 |a|^2``; velocity task target ``v*`` in
[0, 2]: reward ``-|v_x - v*| - 0.05 |a|^2``, with ``v_x`` = ``info["x_velocity"]`` and the control
cost = ``info["reward_ctrl"]`` as gymnasium returns them. Returns are not comparable bit for bit with
the paper's (MuJoCo 1.5, rllab's cheetah model): compare MAML against ANIL, not against the paper.
"""

from __future__ import annotations

import torch

from repana.errors import ConfigError

ENVIRONMENTS = ("2d-navigation", "halfcheetah-dir", "halfcheetah-vel")
HALFCHEETAH_CTRL_COST = 0.05
MISSING_MUJOCO = "HalfCheetah needs gymnasium with MuJoCo: pip install 'repana[rl]'  (gymnasium[mujoco], mujoco)"


def check_environment(name: str) -> str:
    """Return ``name`` when it is a known environment, else raise ConfigError listing the known ones."""
    if name not in ENVIRONMENTS:
        raise ConfigError(f"unknown RL environment {name!r}; choose one of {', '.join(ENVIRONMENTS)}")
    return name


def observation_size(name: str) -> int:
    return 2 if check_environment(name) == "2d-navigation" else 17


def action_size(name: str) -> int:
    return 2 if check_environment(name) == "2d-navigation" else 6


class Navigation2D:
    """Batched 2-D navigation: ``n_envs`` points, goals ``(n_envs, 2)``.

    ``reset() -> observations (n_envs, 2)`` (all at the origin); ``step(actions (n_envs, 2))`` returns
    ``(observations, rewards (n_envs,), done (n_envs,) bool)``. Environments already done keep stepping
    (the caller masks them out); ``done`` is the termination test of the current step.
    """

    action_bound = 0.1
    goal_tolerance = 0.01

    def __init__(self, goals: torch.Tensor):
        if goals.dim() != 2 or goals.shape[1] != 2:
            raise ConfigError(f"2-D navigation goals must have shape (n_envs, 2), got {tuple(goals.shape)}")
        self.goals = goals
        self.state = torch.zeros_like(goals)

    def reset(self) -> torch.Tensor:
        self.state = torch.zeros_like(self.goals)
        return self.state.clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        actions = actions.to(self.state.dtype).clamp(-self.action_bound, self.action_bound)
        self.state = self.state + actions
        offset = self.state - self.goals
        rewards = -offset.norm(dim=1)
        done = (offset.abs() < self.goal_tolerance).all(dim=1)
        return self.state.clone(), rewards, done


def import_gymnasium():
    """gymnasium with MuJoCo, or ConfigError with the one line that says what to install."""
    try:
        import gymnasium
        import mujoco  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ConfigError(MISSING_MUJOCO) from err
    return gymnasium


def _wrapper_class():
    gymnasium = import_gymnasium()

    class HalfCheetahTask(gymnasium.Wrapper):
        """A HalfCheetah-v5 whose reward is the task's: ``kind`` "dir" (value = direction, +-1) or
        "vel" (value = target forward velocity). ``task_value`` is an attribute so that a vector env
        can set one per sub-environment (``set_attr``). ``info["task_reward"]`` repeats the reward."""

        def __init__(self, env, kind: str, task_value: float = 1.0):
            super().__init__(env)
            if kind not in ("dir", "vel"):
                raise ConfigError(f"unknown HalfCheetah task kind {kind!r}; use 'dir' or 'vel'")
            self.kind = kind
            self.task_value = float(task_value)

        def step(self, action):
            observation, _, terminated, truncated, info = self.env.step(action)
            velocity = float(info["x_velocity"])
            ctrl = float(info["reward_ctrl"])
            if self.kind == "dir":
                reward = self.task_value * velocity + ctrl
            else:
                reward = -abs(velocity - self.task_value) + ctrl
            info["task_reward"] = reward
            return observation, reward, terminated, truncated, info

    return HalfCheetahTask


# MuJoCo >= 3.3 warns, from C straight to stderr, once per model built from gymnasium's half_cheetah.xml
# (it uses the deprecated ``settotalmass``): one line per sub-environment, about the installed
# gymnasium's file, not about anything a repana user can change.
_KNOWN_MODEL_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def _forward_mujoco_warning(message: str) -> None:
    if not message.startswith(_KNOWN_MODEL_WARNINGS):
        import warnings
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def make_halfcheetah(kind: str, horizon: int = 200, task_value: float = 1.0):
    """One HalfCheetah-v5 task environment (control cost weight 0.05, time limit ``horizon``).

    While the model compiles, MuJoCo's warnings go to Python's ``warnings`` (RuntimeWarning) instead
    of stderr, except the known deprecation of gymnasium's own XML (:data:`_KNOWN_MODEL_WARNINGS`)."""
    gymnasium = import_gymnasium()
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_forward_mujoco_warning)
    try:
        env = gymnasium.make("HalfCheetah-v5", ctrl_cost_weight=HALFCHEETAH_CTRL_COST,
                             max_episode_steps=horizon)
    finally:
        mujoco.set_mju_user_warning(previous)
    return _wrapper_class()(env, kind, task_value)


class HalfCheetahFactory:
    """Picklable ``() -> env`` for gymnasium's vector environments (worker processes)."""

    def __init__(self, kind: str, horizon: int):
        self.kind, self.horizon = kind, horizon

    def __call__(self):
        return make_halfcheetah(self.kind, self.horizon)
