"""Freezing under the three test-time protocols, the support loss, and an independent check of the protocol."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repana.analysis.freezing import (converged_steps, freezing_accuracy, freezing_by_protocol, freezing_reading)
from repana.errors import InputError
from repana.meta.inner import all_parameters, freeze_layers, head_parameters
from repana.meta.evaluate import confidence_interval95, support_loss

from tests.analysis_helpers import tiny_episodes, tiny_model
from tests.independent_freezing import independent_freezing_accuracy


def test_support_loss_without_steps_is_the_networks_cross_entropy():
    model, episodes = tiny_model(), tiny_episodes(tasks=4)
    losses = support_loss(model, episodes, steps=0, lr=0.5)
    with torch.no_grad():
        expected = [float(F.cross_entropy(model(episodes.support_x[t]).double(), episodes.support_y[t]))
                    for t in range(4)]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    # adapting fits the support set: the loss falls with the steps
    assert support_loss(model, episodes, steps=20, lr=0.5).mean() < 0.5 * losses.mean()


def test_converged_steps_takes_the_first_step_count_that_fits():
    model, episodes = tiny_model(), tiny_episodes(tasks=4)
    trainable = freeze_layers(all_parameters, (1, 2, 3, 4), model.layer_names)   # the head alone
    ladder = (1, 5, 40, 200)
    losses = [support_loss(model, episodes, steps=s, lr=0.5, trainable=trainable).mean() for s in ladder]
    target = (losses[1] + losses[2]) / 2                  # met first at 40 steps
    steps, loss, met = converged_steps(model, episodes, lr=0.5, trainable=trainable, ladder=ladder, target=target)
    assert (steps, met) == (40, True) and loss == pytest.approx(losses[2])
    steps, loss, met = converged_steps(model, episodes, lr=0.5, trainable=trainable, ladder=ladder, target=-1.0)
    assert (steps, met) == (200, False) and loss == pytest.approx(losses[3])
    with pytest.raises(InputError, match="ladder"):
        converged_steps(model, episodes, lr=0.5, trainable=trainable, ladder=(0, 5))


def test_protocol_rows():
    model, episodes = tiny_model(), tiny_episodes(tasks=4)
    frame = freezing_by_protocol(model, episodes, run_steps=1, paper_steps=3, lr=0.5, ladder=(2, 50),
                                 frozen_sets=((), (1, 2, 3, 4)), label="M")
    assert list(frame["protocol"]) == ["run", "paper", "converged"] * 2
    assert list(frame["steps"][:2]) == [1, 3] and set(frame["steps"][2::3]) <= {2, 50}
    # each protocol's accuracy is freezing_accuracy at its step count
    for _, row in frame.iterrows():
        frozen = () if row["frozen"] == "none" else (1, 2, 3, 4)
        single = freezing_accuracy(model, episodes, steps=int(row["steps"]), lr=0.5, frozen_sets=(frozen,))
        assert row["accuracy"] == pytest.approx(single["accuracy"].item())
    assert (frame["converged"] == (frame["support_loss"] <= 0.05)).all()


@pytest.mark.parametrize("frozen", [(), (1, 2), (1, 2, 3, 4)])
@pytest.mark.parametrize("steps", [1, 5])
def test_independent_check_agrees_with_freezing(frozen, steps):
    """Plain deep-copied modules and torch.optim.SGD give freezing_accuracy's numbers (within the episode CI,
    and in fact episode by episode)."""
    model, episodes = tiny_model(seed=3, hidden=8, ways=3), tiny_episodes(tasks=12, ways=3, seed=4)
    ours = freezing_accuracy(model, episodes, steps=steps, lr=0.3, frozen_sets=(frozen,)).iloc[0]
    check = independent_freezing_accuracy(model, episodes, frozen=frozen, steps=steps, lr=0.3)
    assert abs(check.mean() - ours["accuracy"]) <= max(confidence_interval95(check), 1e-12)
    assert check.mean() == pytest.approx(ours["accuracy"], abs=1e-9)


def test_independent_check_head_only_matches_anil_rule():
    model, episodes = tiny_model(seed=5), tiny_episodes(tasks=8, seed=6)
    ours = freezing_accuracy(model, episodes, steps=4, lr=0.3, trainable=head_parameters, frozen_sets=((),)).iloc[0]
    check = independent_freezing_accuracy(model, episodes, frozen=(), steps=4, lr=0.3, head_only=True)
    assert check.mean() == pytest.approx(ours["accuracy"], abs=1e-9)


def test_reading_tells_the_two_explanations_apart():
    assert freezing_reading(0.8, 0.2, 1.5).startswith("the body is reused:")
    assert freezing_reading(30.0, 1.0, 1.5).startswith("the body is reused but the head needs more steps")
    text = freezing_reading(30.0, 8.0, 1.5, conv4_change=0.12)
    assert text.startswith("the body really adapts") and "0.120" in text and "8.0" in text


def test_independent_check_with_batch_norm_outside_the_inner_loop():
    from repana.models import is_batch_norm_parameter

    model, episodes = tiny_model(seed=7), tiny_episodes(tasks=8, seed=8)
    outside = lambda name: not is_batch_norm_parameter(name)   # noqa: E731
    ours = freezing_accuracy(model, episodes, steps=5, lr=0.3, trainable=outside, frozen_sets=((1,),)).iloc[0]
    check = independent_freezing_accuracy(model, episodes, frozen=(1,), steps=5, lr=0.3, batch_norm=False)
    assert check.mean() == pytest.approx(ours["accuracy"], abs=1e-9)


def test_protocols_judge_convergence_on_the_search_episodes():
    """With a search subset, every protocol's support loss is the mean over that subset, measured once per
    step count (the ladder's measurements are reused)."""
    model, episodes = tiny_model(), tiny_episodes(tasks=6)
    subset = tiny_episodes(tasks=2)
    frame = freezing_by_protocol(model, episodes, run_steps=2, paper_steps=7, lr=0.5, ladder=(2, 50),
                                 frozen_sets=((),), label="M", ladder_episodes=subset)
    for _, row in frame.iterrows():
        expected = support_loss(model, subset, steps=int(row["steps"]), lr=0.5).mean()
        assert row["support_loss"] == pytest.approx(expected, rel=1e-12)
        assert row["n_episodes"] == 6
    losses = {}
    converged_steps(model, subset, lr=0.5, trainable=all_parameters, ladder=(2, 50), target=-1.0, losses=losses)
    assert set(losses) == {2, 50}
    losses[2] = 0.0    # a value already measured is read, not measured again
    assert converged_steps(model, subset, lr=0.5, trainable=all_parameters, ladder=(2, 50), losses=losses)[:2] == (2, 0.0)
