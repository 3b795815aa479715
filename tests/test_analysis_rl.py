"""The RL analyses of the registry (rl_returns, rl_policy_similarity) through `repana analyze` on tiny RL
checkpoints of every RL algorithm, their numbers against the library, and the one-line errors when a
supervised command gets an RL checkpoint or the reverse."""

import numpy as np
import pandas as pd
import pytest
import torch

from repana.analysis.registry import get_analysis, list_analyses
from repana.cli import main
from repana.rl.config import ALGORITHMS
from repana.rl.train import train_rl
from cli_helpers import one_line_error

TINY_NAV = dict(env="2d-navigation", meta_batch_size=2, fast_batch_size=3, horizon=15, hidden_sizes=[8, 8],
                cg_iters=3, dtype="float64", checkpoint_every=1, iterations=2)
RL_ANALYSES = ["rl_returns", "rl_policy_similarity"]



@pytest.fixture(scope="module")
def rl_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rl-ckpt")
    found = {}
    for seed, algorithm in enumerate(ALGORITHMS):
        train_rl(TINY_NAV, folder / algorithm, algorithm=algorithm, seed=seed)
        found[algorithm] = folder / algorithm / "checkpoints" / "latest.pt"
    train_rl(TINY_NAV, folder / "anil_b", algorithm="anil", seed=1001)
    found["anil_b"] = folder / "anil_b" / "checkpoints" / "latest.pt"
    return found


@pytest.fixture(scope="module")
def supervised_checkpoint(tmp_path_factory):
    from repana.meta.checkpoint import save_checkpoint
    from repana.meta.config import TrainConfig
    from repana.models import Conv4

    torch.manual_seed(0)
    model = Conv4(in_channels=1, n_classes=5, hidden=4, image_size=28, pooling="stride")
    config = TrainConfig(dataset="glyphs", algorithm="maml", hidden=4, pooling="stride").to_dict()
    return save_checkpoint(tmp_path_factory.mktemp("sup") / "maml.pt", model=model, model_config=model.config,
                           algorithm="maml", config=config, step=10)


def test_the_rl_analyses_are_registered_as_rl():
    assert list_analyses("rl") == RL_ANALYSES
    assert not set(RL_ANALYSES) & set(list_analyses("supervised"))
    assert all(get_analysis(name).kind == "rl" for name in RL_ANALYSES)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", RL_ANALYSES)
def test_every_rl_analysis_runs_on_every_rl_algorithm(tmp_path, rl_checkpoints, algorithm, name, capsys):
    out = tmp_path / name
    assert main(["analyze", name, "--checkpoint", str(rl_checkpoints[algorithm]), "--out", str(out),
                 "--episodes", "3", "--preset", "quick"]) == 0, capsys.readouterr().err
    assert (out / f"{name}.png").exists() and (out / f"{name}.pdf").exists()
    rows = pd.read_csv(out / f"{name}.csv")
    assert (rows["algorithm"] == algorithm).all() and (rows["env"] == "2d-navigation").all()
    printed = capsys.readouterr().out
    if name == "rl_returns":
        assert len(rows) == 1 and rows["n_tasks"].iloc[0] == 3
        assert np.isfinite(rows[["return_before", "return_after", "return_after_ci95"]].to_numpy()).all()
        # a 15-step episode: each reward is minus a distance in the unit square, so returns lie in [-15 sqrt(2), 0]
        assert (-15 * np.sqrt(2) <= rows["return_after"]).all() and (rows["return_after"] <= 0).all()
        table = pd.read_csv(out / "rl_returns_table2.csv")
        paper = {"maml": -20.3, "anil": -20.1}.get(algorithm, np.nan)
        assert table["paper_mean"].iloc[0] == pytest.approx(paper, nan_ok=True)
        assert "not judged" in printed   # one algorithm: no MAML-vs-ANIL verdict
    else:
        assert set(rows["layer"]) == {"layer1", "layer2", "mu"}
        assert set(rows["measure"]) == {"cca", "svcca", "cka"} and set(rows["task"]) == {0, 1, 2}
        hidden = rows[rows["layer"].isin(["layer1", "layer2"])]["value"]
        if algorithm == "anil":   # its hidden layers are not adapted: identical activations
            assert hidden.to_numpy() == pytest.approx(1.0, abs=1e-9)
            assert "check passed" in printed
        else:
            assert (hidden <= 1 + 1e-9).all() and (hidden > 0).all()


