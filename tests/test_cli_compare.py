"""`repana compare` end to end on a tiny model whose factory lives in a module written to tmp_path."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from repana.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


FACTORY = textwrap.dedent('''
    import torch
    from torch import nn


    class Note:
        """An arbitrary pickled object: weights_only loading must refuse it."""


    def tiny(width=6):
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(width * 5 * 5, 4),
        )
''')


@pytest.fixture
def setup(tmp_path, monkeypatch):
    (tmp_path / "tiny_factory_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    module = importlib.import_module("tiny_factory_mod")
    torch.manual_seed(1)
    torch.save(module.tiny().state_dict(), tmp_path / "a.pt")
    torch.manual_seed(2)
    torch.save(module.tiny().state_dict(), tmp_path / "b.pt")
    inputs = np.random.default_rng(0).random((90, 1, 5, 5), dtype=np.float32)
    np.save(tmp_path / "inputs.npy", inputs)
    yield tmp_path, module, inputs
    sys.modules.pop("tiny_factory_mod", None)


def test_compare_two_models_end_to_end(setup, capsys):
    tmp_path, module, inputs = setup
    out = tmp_path / "out"
    code = main(["compare", "--model-a", "tiny_factory_mod:tiny", "--weights-a", str(tmp_path / "a.pt"),
                 "--weights-b", str(tmp_path / "b.pt"), "--inputs", str(tmp_path / "inputs.npy"),
                 "--layers-a", "[13]", "5", "--measure", "cka", "--measure", "cka_debiased",
                 "--reduction", "flatten", "--batch-size", "32", "--out", str(out)])
    assert code == 0
    frame = pd.read_csv(out / "similarity.csv", dtype={"layer_a": str, "layer_b": str})
    assert len(frame) == 3 * 3 * 2 and set(frame["measure"]) == {"cka", "cka_debiased"}
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "heatmap.pdf").read_bytes()[:4] == b"%PDF"
    # The CSV holds the same numbers as the Python API on the same models.
    from repana.similarity import cka
    model_a, model_b = module.tiny().eval(), module.tiny().eval()
    model_a.load_state_dict(torch.load(tmp_path / "a.pt"))
    model_b.load_state_dict(torch.load(tmp_path / "b.pt"))
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        expected = cka(model_a[:2](x).flatten(1), model_b[:2](x).flatten(1), debiased=True)
    row = frame[(frame.layer_a == "1") & (frame.layer_b == "1") & (frame.measure == "cka_debiased")]
    assert row["value"].item() == pytest.approx(expected, rel=1e-6)
    assert row["value"].item() < 0.99
    assert "cka (rows: A, columns: B), 90 datapoints" in capsys.readouterr().out


def test_same_model_against_itself_through_a_subprocess(setup, capsys):
    tmp_path, _, inputs = setup
    np.savez(tmp_path / "inputs.npz", images=inputs, labels=np.arange(90))
    base = ["compare", "--model-a", "tiny_factory_mod:tiny", "--weights-a", str(tmp_path / "a.pt"),
            "--inputs", str(tmp_path / "inputs.npz"), "--layers-a", "*", "--reduction", "mean",
            "--out", str(tmp_path / "self")]
    assert main(base) == 1
    assert "['images', 'labels']: choose one with --inputs-key" in capsys.readouterr().err
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "repana"] + base + ["--inputs-key", "images", "--layers-a", "1",
                                                                      "3", "--measure", "procrustes"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(tmp_path / "self" / "similarity.csv", dtype={"layer_a": str, "layer_b": str})
    diagonal = frame[frame.layer_a == frame.layer_b]["value"]
    assert diagonal.tolist() == pytest.approx([1.0, 1.0])


def test_weights_only_unless_unsafe_pickle(setup, capsys):
    tmp_path, module, _ = setup
    torch.save({"state_dict": module.tiny().state_dict(), "note": module.Note()}, tmp_path / "pickled.pt")
    args = ["compare", "--model-a", "tiny_factory_mod:tiny", "--weights-a", str(tmp_path / "pickled.pt"),
            "--inputs", str(tmp_path / "inputs.npy"), "--layers-a", "5", "--out", str(tmp_path / "o")]
    assert main(args) == 1
    assert "--unsafe-pickle" in capsys.readouterr().err
    assert main(args + ["--unsafe-pickle"]) == 0


@pytest.mark.parametrize("argv_tail, message", [
    (["--model-a", "tiny_factory_mod.tiny"], "package.module:function"),
    (["--model-a", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
    (["--model-a", "tiny_factory_mod:tiny", "--layers-a", "conv9"], "its modules are: 0, 1, 2"),
    (["--model-a", "tiny_factory_mod:tiny", "--measure", "kca"], "unknown measure"),
    (["--model-a", "tiny_factory_mod:tiny", "--layers-a", "0"], "choose reduction="),
])
def test_errors_are_one_clear_line(setup, capsys, argv_tail, message):
    tmp_path, _, _ = setup
    argv = ["compare", "--inputs", str(tmp_path / "inputs.npy"), "--layers-a", "5",
            "--out", str(tmp_path / "o")] + argv_tail
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.startswith("repana compare: error:")
