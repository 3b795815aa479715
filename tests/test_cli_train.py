"""``repana train`` and ``repana evaluate`` end to end on the glyph set (tiny settings)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from repana.cli import main
from repana.meta.checkpoint import load_checkpoint

TINY = ["--set", "hidden=8", "--set", "meta_batch_size=2", "--set", "val_every=2", "--set", "val_episodes=5",
        "--set", "checkpoint_every=2", "--set", "save_steps=[]", "--set", "threads=1"]


def test_list_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    names = capsys.readouterr().out.split()
    assert "quick" in names and "omniglot-5way-1shot" in names and "miniimagenet-5way-5shot" in names


def test_train_resume_and_evaluate(tmp_path, capsys):
    run = tmp_path / "quick"
    assert main(["train", "--preset", "quick", "--iterations", "4", *TINY, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"anil quick: 4 steps in [\d.]+ s on 1 thread, .*val accuracy [\d.]+% ± [\d.]+", out)
    assert load_checkpoint(run / "checkpoints" / "latest.pt").step == 4

    # resume from the run folder alone, extending it to 6 steps
    assert main(["train", "--out", str(run), "--resume", "--iterations", "6"]) == 0
    assert "6 steps" in capsys.readouterr().out
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt.step == 6 and ckpt.config["iterations"] == 6 and ckpt.config["hidden"] == 8
    metrics = pd.read_csv(run / "metrics.csv")
    # quick logs train rows every 10 steps and at the last step: 4 (first run), then 6
    assert metrics[metrics.split == "train"].step.tolist() == [4, 6]
    assert metrics[metrics.split == "val"].step.tolist() == [2, 4, 6]

    csv_path = tmp_path / "eval.csv"
    assert main(["evaluate", str(run / "checkpoints" / "latest.pt"), "--episodes", "10", "--method", "nil",
                 "--csv", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    match = re.search(r"on 10 test episodes 5-way 1-shot: accuracy ([\d.]+)% ± ([\d.]+)", printed)
    assert match, printed
    frame = pd.read_csv(csv_path)
    assert len(frame) == 10 and set(frame.method) == {"nil"}
    assert float(match.group(1)) == pytest.approx(100 * frame.accuracy.mean(), abs=0.01)
    assert float(match.group(2)) == pytest.approx(100 * 1.96 * frame.accuracy.std(ddof=0) / 10 ** 0.5, abs=0.01)

    # a layer both adapted and frozen is a contradiction, refused; the run's default minus --freeze is not
    assert main(["evaluate", str(run / "checkpoints" / "latest.pt"), "--episodes", "5", "--adapt", "conv4,head",
                 "--freeze", "conv4", "--steps", "1"]) == 1
    assert "--freeze and --adapt both name conv4" in capsys.readouterr().err
    assert main(["evaluate", str(run / "checkpoints" / "latest.pt"), "--episodes", "5", "--adapt", "conv4,head",
                 "--steps", "1"]) == 0
    assert "adapting conv4,head)" in capsys.readouterr().out

    # an existing run is not overwritten without --resume
    assert main(["train", "--preset", "quick", "--iterations", "4", *TINY, "--out", str(run)]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "quick", "--set", "inner_lrr=0.1"], "did you mean 'inner_lr'"),
    (["train", "--preset", "quick", "--set", "inner_steps_train=0", "--algorithm", "maml"], "inner_steps_train = 0"),
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train"], "give --preset NAME or --config FILE"),
    (["train", "--preset", "quick", "--save-steps", "1,x"], "--save-steps"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "--preset", "quick", "--device", "cuda", "--out", str(tmp_path / "r")]) == 1
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_evaluate_rejects_unknown_layers_and_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["evaluate", str(bad)]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_logs_the_csv_scalars_once_per_step_across_a_resume(tmp_path, capsys):
    """A run stopped at step 5 (after its step-4 checkpoint, with steps 1..5 logged) and resumed to 8:
    TensorBoard holds every step once, with the values of metrics.csv."""
    pytest.importorskip("tensorboard")
    from repana.meta.config import load_config
    from repana.meta.train import StopTraining, train
    from repana.tensorboard import TensorBoardLog

    run = tmp_path / "run"
    overrides = {"hidden": 8, "meta_batch_size": 2, "val_every": 3, "val_episodes": 4, "checkpoint_every": 2,
                 "save_steps": [], "threads": 1, "log_every": 1, "iterations": 8}
    config = load_config(preset="quick", overrides=overrides)

    def stop_after_5(step, metrics):
        if step == 5:
            raise StopTraining

    log = TensorBoardLog(run / "tensorboard")
    train(config, run, callback=stop_after_5, loggers=[log], show_progress=False)
    log.close()
    assert [step for step, _ in _tensorboard_scalars(run / "tensorboard")["train/loss"]] == [1, 2, 3, 4, 5]

    assert main(["train", "--out", str(run), "--resume", "--tensorboard"]) == 0
    assert "8 steps" in capsys.readouterr().out
    scalars = _tensorboard_scalars(run / "tensorboard")
    metrics = pd.read_csv(run / "metrics.csv")
    for split in ("train", "val"):
        rows = metrics[metrics.split == split]
        for column in ("loss", "accuracy", "elapsed_s"):
            tag = f"{split}/{column}"
            expected = [(int(s), float(v)) for s, v in zip(rows.step, rows[column]) if v == v]
            if not expected:
                assert tag not in scalars
                continue
            assert [s for s, _ in scalars[tag]] == [s for s, _ in expected], tag  # once per step, in order
            assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in expected], rel=1e-5, abs=1e-3)
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 9))
    assert [s for s, _ in scalars["val/accuracy"]] == [3, 6, 8]


def test_tensorboard_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    assert main(["train", "--preset", "quick", "--tensorboard", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("repana train: error: TensorBoard logging needs the tensorboard package, which is not "
                   "installed: pip install 'repana[tensorboard]' (or: pip install tensorboard)")
    assert not (tmp_path / "r").exists()


def test_a_short_run_keeps_the_presets_checkpoints_that_fit_and_says_so(tmp_path, capsys):
    run = tmp_path / "short"
    assert main(["train", "--preset", "quick", "--set", "iterations=2", "--set", "hidden=8",
                 "--set", "val_episodes=5", "--set", "threads=1", "--out", str(run)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["repana train: warning: iterations = 2: the preset quick's save_steps [100, 200] lie beyond the "
                   "run, so only [0] are kept (set save_steps to choose others)"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.pt", "step_000000.pt",
                                                                       "step_000002.pt"]


def test_two_trains_on_one_run_folder_the_second_names_the_first(tmp_path, capsys):
    """A second writer is refused with the holder's pid; metrics.csv has each step once."""
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    root = Path(__file__).resolve().parents[1]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from repana.run_lock import locked_run_folder\n"
                               "with locked_run_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
                               str(run)], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--preset", "quick", "--iterations", "2", *TINY, "--out", str(run)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == (f"repana train: error: run folder {run} is in use: process {holder.pid} is training in it "
                       f"(lock {run / '.repana.lock'}); wait for it to end or choose another --out")
        assert not (run / "metrics.csv").exists() and not (run / "config.toml").exists()
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's lock file is left behind; the kernel released its lock, so the run takes it over
    assert (run / ".repana.lock").read_text().strip() == str(holder.pid)
    assert main(["train", "--preset", "quick", "--iterations", "2", *TINY, "--out", str(run)]) == 0
    steps = pd.read_csv(run / "metrics.csv").query("split == 'train'").step.tolist()
    assert steps == [2]
