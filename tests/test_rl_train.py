"""RL training: seeded determinism, exact resume, smoke runs, evaluation, similarity, bad input."""

import math

import pandas as pd
import pytest
import torch

from repana.errors import CheckpointError, ConfigError
from repana.rl import train as rl_train
from repana.meta.checkpoint import checkpoint_kind, load_checkpoint, save_rl_checkpoint
from repana.rl.config import RLConfig, load_preset
from repana.rl.train import PolicyDivergedError, train_rl

TINY_NAV = dict(env="2d-navigation", meta_batch_size=3, fast_batch_size=4, horizon=20,
                hidden_sizes=[8, 8], cg_iters=3, dtype="float64", checkpoint_every=1)


def _state(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt", kind="rl")


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def test_presets_load():
    nav = load_preset("rl-2dnav")
    assert (nav.meta_batch_size, nav.fast_batch_size, nav.horizon, nav.inner_lr) == (20, 20, 100, 0.1)
    assert (nav.max_kl, nav.cg_iters, nav.cg_damping, nav.ls_max_steps, nav.ls_backtrack_ratio) == \
        (0.01, 10, 1e-5, 15, 0.8)
    assert nav.hidden_sizes == [100, 100] and nav.gamma == 0.99 and nav.gae_lambda == 1.0
    for name, env in (("rl-halfcheetah-dir", "halfcheetah-dir"), ("rl-halfcheetah-vel", "halfcheetah-vel")):
        cfg = load_preset(name)
        assert (cfg.env, cfg.meta_batch_size, cfg.horizon) == (env, 40, 200)
    with pytest.raises(ConfigError, match="unknown RL preset"):
        load_preset("rl-ant")
    with pytest.raises(ConfigError, match="unknown RL config keys"):
        RLConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ConfigError, match="unknown RL environment"):
        RLConfig(env="pong")


def test_preset_registry_names_every_bundled_file_and_its_environment():
    from importlib import resources

    from repana.rl.presets import PRESETS

    files = sorted(path.name for path in resources.files("repana.rl.presets").iterdir() if path.name.endswith(".toml"))
    assert files == sorted(f"{name}.toml" for name in PRESETS)
    assert {name: load_preset(name).env for name in PRESETS} == PRESETS


def test_former_key_names_load_into_the_current_fields(tmp_path):
    from repana.rl.config import resolve_config

    path = tmp_path / "old.toml"
    path.write_text('env = "2d-navigation"\nfast_lr = 0.3\ntorch_threads = 2\n')
    config = resolve_config(str(path))
    assert (config.inner_lr, config.threads) == (0.3, 2)
    assert "fast_lr" not in config.to_dict() and "torch_threads" not in config.to_dict()
    assert RLConfig.from_dict({"env": "2d-navigation", "fast_lr": 0.3, "inner_lr": 0.3}).inner_lr == 0.3
    assert config.replace(torch_threads=1, fast_lr=0.2) == config.replace(threads=1, inner_lr=0.2)


@pytest.mark.parametrize("values", [{"fast_lr": 0.3, "inner_lr": 0.1}, {"torch_threads": 2, "threads": 1}])
def test_a_former_and_a_current_key_with_different_values_are_refused(values):
    old, new = values
    with pytest.raises(ConfigError, match=rf"both {old} = .* and {new} = "):
        RLConfig.from_dict({"env": "2d-navigation", **values})
    with pytest.raises(ConfigError, match=rf"both {old} = .* and {new} = "):
        RLConfig().replace(**values)


