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


    class TokenNet(nn.Module):
        """Token ids (n, T) int64 -> embedding -> two batch-first transformer layers (n, T, 16)."""

        def __init__(self, seed=0, vocab=30):
            super().__init__()
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab, 16)
            layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

        def forward(self, ids):
            return self.encoder(self.embed(ids))


    def bert(seed=0, layers=2):
        import transformers

        torch.manual_seed(seed)
        return transformers.BertModel(transformers.BertConfig(
            vocab_size=30, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16))
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


def test_list_measures_and_required_arguments(capsys):
    assert main(["compare", "--list-measures"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("cca ") and "cka_debiased" in out and "procrustes" in out
    assert main(["compare", "--model-a", "x:y"]) == 1
    assert "required: --inputs, --layers-a, --out" in capsys.readouterr().err


def test_cli_module_imports_no_heavy_library():
    code = ("import sys, repana.cli.compare; "
            "print([m for m in ('torch', 'numpy', 'pandas', 'matplotlib') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert done.stdout.strip() == "[]", done.stderr


def test_per_model_factory_arguments(setup, capsys):
    tmp_path, module, inputs = setup
    out = tmp_path / "widths"
    code = main(["compare", "--model-a", "tiny_factory_mod:tiny", "--factory-kwargs", '{"width": 6}',
                 "--factory-kwargs-b", '{"width": 3}', "--inputs", str(tmp_path / "inputs.npy"),
                 "--layers-a", "0", "5", "--measures", "cka", "cka_debiased", "--reduction", "mean",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    frame = pd.read_csv(out / "similarity.csv", dtype={"layer_a": str, "layer_b": str})
    assert set(frame["measure"]) == {"cka", "cka_debiased"} and len(frame) == 2 * 2 * 2
    conv = frame[(frame.layer_a == "0") & (frame.layer_b == "0") & (frame.measure == "cka")].iloc[0]
    assert (conv["n_features_a"], conv["n_features_b"]) == (6, 3)


def test_token_ids_stay_integers_and_sequences_need_a_reduction(setup, capsys):
    tmp_path, _, _ = setup
    ids = np.random.default_rng(0).integers(0, 30, size=(40, 8)).astype(np.int32)
    np.save(tmp_path / "ids.npy", ids)
    base = ["compare", "--model-a", "tiny_factory_mod:TokenNet", "--factory-kwargs-b", '{"seed": 1}',
            "--inputs", str(tmp_path / "ids.npy"), "--layers-a", "embed", "encoder.layers.?",
            "--out", str(tmp_path / "seq")]
    assert main(base) == 1
    assert "choose reduction='tokens' (n*T, D), 'mean' (n, D), 'first' (n, D) or 'flatten'" in capsys.readouterr().err
    assert main(base + ["--reduction", "positions"]) == 1
    assert "'positions' does not apply" in capsys.readouterr().err
    assert main(base + ["--reduction", "tokens", "--batch-size", "16"]) == 0
    frame = pd.read_csv(tmp_path / "seq" / "similarity.csv")
    assert list(frame["layer_a"].unique()) == ["embed", "encoder.layers.0", "encoder.layers.1"]
    assert set(frame["n_datapoints"]) == {40 * 8} and set(frame["reduction"]) == {"tokens"}
    diagonal = frame[frame.layer_a == frame.layer_b]["value"]
    assert (diagonal < 0.9).all()  # two seeds
    attention = base[:-4] + ["encoder.layers.0.self_attn", "--reduction", "first", "--out", str(tmp_path / "att")]
    assert main(attention + ["--output", "1"]) == 1  # need_weights=False: element 1 is None
    assert "gives a NoneType, not a tensor" in capsys.readouterr().err
    assert main(attention + ["--output", "0"]) == 0


def test_hugging_face_model_with_keyword_inputs(setup, capsys):
    pytest.importorskip("transformers")
    tmp_path, _, _ = setup
    ids = np.random.default_rng(0).integers(0, 30, size=(32, 10))
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    code = main(["compare", "--model-a", "tiny_factory_mod:bert", "--factory-kwargs-b", '{"seed": 1}',
                 "--inputs", str(tmp_path / "tokens.npz"), "--inputs-key", "input_ids", "attention_mask",
                 "--layers-a", "encoder.layer.?", "--reduction", "mean", "--out", str(tmp_path / "hf")])
    assert code == 0, capsys.readouterr().err
    frame = pd.read_csv(tmp_path / "hf" / "similarity.csv")
    assert list(frame["layer_a"].unique()) == ["encoder.layer.0", "encoder.layer.1"]
    assert frame["value"].between(-0.1, 1.0).all() and set(frame["n_datapoints"]) == {32}


def _unwritable_out(tmp_path):
    (tmp_path / "a_file").write_text("x")
    return str(tmp_path / "a_file" / "out")


@pytest.mark.parametrize("case", ["cuda", "size", "channels", "object", "out", "out_first", "random_weights",
                                  "empty_weights", "folder_inputs"])
def test_user_errors_are_one_line_without_traceback(setup, capsys, case):
    tmp_path, _, inputs = setup
    args = {"--model-a": "tiny_factory_mod:tiny", "--inputs": str(tmp_path / "inputs.npy"), "--layers-a": "5",
            "--out": str(tmp_path / "o")}
    extra: list[str] = []
    if case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        extra, message = ["--device", "cuda"], "--device cuda: no CUDA GPU is available here"
    elif case in ("size", "channels"):
        shape = (20, 1, 7, 7) if case == "size" else (20, 3, 5, 5)
        np.save(tmp_path / "bad.npy", np.zeros(shape, dtype=np.float32))
        args["--inputs"] = str(tmp_path / "bad.npy")
        message = f"Sequential cannot run on the inputs (shape {shape} float32): "
    elif case == "object":
        np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        args["--inputs"], message = str(tmp_path / "objects.npy"), "holds Python objects (an object-dtype array)"
    elif case == "out":
        args["--out"], message = _unwritable_out(tmp_path), "cannot write to --out"
    elif case == "out_first":  # the output folder is checked before the weights are even read
        (tmp_path / "junk.pt").write_bytes(os.urandom(2048))
        args["--out"], message = _unwritable_out(tmp_path), "cannot write to --out"
        extra = ["--weights-a", str(tmp_path / "junk.pt")]
    elif case == "random_weights":
        (tmp_path / "junk.pt").write_bytes(os.urandom(2048))
        extra, message = ["--weights-a", str(tmp_path / "junk.pt")], "not a file written by torch.save"
    elif case == "empty_weights":
        (tmp_path / "empty.pt").write_bytes(b"")
        extra, message = ["--weights-a", str(tmp_path / "empty.pt")], "is empty"
    else:
        args["--inputs"], message = str(tmp_path), "is a folder, not a file"
    argv = ["compare"] + [item for pair in args.items() for item in pair] + extra
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("repana compare: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--unsafe-pickle" not in err


def test_a_plain_pickle_is_named_and_does_not_suggest_unsafe_pickle(setup, capsys):
    import pickle

    tmp_path, module, _ = setup
    with open(tmp_path / "plain.pkl", "wb") as handle:  # torch.load cannot read it, with or without weights_only
        pickle.dump({"state_dict": module.tiny().state_dict()}, handle, protocol=4)
    args = ["compare", "--model-a", "tiny_factory_mod:tiny", "--weights-a", str(tmp_path / "plain.pkl"),
            "--inputs", str(tmp_path / "inputs.npy"), "--layers-a", "5", "--out", str(tmp_path / "o")]
    for extra in ([], ["--unsafe-pickle"]):
        assert main(args + extra) == 1
        err = capsys.readouterr().err
        assert "is a plain Python pickle, not a file written by torch.save" in err, err
        assert "--unsafe-pickle" not in err and len(err.strip().splitlines()) == 1
