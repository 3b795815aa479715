"""`repana reproduce` end to end on a very short glyph run: CSVs, figures, report, resumption."""

from pathlib import Path

import pandas as pd
import pytest

from repana.analysis.reproduce import Reproduction, load_entries, training_plan
from repana.errors import ConfigError

SMALL = {"hidden": 8, "meta_batch_size": 2}  # a tiny Conv4 so the whole pipeline runs in seconds
TINY = {
    "inner_loop_similarity": 'episodes = 3\nmeasures = ["svcca", "cka_debiased"]\nmin_ratio = 5.0\n',
    "freezing": "episodes = 4\nladder = [2, 4]\nsimilarity_episodes = 2\n",
    "training_dynamics": 'episodes = 2\nladder = [2, 4]\nmeasures = ["cka_debiased"]\n',
    "maml_anil_nil": "episodes = 4\nspeed_repeats = 1\n",
    "maml_anil_similarity": 'episodes = 3\nmeasures = ["svcca", "cka_debiased"]\nmin_ratio = 5.0\n',
    "training_regimes": "episodes = 4\n",
    "head_needed": "episodes = 4\n",
    "seed_pair_similarity": 'episodes = 2\nmeasures = ["cca", "cka"]\nmin_ratio = 5.0\n',
    "learning_curves": "flat_gain = 0.01\n",
    "feature_reuse_map": ('episodes = 3\nsimilarity_episodes = 2\nladder = [2, 4]\npaper_steps = 2\n'
                          'measures = ["svcca", "cka_debiased"]\n'),
    "rl_returns": "tasks = 3\ntask_seed = 7\n",
    "rl_policy_similarity": 'tasks = 4\ntask_seed = 7\nmeasures = ["cca", "svcca", "cka"]\nmax_datapoints = 500\n',
    "convergence": ("inner_steps = [1, 2]\niterations = 2\nmeta_batch_size = 2\neval_every = 2\nepisodes = 2\n"
                    "inner_lr = 0.1\nl2 = 0.1\nhead_hidden = 8\ncost_repeats = 1\n"),
}


def _tiny_entries(folder: Path) -> Path:
    """Copies of the real analyses/ entries with tiny [quick] settings."""
    import tomllib

    folder.mkdir()
    from repana.resources import analyses_files

    for path in analyses_files():
        entry = tomllib.loads(path.read_text())
        head = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in entry.items()
                         if k in ("name", "reference", "command"))
        networks = "networks = [" + ", ".join(f'"{n}"' for n in entry["networks"]) + "]"
        (folder / path.name).write_text(f"{head}\n{networks}\n\n[quick]\n{TINY[entry['name']]}\n[paper]\n{TINY[entry['name']]}")
    return folder


@pytest.fixture(scope="module")
def glyphs():
    from repana.data.glyphs import load_glyph_splits

    return load_glyph_splits(n_train=40, n_val=8, n_test=20)


def test_every_entry_has_settings_for_both_presets():
    from repana.analysis.registry import list_analyses

    for preset in ("quick", "paper"):
        entries = load_entries(preset)
        assert set(entries) == set(TINY) == set(list_analyses())
        for name, entry in entries.items():
            # its command runs this very analysis: `repana analyze <name> ...`
            assert entry["settings"] and entry["command"].split()[:3] == ["repana", "analyze", name], name


def test_training_plan_quick_and_paper():
    quick = training_plan("quick", "omniglot")
    by_network = {job.network: job.config for job in quick}
    assert [job.name for job in quick][:2] == ["5way-1shot/maml/seed0", "5way-1shot/anil/seed0"]
    assert {k: c.algorithm for k, c in by_network.items()} == {
        "maml": "maml", "anil": "anil", "multiclass": "pretrain", "multitask": "multitask", "nil": "nil",
        "boil": "boil"}
    assert by_network["boil"].iterations == 3000 and by_network["boil"].seed == 6
    assert all(c.bn_inner_loop is False for c in by_network.values())  # the paper preset's convention
    maml = by_network["maml"]
    # Figure 3's stages: 1/6, 1/3 and 1/2 of training (10k, 20k, 30k of 60k) and the final network
    assert maml.save_steps == [833, 1667, 2500, 5000] and maml.iterations == 5000
    assert maml.val_every == 333 and by_network["anil"].val_every == 333 and by_network["nil"].val_every == 333
    assert (maml.head_input, maml.inner_steps_test) == ("flatten", 10)   # Table 1's network shape and protocol
    paper = {job.network: job.config for job in training_plan("paper", "omniglot")}
    assert paper["maml"].iterations == 60000 and paper["maml"].hidden == 64
    assert {10000, 20000, 30000, 60000} <= set(paper["maml"].save_steps)
    with pytest.raises(ConfigError, match="preset"):
        training_plan("huge", "omniglot")