def test_a_checkpoint_with_former_key_names_loads_and_resumes(tmp_path):
    """A run whose checkpoint and config.toml use ``fast_lr`` / ``torch_threads`` (as runs of earlier
    versions do) loads its policy and config, and resumes exactly as the run with the current names."""
    from repana.cli import main

    config = RLConfig(**TINY_NAV, iterations=1, threads=1, inner_lr=0.2)
    train_rl(config, tmp_path / "new", show_progress=False)
    train_rl(config, tmp_path / "old", show_progress=False)
    latest = tmp_path / "old" / "checkpoints" / "latest.pt"
    data = load_checkpoint(latest, kind="rl")
    old_config = {("fast_lr" if k == "inner_lr" else "torch_threads" if k == "threads" else k): v
                  for k, v in data.config.items()}
    save_rl_checkpoint(latest, config=old_config, policy_config=data.model_config, state_dict=data.state_dict,
                       iteration=data.step, rng=data.rng, metrics=data.history, runtime=data.runtime)
    toml = tmp_path / "old" / "config.toml"
    toml.write_text(toml.read_text().replace("inner_lr =", "fast_lr =").replace("threads =", "torch_threads ="))
    assert "fast_lr" in load_checkpoint(latest, kind="rl").config
    loaded = load_checkpoint(latest, kind="rl").train_config()
    assert loaded == config
    for run in ("old", "new"):
        assert main(["train", "--out", str(tmp_path / run), "--resume", "--iterations", "2"]) == 0
    old, new = _state(tmp_path / "old"), _state(tmp_path / "new")
    assert old.config == new.config and old.config["inner_lr"] == 0.2
    assert _without_time(old.history) == _without_time(new.history)
    for name in new.state_dict:
        assert torch.equal(old.state_dict[name], new.state_dict[name]), name


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_seeded_runs_are_identical(tmp_path, algorithm):
    a = train_rl(TINY_NAV, tmp_path / "a", algorithm=algorithm, iterations=2)
    b = train_rl(TINY_NAV, tmp_path / "b", algorithm=algorithm, iterations=2)
    sa, sb = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert _without_time([a]) == _without_time([b])
    assert _without_time(sa.history) == _without_time(sb.history)
    for name in sa.state_dict:
        assert torch.equal(sa.state_dict[name], sb.state_dict[name])
    c = train_rl(TINY_NAV, tmp_path / "c", algorithm=algorithm, iterations=2, seed=1)
    assert c["return_before"] != a["return_before"]


def test_resume_is_exact(tmp_path):
    train_rl(TINY_NAV, tmp_path / "full", iterations=4)

    class Stop(Exception):
        pass

    def interrupt(iteration, metrics):
        if iteration == 1:
            raise Stop

    with pytest.raises(Stop):
        train_rl(TINY_NAV, tmp_path / "cut", iterations=4, callback=interrupt)
    assert _state(tmp_path / "cut").step == 2
    train_rl(TINY_NAV, tmp_path / "cut", iterations=4)
    full, cut = _state(tmp_path / "full"), _state(tmp_path / "cut")
    assert cut.step == 4
    assert _without_time(full.history) == _without_time(cut.history)
    for name in full.state_dict:
        assert torch.equal(full.state_dict[name], cut.state_dict[name])
    csv = pd.read_csv(tmp_path / "cut" / "metrics.csv")
    assert csv["iteration"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="already holds an RL run"):
        train_rl(TINY_NAV, tmp_path / "cut", iterations=5, resume=False)
    with pytest.raises(ConfigError, match=r"differs in \['inner_lr'\]"):
        train_rl(TINY_NAV, tmp_path / "cut", iterations=5, inner_lr=0.2)


def test_navigation_smoke_three_iterations(tmp_path):
    config = dict(TINY_NAV, dtype="float32", hidden_sizes=[100, 100], cg_iters=10)
    last = train_rl(config, tmp_path / "run", iterations=3, algorithm="maml")
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(frame) == 3 and frame[["return_before", "return_after"]].notna().all().all()
    assert -200 < last["return_before"] < 0 and last["env_steps"] == 2 * 3 * 4 * 20
    assert (tmp_path / "run" / "config.toml").read_text().count("2d-navigation") == 1
    assert (checkpoint_kind(tmp_path / "run" / "checkpoints" / "latest.pt") == "rl")


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = rl_train.meta_iteration
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        metrics = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            metrics["return_after"] = math.nan
        return metrics

    monkeypatch.setattr(rl_train, "meta_iteration", flaky)
    with pytest.raises(PolicyDivergedError, match="non-finite return_after.*latest.pt holds the last good"):
        train_rl(TINY_NAV, tmp_path / "run", iterations=5)
    state = _state(tmp_path / "run")
    assert state.step == 2 and len(state.history) == 2
    monkeypatch.setattr(rl_train, "meta_iteration", real)
    with pytest.raises(PolicyDivergedError, match="log_std"):
        train_rl(TINY_NAV, tmp_path / "std", iterations=2, max_abs_log_std=1e-9)
    assert not (tmp_path / "std" / "checkpoints" / "latest.pt").exists()


