"""Freezing, MAML/ANIL/NIL comparison, training regimes and head-needed: known answers on tiny nets."""

import numpy as np
import pandas as pd
import pytest

from analysis_helpers import tiny_episodes, tiny_model  # noqa: F401
from repana.analysis.common import check_same_architecture
from repana.meta.inner import all_parameters, freeze_layers
from repana.meta.inner import head_parameters as head_only
from repana.meta.algorithms import adapted_parameters
from repana.analysis.maml_anil_nil import EvalSpec, evaluate_specs, speed_comparison
from repana.analysis.freezing import FROZEN_SETS, freezing_accuracy, frozen_name
from repana.analysis.head_needed import head_needed
from repana.analysis.training_regimes import random_init_model, regimes_accuracy
from repana.errors import CheckpointError, InputError


def test_frozen_names_and_predicates():
    assert [frozen_name(f) for f in FROZEN_SETS] == ["none", "1", "1,2", "1,2,3", "1,2,3,4"]
    predicate = freeze_layers(all_parameters, (1, 2))
    assert not predicate("conv1.conv.weight") and not predicate("conv2.bn.bias")
    assert predicate("conv3.conv.weight") and predicate("head.weight")
    assert not freeze_layers(head_only, ())("conv4.conv.weight")
    assert adapted_parameters("anil")("head.weight") and not adapted_parameters("anil")("conv1.conv.weight")
    assert adapted_parameters("maml")("conv1.conv.weight")
    with pytest.raises(Exception, match="unknown algorithm"):
        adapted_parameters("sgd")


def test_freezing_every_layer_of_an_anil_network_changes_nothing():
    model, episodes = tiny_model(), tiny_episodes(tasks=8)
    frame = freezing_accuracy(model, episodes, steps=3, lr=0.5, trainable=head_only, label="ANIL")
    assert list(frame["frozen"]) == ["none", "1", "1,2", "1,2,3", "1,2,3,4"]
    assert np.ptp(frame["accuracy"].to_numpy()) == 0.0
    assert (frame["n_episodes"] == 8).all()


def test_freezing_all_convs_of_maml_equals_head_only_adaptation():
    from repana.meta.evaluate import evaluate

    model, episodes = tiny_model(), tiny_episodes(tasks=8)
    frame = freezing_accuracy(model, episodes, steps=2, lr=0.5, frozen_sets=[(), (1, 2, 3, 4)])
    head = evaluate(model, episodes, method="adapt", steps=2, lr=0.5, trainable=head_only)
    assert frame["accuracy"].iloc[1] == pytest.approx(head.accuracy)
    with pytest.raises(InputError, match="not conv blocks"):
        freezing_accuracy(model, episodes, steps=1, lr=0.1, frozen_sets=[(5,)])


def test_nil_is_perfect_when_queries_are_the_support_images():
    model = tiny_model()
    episodes = tiny_episodes(tasks=4, shots=1, queries=1, query_is_support=True)
    frame = evaluate_specs([EvalSpec("NIL", model, "nil")], episodes)
    assert frame["accuracy"].iloc[0] == pytest.approx(1.0)
    assert frame["seconds_per_episode"].iloc[0] > 0


def test_regimes_and_head_needed_evaluate_every_body_with_nil_on_the_same_episodes():
    episodes = tiny_episodes(tasks=6)
    a, b = tiny_model(seed=1), tiny_model(seed=2)
    frame = regimes_accuracy({"maml": a, "anil": b, "random": random_init_model(a.config, seed=3)}, episodes)
    assert list(frame["regime"]) == ["maml", "anil", "random"]
    assert list(frame["name"]) == ["MAML", "ANIL", "Random features"]
    direct = evaluate_specs([EvalSpec("x", a, "nil")], episodes)["accuracy"].iloc[0]
    assert frame["accuracy"].iloc[0] == pytest.approx(direct)
    head = head_needed(a, b, episodes)
    assert list(head["training"]) == ["anil", "nil"]
    assert head["accuracy"].iloc[0] == pytest.approx(direct)


def test_mismatched_architectures_are_refused():
    with pytest.raises(CheckpointError, match="mismatched architectures"):
        check_same_architecture(tiny_model(hidden=8), tiny_model(hidden=4))
    with pytest.raises(CheckpointError):
        regimes_accuracy({"a": tiny_model(hidden=8), "b": tiny_model(hidden=4)}, tiny_episodes(tasks=1))
    # Heads of different sizes (multiclass pretraining) are fine: NIL does not use the head.
    check_same_architecture(tiny_model(ways=3), tiny_model(ways=7))


def test_speed_comparison_reports_both_algorithms_and_ratio():
    model, episodes = tiny_model(), tiny_episodes(tasks=2)
    frame = speed_comparison(model, episodes, episodes, train_steps=1, test_steps=2, lr=0.4, repeats=1)
    assert set(zip(frame["phase"], frame["algorithm"])) == {("train", "maml"), ("train", "anil"),
                                                           ("inference", "maml"), ("inference", "anil")}
    for phase in ("train", "inference"):
        rows = frame[frame["phase"] == phase].set_index("algorithm")
        assert rows.loc["anil", "speedup"] == pytest.approx(rows.loc["maml", "seconds"] / rows.loc["anil", "seconds"])
        assert (rows["seconds"] > 0).all()


def test_speed_finding_uses_the_papers_step_setting_when_measured():
    from repana.analysis.maml_anil_nil import speed_finding

    def _speed_finding(frame):
        return str(speed_finding(frame))

    rows = [("this run", "train", "anil", 1.2), ("this run", "inference", "anil", 1.1),
            ("paper", "train", "anil", 2.5), ("paper", "inference", "anil", 4.4),
            ("this run", "training_run", "anil", 1.9), ("paper", "train", "maml", 1.0)]
    speed = pd.DataFrame(rows, columns=["steps_of", "phase", "algorithm", "speedup"])
    finding = _speed_finding(speed)
    assert "with 5 training / 10 test steps: training 2.50x, inference 4.40x" in finding
    assert "**agrees**" in finding
    own = _speed_finding(speed[speed["steps_of"] == "this run"].drop(columns="steps_of"))
    assert "this run's inner steps: training 1.20x, inference 1.10x" in own
    slower = speed.assign(speedup=0.9)
    assert "**does not agree**" in _speed_finding(slower)
