"""`repana analyze` on a user's own checkpoints (tiny glyph-set networks), for every registered analysis
and a checkpoint of every algorithm; `repana evaluate` / `predict` on the same checkpoints."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from repana.analysis.registry import get_analysis, list_analyses
from repana.cli import analyze as analyze_cli
from repana.cli import main
from repana.meta.algorithms import list_algorithms
from repana.meta.checkpoint import save_checkpoint
from repana.meta.config import TrainConfig
from repana.models import Conv4

# tiny settings that override every analysis's preset (the flags of `repana analyze`)
FAST = ["--episodes", "2", "--measure", "cka_debiased", "--iterations", "2", "--preset", "quick"]
FAST_SETTINGS = {"inner_loop_similarity": ["record_steps=[1]"], "maml_anil_nil": ["speed_repeats=0"],
                 "convergence": ["inner_steps=[1]", "eval_every=2", "cost_repeats=1"]}


def _checkpoint(path, algorithm: str, seed: int, hidden: int = 4, n_classes: int = 5):
    torch.manual_seed(seed)
    model = Conv4(in_channels=1, n_classes=n_classes, hidden=hidden, image_size=28, pooling="stride")
    config = TrainConfig(dataset="glyphs", algorithm=algorithm, hidden=hidden, pooling="stride",
                         inner_lr=0.4, inner_steps_test=2, iterations=10).to_dict()
    return save_checkpoint(path, model=model, model_config=model.config, algorithm=algorithm, config=config, step=10)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    found = {"wide": _checkpoint(folder / "wide.pt", "anil", 2, hidden=6)}
    for seed, algorithm in enumerate(list_algorithms()):
        run = folder / algorithm / "checkpoints"
        run.mkdir(parents=True)
        # a multiclass network's head has one output per meta-training class, not per way
        found[algorithm] = _checkpoint(run / "step_000010.pt", algorithm, seed + 10,
                                       n_classes=12 if algorithm == "multiclass" else 5)
        # the run's metrics.csv, as training writes it, with two validation points (learning curves)
        (run.parent / "metrics.csv").write_text("step,split,loss,accuracy,elapsed_s\n5,train,1.5,0.3,1.0\n"
                                                f"5,val,,0.{30 + seed},1.1\n10,train,1.2,0.4,2.0\n"
                                                f"10,val,,0.{40 + seed},2.1\n")
    second = folder / "maml_b" / "checkpoints"
    second.mkdir(parents=True)
    found["maml_b"] = _checkpoint(second / "step_000010.pt", "maml", 40)
    found["anil_b"] = _checkpoint(folder / "anil_b.pt", "anil", 41)
    return found


def test_the_cli_lists_exactly_the_registered_analyses():
    assert list(analyze_cli.ANALYSES) == list_analyses()


@pytest.mark.parametrize("algorithm", sorted(list_algorithms()))
def test_every_analysis_runs_on_a_checkpoint_of_every_algorithm(tmp_path, checkpoints, algorithm, capsys):
    for name in list_analyses("supervised"):   # the rl_* analyses: tests/test_analysis_rl.py
        analysis = get_analysis(name)
        if analysis.n_checkpoints[0] > 2:   # seed pairs: see the test below
            continue
        if name == "feature_reuse_map":     # maps MAML (and ANIL) checkpoints only: tests/test_feature_reuse_map.py
            continue
        given = [f"{algorithm}={checkpoints[algorithm]}"]
        if name == "head_needed":   # one network trained with a head, one with nil_training
            given.append(f"other={checkpoints['anil' if algorithm == 'nil_training' else 'nil_training']}")
        elif analysis.n_checkpoints[0] == 2:
            given.append(f"other={checkpoints['maml' if algorithm == 'anil' else 'anil']}")
        out = tmp_path / name
        args = ["analyze", name.replace("_", "-") if name == "head_needed" else name, "--out", str(out), *FAST]
        for setting in FAST_SETTINGS.get(name, []):
            args += ["--set", setting]
        for spec in given:
            args += ["--checkpoint", spec]
        assert main(args) == 0, (name, capsys.readouterr().err)
        tables = sorted(p.name for p in out.glob("*.csv"))
        assert f"{name}.csv" in tables and all(t.startswith(name) for t in tables)
        frame = pd.read_csv(out / f"{name}.csv")
        assert len(frame) > 0
        numeric = frame.select_dtypes("number")
        assert numeric.notna().any().any()
    code = main(["evaluate", str(checkpoints[algorithm]), "--episodes", "3", "--steps", "1"])
    assert code == 0, capsys.readouterr().err
    assert "%" in capsys.readouterr().out


def test_predict_on_a_checkpoint_of_every_algorithm(tmp_path, checkpoints, capsys):
    rng = np.random.default_rng(0)
    support, query = tmp_path / "support", tmp_path / "query"
    for label in ("a", "b", "c", "d", "e"):
        for folder in (support, query):
            (folder / label).mkdir(parents=True)
            Image.fromarray(((rng.random((28, 28)) < 0.2) * 255).astype(np.uint8), mode="L").save(
                folder / label / "0.png")
    for algorithm in list_algorithms():
        assert main(["predict", str(checkpoints[algorithm]), "--support", str(support), "--query", str(query),
                     "--steps", "1"]) == 0, (algorithm, capsys.readouterr().err)
        assert "labelled query images" in capsys.readouterr().err


def test_seed_pairs_and_learning_curves_from_the_command_line(tmp_path, checkpoints, capsys):
    out = tmp_path / "out"
    args = ["analyze", "seed_pair_similarity", "--out", str(out), "--episodes", "2", "--measure", "cka"]
    for name in ("maml", "maml_b", "anil", "anil_b"):
        args += ["--checkpoint", str(checkpoints[name])]
    assert main(args) == 0, capsys.readouterr().err
    pairs = pd.read_csv(out / "seed_pair_similarity.csv")
    assert sorted(pairs.drop_duplicates(["model_a", "model_b"])["pair"]) == ["ANIL-ANIL", "ANIL-MAML", "ANIL-MAML",
                                                                            "ANIL-MAML", "ANIL-MAML", "MAML-MAML"]
    body = pairs[pairs["layer"] == "body average"]
    per_layer = pairs[pairs["layer"].isin(["conv1", "conv2", "conv3", "conv4"])]
    first = body.iloc[0]
    expected = per_layer[(per_layer["model_a"] == first["model_a"]) & (per_layer["model_b"] == first["model_b"])]
    assert first["mean"] == pytest.approx(expected["mean"].mean(), abs=1e-12)
    assert main(["analyze", "seed_pair_similarity", "--checkpoint", str(checkpoints["maml"]), "--checkpoint",
                 str(checkpoints["anil"]), "--out", str(out)]) == 1
    assert "at least 4 --checkpoint" in capsys.readouterr().err
    assert main(["analyze", "learning_curves", "--checkpoint", str(checkpoints["maml"]), "--checkpoint",
                 str(checkpoints["anil"]), "--out", str(out)]) == 0
    curves = pd.read_csv(out / "learning_curves.csv")
    assert list(curves["step"]) == [5, 10, 5, 10] and set(curves["algorithm"]) == {"maml", "anil"}
    assert main(["analyze", "learning_curves", "--checkpoint", str(checkpoints["anil_b"]), "--out", str(out)]) == 1
    assert "no metrics.csv" in capsys.readouterr().err


def test_freezing_and_inner_loop_values(tmp_path, checkpoints):
    out = tmp_path / "out"
    assert main(["analyze", "freezing", "--checkpoint", str(checkpoints["maml"]), "--out", str(out),
                 "--episodes", "3"]) == 0
    frame = pd.read_csv(out / "freezing.csv")
    assert list(frame["frozen"]) == [f for f in ("none", "1", "1,2", "1,2,3", "1,2,3,4") for _ in range(3)]
    # the checkpoint's own 2 test steps, the paper's 10, and the first converged count of the ladder
    assert list(frame["steps"][:2]) == [2, 10] and set(frame["steps"][2::3]) <= {10, 30, 100, 300}
    assert (out / "freezing.png").exists() and (out / "freezing.pdf").exists()
    assert main(["analyze", "inner-loop-similarity", "--checkpoint", str(checkpoints["anil"]), "--out", str(out),
                 "--episodes", "2", "--measure", "cka_debiased"]) == 0
    summary = pd.read_csv(out / "inner_loop_similarity_summary.csv")
    body = summary[summary["layer"] != "head"]
    assert set(summary["measure"]) == {"cka_debiased"} and (body["mean"] > 1 - 1e-6).all()


def test_analyses_give_the_same_numbers_through_the_cli_and_the_library(tmp_path, checkpoints):
    """`repana analyze` and `repana reproduce` share compute(): same settings, same episodes, same table."""
    from repana.analysis.registry import AnalysisContext
    from repana.meta.checkpoint import load_checkpoint

    out = tmp_path / "out"
    assert main(["analyze", "freezing", "--checkpoint", str(checkpoints["maml"]), "--out", str(out),
                 "--episodes", "3"]) == 0
    context = AnalysisContext(networks={"maml": load_checkpoint(checkpoints["maml"])}, settings={"episodes": 3},
                              episode_offset=get_analysis("freezing").episode_offset)
    library = get_analysis("freezing").compute(context)["freezing"]
    cli = pd.read_csv(out / "freezing.csv")
    assert np.allclose(library["accuracy"], cli["accuracy"], atol=1e-12)


def test_errors_name_the_problem(tmp_path, checkpoints, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "maml_anil_similarity", "--checkpoint", str(checkpoints["maml"]), "--out", str(out)]) == 1
    assert "exactly 2 --checkpoint" in capsys.readouterr().err
    assert main(["analyze", "head_needed", "--checkpoint", str(checkpoints["anil"]), "--checkpoint",
                 str(checkpoints["wide"]), "--out", str(out), "--episodes", "2"]) == 1
    assert "nil_training" in capsys.readouterr().err
    assert main(["analyze", "maml_anil_similarity", "--checkpoint", str(checkpoints["anil"]), "--checkpoint",
                 str(checkpoints["wide"]), "--out", str(out), "--episodes", "2"]) == 1
    assert "mismatched architectures" in capsys.readouterr().err
    assert main(["analyze", "freezing", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", "nope", "--checkpoint", str(checkpoints["maml"]), "--out", str(out)]) == 1
    assert "unknown analysis 'nope'" in capsys.readouterr().err
    assert main(["analyze", "freezing", "--checkpoint", str(checkpoints["maml"]), "--out", str(out),
                 "--set", "episodez=3"]) == 1
    assert "has no setting 'episodez'" in capsys.readouterr().err


def test_older_analysis_names_give_the_current_analysis_with_a_note(tmp_path, capsys):
    renamed = {"inner-loop": "inner_loop_similarity", "dynamics": "training_dynamics", "comparison": "maml_anil_nil",
               "similarity": "maml_anil_similarity", "regimes": "training_regimes"}
    for old, new in renamed.items():
        assert get_analysis(old).name == new
        assert capsys.readouterr().err == f"note: analysis {old!r} is now {new!r}\n"
    assert get_analysis("head-needed").name == "head_needed" and capsys.readouterr().err == ""
    # through the command line: the note, then the analysis runs its own checks (here: a missing checkpoint)
    assert main(["analyze", "inner-loop", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "note: analysis 'inner-loop' is now 'inner_loop_similarity'" and "does not exist" in err[1]
