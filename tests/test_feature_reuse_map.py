"""The feature-reuse map: the regime rule, the cells' summary, and the analysis through reproduce and analyze."""


import numpy as np
import pandas as pd
import pytest

from repana.analysis.feature_reuse_map import (MAP_VARIANT_RUNS, NETWORKS, base_cells, factor_rows, regime,
                                               split_network, summarize_cells)
from repana.analysis.reproduce import Reproduction, network_values, training_plan
from repana.errors import ConfigError

TINY_MAP = {"episodes": 3, "similarity_episodes": 2, "ladder": [2, 4], "paper_steps": 2,
            "measures": ["svcca", "cka_debiased"]}


def test_regime_rule():
    assert regime(drop_paper=1.0, drop_converged=0.5, tolerance=1.5) == "reused"
    assert regime(drop_paper=20.0, drop_converged=1.0, tolerance=1.5) == "head_steps"
    assert regime(drop_paper=20.0, drop_converged=8.0, tolerance=1.5) == "adapts"
    assert regime(drop_paper=-3.0, drop_converged=-4.0, tolerance=1.5) == "reused"   # freezing helps
    # each drop against its own allowance: a noisy paper-protocol drop does not excuse a clear converged one
    assert regime(drop_paper=30.0, drop_converged=12.3, tolerance=14.2, converged_tolerance=3.1) == "adapts"


def _detail_rows(head_input, hidden, seed, none, frozen, anil, nil):
    """Hand-made rows of one (cell, seed): accuracies (fractions) per protocol."""
    base = {"head_input": head_input, "hidden": hidden, "seed": seed, "network": "n", "ci95": 0.01}
    rows = []
    for protocol, steps in (("run", 3), ("paper", 10), ("converged", 100)):
        rows.append({**base, "algorithm": "maml", "quantity": "accuracy", "protocol": protocol, "steps": steps,
                     "value": none[protocol]})
        rows.append({**base, "algorithm": "maml", "quantity": "accuracy_body_frozen", "protocol": protocol,
                     "steps": steps, "value": frozen[protocol]})
    rows.append({**base, "algorithm": "maml", "quantity": "nil_accuracy", "protocol": "none", "steps": 0, "value": nil})
    for layer in ("conv4", "head"):
        for measure in ("svcca", "cka_debiased"):
            rows.append({**base, "algorithm": "maml", "quantity": f"{layer}_{measure}", "protocol": "run", "steps": 3,
                         "value": 0.9 if layer == "conv4" else 0.4})
    rows.append({**base, "algorithm": "anil", "quantity": "accuracy", "protocol": "run", "steps": 3, "value": anil})
    return rows


def test_summarize_cells_by_hand():
    rows = []
    # spatial mean / 32: freezing costs 40 points at 3 steps, 20 at 10, 2 and 4 at convergence (seeds 0 / 1)
    rows += _detail_rows("spatial_mean", 32, 0, {"run": .96, "paper": .96, "converged": .96},
                         {"run": .56, "paper": .76, "converged": .94}, anil=.95, nil=.90)
    rows += _detail_rows("spatial_mean", 32, 1, {"run": .94, "paper": .94, "converged": .94},
                         {"run": .54, "paper": .74, "converged": .90}, anil=.92, nil=.91)
    # flatten / 32: freezing helps (+6 points)
    rows += _detail_rows("flatten", 32, 0, {"run": .84, "paper": .86, "converged": .86},
                         {"run": .90, "paper": .91, "converged": .92}, anil=.88, nil=.92)
    cells = summarize_cells(pd.DataFrame(rows), tolerance=1.5).set_index(["head_input", "hidden"])
    mean32 = cells.loc[("spatial_mean", 32)]
    assert mean32["n_seeds"] == 2
    assert mean32["drop_run"] == pytest.approx(40.0) and mean32["drop_paper"] == pytest.approx(20.0)
    assert mean32["drop_converged"] == pytest.approx(3.0)
    assert mean32["drop_converged_std"] == pytest.approx(np.std([2.0, 4.0], ddof=1))
    assert mean32["anil_minus_maml"] == pytest.approx(-1.5)       # (-1 - 2) / 2
    assert mean32["nil_minus_maml"] == pytest.approx(-4.5)        # (-6 - 3) / 2
    assert mean32["converged_steps"] == 100 and mean32["converged_steps_min"] == 100
    assert mean32["conv4_cka_debiased"] == pytest.approx(0.9)
    assert mean32["regime"] == "adapts"                           # 3.0 > max(1.5, std of the paper drop = 0)
    flat = cells.loc[("flatten", 32)]
    assert flat["drop_paper"] == pytest.approx(-5.0) and flat["regime"] == "reused"
    assert np.isnan(flat["drop_paper_std"])                        # one seed: no spread


