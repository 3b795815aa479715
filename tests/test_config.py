"""TrainConfig: presets with the paper's hyperparameters, TOML loading, overrides, clear errors."""

from __future__ import annotations

import re
import tomllib
import warnings

import pytest
import torch

from repana.errors import ConfigError, ConfigWarning
from repana.meta.config import (TrainConfig, list_presets, load_config, parse_override, preset_values,
                                to_toml)

PAPER_PRESETS = {  # Finn et al. 2017, Sec. 5.2 (Raghu et al. 2020 reuse them for ANIL)
    "omniglot-5way-1shot": dict(ways=5, shots=1, meta_batch_size=32, inner_lr=0.4, inner_steps_train=1,
                                inner_steps_test=3, hidden=64, pooling="stride"),
    "omniglot-5way-5shot": dict(ways=5, shots=5, meta_batch_size=32, inner_lr=0.4, inner_steps_train=1,
                                inner_steps_test=3, hidden=64, pooling="stride"),
    "omniglot-20way-1shot": dict(ways=20, shots=1, meta_batch_size=16, inner_lr=0.1, inner_steps_train=5,
                                 inner_steps_test=5, hidden=64, pooling="stride"),
    "omniglot-20way-5shot": dict(ways=20, shots=5, meta_batch_size=16, inner_lr=0.1, inner_steps_train=5,
                                 inner_steps_test=5, hidden=64, pooling="stride"),
    "miniimagenet-5way-1shot": dict(ways=5, shots=1, meta_batch_size=4, inner_lr=0.01, inner_steps_train=5,
                                    inner_steps_test=10, hidden=32, pooling="max", queries_train=15),
    "miniimagenet-5way-5shot": dict(ways=5, shots=5, meta_batch_size=2, inner_lr=0.01, inner_steps_train=5,
                                    inner_steps_test=10, hidden=32, pooling="max", queries_train=15),
}


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_paper_presets_hold_the_published_hyperparameters(name):
    config = load_config(preset=name)
    for key, value in PAPER_PRESETS[name].items():
        assert getattr(config, key) == value, key
    assert config.outer_lr == 1e-3 and config.iterations == 60000
    assert config.inner_loss == "sum_over_shots"  # the original code's convention
    assert config.bn_inner_loop is False  # Finn et al.'s code: batch norm learned by the outer loop only
    assert config.name == name


def test_all_presets_load_and_include_the_cpu_ones():
    names = list_presets()
    assert {"quick", "omniglot-subset", *PAPER_PRESETS} <= set(names)
    for name in names:
        load_config(preset=name)


def test_sum_over_shots_lr_is_ways_times_the_mean_loss_lr():
    config = load_config(preset="omniglot-20way-1shot")
    assert config.mean_loss_inner_lr() == pytest.approx(20 * 0.1)
    assert config.replace(inner_loss="mean").mean_loss_inner_lr() == pytest.approx(0.1)


def test_overrides_are_parsed_as_toml_values():
    config = load_config(preset="omniglot-5way-1shot",
                         overrides=["ways=20", "inner_lr=1", "algorithm=anil", 'name="x y"', "save_steps=[50, 10]"])
    assert config.ways == 20 and config.inner_lr == 1.0 and isinstance(config.inner_lr, float)
    assert config.algorithm == "anil" and config.name == "x y"
    assert config.save_steps == [10, 50]
    assert parse_override("pooling=max") == ("pooling", "max")


def test_toml_file_with_tables_and_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\ndataset = "glyphs"\nways = 3\n[algorithm]\nalgorithm = "fomaml"\n'
                    'inner_steps_train = 2\n')
    config = load_config(path=path, overrides={"seed": 7})
    assert (config.dataset, config.ways, config.algorithm, config.seed) == ("glyphs", 3, "fomaml", 7)
    assert config.first_order
    (tmp_path / "resolved.toml").write_text(to_toml(config))
    again = load_config(path=tmp_path / "resolved.toml")
    assert again == config
    assert tomllib.loads(to_toml(config))["inner_loss"] == "mean"


