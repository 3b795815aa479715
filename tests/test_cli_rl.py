"""``repana train`` / ``repana evaluate`` on the RL side (repana.rl), and their bad-input lines."""

from __future__ import annotations

import sys
import tomllib

import pandas as pd
import pytest
import torch

from repana.cli import main
from repana.meta.checkpoint import load_checkpoint
from cli_helpers import one_line_error

TINY = ["--set", "meta_batch_size=2", "--set", "fast_batch_size=2", "--set", "horizon=10",
        "--set", "hidden_sizes=[8, 8]", "--set", "checkpoint_every=1", "--set", 'dtype="float64"']



@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli-rl") / "nav"
    assert main(["train", "--preset", "rl-2dnav", "--out", str(run), "--iterations", "2", *TINY]) == 0
    return run


def test_train_writes_an_rl_run_folder(nav_run):
    data = load_checkpoint(nav_run / "checkpoints" / "latest.pt", kind="rl")
    assert data.step == 2 and data.config["meta_batch_size"] == 2
    assert data.config["hidden_sizes"] == [8, 8] and data.config["dtype"] == "float64"
    metrics = pd.read_csv(nav_run / "metrics.csv")
    assert list(metrics["iteration"]) == [0, 1]
    assert (metrics["return_before"] < 0).all() and (metrics["return_after"] < 0).all()
    assert 'env = "2d-navigation"' in (nav_run / "config.toml").read_text()


def test_resume_through_the_cli_is_exact(tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", "--preset", "rl-2dnav", "--out", str(full), "--iterations", "3", "--seed", "4",
                 "--algorithm", "anil", *TINY]) == 0
    assert main(["train", "--preset", "rl-2dnav", "--out", str(split), "--iterations", "2", "--seed", "4",
                 "--algorithm", "anil", *TINY]) == 0
    # without a source: the run folder's own config, iterations raised
    assert main(["train", "--out", str(split), "--resume", "--iterations", "3"]) == 0
    assert "anil 2d-navigation: 3 meta-updates" in capsys.readouterr().out
    a = load_checkpoint(full / "checkpoints" / "latest.pt", kind="rl")
    b = load_checkpoint(split / "checkpoints" / "latest.pt", kind="rl")
    assert a.step == b.step == 3 and a.config["algorithm"] == "anil"
    for name in a.state_dict:
        assert torch.equal(a.state_dict[name], b.state_dict[name]), name
    drop = ("elapsed_s",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in b.history]


