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
    assert re.search(r"anil quick: 4 steps in [\d.]+ s, .*val accuracy [\d.]+% ± [\d.]+", out)
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

    # adapting conv4 + head with conv4 frozen leaves only the head adapting
    assert main(["evaluate", str(run / "checkpoints" / "latest.pt"), "--episodes", "5", "--adapt", "conv4,head",
                 "--freeze", "conv4", "--steps", "1"]) == 0
    assert "adapting head)" in capsys.readouterr().out

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