def test_non_rl_checkpoint_is_refused(tmp_path):
    path = tmp_path / "supervised.pt"
    torch.save({"format": "repana-checkpoint", "format_version": 1, "state_dict": {}}, path)
    assert not (checkpoint_kind(path) == "rl")
    with pytest.raises(CheckpointError, match="not an RL checkpoint.*'repana-checkpoint'.*supervised"):
        load_checkpoint(path, kind="rl")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(junk, kind="rl")
    from repana.rl.evaluate import evaluate_rl
    with pytest.raises(CheckpointError):
        evaluate_rl(path)


def test_evaluate_and_policy_similarity(tmp_path):
    train_rl(TINY_NAV, tmp_path / "anil", iterations=1, algorithm="anil", dtype="float64")
    from repana.rl.analysis import policy_similarity
    from repana.rl.evaluate import evaluate_rl
    ckpt = tmp_path / "anil" / "checkpoints" / "latest.pt"
    frame, summary = evaluate_rl(ckpt, n_tasks=6, n_trajectories=4)
    assert len(frame) == 6 and summary["n_tasks"] == 6 and summary["algorithm"] == "anil"
    assert summary["return_after"] == pytest.approx(frame["return_after"].mean())
    assert summary["return_after_ci95"] > 0
    again, _ = evaluate_rl(ckpt, n_tasks=6, n_trajectories=4)
    pd.testing.assert_frame_equal(frame, again)
    sim = policy_similarity(ckpt, n_tasks=2, measures=("svcca", "cka"))
    body = sim[sim.layer.isin(["layer1", "layer2"])]
    assert len(body) == 2 * 2 * 2 and body["value"].to_numpy() == pytest.approx(1.0, abs=1e-9)
    assert set(sim.layer) == {"layer1", "layer2", "mu"} and (sim.algorithm == "anil").all()


@pytest.fixture
def mujoco_available():
    pytest.importorskip("mujoco", reason="MuJoCo missing: pip install repana[rl] to run HalfCheetah tests")


@pytest.mark.parametrize("env", ["halfcheetah-dir", "halfcheetah-vel"])
def test_halfcheetah_smoke_three_iterations(tmp_path, mujoco_available, env):
    config = dict(env=env, meta_batch_size=2, fast_batch_size=2, horizon=15, hidden_sizes=[16, 16],
                  cg_iters=3, n_envs=3, vector_mode="sync", checkpoint_every=1)
    last = train_rl(config, tmp_path / "run", iterations=3, algorithm="anil")
    assert last["iteration"] == 2 and last["env_steps"] == 2 * 2 * 2 * 15
    assert math.isfinite(last["return_after"])
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", kind="rl").step == 3


def test_async_workers_give_the_same_rollouts_as_in_process(mujoco_available):
    from repana.rl.policy import GaussianMLPPolicy
    from repana.rl.sampler import HalfCheetahSampler
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, hidden_sizes=(8,)).double()
    params = {n: p.detach() for n, p in policy.params().items()}
    tasks = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    out = {}
    for mode in ("sync", "async"):
        with HalfCheetahSampler("halfcheetah-vel", horizon=10, n_envs=2, mode=mode) as sampler:
            out[mode] = sampler.sample(policy, params, tasks, 3, torch.Generator().manual_seed(5))
    assert out["sync"].rewards.shape == (2, 3, 10)
    assert torch.equal(out["sync"].observations, out["async"].observations)
    assert torch.equal(out["sync"].rewards, out["async"].rewards)
    # trajectories differ (seeded resets and action noise), tasks change the reward
    assert not torch.equal(out["sync"].rewards[0, 0], out["sync"].rewards[0, 1])


def test_supervised_loader_refuses_an_rl_checkpoint(tmp_path):
    from repana.meta.checkpoint import load_checkpoint
    train_rl(TINY_NAV, tmp_path / "run", iterations=1)
    with pytest.raises(CheckpointError, match="is an RL checkpoint .*`repana evaluate` takes it"):
        load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")