def test_train_from_an_rl_toml_config(tmp_path, capsys):
    config = tmp_path / "nav.toml"
    config.write_text('env = "2d-navigation"\nalgorithm = "fomaml"\niterations = 1\nmeta_batch_size = 2\n'
                      'fast_batch_size = 2\nhorizon = 5\nhidden_sizes = [4, 4]\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    assert "fomaml 2d-navigation: 1 meta-updates" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt", kind="rl").config["horizon"] == 5


def test_train_takes_the_supervised_key_names_and_the_former_rl_ones(tmp_path):
    assert main(["train", "--preset", "rl-2dnav", "--set", "threads=1", "--set", "iterations=1",
                 "--set", "inner_lr=0.05", *TINY, "--out", str(tmp_path / "new")]) == 0
    assert main(["train", "--preset", "rl-2dnav", "--set", "torch_threads=1", "--set", "iterations=1",
                 "--set", "fast_lr=0.05", *TINY, "--out", str(tmp_path / "old")]) == 0
    new = load_checkpoint(tmp_path / "new" / "checkpoints" / "latest.pt", kind="rl")
    old = load_checkpoint(tmp_path / "old" / "checkpoints" / "latest.pt", kind="rl")
    assert new.config == old.config and (new.config["threads"], new.config["inner_lr"]) == (1, 0.05)
    written = tomllib.loads((tmp_path / "old" / "config.toml").read_text())
    assert (written["threads"], written["inner_lr"]) == (1, 0.05) and "torch_threads" not in written
    for name in new.state_dict:
        assert torch.equal(new.state_dict[name], old.state_dict[name]), name


def test_list_presets_names_the_rl_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    names = capsys.readouterr().out.split()
    assert {"quick", "rl-2dnav", "rl-halfcheetah-dir", "rl-halfcheetah-vel"} <= set(names)


def test_evaluate_reports_returns_before_and_after(nav_run, tmp_path, capsys):
    csv = tmp_path / "tasks.csv"
    assert main(["evaluate", str(nav_run / "checkpoints" / "latest.pt"), "--episodes", "6", "--seed", "3",
                 "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "maml 2d-navigation iteration 2" in out and "6 held-out tasks (fixed, seed 3)" in out
    assert "return before adaptation -" in out and "(mean ± 95% CI over tasks)" in out
    frame = pd.read_csv(csv)
    assert len(frame) == 6 and list(frame["task"]) == list(range(6))
    assert (frame["return_before"] < 0).all() and (frame["return_after"] < 0).all()
    assert frame["return_before"].nunique() == 6
    assert (frame["env"] == "2d-navigation").all() and (frame["iteration"] == 2).all()
    # the printed mean is the CSV's
    assert f"return before adaptation {frame['return_before'].mean():.2f} ±" in out


def test_evaluate_defaults_to_the_runs_own_tasks(nav_run, tmp_path, capsys):
    from repana.rl.evaluate import evaluation_tasks

    csv = tmp_path / "tasks.csv"
    assert main(["evaluate", str(nav_run / "checkpoints" / "latest.pt"), "--episodes", "5", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "5 held-out tasks (per-seed sample: SeedSequence(0, spawn_key=(1048576,)))" in out
    expected, _, _ = evaluation_tasks("2d-navigation", 5, 0)
    assert pd.read_csv(csv)[["task_value_0", "task_value_1"]].to_numpy() == pytest.approx(expected.numpy())


@pytest.mark.parametrize("flags, needles", [
    (["--tensorboard"], ["--tensorboard only applies to supervised training", "rl-2dnav"]),
    (["--save-steps", "0", "1", "--data-root", "d"], ["--save-steps, --data-root only apply"]),
    (["--device", "cuda"], ["--device cuda only applies to supervised training"]),
    (["--set", "bogus=1"], ["unknown RL config keys ['bogus']"]),
    (["--set", "threads=1", "--set", "torch_threads=2"], ["both torch_threads = 2 and threads = 1"]),
    (["--algorithm", "reptile"], ["unknown RL algorithm 'reptile'"]),
])
def test_train_bad_rl_flags_one_line(tmp_path, capsys, flags, needles):
    assert main(["train", "--preset", "rl-2dnav", "--out", str(tmp_path / "run"), *flags]) == 1
    one_line_error(capsys, *needles)
    assert not (tmp_path / "run").exists()


def test_train_unknown_rl_preset_and_existing_run(nav_run, capsys):
    assert main(["train", "--preset", "rl-ant", "--out", str(nav_run)]) == 1
    one_line_error(capsys, "unknown RL preset 'rl-ant'", "rl-2dnav, rl-halfcheetah-dir, rl-halfcheetah-vel")
    assert main(["train", "--preset", "rl-2dnav", "--out", str(nav_run), *TINY]) == 1
    one_line_error(capsys, "already holds an RL run; add --resume")


def test_missing_mujoco_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)   # import mujoco raises ImportError
    assert main(["train", "--preset", "rl-halfcheetah-vel", "--out", str(tmp_path / "hc")]) == 1
    one_line_error(capsys, "pip install 'repana[rl]'")
    assert not (tmp_path / "hc").exists()


@pytest.mark.parametrize("flags, needles", [
    (["--freeze", "conv1"], ["--freeze only applies to supervised checkpoints"]),
    (["--method", "nil", "--adapt", "head"], ["--method, --adapt only apply"]),
    (["--steps", "3", "--split", "val"], ["--steps, --split val only apply"]),
])
def test_evaluate_supervised_flags_on_an_rl_checkpoint(nav_run, capsys, flags, needles):
    assert main(["evaluate", str(nav_run / "checkpoints" / "latest.pt"), *flags]) == 1
    one_line_error(capsys, "is an RL checkpoint", *needles)


def test_supervised_commands_name_the_rl_commands(nav_run, tmp_path, capsys):
    checkpoint = str(nav_run / "checkpoints" / "latest.pt")
    assert main(["predict", checkpoint, "--support", str(tmp_path), "--query", str(tmp_path)]) == 1
    one_line_error(capsys, "is an RL checkpoint", "repana evaluate", "repana train --out RUN --resume")
    assert main(["analyze", "maml_anil_similarity", "--checkpoint", checkpoint, "--checkpoint", checkpoint,
                 "--out", str(tmp_path / "a")]) == 1
    one_line_error(capsys, "is an RL checkpoint", "repana evaluate")


def test_halfcheetah_smoke_through_the_cli(tmp_path, capsys):
    pytest.importorskip("mujoco", reason="MuJoCo missing: pip install 'repana[rl]'")
    pytest.importorskip("gymnasium", reason="gymnasium missing: pip install 'repana[rl]'")
    run = tmp_path / "hc"
    assert main(["train", "--preset", "rl-halfcheetah-dir", "--out", str(run), "--iterations", "1",
                 "--set", "meta_batch_size=2", "--set", "fast_batch_size=1", "--set", "horizon=5",
                 "--set", "n_envs=1", "--set", 'vector_mode="sync"', "--set", "hidden_sizes=[8, 8]"]) == 0
    assert "maml halfcheetah-dir: 1 meta-updates" in capsys.readouterr().out
    assert main(["evaluate", str(run / "checkpoints" / "latest.pt"), "--episodes", "2"]) == 0
    assert "halfcheetah-dir iteration 1, one adaptation step on 2 held-out tasks" in capsys.readouterr().out