def test_seeds_and_settings_expand_the_plan():
    plan = training_plan("quick", "omniglot", settings=["20way-5shot", "omniglot-5way-1shot"], seeds=3,
                         networks=["maml", "anil"])
    assert len(plan) == 2 * 2 * 3
    cells = {(job.setting, job.config.ways, job.config.shots) for job in plan}
    assert cells == {("20way-5shot", 20, 5), ("5way-1shot", 5, 1)}
    seeds = {(job.setting, job.network, job.seed_index): job.config.seed for job in plan}
    assert len(set(seeds.values())) == 6   # every network of a setting has its own initialisation
    assert seeds[("5way-1shot", "maml", 0)] == training_plan("quick", "omniglot")[0].config.seed
    # each cell trains with its own preset (Finn et al.'s 20-way runs use a meta-batch of 16)
    from repana.meta.config import preset_values

    twenty = next(job.config for job in plan if job.setting == "20way-5shot" and job.network == "maml")
    assert twenty.inner_lr == preset_values("omniglot-20way-5shot")["inner_lr"]
    # the quick default networks: Table 1's shape and test-time steps; the paper preset keeps each preset's own
    assert (twenty.head_input, twenty.inner_steps_test) == ("flatten", 10)
    paper_twenty = training_plan("paper", "omniglot", settings=["20way-5shot"], networks=["maml"])[0].config
    assert paper_twenty.inner_steps_test == preset_values("omniglot-20way-5shot")["inner_steps_test"]
    mini = training_plan("quick", "miniimagenet", settings=["5way-5shot"], networks=["anil"])
    assert mini[0].config.dataset == "miniimagenet" and mini[0].config.shots == 5
    for bad, message in ((dict(seeds=0), "at least 1 seed"), (dict(settings=["7way-1shot"]), "unknown setting"),
                         (dict(settings=["imagenet-5way-1shot"]), "unknown setting"),
                         (dict(networks=["maml", "protonet"]), "unknown network")):
        with pytest.raises(ConfigError, match=message):
            training_plan("quick", "omniglot", **bad)