@pytest.mark.parametrize("overrides, key", [
    (["inner_steps_train=0"], "inner_steps_train"),       # MAML with no inner step
    (["inner_lr=-0.1"], "inner_lr"),
    (["outer_lr=0"], "outer_lr"),
    (["ways=1"], "ways"),
    (["shots=0"], "shots"),
    (["meta_batch_size=0"], "meta_batch_size"),
    (["algorithm=protonet"], "algorithm"),
    (["pooling=avg"], "pooling"),
    (["inner_loss=sum"], "inner_loss"),
    (["ways=five"], "ways"),
    (["save_steps=[-1]"], "save_steps"),
    (["save_steps=[60001]"], "save_steps"),
    (["iterations=-5"], "iterations"),
    (["bn_inner_loop=1"], "bn_inner_loop"),
    (["bn_inner_loop=maybe"], "bn_inner_loop"),
])
def test_impossible_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(preset="omniglot-5way-1shot", overrides=overrides)


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="inner_lrr.*did you mean 'inner_lr'"):
        load_config(preset="quick", overrides=["inner_lrr=0.1"])
    path = tmp_path / "bad.toml"
    path.write_text("ways = 5\nmeta_batch = 4\n")
    with pytest.raises(ConfigError, match="meta_batch"):
        load_config(path=path)
    with pytest.raises(ConfigError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("ways = = 5")
        load_config(path=tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="omniglot-7way")


def test_more_ways_than_classes_is_an_error():
    config = TrainConfig(ways=20)
    with pytest.raises(ConfigError, match="ways = 20 is more than the 15 classes of the 'val' split"):
        config.check_classes({"train": 100, "val": 15})


def test_a_subset_of_training_classes_is_checked_and_fixed():
    from repana.data.dataset import ImageClassDataset
    from repana.meta.train import training_classes

    TrainConfig(ways=5, train_classes=40).check_classes({"train": 100, "val": 15})
    with pytest.raises(ConfigError, match=r"train_classes = 120 is more than the 100 classes of the training split"):
        TrainConfig(ways=5, train_classes=120).check_classes({"train": 100})
    with pytest.raises(ConfigError, match="ways = 5 is more than the 3 classes of the 'train' split"):
        TrainConfig(ways=5, train_classes=3).check_classes({"train": 100})
    with pytest.raises(ConfigError, match="train_classes = -1 must not be negative"):
        TrainConfig(train_classes=-1).validate()
    images = torch.zeros(60, 1, 4, 4, dtype=torch.uint8)
    labels = torch.arange(60) % 30
    data = ImageClassDataset(images, labels, [f"c{k}" for k in range(30)], "toy")
    subset = training_classes(data, 10)
    assert subset.n_classes == 10 and len(subset.labels) == 20
    assert subset.class_names == training_classes(data, 10).class_names            # the same for every run
    assert subset.class_names == sorted(subset.class_names, key=lambda n: int(n[1:]))   # in the dataset's order


def test_zero_inner_steps_allowed_for_classifier_baselines():
    config = load_config(preset="quick", overrides=["algorithm=pretrain", "inner_steps_train=0"])
    assert config.inner_steps_train == 0


def test_presets_record_the_conventions():
    for name in list_presets():
        values = preset_values(name)
        for key in ("inner_loss", "bn_support_query", "queries_train", "queries_test"):
            assert key in values, (name, key)


def test_bn_inner_loop_defaults_to_true_and_round_trips_through_toml(tmp_path):
    assert TrainConfig().bn_inner_loop is True
    assert load_config(preset="quick").bn_inner_loop is True
    config = load_config(preset="quick", overrides=["bn_inner_loop=false", "algorithm=boil"])
    assert (config.bn_inner_loop, config.algorithm) == (False, "boil")
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert load_config(path=path) == config


@pytest.mark.parametrize("overrides, message", [
    ({"iterations": 0}, "iterations = 0 must be at least 1"),
    ({"iterations": 10 ** 23}, "iterations = 100000000000000000000000 is above the limit of 1,000,000"),
    ({"test_episodes": 10 ** 9}, "test_episodes = 1000000000 is above the limit of 100,000"),
    ({"inner_steps_test": 10 ** 8}, "inner_steps_test = 100000000 is above the limit of 1,000"),
    ({"queries_test": 10 ** 6}, "queries_test = 1000000 is above the limit of 600"),
    ({"inner_lr": 101.0}, "inner_lr = 101 (101 on the mean loss) is above the limit of 100"),
])
def test_no_iterations_and_sizes_above_the_limits_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(preset="quick", overrides=overrides)


def test_the_lr_limit_applies_in_the_mean_loss_convention():
    # MAML's 20-way Omniglot: 0.1 summed over 20 classes is 2.0 on the mean loss, far below the limit
    assert load_config(preset="omniglot-20way-1shot").mean_loss_inner_lr() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match=re.escape("inner_lr = 6 (120 on the mean loss) is above the limit")):
        load_config(preset="omniglot-20way-1shot", overrides={"inner_lr": 6.0})


def test_a_shortened_run_keeps_the_save_steps_that_fit_and_warns():
    assert load_config(preset="quick").save_steps == [0, 100, 200]
    with pytest.warns(ConfigWarning, match=re.escape("save_steps [100, 200] lie beyond the run, so only [0] are "
                                                     "kept")):
        assert load_config(preset="quick", overrides={"iterations": 2}).save_steps == [0]
    with pytest.warns(ConfigWarning, match=re.escape("[200] lie beyond")):
        assert load_config(preset="quick", overrides={"iterations": 150}).save_steps == [0, 100]
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nothing dropped, nothing said
        assert load_config(preset="quick", overrides={"iterations": 300}).save_steps == [0, 100, 200]
    # save_steps given with the iterations are the user's: beyond the run they stay an error
    with pytest.raises(ConfigError, match="save_steps"):
        load_config(preset="quick", overrides={"iterations": 2, "save_steps": [0, 5]})