def test_rl_returns_table_and_verdict_over_seeds(tmp_path, rl_checkpoints, capsys):
    from repana.rl.evaluate import evaluate_rl

    out = tmp_path / "returns"
    # every run on the same fixed tasks of seed 2**20 (--set task_seed=...)
    assert main(["analyze", "rl_returns", "--checkpoint", str(rl_checkpoints["maml"]), "--checkpoint",
                 str(rl_checkpoints["anil"]), "--checkpoint", str(rl_checkpoints["anil_b"]), "--out", str(out),
                 "--episodes", "4", "--set", "task_seed=1048576"]) == 0
    printed = capsys.readouterr().out
    per_run = pd.read_csv(out / "rl_returns.csv")
    assert per_run["label"].tolist() == ["maml", "anil", "anil'"] and per_run["seed"].tolist() == [0, 2, 1001]
    _, summary = evaluate_rl(rl_checkpoints["anil_b"], n_tasks=4, task_seed=2 ** 20)   # the library, same tasks
    assert per_run["return_after"].iloc[2] == pytest.approx(summary["return_after"], abs=1e-12)
    assert (per_run["eval_tasks"] == "fixed, seed 1048576").all() and per_run["mean_goal_distance"].nunique() == 1
    table = pd.read_csv(out / "rl_returns_table2.csv").set_index("algorithm")
    assert table.loc["anil", "n_seeds"] == 2 and table.loc["maml", "n_seeds"] == 1
    assert table.loc["anil", "return_after"] == pytest.approx(per_run["return_after"].iloc[1:].mean())
    assert table.loc["anil", "return_after_std"] == pytest.approx(per_run["return_after"].iloc[1:].std(ddof=1))
    assert table.loc["anil", "paper_printed"] == "-20.1 ± 2.3"
    # ANIL's two seeds return 0.8 less than MAML's one after 2 tiny updates, within the noise: the 95% CI
    # half-width of ANIL's 2-seed mean (t(0.975, 1) * std / sqrt(2)) and MAML's task CI, combined
    from repana.analysis import paper_values

    noise = paper_values.difference_noise(
        paper_values.mean_ci95_half_width(table.loc["anil", "return_after_std"], 2),
        table.loc["maml", "return_after_ci95"])
    gap = table.loc["anil", "return_after"] - table.loc["maml", "return_after"]
    assert -noise < gap < -0.5
    assert f"({gap:+.1f}, noise {noise:.1f})" in printed
    assert "ANIL matches MAML in RL" in printed and "-> **agrees**" in printed


def test_rl_returns_evaluates_each_run_on_its_own_tasks(tmp_path, rl_checkpoints, capsys):
    from repana.analysis.registry import AnalysisContext
    from repana.meta.checkpoint import load_checkpoint
    from repana.rl.evaluate import evaluate_rl

    out = tmp_path / "returns"
    assert main(["analyze", "rl_returns", "--checkpoint", str(rl_checkpoints["maml"]), "--checkpoint",
                 str(rl_checkpoints["anil"]), "--checkpoint", str(rl_checkpoints["anil_b"]), "--out", str(out),
                 "--episodes", "4"]) == 0
    per_run = pd.read_csv(out / "rl_returns.csv")
    _, summary = evaluate_rl(rl_checkpoints["anil_b"], n_tasks=4)   # the library: the run's own tasks
    assert per_run["return_after"].iloc[2] == pytest.approx(summary["return_after"], abs=1e-12)
    assert per_run["eval_tasks"].tolist() == [f"per-seed sample: SeedSequence({s}, spawn_key=(1048576,))"
                                              for s in (0, 2, 1001)]
    assert per_run["mean_goal_distance"].nunique() == 3   # three seeds, three task samples
    context = AnalysisContext(networks={"maml": load_checkpoint(rl_checkpoints["maml"], kind="rl")}, settings={})
    tables = {"rl_returns": per_run, "rl_returns_table2": pd.read_csv(out / "rl_returns_table2.csv")}
    body = get_analysis("rl_returns").report(tables, context).body
    assert "4 held-out tasks per run, each run's own sample from the task distribution" in body
    assert "**2-D navigation against the paper.**" in body
    for bad in ("abc", "-3"):
        assert main(["analyze", "rl_returns", "--checkpoint", str(rl_checkpoints["maml"]), "--out", str(out),
                     "--set", f"task_seed={bad}"]) == 1
        one_line_error(capsys, "rl_returns setting task_seed must be \"per-run\"", "got")
    fixed = per_run.assign(eval_tasks="fixed, seed 7")
    body = get_analysis("rl_returns").report({**tables, "rl_returns": fixed}, context).body
    assert "4 held-out tasks, the same tasks for every run (fixed, seed 7)" in body


