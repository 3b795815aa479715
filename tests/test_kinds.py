"""The run kinds as data (repana.runs.kinds): one path for supervised and RL runs."""

from __future__ import annotations

import pytest

from repana.errors import CheckpointError, ConfigError
from repana.meta.checkpoint import Checkpoint, as_checkpoint, checkpoint_kind, load_checkpoint
from repana.meta.config import TrainConfig, list_presets, load_config
from repana.rl.config import RLConfig, load_preset
from repana.rl.presets import PRESETS as RL_PRESETS
from repana.runs.kinds import KINDS, RL, SUPERVISED, get_kind, kind_of_config, kind_of_run_folder, kind_of_values

SHARED = {"threads": 1, "inner_lr": 0.25, "seed": 7, "meta_batch_size": 2, "checkpoint_every": 5}


def _preset_values(kind, name: str) -> dict:
    return load_preset(name).to_dict() if kind is RL else load_config(preset=name).to_dict()


@pytest.mark.parametrize("kind, name", [(SUPERVISED, n) for n in list_presets()] + [(RL, n) for n in RL_PRESETS])
def test_every_preset_takes_the_shared_vocabulary(kind, name):
    """threads, inner_lr, seed, meta_batch_size and checkpoint_every mean the same in every preset
    of either kind; the kind of the values is found from the values themselves."""
    values = {**_preset_values(kind, name), **SHARED}
    assert kind_of_values(values) is kind
    config = kind.config_from_dict(values, f"preset {name}")
    assert isinstance(config, RLConfig if kind is RL else TrainConfig) and kind_of_config(config) is kind
    assert {key: getattr(config, key) for key in SHARED} == SHARED
    again = kind.config_from_dict(__import__("tomllib").loads(kind.config_toml(config)), "its TOML")
    assert again == config


def test_get_kind_and_run_folders(tmp_path):
    assert set(KINDS) == {"supervised", "rl"} and get_kind("rl") is RL and repr(RL) == "RunKind('rl')"
    with pytest.raises(ConfigError, match="unknown run kind 'meta'; kinds: supervised, rl"):
        get_kind("meta")
    assert kind_of_run_folder(tmp_path) is None
    (tmp_path / "config.toml").write_text(RL.config_toml(load_preset("rl-2dnav")))
    assert kind_of_run_folder(tmp_path) is RL
    (tmp_path / "config.toml").write_text("not = [toml")
    with pytest.raises(ConfigError, match="not a readable TOML config"):
        kind_of_run_folder(tmp_path)
    # a resume may change these keys only: the run's results do not depend on them
    assert {"iterations", "checkpoint_every", "threads"} == RL.resumable_changes < SUPERVISED.resumable_changes
    assert RL.canonical_values({"fast_lr": 0.1, "torch_threads": 2}) == {"inner_lr": 0.1, "threads": 2}
    assert SUPERVISED.newest_step(tmp_path) is None and RL.newest_step(tmp_path) is None


def test_rl_runs_train_on_the_cpu(tmp_path):
    with pytest.raises(ConfigError, match="RL runs train on the CPU"):
        RL.train(load_preset("rl-2dnav"), tmp_path, device="cuda")


def test_one_checkpoint_type_for_both_kinds(tmp_path):
    """load_checkpoint reads either kind when asked for none, refuses the other kind when asked for one,
    and the RL checkpoint rebuilds its policy and RLConfig."""
    from repana.rl.train import train_rl

    config = RLConfig(env="2d-navigation", meta_batch_size=2, fast_batch_size=2, horizon=5, hidden_sizes=[4],
                      cg_iters=2, dtype="float64", iterations=2, checkpoint_every=1, threads=1)
    train_rl(config, tmp_path / "run", show_progress=False)
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    checkpoint = load_checkpoint(path, kind=None)
    assert isinstance(checkpoint, Checkpoint) and checkpoint_kind(path) == "rl"
    assert (checkpoint.kind, checkpoint.algorithm, checkpoint.env, checkpoint.step) == ("rl", "maml", "2d-navigation", 2)
    assert [row["iteration"] for row in checkpoint.history] == [0, 1] and checkpoint.metrics == checkpoint.history[-1]
    assert checkpoint.train_config() == config and RL.newest_step(tmp_path / "run") == 2
    policy = checkpoint.model()
    assert {name: tuple(p.shape) for name, p in policy.named_parameters()}["layer1.weight"] == (4, 2)
    assert as_checkpoint(checkpoint, kind="rl") is checkpoint
    with pytest.raises(CheckpointError, match="is an RL checkpoint .*`repana evaluate` takes it"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is an RL checkpoint"):
        as_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="is a supervised checkpoint; it has no environment"):
        Checkpoint(model_config={}, algorithm="maml", config={}, state_dict={}, step=0).env
    assert checkpoint_kind(tmp_path / "run" / "config.toml") is None
