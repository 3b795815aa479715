"""`repana analyze` on a user's own checkpoints (tiny glyph-set networks)."""

import pandas as pd
import pytest
import torch

from repana.cli import main
from repana.meta.checkpoint import save_checkpoint
from repana.meta.config import TrainConfig
from repana.models import Conv4


def _checkpoint(path, algorithm: str, seed: int, hidden: int = 4):
    torch.manual_seed(seed)
    model = Conv4(in_channels=1, n_classes=5, hidden=hidden, image_size=28, pooling="stride")
    config = TrainConfig(dataset="glyphs", algorithm=algorithm, hidden=hidden, pooling="stride",
                         inner_lr=0.4, inner_steps_test=2, iterations=10).to_dict()
    return save_checkpoint(path, model=model, model_config=model.config, algorithm=algorithm, config=config, step=10)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    return {"maml": _checkpoint(folder / "maml.pt", "maml", 0), "anil": _checkpoint(folder / "anil.pt", "anil", 1),
            "wide": _checkpoint(folder / "wide.pt", "anil", 2, hidden=6)}


def test_freezing_and_inner_loop_from_the_command_line(tmp_path, checkpoints, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "freezing", "--checkpoint", str(checkpoints["maml"]), "--out", str(out),
                 "--episodes", "3"]) == 0
    frame = pd.read_csv(out / "freezing.csv")
    assert list(frame["frozen"]) == ["none", "1", "1,2", "1,2,3", "1,2,3,4"] and (frame["steps"] == 2).all()
    assert (out / "freezing.png").exists() and (out / "freezing.pdf").exists()
    assert main(["analyze", "inner-loop", "--checkpoint", str(checkpoints["anil"]), "--out", str(out),
                 "--episodes", "2", "--measure", "cka_debiased"]) == 0
    summary = pd.read_csv(out / "inner_loop.csv")
    body = summary[summary["layer"] != "head"]
    assert set(summary["measure"]) == {"cka_debiased"} and (body["mean"] > 1 - 1e-6).all()


def test_two_network_analyses_and_their_errors(tmp_path, checkpoints, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "similarity", "--checkpoint", str(checkpoints["maml"]), "--checkpoint-b",
                 str(checkpoints["anil"]), "--out", str(out), "--episodes", "2", "--measure", "cka_debiased"]) == 0
    assert set(pd.read_csv(out / "similarity.csv")["layer"]) == {"conv1", "conv2", "conv3", "conv4"}
    assert main(["analyze", "similarity", "--checkpoint", str(checkpoints["maml"]), "--out", str(out)]) == 1
    assert "--checkpoint-b" in capsys.readouterr().err
    assert main(["analyze", "head-needed", "--checkpoint", str(checkpoints["anil"]), "--checkpoint-b",
                 str(checkpoints["wide"]), "--out", str(out), "--episodes", "2"]) == 1
    assert "mismatched architectures" in capsys.readouterr().err
    assert main(["analyze", "freezing", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
