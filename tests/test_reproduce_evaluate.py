"""`repana evaluate` on the checkpoints `repana reproduce` writes, for each dataset.

The reproduce runs are built from the Omniglot paper preset with the dataset switched; their
config.toml must name the split the runs were trained on, so that evaluate loads the same data.
"""

from __future__ import annotations

import os

import pytest

from repana.analysis.reproduce import training_plan
from repana.cli import main
from repana.data import load_splits
from repana.errors import ConfigError
from repana.meta.checkpoint import load_checkpoint, save_checkpoint
from repana.meta.config import DATASET_SPLITS, from_dict, load_config
from repana.meta.train import load_data
from repana.models import build_model

from conftest import real_data_root


def _reproduce_checkpoint(tmp_path, dataset: str, data_root=None):
    """The final checkpoint of a reproduce-style MAML run (untrained weights: only the config matters)."""
    plan = training_plan("quick", dataset, data_root, iterations_scale=0.001, overrides={"hidden": 8})
    # a dict name -> config, or (since the run planner) a list of jobs with a .config each
    configs = plan.values() if isinstance(plan, dict) else [job.config for job in plan]
    config = next(c for c in configs if c.algorithm == "maml")
    model_config = config.model_config()
    model = build_model(model_config)
    path = tmp_path / "reproduce" / "runs" / "maml" / "checkpoints" / "latest.pt"
    save_checkpoint(path, model=model, model_config=model_config, algorithm=config.algorithm,
                    config=config.to_dict(), step=config.iterations)
    return config, path


def test_evaluate_reads_a_glyphs_reproduce_checkpoint(tmp_path, capsys):
    config, path = _reproduce_checkpoint(tmp_path, "glyphs")
    assert config.split == ""
    assert main(["evaluate", str(path), "--episodes", "2", "--steps", "1"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_reads_an_omniglot_reproduce_checkpoint_on_the_split_it_was_trained_on(tmp_path, capsys,
                                                                                        monkeypatch):
    root = real_data_root()
    if root is None:
        pytest.skip("real Omniglot data not found: set REPANA_DATA_ROOT (e.g. ../shared/data)")
    monkeypatch.chdir(tmp_path)
    config, path = _reproduce_checkpoint(tmp_path, "omniglot", os.path.relpath(root.resolve(), tmp_path))
    assert config.data_root == str(root.resolve())   # stored absolute: evaluate works from anywhere
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("REPANA_DATA_ROOT", raising=False)
    # reproduce() trains on load_splits(dataset, root): evaluate must load those very classes
    trained_on = load_splits("omniglot", root=root.resolve())
    evaluated_on = load_data(load_checkpoint(path).train_config())
    assert evaluated_on["test"].class_names == trained_on["test"].class_names
    assert main(["evaluate", str(path), "--episodes", "2", "--steps", "1"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_switching_the_dataset_drops_the_presets_split():
    assert load_config(preset="omniglot-5way-1shot").split == "maml"
    assert load_config(preset="omniglot-5way-1shot", overrides={"dataset": "glyphs"}).split == ""
    assert load_config(preset="omniglot-5way-1shot", overrides=["dataset=omniglot"]).split == "maml"
    assert load_config(preset="quick", overrides={"dataset": "omniglot", "split": "vinyals"}).split == "vinyals"


def test_a_split_of_another_dataset_is_a_config_error_and_old_glyph_configs_still_load():
    with pytest.raises(ConfigError, match="split = 'ravi' is not a split of 'omniglot'"):
        from_dict({"dataset": "omniglot", "split": "ravi"})
    with pytest.raises(ConfigError, match="split = 'nonsense' is not a split of 'glyphs'"):
        from_dict({"dataset": "glyphs", "split": "nonsense"})
    # what repana 0.1.0's reproduce wrote for glyphs: one split, so the Omniglot name can only mean it
    assert from_dict({"dataset": "glyphs", "split": "maml"}).split == ""


def test_the_split_table_matches_the_data_loaders():
    from repana.data import omniglot

    assert set(DATASET_SPLITS["omniglot"]) == set(omniglot.SPLITS) | {""}