def test_network_names_and_plan():
    assert split_network("maml-flatten64") == ("maml", "flatten64") and split_network("anil") == ("anil", None)
    assert network_values("anil-mean32") == ("anil", {"head_input": "spatial_mean", "hidden": 32})
    with pytest.raises(ConfigError, match="unknown map variant"):
        network_values("maml-wide")
    with pytest.raises(ConfigError, match="unknown network"):
        network_values("protonet-flatten32")
    plan = training_plan("quick", "glyphs", networks=list(NETWORKS), seeds=2)
    assert len(plan) == sum(len(runs) for runs in MAP_VARIANT_RUNS.values()) * 2 == 28
    shapes = {(job.network, job.seed_index): (job.config.head_input, job.config.hidden, job.config.algorithm,
                                               job.config.seed) for job in plan}
    assert shapes["maml-flatten64", 1][:3] == ("flatten", 64, "maml")
    assert shapes["anil-mean32", 0][:3] == ("spatial_mean", 32, "anil")
    # the other factors: each changes one value of a width-32 shape, MAML only
    configs = {job.network: job.config for job in plan if job.seed_index == 0}
    assert configs["maml-mean32-lr0.1"].inner_lr == 0.1 and configs["maml-mean32"].inner_lr == 0.4
    assert configs["maml-flatten32-short"].iterations == 2000 and configs["maml-flatten32"].iterations == 6000
    assert configs["maml-mean32-classes100"].train_classes == 100 and configs["maml-mean32"].train_classes == 0
    assert "anil-mean32-lr0.1" not in configs
    paper = {job.network: job.config for job in training_plan("paper", "glyphs", networks=["maml-mean32-short"])}
    assert paper["maml-mean32-short"].iterations == 20000     # a third of the paper preset's 60000
    assert len({seed for *_, seed in shapes.values()}) == len(plan)   # no two networks share an initialisation
    # the map is not part of the default reproduction, and its plan has only the grid's networks
    default = {job.network for job in training_plan("quick", "glyphs")}
    assert not default & set(NETWORKS)


def test_plan_of_the_map_only(tmp_path):
    plan_file = Reproduction(only=["feature_reuse_map"], out=tmp_path / "out", seeds=2).write_plan(tmp_path / "plan")
    import json

    jobs = [json.loads(line) for line in plan_file.read_text().splitlines() if line.strip()]
    assert len(jobs) == 28 and {job["name"].split("/")[1] for job in jobs} == set(NETWORKS)


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """A 1-seed map reproduction on a small glyph set (10 meta-iterations per network)."""
    from repana.data.glyphs import load_glyph_splits

    from tests.test_reproduce import _tiny_entries

    folder = tmp_path_factory.mktemp("map")
    entries = _tiny_entries(folder / "analyses")
    glyphs = load_glyph_splits(n_train=120, n_val=8, n_test=20)   # 120: the classes100 networks draw 100
    messages: list[str] = []
    report = Reproduction(preset="quick", dataset="glyphs", out=folder / "out", analyses_dir=entries, only=["feature_reuse_map"], iterations_scale=0.005, seeds=1, overrides={"meta_batch_size": 2, "val_episodes": 4}).run(data=glyphs, log=messages.append)
    return folder, report, messages


def test_map_through_reproduce(tiny_map):
    folder, report, messages = tiny_map
    text = report.read_text()
    assert "Where feature reuse holds: a map across networks -- glyphs-5way-1shot" in text
    assert "Freezing layers at test time" not in text            # only the named analysis ran
    tables = folder / "out" / "tables" / "glyphs-5way-1shot"
    every_cell = pd.read_csv(tables / "feature_reuse_map_cells.csv")
    cells = every_cell[base_cells(every_cell)]
    assert sorted(zip(cells["head_input"], cells["hidden"])) == [("flatten", 32), ("flatten", 64),
                                                                  ("spatial_mean", 32), ("spatial_mean", 64)]
    assert set(cells["iterations"]) == {30} and set(cells["train_classes"]) == {0}
    # the other factors, each beside its grid cell: 3 factors x 2 shapes
    factors = factor_rows(every_cell)
    assert len(factors) == 6 and set(factors["shape"]) == {"flatten/32", "spatial_mean/32"}
    assert {change.split(" (")[0] for change in factors["change"]} == {"inner lr 0.5", "meta-iterations 10",
                                                                        "training classes 100"}
    assert "**Other factors**" in text and "moves the answer" in text
    assert set(cells["regime"]) <= {"reused", "head_steps", "adapts"}
    detail = pd.read_csv(tables / "feature_reuse_map.csv")
    maml = detail[(detail["algorithm"] == "maml") & (detail["head_input"] == "flatten") & (detail["hidden"] == 64)]
    # the run's 3 test steps (the Omniglot preset), the paper's (2 here) and the ladder's choice
    assert set(maml.loc[maml["quantity"] == "accuracy", "protocol"]) == {"run", "paper", "converged"}
    assert set(maml.loc[maml["protocol"] == "paper", "steps"]) == {2}
    assert set(maml.loc[maml["protocol"] == "converged", "steps"]) <= {2, 4}
    assert ((detail["value"] >= 0) & (detail["value"] <= 1 + 1e-9)).all()
    # the drop is none minus frozen, per cell
    row = cells.set_index(["head_input", "hidden"]).loc[("flatten", 64)]
    none = maml[(maml["quantity"] == "accuracy") & (maml["protocol"] == "paper")]["value"].item()
    frozen = maml[(maml["quantity"] == "accuracy_body_frozen") & (maml["protocol"] == "paper")]["value"].item()
    assert row["drop_paper"] == pytest.approx(100 * (none - frozen))
    assert (folder / "out" / "figures" / "glyphs-5way-1shot" / "feature_reuse_map.png").stat().st_size > 1000


