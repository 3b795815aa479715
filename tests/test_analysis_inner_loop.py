"""Inner-loop representational change: known answers on tiny networks."""

import math

import numpy as np
import pytest
import torch

from analysis_helpers import tiny_episodes, tiny_model  # noqa: F401
from repana.analysis.common import episode_rows, mean_ci95, summarize
from repana.analysis.inner_loop_similarity import inner_loop_similarity, summarize_inner_loop
from repana.meta.inner import all_parameters
from repana.meta.inner import head_parameters as head_only
from repana.meta.inner import InnerLoop, adapt_trajectory
from repana.errors import InputError


def test_mean_ci95_hand_computed():
    mean, ci = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(1.25) / 2)  # population std sqrt(1.25), n = 4
    assert math.isnan(mean_ci95([0.7])[1])
    assert all(math.isnan(v) for v in mean_ci95([]))


def test_body_that_cannot_change_gives_similarity_one_in_every_body_layer():
    model, episodes = tiny_model(), tiny_episodes(tasks=6)
    frame = inner_loop_similarity(model, episodes, steps=2, lr=0.5, trainable=head_only,
                                  measures=["svcca", "cka_debiased"], label="ANIL")
    body = frame[frame["layer_a"] != "head"]
    assert np.allclose(body["value"], 1.0, atol=1e-6)
    # The null baseline (shuffled datapoints) is far below 1: 1.0 is not what any data gets.
    assert (body["null_value"] < 0.9).all()
    head = frame[(frame["layer_a"] == "head") & (frame["step"] == 2)]
    assert (head["value"] < 0.999).all()  # the head did adapt


def test_rows_state_datapoints_features_and_reduction():
    model, episodes = tiny_model(hidden=8), tiny_episodes(tasks=6, ways=3, queries=5)
    frame = inner_loop_similarity(model, episodes, steps=1, lr=0.5, trainable=all_parameters,
                                  measures=["svcca", "cka_debiased"], min_ratio=5.0)
    conv1_svcca = frame[(frame["layer_a"] == "conv1") & (frame["measure"] == "svcca")].iloc[0]
    assert conv1_svcca["reduction"] == "positions"
    assert (conv1_svcca["n_datapoints"], conv1_svcca["n_features_a"]) == (15 * 8 * 8, 8)
    assert conv1_svcca["scope"] == "episode"
    conv1_cka = frame[(frame["layer_a"] == "conv1") & (frame["measure"] == "cka_debiased")].iloc[0]
    assert (conv1_cka["reduction"], conv1_cka["n_datapoints"], conv1_cka["n_features_a"]) == ("flatten", 15, 8 * 8 * 8)
    # conv4 is 8 x 1 x 1: 15 datapoints per episode < 5 x 8 features, so 3 episodes are pooled (45 points).
    conv4_svcca = frame[(frame["layer_a"] == "conv4") & (frame["measure"] == "svcca")]
    assert set(conv4_svcca["scope"]) == {"pooled"}
    assert list(conv4_svcca["n_datapoints"]) == [45, 45]
    head = frame[(frame["layer_a"] == "head") & (frame["measure"] == "svcca")]
    assert set(head["reduction"]) == {"none"} and set(head["n_features_a"]) == {3}


def test_cca_refused_when_even_pooling_all_episodes_is_too_few():
    model, episodes = tiny_model(hidden=8), tiny_episodes(tasks=2, ways=3, queries=5)
    frame = inner_loop_similarity(model, episodes, steps=1, lr=0.5, trainable=all_parameters,
                                  measures=["svcca"], layers=["conv4"], min_ratio=5.0)
    assert len(frame) == 1 and math.isnan(frame["value"].iloc[0])
    assert "skipped" in frame["note"].iloc[0]


def test_per_step_trajectory_matches_one_adapt_call():
    from repana.meta.inner import adapt

    model, episodes = tiny_model(), tiny_episodes(tasks=1)
    task = episodes[0]
    trajectory = adapt_trajectory(model, dict(model.named_parameters()), task.support_x, task.support_y,
                                  InnerLoop(3, 0.3, all_parameters))
    direct = adapt(model, dict(model.named_parameters()), task.support_x, task.support_y, steps=3, lr=0.3,
                   trainable=all_parameters, first_order=True)
    assert len(trajectory) == 4
    for name, value in direct.items():
        torch.testing.assert_close(trajectory[3][name], value.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(trajectory[1]["conv1.conv.weight"], trajectory[0]["conv1.conv.weight"])


def test_summary_has_mean_ci_and_null():
    model, episodes = tiny_model(), tiny_episodes(tasks=4)
    frame = inner_loop_similarity(model, episodes, steps=2, lr=0.5, trainable=head_only,
                                  measures=["cka_debiased"], layers=["conv2", "head"], label="ANIL")
    summary = summarize_inner_loop(frame)
    assert set(summary["step"]) == {1, 2}
    conv2 = summary[(summary["layer"] == "conv2") & (summary["step"] == 2)].iloc[0]
    assert conv2["mean"] == pytest.approx(1.0) and conv2["ci95"] == pytest.approx(0.0, abs=1e-9)
    assert conv2["n"] == 4 and conv2["null_mean"] < 0.9


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(InputError, match="no layer 'conv9'"):
        inner_loop_similarity(tiny_model(), tiny_episodes(tasks=1), steps=1, lr=0.1, trainable=head_only,
                              layers=["conv1", "conv9"])


def test_episode_rows_need_matching_episode_counts_and_known_measures():
    """The analyses' rows come from repana.compare's engine: its errors reach them unchanged."""
    acts = [{"head": torch.randn(10, 3)}]
    with pytest.raises(InputError, match="same non-zero number of episodes"):
        episode_rows(acts, acts * 2, ["head"], ["cka"])
    with pytest.raises(InputError, match="unknown similarity measure"):
        episode_rows(acts, acts, ["head"], ["svcaa"])


def test_summarize_groups():
    import pandas as pd

    frame = pd.DataFrame({"layer": ["a", "a", "b"], "value": [0.2, 0.4, 1.0], "null_value": [0.0, 0.2, 0.1]})
    summary = summarize(frame, ["layer"])
    assert summary.set_index("layer").loc["a", "mean"] == pytest.approx(0.3)
    assert summary.set_index("layer").loc["a", "null_mean"] == pytest.approx(0.1)
