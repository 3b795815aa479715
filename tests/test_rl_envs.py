"""RL environments and task samplers: rewards and termination against the formulas, seeding."""

import numpy as np
import pytest
import torch

from repana.errors import ConfigError
from repana.rl.envs import HALFCHEETAH_CTRL_COST, Navigation2D, check_environment, import_gymnasium
from repana.rl.tasks import TaskSampler, draw_tasks


def test_navigation_reward_clip_and_termination():
    goals = torch.tensor([[0.3, -0.2], [0.05, 0.0], [0.0, 0.0]], dtype=torch.float64)
    env = Navigation2D(goals)
    assert torch.equal(env.reset(), torch.zeros(3, 2, dtype=torch.float64))
    actions = torch.tensor([[1.0, -1.0], [0.045, 0.005], [0.2, 0.0]], dtype=torch.float64)
    obs, reward, done = env.step(actions)
    expected_state = torch.tensor([[0.1, -0.1], [0.045, 0.005], [0.1, 0.0]], dtype=torch.float64)
    assert torch.allclose(obs, expected_state)       # actions clipped to +-0.1
    expected_reward = -torch.linalg.norm(expected_state - goals, dim=1)
    assert torch.allclose(reward, expected_reward)
    assert reward[0].item() == pytest.approx(-np.hypot(0.2, 0.1))
    # env 1 is within 0.01 of its goal in both coordinates (0.005, 0.005) -> done; others not
    assert done.tolist() == [False, True, False]


def test_navigation_tolerance_is_per_coordinate():
    env = Navigation2D(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    env.reset()
    _, _, done = env.step(torch.tensor([[0.0099, 0.0]], dtype=torch.float64))
    assert done.item()
    env.reset()
    _, _, done = env.step(torch.tensor([[0.0101, 0.0]], dtype=torch.float64))
    assert not done.item()


def test_task_distributions_and_seeding():
    rng = np.random.default_rng(0)
    goals = draw_tasks("2d-navigation", 2000, rng)
    assert goals.shape == (2000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert abs(goals.mean().item()) < 0.02
    dirs = draw_tasks("halfcheetah-dir", 1000, rng)
    assert set(dirs.flatten().tolist()) == {-1.0, 1.0}
    vels = draw_tasks("halfcheetah-vel", 1000, rng)
    assert vels.min() >= 0 and vels.max() <= 2 and abs(vels.mean().item() - 1) < 0.06
    a, b = TaskSampler("2d-navigation", 7), TaskSampler("2d-navigation", 7)
    a.sample(3)
    state = a.state_dict()
    first = a.sample(5)
    b.load_state_dict(state)
    assert torch.equal(first, b.sample(5))


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match="unknown RL environment 'cartpole'.*2d-navigation"):
        check_environment("cartpole")
    with pytest.raises(ConfigError, match="unknown RL environment"):
        TaskSampler("HalfCheetah", 0)


def test_missing_mujoco_names_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'repana\[rl\]'"):
        import_gymnasium()


@pytest.fixture
def mujoco_available():
    pytest.importorskip("mujoco", reason="MuJoCo missing: pip install repana[rl] to test HalfCheetah")
    pytest.importorskip("gymnasium", reason="gymnasium missing: pip install repana[rl]")


@pytest.mark.parametrize("kind,value", [("dir", 1.0), ("dir", -1.0), ("vel", 0.7)])
def test_halfcheetah_reward_matches_gymnasium_info(mujoco_available, kind, value):
    from repana.rl.envs import make_halfcheetah
    env = make_halfcheetah(kind, horizon=50, task_value=value)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    dt = env.unwrapped.dt
    x_before = env.unwrapped.data.qpos[0]
    for _ in range(10):
        action = rng.uniform(-1, 1, size=6).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        ctrl = -HALFCHEETAH_CTRL_COST * float(np.sum(action.astype(np.float64) ** 2))
        assert info["reward_ctrl"] == pytest.approx(ctrl, rel=1e-5)
        velocity = (info["x_position"] - x_before) / dt
        assert info["x_velocity"] == pytest.approx(velocity, rel=1e-6, abs=1e-9)
        task = value * velocity if kind == "dir" else -abs(velocity - value)
        assert reward == pytest.approx(task + ctrl, rel=1e-5, abs=1e-7)
        assert not terminated and not truncated
        x_before = info["x_position"]
    env.close()


def test_halfcheetah_build_is_quiet_and_other_mujoco_warnings_reach_python(mujoco_available, capfd):
    import mujoco

    from repana.rl.envs import _forward_mujoco_warning, make_halfcheetah

    env = make_halfcheetah("dir")
    env.close()
    assert "settotalmass" not in capfd.readouterr().err  # gymnasium's XML deprecation, once per sub-env
    assert mujoco.get_mju_user_warning() is None          # the user's handler (none) is restored
    with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
        _forward_mujoco_warning("something else")