def test_map_through_analyze(tiny_map, tmp_path, capsys):
    from repana.cli import main

    folder, _, _ = tiny_map
    runs = folder / "out" / "runs" / "5way-1shot"
    checkpoints = [f"{network}={runs / network / 'seed0' / 'checkpoints' / 'latest.pt'}"
                   for network in ("maml-flatten32", "anil-flatten32", "maml-mean32")]
    args = ["analyze", "feature_reuse_map", "--out", str(tmp_path / "an"), "--dataset", "glyphs"]
    for spec in checkpoints:
        args += ["--checkpoint", spec]
    for key, value in TINY_MAP.items():
        args += ["--set", f"{key}={value}".replace("'", '"')]
    assert main(args) == 0
    cells = pd.read_csv(tmp_path / "an" / "feature_reuse_map_cells.csv")
    assert sorted(zip(cells["head_input"], cells["hidden"])) == [("flatten", 32), ("spatial_mean", 32)]
    flat = cells.set_index("head_input").loc["flatten"]
    assert np.isfinite(flat["anil_minus_maml"]) and np.isnan(cells.set_index("head_input").loc["spatial_mean",
                                                                                                "anil_minus_maml"])
    assert "flatten head, width 32" in capsys.readouterr().out


def test_map_needs_maml(tiny_map, tmp_path, capsys):
    from repana.cli import main

    folder, _, _ = tiny_map
    anil = folder / "out" / "runs" / "5way-1shot" / "anil-mean32" / "seed0" / "checkpoints" / "latest.pt"
    assert main(["analyze", "feature_reuse_map", "--checkpoint", str(anil), "--out", str(tmp_path / "x"),
                 "--set", "episodes=2"]) != 0
    assert "needs MAML checkpoints" in capsys.readouterr().err


def test_other_factors_beside_their_grid_cell():
    """Cells off the grid (another inner lr) are compared with the grid cell of their shape; the regime moves
    when the frozen body's drop crosses the allowance."""
    rows = []
    for lr, frozen in ((2.0, {"run": .60, "paper": .70, "converged": .80}), (0.5, {"run": .95, "paper": .955, "converged": .96})):
        for seed in (0, 1):
            rows += [dict(row, inner_lr=lr, iterations=6000, train_classes=0)
                     for row in _detail_rows("spatial_mean", 32, seed, {"run": .96, "paper": .96, "converged": .96},
                                             frozen, anil=.95, nil=.90)]
    # a second grid shape, so that the grid's factor values are the common ones
    rows += [dict(row, inner_lr=2.0, iterations=6000, train_classes=0)
             for row in _detail_rows("flatten", 32, 0, {"run": .9, "paper": .9, "converged": .9},
                                     {"run": .9, "paper": .9, "converged": .9}, anil=.9, nil=.9)]
    cells = summarize_cells(pd.DataFrame(rows), tolerance=1.5)
    assert list(base_cells(cells)) == [True, False, True]   # cells sorted: flatten, mean at lr 0.5, mean at lr 2
    factors = factor_rows(cells)
    assert len(factors) == 1
    row = factors.iloc[0]
    assert row["change"] == "inner lr 0.5 (grid 2)" and row["shape"] == "spatial_mean/32"
    assert row["drop_paper"] == pytest.approx(0.5) and row["grid_drop_paper"] == pytest.approx(26.0)
    assert (row["regime"], row["grid_regime"], row["moves"]) == ("reused", "adapts", True)
