"""`repana reproduce` end to end on a very short glyph run: CSVs, figures, report, resumption."""

from pathlib import Path

import pandas as pd
import pytest

from repana.analysis.reproduce import default_analyses_dir, load_entries, reproduce, training_plan
from repana.errors import ConfigError

SMALL = {"hidden": 8, "meta_batch_size": 2}  # a tiny Conv4 so the whole pipeline runs in seconds
TINY = {
    "inner_loop_similarity": 'episodes = 3\nmeasures = ["svcca", "cka_debiased"]\nmin_ratio = 5.0\n',
    "freezing": "episodes = 4\n",
    "training_dynamics": 'episodes = 2\nmeasures = ["cka_debiased"]\n',
    "maml_anil_nil": "episodes = 4\nspeed_repeats = 1\n",
    "maml_anil_similarity": 'episodes = 3\nmeasures = ["svcca", "cka_debiased"]\nmin_ratio = 5.0\n',
    "training_regimes": "episodes = 4\n",
    "head_needed": "episodes = 4\n",
    "convergence": ("inner_steps = [1, 2]\niterations = 2\nmeta_batch_size = 2\neval_every = 2\nepisodes = 2\n"
                    "inner_lr = 0.1\nl2 = 0.1\nhead_hidden = 8\ncost_repeats = 1\n"),
}


def _tiny_entries(folder: Path) -> Path:
    """Copies of the real analyses/ entries with tiny [quick] settings."""
    import tomllib

    folder.mkdir()
    for path in sorted(default_analyses_dir().glob("*.toml")):
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
    for preset in ("quick", "paper"):
        entries = load_entries(preset)
        assert set(entries) == set(TINY)
        assert all(entry["settings"] and entry["command"].startswith("repana analyze") for entry in entries.values())


def test_training_plan_quick_and_paper():
    quick = training_plan("quick", "omniglot")
    assert {k: c.algorithm for k, c in quick.items()} == {"maml": "maml", "anil": "anil", "multiclass": "pretrain",
                                                          "multitask": "multitask", "nil": "nil"}
    assert quick["maml"].save_steps[-1] == quick["maml"].iterations and len(quick["maml"].save_steps) == 3
    paper = training_plan("paper", "omniglot")
    assert paper["maml"].iterations == 60000 and paper["maml"].hidden == 64
    with pytest.raises(ConfigError, match="preset"):
        training_plan("huge", "omniglot")


def test_report_end_to_end_and_resume(tmp_path, glyphs):
    entries = _tiny_entries(tmp_path / "analyses")
    out = tmp_path / "out"
    messages = []
    report = reproduce("quick", "glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, data=glyphs,
                       train_overrides=SMALL,
                       log=messages.append)
    text = report.read_text()
    for heading in ("Representational change in the inner loop", "Freezing layers at test time",
                    "MAML vs ANIL vs NIL", "MAML and ANIL learn similar", "Where the features come from",
                    "Feature reuse during training", "convergence"):
        assert heading in text
    assert "46.9" in text and "48.4" in text and "93.7 ± 0.7" in text  # the paper's numbers beside ours
    assert "agree" in text
    for figure in ("inner_loop_similarity", "inner_loop_similarity_steps", "freezing", "maml_anil_nil",
                   "maml_anil_similarity", "training_regimes", "training_dynamics", "convergence", "convergence_cost"):
        assert (out / f"{figure}.png").stat().st_size > 1000
        assert (out / f"{figure}.pdf").exists()
    freezing = pd.read_csv(out / "tables" / "freezing.csv")
    assert list(freezing["frozen"]) == ["none", "1", "1,2", "1,2,3", "1,2,3,4"]
    anil_inner = pd.read_csv(out / "tables" / "inner_loop_similarity_summary.csv").query("label == 'ANIL' and layer != 'head'")
    assert (anil_inner["mean"] > 1 - 1e-6).all()  # ANIL's body never changes in the inner loop
    assert any("[train] maml" in m and "iterations" in m for m in messages)
    speed = pd.read_csv(out / "tables" / "maml_anil_nil_speed.csv")
    # the run's own steps (1 / 1 here) and the paper's 5 training / 10 test steps of its 1.7x and 4.1x
    assert set(zip(speed["steps_of"], speed["phase"], speed["inner_steps"])) == {
        ("this run", "train", 1), ("this run", "inference", 1), ("paper", "train", 5), ("paper", "inference", 10),
        ("this run", "training_run", 1)}
    assert "with the paper's 5 training / 10 test steps" in text

    # Rerun: nothing is trained or computed again.
    messages.clear()
    reproduce("quick", "glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, data=glyphs,
              train_overrides=SMALL,
              log=messages.append)
    assert not any("iterations" in m for m in messages if m.startswith("[train]"))
    assert not any("rows in" in m for m in messages)
    # An interrupted run that lost one table recomputes only that one.
    (out / "tables" / "training_regimes.csv").unlink()
    messages.clear()
    reproduce("quick", "glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, data=glyphs,
              train_overrides=SMALL,
              log=messages.append)
    assert [m.split(":")[0] for m in messages if "rows in" in m] == ["[analysis] training_regimes"]
    # The same folder with other training settings is refused, not silently reused.
    with pytest.raises(ConfigError, match="trained with other settings.*hidden"):
        reproduce("quick", "glyphs", out=out, analyses_dir=entries, iterations_scale=0.001, data=glyphs,
                  train_overrides={**SMALL, "hidden": 6}, log=messages.append)


def test_unknown_analysis_and_missing_entries_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown analys"):
        reproduce(only=["nope"], out=tmp_path)
    with pytest.raises(ConfigError, match="no analysis entries"):
        load_entries("quick", tmp_path)
