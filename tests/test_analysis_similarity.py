"""MAML-vs-ANIL representation similarity, training dynamics and convergence helpers."""

import numpy as np
import pytest
import torch

from analysis_helpers import tiny_episodes, tiny_model  # noqa: F401
from repana.analysis.convergence import adapt_head, cost_vs_inner_steps, init_head, inner_loss, meta_train_anil_head
from repana.analysis.maml_anil_similarity import cross_model_similarity, summarize_cross_model
from repana.analysis.training_dynamics import select_stages
from repana.errors import CheckpointError, InputError


def test_a_network_compared_with_a_copy_of_itself_is_identical_in_every_layer():
    model = tiny_model(seed=3)
    copy = tiny_model(seed=3)
    frame = cross_model_similarity(model, copy, tiny_episodes(tasks=4), measures=["svcca", "cka_debiased"],
                                   layers=["conv1", "conv2", "conv3", "conv4", "head"], label_a="A", label_b="B")
    assert np.allclose(frame["value"], 1.0, atol=1e-6)
    summary = summarize_cross_model(frame)
    assert set(summary["model_a"]) == {"A"} and (summary["null_mean"] < 0.9).all()


def test_different_networks_are_less_similar_than_identical_ones():
    frame = cross_model_similarity(tiny_model(seed=1), tiny_model(seed=2), tiny_episodes(tasks=4),
                                   measures=["cka_debiased"], layers=["conv2"])
    assert (frame["value"] < 0.999).all()


def test_cross_model_similarity_refuses_other_architectures():
    with pytest.raises(CheckpointError):
        cross_model_similarity(tiny_model(hidden=8), tiny_model(hidden=4), tiny_episodes(tasks=1))


def test_select_stages_picks_the_papers_fractions_of_training(tmp_path):
    """Figure 3: 10k, 20k, 30k of 60k iterations (1/6, 1/3, 1/2) and the final network; never step 0."""
    steps = (0, 1000, 10000, 20000, 30000, 60000)
    paths = [tmp_path / f"step_{s:06d}.pt" for s in steps]
    stages = select_stages(paths + [tmp_path / "latest.pt"])
    assert [(name, p.name) for name, p in stages] == [("1/6", "step_010000.pt"), ("1/3", "step_020000.pt"),
                                                      ("1/2", "step_030000.pt"), ("final", "step_060000.pt")]
    # a quick run of 1500 iterations saved at 250, 500, 750, 1500
    quick = [tmp_path / f"step_{s:06d}.pt" for s in (250, 500, 750, 1500)]
    assert [p.name for _, p in select_stages(quick)] == [p.name for p in quick]
    # nearest checkpoints, each used once; the total comes from the last step unless given
    assert [(n, p.name) for n, p in select_stages(quick[2:], iterations=1500)] == [
        ("1/6", "step_000750.pt"), ("final", "step_001500.pt")]
    with pytest.raises(InputError, match="untrained"):
        select_stages([tmp_path / "latest.pt", paths[0]])


def test_strongly_convex_head_inner_loop_reaches_its_minimum():
    torch.manual_seed(0)
    features, labels = torch.randn(20, 6, dtype=torch.float64), torch.arange(4).repeat(5)
    head = {k: v.detach().double().requires_grad_(True) for k, v in init_head("linear_l2", 6, 4).items()}
    adapted = adapt_head("linear_l2", head, features, labels, steps=400, lr=0.5, l2=1.0, create_graph=False)
    params = {k: v.detach().requires_grad_(True) for k, v in adapted.items()}
    grads = torch.autograd.grad(inner_loss("linear_l2", params, features, labels, 1.0), list(params.values()))
    assert max(float(g.abs().max()) for g in grads) < 1e-6  # gradient vanishes at the unique minimiser
    # Strong convexity: another start reaches the same minimiser.
    other = {k: (torch.randn_like(v) * 0.1).requires_grad_(True) for k, v in head.items()}
    again = adapt_head("linear_l2", other, features, labels, steps=400, lr=0.5, l2=1.0, create_graph=False)
    torch.testing.assert_close(again["w"], adapted["w"], atol=1e-6, rtol=1e-5)


def test_meta_training_with_each_head_records_loss_time_and_accuracy():
    episodes = tiny_episodes(tasks=3)
    for kind in ("linear_l2", "two_layer"):
        frame = meta_train_anil_head(tiny_model(), kind, lambda step: tiny_episodes(tasks=2, seed=step), episodes,
                                     inner_steps=2, iterations=4, inner_lr=0.1, eval_every=2, head_hidden=8)
        loss = frame[frame["metric"] == "train_loss"]
        assert list(loss["iteration"]) == [1, 2, 3, 4] and np.isfinite(loss["value"]).all()
        assert np.all(np.diff(loss["elapsed_s"]) > 0)
        accuracy = frame[frame["metric"] == "test_accuracy"]
        assert list(accuracy["iteration"]) == [2, 4] and accuracy["value"].between(0, 1).all()
    with pytest.raises(InputError, match="head"):
        init_head("cubic", 4, 2)


def test_cost_vs_inner_steps_has_a_ratio_per_n():
    frame = cost_vs_inner_steps(tiny_model(), tiny_episodes(tasks=2), inner_steps=(1, 3), repeats=1)
    anil = frame[frame["algorithm"] == "anil"].set_index("inner_steps")
    maml = frame[frame["algorithm"] == "maml"].set_index("inner_steps")
    assert list(anil.index) == [1, 3]
    assert np.allclose(anil["ratio"], maml["seconds"] / anil["seconds"])