def test_cli_reports_rl_errors_in_one_line(tmp_path, capsys):
    from repana.cli import main
    path = tmp_path / "supervised.pt"
    torch.save({"format": "repana-checkpoint"}, path)
    assert main(["evaluate", str(path)]) == 1   # not an RL checkpoint: the supervised loader reports it
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("repana evaluate: error:") and "Traceback" not in err
    assert main(["train", "--preset", "rl-ant", "--out", str(tmp_path / "x")]) == 1
    assert "unknown RL preset 'rl-ant'; choose one of rl-2dnav" in capsys.readouterr().err


# ----- integrity and threads of RL runs -----

def test_rl_checkpoint_carries_a_checksum_verified_on_load(tmp_path, keep_torch_threads):
    train_rl(RLConfig(**TINY_NAV, iterations=1), tmp_path / "run", show_progress=False)
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    payload = torch.load(latest, weights_only=True)
    assert payload["checksum"]["algorithm"] == "sha256" and payload["runtime"]["threads"] >= 1
    payload["state_dict"]["mu.bias"][0] += 1e-12            # one weight changed after writing
    torch.save(payload, tmp_path / "changed.pt")
    with pytest.raises(CheckpointError, match=r"changed\.pt: checksum mismatch: the file is corrupt"):
        load_checkpoint(tmp_path / "changed.pt", kind="rl")
    payload = torch.load(latest, weights_only=True)
    payload["state_dict"]["log_std"][0] = float("nan")
    del payload["checksum"]                                 # an older checkpoint: no checksum, still checked
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="non-finite weights .* in log_std"):
        load_checkpoint(tmp_path / "nan.pt", kind="rl")


def test_rl_thread_count_sources():
    from repana.rl.train import rl_training_threads

    config = RLConfig(**TINY_NAV)
    assert rl_training_threads(config.replace(threads=3), saved=1, environ={}) == (3, "config")
    assert rl_training_threads(config, saved=2, environ={"REPANA_THREADS": "1"}) == (1, "REPANA_THREADS")
    assert rl_training_threads(config, saved=2, environ={}) == (2, "checkpoint")
    assert rl_training_threads(config, saved=None, environ={}) == (1, "automatic")   # 3 x 4 x 20 tiny states
    paper_nav = load_preset("rl-2dnav")
    assert rl_train.rl_forward_macs(paper_nav) == 20 * 20 * 100 * (2 * 100 + 100 * 100 + 100 * 2)
    threads, source = rl_training_threads(paper_nav, saved=None, environ={})
    assert source == "automatic" and threads >= 1   # the idle cores: load dependent


@pytest.fixture
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_rl_resume_keeps_the_recorded_threads_and_refuses_an_explicit_change(tmp_path, monkeypatch,
                                                                           keep_torch_threads):
    monkeypatch.delenv("REPANA_ALLOW_THREAD_CHANGE", raising=False)
    monkeypatch.delenv("REPANA_THREADS", raising=False)
    config = RLConfig(**TINY_NAV, iterations=1, threads=1)
    train_rl(config, tmp_path / "run", show_progress=False)
    with pytest.raises(ConfigError, match=r"trained with 1 torch threads, this process would continue with 2.*"
                                          r"--set threads=1"):
        train_rl(config.replace(iterations=2, threads=2), tmp_path / "run", show_progress=False)
    train_rl(config.replace(iterations=2, threads=0), tmp_path / "run", show_progress=False)  # recorded: 1
    assert torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)["runtime"]["threads"] == 1
    monkeypatch.setenv("REPANA_ALLOW_THREAD_CHANGE", "1")
    train_rl(config.replace(iterations=3, threads=2), tmp_path / "run", show_progress=False)


def test_a_held_run_folder_is_refused_before_any_work(tmp_path):
    import os

    from repana.run_lock import RunFolderBusy, locked_run_folder

    with locked_run_folder(tmp_path / "run"):
        with pytest.raises(RunFolderBusy, match=f"is in use: process {os.getpid()} is training in it"):
            train_rl(dict(TINY_NAV, dtype="float32"), tmp_path / "run", iterations=1, algorithm="maml")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".repana.lock"]