def test_report_end_to_end_and_resume(tmp_path, glyphs, monkeypatch):
    entries = _tiny_entries(tmp_path / "analyses")
    out = tmp_path / "out"
    messages = []
    report = Reproduction(preset="quick", dataset="glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, overrides=SMALL, seeds=2).run(data=glyphs, log=messages.append)
    text = report.read_text()
    for heading in ("Representational change in the inner loop", "Freezing layers at test time",
                    "MAML vs ANIL vs NIL", "pairs of different seeds (paper Table 3)", "Where the features come from",
                    "Feature reuse during training", "convergence", "learn very similarly (paper Fig. 5)",
                    "Tables 2 and 4, every cell"):
        assert heading in text
    # the paper's numbers beside ours, as printed: Table 1, Table 5, Table 2, Table 3
    assert "44.5 ± 0.8" in text and "48.4 ± 0.3" in text and "93.7 ± 0.7" in text and "0.51" in text
    assert "not run" in text and "2 seeds" in text and "agree" in text
    # The report opens with one findings table built from the sections' judged findings.
    title, findings = text.split("\n\n")[:2], text.split("\n\n")[2]
    assert title == ["# Rapid Learning or Feature Reuse? -- reproduction report", "## Findings"]
    lines = findings.splitlines()
    assert lines[0] == "| claim | where in the paper | paper | ours | verdict | why not |"
    rows = [line.split(" | ") for line in lines[2:]]
    claims = [row[0].lstrip("| ") for row in rows]
    for layer in ("conv1", "conv2", "conv3", "conv4"):
        assert f"{layer} barely changes in the inner loop (svcca)" in claims
    assert "the head changes in the inner loop (svcca)" in claims
    assert {"ANIL matches MAML's accuracy", "NIL (no head, no inner loop) performs as well as MAML and ANIL",
            "MAML: freezing conv blocks at test time hardly affects accuracy (10 test steps)"} <= set(claims)
    assert any(c.startswith("MAML and ANIL learn very similarly") for c in claims)
    for row in rows:
        verdict, why_not = row[4], row[5].rstrip(" |")
        assert verdict in ("agrees", "**does not agree**")
        assert (why_not == "") == (verdict == "agrees")
    assert "does NOT agree" not in text
    assert text.index("## Setup") > text.index("## Findings") and text.index("## 1. ") > text.index("## Setup")
    # The learning-curve table: one row per validation of the network validated fewest times, integer steps.
    curve_section = text[text.index("learn very similarly (paper Fig. 5)"):]
    assert "e+0" not in curve_section.split("![")[0] and "fraction of training" in curve_section
    setting = out / "figures" / "glyphs-5way-1shot"
    for figure in ("inner_loop_similarity", "inner_loop_similarity_steps", "freezing", "maml_anil_nil",
                   "maml_anil_similarity", "training_regimes", "training_dynamics", "convergence", "convergence_cost",
                   "seed_pair_similarity", "learning_curves"):
        assert (setting / f"{figure}.png").stat().st_size > 1000
        assert (setting / f"{figure}.pdf").exists()
    assert "figures/glyphs-5way-1shot/freezing.png" in text
    tables = out / "tables" / "glyphs-5way-1shot"
    freezing = pd.read_csv(tables / "freezing.csv")
    frozen_sets = ["none", "1", "1,2", "1,2,3", "1,2,3,4"]
    assert list(freezing["frozen"]) == [f for f in frozen_sets for _ in range(3)] * 4
    assert list(freezing["protocol"]) == ["run", "paper", "converged"] * 20
    assert list(freezing["seed"]) == [0] * 30 + [1] * 30
    assert list(freezing["label"]) == (["MAML"] * 15 + ["BOIL"] * 15) * 2
    # the run's test steps (the quick default network: Table 1's 10), the paper's 10, the ladder's choice
    assert set(freezing.loc[freezing["protocol"] == "run", "steps"]) == {10}
    assert set(freezing.loc[freezing["protocol"] == "converged", "steps"]) <= {2, 4}
    assert "head needs more steps" in text or "body really adapts" in text or "the body is reused" in text
    # BOIL: shown as the representation-change counterpoint, without a verdict (no claim of the paper)
    assert "BOIL: trained with boil, about which the paper makes no claim (no verdict)" in text
    assert "BOIL (trained with boil, about which the paper makes no claim; no verdict)" in text
    assert not any(line.startswith("- BOIL") and "**" in line for line in text.splitlines())
    pairs = pd.read_csv(tables / "seed_pair_similarity.csv")
    assert set(pairs["pair"]) == {"MAML-MAML", "ANIL-ANIL", "ANIL-MAML"} and len(set(pairs["model_b"])) == 3
    curves = pd.read_csv(tables / "learning_curves.csv")
    assert set(curves["algorithm"]) == {"maml", "anil", "multiclass", "multitask", "nil_training", "boil"}
    assert set(curves["seed"]) == {0, 1}
    anil_inner = pd.read_csv(tables / "inner_loop_similarity_summary.csv").query("label == 'ANIL' and layer != 'head'")
    assert (anil_inner["mean"] > 1 - 1e-6).all()  # ANIL's body never changes in the inner loop
    summary = pd.read_csv(tables / "inner_loop_similarity_summary.csv")
    boil_conv4 = summary.query("label == 'BOIL' and layer == 'conv4'")
    assert len(boil_conv4) and (boil_conv4["mean"] < 1 - 1e-4).all()  # BOIL's body does change
    assert any("5way-1shot/maml/seed1" in m and "iterations" in m for m in messages)
    speed = pd.read_csv(tables / "maml_anil_nil_speed.csv").query("seed == 0")
    # the run's own steps (1 in training, the quick default's 10 at test) and the paper's 5 training / 10 test steps of its 1.7x and 4.1x
    assert set(zip(speed["steps_of"], speed["phase"], speed["inner_steps"])) == {
        ("this run", "train", 1), ("this run", "inference", 10), ("paper", "train", 5), ("paper", "inference", 10),
        ("this run", "training_run", 1)}
    assert "with 5 training / 10 test steps" in text

    # The analyses in 2 forked worker processes give the same tables (timings aside).
    import shutil

    import repana.analysis.reproduce as reproduce_module

    shutil.copytree(out / "runs", tmp_path / "forked" / "runs")
    monkeypatch.setattr(reproduce_module, "analysis_workers", lambda executor, max_workers=None: 2)
    Reproduction(preset="quick", dataset="glyphs", out=tmp_path / "forked", analyses_dir=entries, iterations_scale=0.001, overrides=SMALL, seeds=2).run(data=glyphs, log=messages.append)
    monkeypatch.undo()
    timings = {"elapsed_s", "seconds", "ratio", "seconds_per_episode", "speedup"}
    csvs = sorted(path.relative_to(out) for path in (out / "tables").rglob("*.csv"))
    assert csvs == sorted(path.relative_to(tmp_path / "forked") for path in (tmp_path / "forked" / "tables").rglob("*.csv"))
    for csv in csvs:
        inline, forked = pd.read_csv(out / csv), pd.read_csv(tmp_path / "forked" / csv)
        kept = [column for column in inline.columns if column not in timings]
        pd.testing.assert_frame_equal(inline[kept], forked[kept], check_exact=True, obj=str(csv))

    # Rerun: nothing is trained or computed again.
    messages.clear()
    Reproduction(preset="quick", dataset="glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, overrides=SMALL, seeds=2).run(data=glyphs, log=messages.append)
    assert all("reused" in m for m in messages if m.startswith("[train] 5way"))
    assert not any("rows in" in m for m in messages)
    # An interrupted run that lost one table recomputes only that one.
    (tables / "seed1" / "training_regimes.csv").unlink()
    messages.clear()
    Reproduction(preset="quick", dataset="glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, overrides=SMALL, seeds=2).run(data=glyphs, log=messages.append)
    assert [m.split(":")[0] for m in messages if "rows in" in m] == ["[analysis] training_regimes seed1"]
    # The same folder with other training settings is refused, not silently reused.
    from repana.runs import JobsFailedError

    with pytest.raises(JobsFailedError, match="trained with other settings.*hidden"):
        Reproduction(preset="quick", dataset="glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, overrides={**SMALL, "hidden": 6}, seeds=2).run(data=glyphs, log=messages.append)



RL_TINY = {"meta_batch_size": 2, "fast_batch_size": 2, "horizon": 12, "hidden_sizes": [8, 8], "dtype": "float64",
           "cg_iters": 3}


def test_rl_training_plan_quick_and_paper(tmp_path):
    from repana.analysis.reproduce import rl_training_plan

    quick = rl_training_plan("quick", ["2d-navigation", "halfcheetah-dir"], seeds=3, runs_dir=tmp_path)
    assert [job.name for job in quick][:4] == ["rl-2d-navigation/maml/seed0", "rl-2d-navigation/maml/seed1",
                                              "rl-2d-navigation/maml/seed2", "rl-2d-navigation/anil/seed0"]
    nav = {(job.network, job.seed_index): job.config for job in quick if job.config.env == "2d-navigation"}
    # 40 meta-updates at the paper's per-update size; maml's base seed 0, anil's 1, + 1000 per seed
    assert {c.iterations for c in nav.values()} == {40} and nav["maml", 0].meta_batch_size == 20
    assert nav["maml", 0].fast_batch_size == 20 and nav["maml", 0].horizon == 100
    assert [nav["maml", k].seed for k in range(3)] == [0, 1000, 2000] and nav["anil", 2].seed == 2001
    cheetah = next(job.config for job in quick if job.config.env == "halfcheetah-dir")
    assert (cheetah.iterations, cheetah.meta_batch_size, cheetah.fast_batch_size, cheetah.horizon) == (10, 10, 10, 200)
    paper = rl_training_plan("paper", ["halfcheetah-vel"], seeds=3)
    assert len(paper) == 6 and {(j.config.iterations, j.config.meta_batch_size, j.config.fast_batch_size)
                                for j in paper} == {(500, 40, 20)}
    with pytest.raises(ConfigError, match="unknown RL environment"):
        rl_training_plan("quick", ["ant"])


def test_rl_reproduction_end_to_end(tmp_path):
    entries = _tiny_entries(tmp_path / "analyses")
    out = tmp_path / "out"
    messages = []
    report = Reproduction(preset="quick", out=out, analyses_dir=entries, rl_envs=["2d-navigation"], iterations_scale=2 / 40, overrides=RL_TINY, seeds=2).run(log=messages.append)
    text = report.read_text()
    assert text.startswith("# Rapid Learning or Feature Reuse? -- reproduction report, reinforcement learning")
    assert "RL: MAML vs ANIL average return (paper Table 2, RL rows) -- rl-2d-navigation" in text
    assert "RL: the policy's layer similarity before vs after adaptation -- rl-2d-navigation" in text
    assert "-20.3 ± 3.2" in text and "-20.1 ± 2.3" in text and "ANIL matches MAML in RL" in text
    assert "not comparable" in text and "Why mean CCA is shown but not used" in text
    assert "Gaussian MLP policy (2 x 8 hidden ReLU units" in text
    assert "4 training runs (anil 2 meta-updates, maml 2 meta-updates" in text
    tables = out / "tables" / "rl-2d-navigation"
    per_run = pd.read_csv(tables / "rl_returns.csv")
    assert sorted(per_run["label"]) == ["anil/seed0", "anil/seed1", "maml/seed0", "maml/seed1"]
    assert sorted(per_run["seed"]) == [0, 1, 1000, 1001] and (per_run["n_tasks"] == 3).all()
    summary = pd.read_csv(tables / "rl_returns_table2.csv")
    assert list(summary["n_seeds"]) == [2, 2] and list(summary["paper_mean"]) == [-20.3, -20.1]
    similarity = pd.read_csv(tables / "rl_policy_similarity_layers.csv")
    anil_hidden = similarity.query("algorithm == 'anil' and layer != 'mu'")
    assert len(anil_hidden) == 6 and (anil_hidden["value"] > 1 - 1e-9).all()
    for figure in ("rl_returns", "rl_policy_similarity"):
        assert (out / "figures" / "rl-2d-navigation" / f"{figure}.png").stat().st_size > 1000
    # Rerun: nothing is trained or computed again
    messages.clear()
    Reproduction(preset="quick", out=out, analyses_dir=entries, rl_envs=["2d-navigation"], iterations_scale=2 / 40, overrides=RL_TINY, seeds=2).run(log=messages.append)
    assert sum("reusing" in m for m in messages if m.startswith("[train]")) == 4
    assert not any("rows in" in m for m in messages)
    with pytest.raises(ConfigError, match="unknown analyses \\['freezing'\\] for a rl reproduction"):
        Reproduction(preset="quick", out=out, analyses_dir=entries, rl_envs=["2d-navigation"], only=["freezing"]).run()


def test_rl_plan_and_flags_through_the_cli(tmp_path, capsys):
    from repana.cli import main
    from repana.runs import read_plan

    assert main(["reproduce", "--rl", "--rl-envs", "2d-navigation,halfcheetah-vel", "--preset", "paper", "--seeds",
                 "3", "--out", str(tmp_path / "out"), "--plan", str(tmp_path / "plan")]) == 0
    jobs = read_plan(tmp_path / "plan")
    assert len(jobs) == 12 and {job.kind for job in jobs} == {"rl"} and {job.config.iterations for job in jobs} == {500}
    assert jobs[0].run_dir == (tmp_path / "out" / "runs" / "rl-2d-navigation" / "maml" / "seed0").resolve()
    for flags, needle in ((["--rl-envs", "2d-navigation"], "--rl-envs only applies with --rl"),
                          (["--rl", "--device", "cuda"], "RL jobs train on the CPU"),
                          (["--rl", "--setting", "20way-1shot"], "with --rl choose environments with --rl-envs"),
                          (["--rl", "--rl-envs", "ant"], "unknown RL environment(s) ['ant']")):
        assert main(["reproduce", *flags, "--out", str(tmp_path / "x")]) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and err.count("\n") == 0, err


def test_unknown_analysis_and_missing_entries_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown analys"):
        Reproduction(only=["nope"], out=tmp_path).run()
    with pytest.raises(ConfigError, match="no analysis entries"):
        load_entries("quick", tmp_path)


def _write_miniimagenet(folder, per_class: int = 16) -> None:
    """A MiniImageNet in its public pickle format (mini-imagenet-cache-*.pkl: image_data uint8 (N, 84, 84, 3),
    class_dict {wnid: [indices]}) with 5 classes per split, enough for 5-way episodes of 15 queries."""
    import pickle

    import numpy as np

    from repana.data.miniimagenet import PICKLE_FILES

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for offset, (part, file) in enumerate(PICKLE_FILES.items()):
        classes = [f"n0{offset}{c:06d}" for c in range(5)]
        # a per-class colour so that the classes can be told apart
        colours = rng.integers(0, 256, (5, 1, 1, 3))
        images = np.concatenate([np.clip(colours[c] + rng.integers(-40, 40, (per_class, 84, 84, 3)), 0, 255)
                                 for c in range(5)]).astype(np.uint8)
        class_dict = {name: list(range(c * per_class, (c + 1) * per_class)) for c, name in enumerate(classes)}
        with open(folder / file, "wb") as handle:
            pickle.dump({"image_data": images, "class_dict": class_dict}, handle, protocol=4)


def test_miniimagenet_fixture_end_to_end(tmp_path, monkeypatch):
    """The MiniImageNet path (loader, presets, every analysis, report) on a tiny fixture in the public format."""
    monkeypatch.setenv("REPANA_CACHE_DIR", str(tmp_path / "cache"))
    _write_miniimagenet(tmp_path / "data" / "miniimagenet")
    entries = _tiny_entries(tmp_path / "analyses")
    out = tmp_path / "out"
    report = Reproduction(preset="quick", dataset="miniimagenet", data_root=tmp_path / "data", out=out, analyses_dir=entries, iterations_scale=0.001, overrides={"hidden": 4, "meta_batch_size": 1,
                                                                "val_episodes": 2}).run(log=lambda m: None)
    text = report.read_text()
    assert "miniimagenet-5way-1shot" in text and "Freezing layers at test time" in text
    # MiniImageNet 5-way 1-shot is a cell of the paper's tables: ours beside the printed values
    assert "46.9 ± 0.2" in text and "44.5 ± 0.8" in text
    freezing = pd.read_csv(out / "tables" / "miniimagenet-5way-1shot" / "freezing.csv")
    assert list(freezing["label"]) == ["MAML"] * 15 + ["BOIL"] * 15 and freezing["accuracy"].between(0, 1).all()
    assert (out / "runs" / "5way-1shot" / "maml" / "seed0" / "config.toml").read_text().count('"miniimagenet"') == 1


def test_learning_curves_pair_runs_validated_at_different_iterations():
    """MAML validated every 200 iterations, ANIL every 333: ANIL's curve is interpolated at MAML's steps; each
    spread is the 95% CI half-width of the mean over 3 seeds, t(0.975, 2) * std / sqrt(3)."""
    from repana.analysis.learning_curves import flattening, paired_curves

    half_width = 4.303 / 3 ** 0.5
    maml = pd.DataFrame({"step": [200, 400, 600], "algorithm": "maml", "val_accuracy": [0.5, 0.6, 0.7],
                         "val_accuracy_std": [0.01] * 3, "n_seeds": 3, "val_ci95": 0.05})
    anil = pd.DataFrame({"step": [333, 666], "algorithm": "anil", "val_accuracy": [0.6, 0.9],
                         "val_accuracy_std": [0.02, 0.04], "n_seeds": 3, "val_ci95": 0.05})
    cells = paired_curves(pd.concat([maml, anil]))
    assert list(cells) == [400, 600]                      # 200 lies before ANIL's first validation
    assert cells[400]["ANIL"][0] == pytest.approx(100 * (0.6 + 0.3 * 67 / 333))
    assert cells[600]["MAML"] == pytest.approx((70.0, 1.0 * half_width))
    assert cells[400]["ANIL"][1] == pytest.approx(100 * (0.02 + 0.02 * 67 / 333) * half_width)
    # one seed: the validation's episode CI is the spread
    single = paired_curves(pd.concat([maml.assign(n_seeds=1, val_accuracy_std=float("nan")), anil]))
    assert single[600]["MAML"] == pytest.approx((70.0, 5.0))
    # a straight rising line has not flattened; a noisy plateau has
    steps = list(range(100, 1600, 100))
    curves = pd.concat([pd.DataFrame({"algorithm": "up", "step": steps, "val_accuracy": [0.5 + s / 3000 for s in steps]}),
                        pd.DataFrame({"algorithm": "flat", "step": steps,
                                      "val_accuracy": [0.8 + 0.02 * (-1) ** i for i in range(len(steps))]})])
    flat = flattening(curves).set_index("algorithm")
    assert not flat.loc["up", "flattened"] and flat.loc["up", "rise"] == pytest.approx(0.4 / 3, abs=1e-9)
    assert flat.loc["flat", "flattened"]
    # a noisy rise is a plateau up to 3 points over the last third, a trend above
    noise = [0.04 * (-1) ** i for i in range(len(steps))]
    for total, flattened in ((0.02, True), (0.06, False)):
        rising = pd.DataFrame({"algorithm": "noisy", "step": steps,
                               "val_accuracy": [0.5 + total * s / 500 + e for s, e in zip(steps, noise)]})
        row = flattening(rising).iloc[0]
        assert row["rise"] < 2 * row["rise_se"] and bool(row["flattened"]) is flattened, (total, row.to_dict())


def test_learning_curves_table_puts_networks_of_different_lengths_on_one_grid():
    """MAML validated at 1000..3000, ANIL at 1000..5000, multitask at 400, 1000: two rows (multitask's), each
    network at its validation nearest the same fraction of its own training, integer steps."""
    from repana.analysis.learning_curves import curve_stats, shared_grid

    rows = [("maml", s, 0.5 + s / 10000) for s in range(1000, 3001, 1000)]
    rows += [("anil", s, 0.4 + s / 10000) for s in range(1000, 5001, 1000)]
    rows += [("multitask", s, 0.2) for s in (400, 1000)]
    curves = pd.DataFrame([{"algorithm": a, "network": a, "seed": seed, "step": s, "val_accuracy": v + 0.01 * seed,
                            "val_ci95": 0.03} for a, s, v in rows for seed in (0, 1)])
    grid, caption = shared_grid(curve_stats(curves))
    assert list(grid["fraction of training"]) == ["0.40", "1.00"]
    assert list(grid["maml % (step)"]) == ["60.5 ± 0.7 (1000)", "80.5 ± 0.7 (3000)"]
    assert list(grid["anil % (step)"]) == ["60.5 ± 0.7 (2000)", "90.5 ± 0.7 (5000)"]
    assert list(grid["multitask % (step)"]) == ["20.5 ± 0.7 (400)", "20.5 ± 0.7 (1000)"]
    assert "the 2 validations of multitask" in caption and "nearest the same fraction" in caption


def test_findings_table_lists_judged_findings_only_with_reasons_for_disagreements():
    from repana.analysis.registry import AGREES, DISAGREES, Finding, Section
    from repana.analysis.report import findings_table

    judged = Finding("a", AGREES, claim="claim a", location="Table 1", paper="44.5", ours="44.0", reason="rule a")
    failed = Finding("b", DISAGREES, claim="claim | b", location="Figure 2", paper="> 0.9", ours="0.85",
                     reason="conv4 0.85\nfails")
    sections = [Section("S1", "", (judged, Finding("no claim")), "omniglot-5way-1shot"),
                Section("S2", "", (failed,), "omniglot-20way-1shot"), Section("S3", "", (judged,))]
    lines = findings_table(sections).splitlines()
    assert lines[0] == "| setting | claim | where in the paper | paper | ours | verdict | why not |"
    assert lines[2:] == ["| omniglot-5way-1shot | claim a | Table 1 | 44.5 | 44.0 | agrees |  |",
                         "| omniglot-20way-1shot | claim \\| b | Figure 2 | > 0.9 | 0.85 | **does not agree** | "
                         "conv4 0.85 fails |",
                         "| all | claim a | Table 1 | 44.5 | 44.0 | agrees |  |"]
    assert findings_table(sections[:1]).splitlines()[2] == "| claim a | Table 1 | 44.5 | 44.0 | agrees |  |"
    assert "No claim" in findings_table([Section("S", "", (Finding("x"),))])