def test_supervised_and_rl_checkpoints_cross_one_line(tmp_path, rl_checkpoints, supervised_checkpoint, capsys):
    rl = str(rl_checkpoints["maml"])
    out = str(tmp_path / "out")
    assert main(["analyze", "freezing", "--checkpoint", rl, "--out", out]) == 1
    one_line_error(capsys, "is an RL checkpoint", "'freezing' reads supervised checkpoints",
                    "rl_returns, rl_policy_similarity", "repana evaluate")
    assert main(["analyze", "rl_returns", "--checkpoint", str(supervised_checkpoint), "--out", out]) == 1
    one_line_error(capsys, "is a supervised checkpoint (maml)", "'rl_returns' reads RL checkpoints")
    assert main(["analyze", "rl_policy_similarity", "--checkpoint", rl, "--checkpoint", str(supervised_checkpoint),
                 "--out", out]) == 1
    one_line_error(capsys, "is a supervised checkpoint")
    assert main(["analyze", "rl_returns", "--checkpoint", rl, "--out", out, "--steps", "3"]) == 1
    one_line_error(capsys, "--steps: not used by the RL analysis 'rl_returns'")
    assert main(["predict", rl, "--support", out, "--query", out]) == 1
    one_line_error(capsys, "is an RL checkpoint")
    assert main(["compare", "--model-a", "repana.models:Conv4", "--weights-a", rl, "--inputs", rl,
                 "--layers-a", "conv1", "--out", out]) == 1
    one_line_error(capsys, "are an RL checkpoint", "repana analyze rl_policy_similarity")
    # an RL command on a supervised run folder
    run = tmp_path / "supervised_run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "latest.pt").write_bytes(supervised_checkpoint.read_bytes())
    assert main(["train", "--preset", "rl-2dnav", "--out", str(run.parent), "--resume", "--iterations", "1"]) == 1
    one_line_error(capsys, "is not an RL checkpoint", "a supervised checkpoint")


def test_rl_analyses_on_halfcheetah_checkpoints(tmp_path, capsys):
    pytest.importorskip("mujoco", reason="MuJoCo missing: pip install 'repana[rl]'")
    pytest.importorskip("gymnasium", reason="gymnasium missing: pip install 'repana[rl]'")
    tiny = dict(meta_batch_size=2, fast_batch_size=2, horizon=20, hidden_sizes=[8, 8], n_envs=2,
                vector_mode="sync", iterations=1, cg_iters=2)
    paths = []
    for seed, algorithm in enumerate(("maml", "anil")):
        train_rl("rl-halfcheetah-vel", tmp_path / algorithm, algorithm=algorithm, seed=seed, **tiny)
        paths += ["--checkpoint", str(tmp_path / algorithm / "checkpoints" / "latest.pt")]
    assert main(["analyze", "rl_returns", *paths, "--out", str(tmp_path / "r"), "--episodes", "2"]) == 0
    table = pd.read_csv(tmp_path / "r" / "rl_returns_table2.csv")
    assert list(table["paper_printed"]) == ["-139.0 ± 18.9", "-120.9 ± 6.3"]
    from repana.analysis.registry import AnalysisContext
    from repana.meta.checkpoint import load_checkpoint

    context = AnalysisContext(networks={"maml": load_checkpoint(paths[1], kind="rl")}, settings={"task_seed": 7, "tasks": 2})
    section = get_analysis("rl_returns").report(
        {"rl_returns": pd.read_csv(tmp_path / "r" / "rl_returns.csv"), "rl_returns_table2": table}, context)
    assert "HalfCheetah returns are **not comparable**" in section.body
    assert main(["analyze", "rl_policy_similarity", *paths, "--out", str(tmp_path / "s"), "--episodes", "2",
                 "--measure", "svcca", "--measure", "cka"]) == 0
    rows = pd.read_csv(tmp_path / "s" / "rl_policy_similarity.csv")
    assert set(rows["env"]) == {"halfcheetah-vel"} and set(rows["measure"]) == {"svcca", "cka"}
    anil_hidden = rows.query("algorithm == 'anil' and layer != 'mu'")["value"]
    assert anil_hidden.to_numpy() == pytest.approx(1.0, abs=1e-6)


def test_a_context_holds_checkpoints_of_one_kind(rl_checkpoints, supervised_checkpoint):
    from repana.analysis.registry import AnalysisContext, load_analysis_checkpoint
    from repana.errors import InputError

    rl, supervised = load_analysis_checkpoint(rl_checkpoints["anil"]), load_analysis_checkpoint(supervised_checkpoint)
    assert (rl.kind, rl.algorithm, rl.env, rl.step) == ("rl", "anil", "2d-navigation", 2)
    assert supervised.kind == "supervised"
    context = AnalysisContext(networks={"anil": rl}, settings={})
    assert context.kind == "rl" and context.rl_checkpoint("anil") is rl and context.steps is None
    with pytest.raises(InputError, match="either supervised or RL checkpoints, not both"):
        AnalysisContext(networks={"anil": rl, "maml": supervised}, settings={})


def test_rl_returns_task_counts_per_environment():
    from repana.analysis.registry import load_settings
    from repana.analysis.rl_returns import fixed_task_seed, tasks_for

    quick, paper = load_settings("rl_returns", "quick"), load_settings("rl_returns", "paper")
    assert [tasks_for(env, quick) for env in ("2d-navigation", "halfcheetah-dir", "halfcheetah-vel")] == [400, 40, 40]
    assert tasks_for("halfcheetah-vel", paper) == 400 and fixed_task_seed(paper) is None
    assert tasks_for("halfcheetah-dir", {"tasks": 3}) == 3 and fixed_task_seed({"task_seed": 7}) == 7
