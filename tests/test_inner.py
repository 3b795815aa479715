"""The inner-loop package (repana.meta.inner): every path equals the per-episode reference (float64
values and meta-gradients), every path implements one protocol, the path is chosen in one place on a plan
resolved once, the library API the analyses call, and a second backbone (ResNetSmall) meta-training through
the public API."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch.func import functional_call

from repana.meta.algorithms import adapted_parameters, get_algorithm
from repana.meta.inner import adapt, dispatch, freeze_layers, mean_loss_lr, resolve_plan
from repana.meta.inner.generic import episode_query_logits
from repana.meta.evaluate import evaluate
from repana.meta.inner import InnerLoop, adapt_tasks, adapt_trajectory, adapted_query_logits, choose_path
from repana.models import Conv4, ResNetSmall, build_model
from meta_helpers import reference_meta_gradients

TASKS, WAYS, SHOTS, QUERIES = 3, 3, 2, 2


def make_batch(seed: int, dtype=torch.float64, size=16, channels=1, tasks=TASKS):
    gen = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.rand(tasks, n, channels, size, size, generator=gen, dtype=dtype)

    labels = torch.stack([torch.randperm(WAYS, generator=gen) for _ in range(tasks)])
    return SimpleNamespace(support_x=images(WAYS * SHOTS), support_y=labels.repeat_interleave(SHOTS, 1),
                           query_x=images(WAYS * QUERIES), query_y=labels.repeat_interleave(QUERIES, 1))


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with non-trivial batch-norm affine parameters (in place), returned."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bn" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def reference_logits(model, params, batch, steps, lr, trainable, together=False):
    """Per-episode reference: repana.meta.inner.adapt (first order) + one query forward, task by task."""
    out = []
    for t in range(batch.support_x.shape[0]):
        adapted = adapt(model, params, batch.support_x[t], batch.support_y[t], steps, lr, trainable, True)
        out.append(episode_query_logits(model, {n: p.detach() for n, p in adapted.items()}, batch.support_x[t],
                                        batch.query_x[t], together).detach())
    return torch.stack(out)


def assert_dicts_close(ours, ref, rtol=1e-9, atol=1e-11):
    assert set(ours) == set(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def path_of(model, params, support_x, query_x, spec):
    """The dispatcher's choice for a batch, on the plan it resolves (labels do not matter for the choice)."""
    support_y = torch.zeros(support_x.shape[:2], dtype=torch.int64)
    return choose_path(model, support_x, query_x, resolve_plan(spec, params, support_y))


def conv4(pooling="max", head_input="flatten", bn_stats="batch"):
    torch.manual_seed(0)
    return perturbed(Conv4(n_classes=WAYS, hidden=6, image_size=16, pooling=pooling, bn_stats=bn_stats,
                           head_input=head_input).double())


def resnet():
    torch.manual_seed(0)
    return perturbed(ResNetSmall(n_classes=WAYS, hidden=5, image_size=16, n_blocks=2).double())


# ----- every path equals the per-episode reference -------------------------------------------------

CASES = [  # (model factory, trainable, path forced)
    (conv4, None, "generic"), (conv4, None, "folded"), (conv4, None, "conv4_episode"),
    (conv4, "head", "head_only"), (conv4, ["conv3", "conv4", "head"], "generic"),
    (conv4, ["conv3", "conv4", "head"], "conv4_episode"), (conv4, ["conv3", "conv4", "head"], "folded"),
    (lambda: conv4("stride", "spatial_mean"), None, "folded"),
    (lambda: conv4("stride", "spatial_mean"), None, "conv4_episode"),
    (lambda: conv4("stride", "spatial_mean"), "head", "head_only"),
    (resnet, None, "generic"), (resnet, "head", "head_only"), (resnet, "head", "generic"),
    (conv4, "body", "generic"), (conv4, "body", "folded"), (conv4, "body", "conv4_episode"),  # BOIL
    (resnet, "body", "generic"),
]


@pytest.mark.parametrize("make_model,trainable,path", CASES)
@pytest.mark.parametrize("together", [False, True])
def test_every_path_gives_the_reference_query_logits(make_model, trainable, path, together, monkeypatch):
    model = make_model()
    batch = make_batch(1)
    params = {n: p.detach() for n, p in model.named_parameters()}
    spec = InnerLoop(3, 0.4, trainable, first_order=True, bn_support_query="together" if together else "apart")
    monkeypatch.setattr(dispatch, "choose_path", lambda *args, **kwargs: (path, 2 if path == "folded" else 1))
    ours = adapted_query_logits(model, params, batch.support_x, batch.support_y, batch.query_x, spec)
    ref = reference_logits(model, params, batch, 3, 0.4, trainable, together)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(ref, reference_logits(model, params, batch, 0, 0.4, trainable, together))


@pytest.mark.parametrize("make_model,trainable,path", [c for c in CASES if c[2] != "conv4_episode"])
def test_every_graph_path_gives_the_reference_meta_gradients(make_model, trainable, path, monkeypatch):
    """Training's paths (conv4_episode is evaluation only: no graph): second-order MAML meta-gradients."""
    model = make_model()
    batch = make_batch(2)
    monkeypatch.setattr(dispatch, "choose_path", lambda *args, **kwargs: (path, 2 if path == "folded" else 1))
    grads, _ = get_algorithm("maml", inner_steps=2, inner_lr=0.3, trainable=trainable).meta_gradients(model, batch)
    names = [n for n, _ in model.named_parameters() if adapted_parameters("maml", trainable=trainable)(n)]
    assert_dicts_close(grads, reference_meta_gradients(model, batch, 2, 0.3, names, first_order=False))


def test_the_summed_loss_convention_is_the_mean_loss_with_ways_times_the_lr():
    model, batch = conv4(), make_batch(3)
    params = {n: p.detach() for n, p in model.named_parameters()}
    assert mean_loss_lr(0.1, "sum_over_shots", batch.support_y) == pytest.approx(0.1 * WAYS)
    assert mean_loss_lr(0.1, "sum_over_shots", batch.support_y[0]) == pytest.approx(0.1 * WAYS)
    assert mean_loss_lr(0.1, "mean", batch.support_y) == 0.1
    summed = adapted_query_logits(model, params, batch.support_x, batch.support_y, batch.query_x,
                                  InnerLoop(2, 0.1, inner_loss="sum_over_shots"))
    mean = adapted_query_logits(model, params, batch.support_x, batch.support_y, batch.query_x,
                                InnerLoop(2, 0.1 * WAYS))
    torch.testing.assert_close(summed, mean, rtol=1e-12, atol=1e-12)


def test_float32_conv4_episode_path_matches_the_module_path():
    """The no-graph Conv4 path on CPU float32 (channels-last weights, two-channel conv1): the same logits
    as adapt() + the module's forward, to float32 rounding, for max-pool and stride nets."""
    for pooling in ("max", "stride"):
        model = copy.deepcopy(conv4(pooling)).float()
        batch = make_batch(4, dtype=torch.float32)
        params = {n: p.detach() for n, p in model.named_parameters()}
        ours = adapted_query_logits(model, params, batch.support_x, batch.support_y, batch.query_x,
                                    InnerLoop(5, 0.4, fold=False))
        assert path_of(model, params, batch.support_x, batch.query_x, InnerLoop(5, 0.4, fold=False)) == \
            ("conv4_episode", 1)
        ref = reference_logits(model, params, batch, 5, 0.4, None)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_the_path_is_chosen_in_one_place():
    model, batch = conv4(), make_batch(5)
    detached = {n: p.detach() for n, p in model.named_parameters()}
    live = dict(model.named_parameters())
    sx, qx = batch.support_x, batch.query_x
    assert path_of(model, live, sx, qx, InnerLoop(0, 0.4)) == ("unadapted", TASKS)
    assert path_of(model, live, sx, qx, InnerLoop(2, 0.4, trainable=[])) == ("unadapted", TASKS)
    assert path_of(model, live, sx, qx, InnerLoop(2, 0.4, trainable="head")) == ("head_only", TASKS)
    assert path_of(model, live, sx, qx, InnerLoop(2, 0.4, fold=True)) == ("folded", TASKS)
    assert path_of(model, live, sx, qx, InnerLoop(2, 0.4, fold=False)) == ("generic", 1)
    frozen = freeze_layers(None, ["conv1"])
    assert path_of(model, live, sx, qx, InnerLoop(2, 0.4, trainable=frozen)) == ("generic", 1)
    assert path_of(model, detached, sx, qx, InnerLoop(2, 0.4, trainable=frozen)) == ("conv4_episode", 1)
    assert path_of(model, detached, sx[:1], qx[:1], InnerLoop(2, 0.4)) == ("conv4_episode", 1)
    with torch.no_grad():  # no graph without grad mode either
        assert path_of(model, live, sx[:1], qx[:1], InnerLoop(2, 0.4)) == ("conv4_episode", 1)
    # other backbones: only the generic paths
    net = resnet()
    assert path_of(net, dict(net.named_parameters()), sx, qx, InnerLoop(2, 0.4)) == ("generic", 1)
    assert path_of(net, dict(net.named_parameters()), sx, qx, InnerLoop(2, 0.4, trainable="head"))[0] == "head_only"
    assert path_of(net, {n: p.detach() for n, p in net.named_parameters()}, sx, qx, InnerLoop(2, 0.4)) == \
        ("generic", 1)
    with pytest.raises(Exception, match="fold=True"):
        list(dispatch.query_logits_by_part(net, dict(net.named_parameters()), sx, batch.support_y, qx,
                                        InnerLoop(1, 0.4, fold=True)))


def test_every_path_implements_the_protocol():
    from repana.meta.inner import conv4_episode, folded, generic, head_only, unadapted
    from repana.meta.inner.spec import EpisodePath, InnerPath

    assert set(dispatch.PATHS) == {"unadapted", "head_only", "folded", "conv4_episode", "generic"}
    for name, path in dispatch.PATHS.items():
        assert isinstance(path, InnerPath) and path.NAME == name
    assert dispatch.EPISODE_PATHS == (unadapted, conv4_episode, generic)
    assert all(isinstance(path, EpisodePath) for path in dispatch.EPISODE_PATHS)
    assert not isinstance(folded, EpisodePath) and not isinstance(head_only, EpisodePath)


def test_the_plan_resolves_the_loss_convention_and_the_names_once():
    model, batch = conv4(), make_batch(7)
    live = dict(model.named_parameters())
    plan = resolve_plan(InnerLoop(2, 0.1, "head", inner_loss="sum_over_shots"), live, batch.support_y)
    assert plan.lr == pytest.approx(0.1 * WAYS) and plan.names == ("head.weight", "head.bias")
    assert plan.graph and not plan.first_order and not plan.together
    with torch.no_grad():   # no graph: the steps are first order
        plan = resolve_plan(InnerLoop(2, 0.1, inner_loss="sum_div_k", bn_support_query="together"), live,
                            batch.support_y)
    assert plan.lr == pytest.approx(0.1 * WAYS) and not plan.graph and plan.first_order and plan.together
    assert len(plan.names) == len(live)
    plan = resolve_plan(InnerLoop(0, 0.1, ["no_such_layer"]), live, batch.support_y)   # no step: nothing resolved
    assert plan.names == () and plan.lr == 0.1
    with pytest.raises(Exception, match="match no parameter"):
        resolve_plan(InnerLoop(1, 0.1, ["no_such_layer"]), live, batch.support_y)


# ----- the API the analyses call ------------------------------------------------------------------

def test_adapt_tasks_and_the_trajectory_follow_the_reference_steps():
    model, batch = conv4(), make_batch(6)
    params = {n: p.detach() for n, p in model.named_parameters()}
    spec = InnerLoop(3, 0.4, freeze_layers("all", [1, 2]))
    per_task = adapt_tasks(model, params, batch.support_x, batch.support_y, spec)
    trajectory = adapt_trajectory(model, params, batch.support_x[1], batch.support_y[1], spec)
    assert len(per_task) == TASKS and len(trajectory) == 4
    for k in range(4):
        expected = adapt(model, params, batch.support_x[1], batch.support_y[1], k, 0.4, spec.trainable, True)
        assert_dicts_close(trajectory[k], {n: p.detach() for n, p in expected.items()})
    assert_dicts_close(per_task[1], trajectory[3])
    assert torch.equal(trajectory[3]["conv1.conv.weight"], params["conv1.conv.weight"])    # frozen
    assert not torch.equal(trajectory[3]["conv3.conv.weight"], params["conv3.conv.weight"])
    single = adapt_tasks(model, params, batch.support_x[1], batch.support_y[1], spec)      # one episode
    assert_dicts_close(single, per_task[1])
    logits = adapted_query_logits(model, params, batch.support_x[1], batch.support_y[1], batch.query_x[1], spec)
    torch.testing.assert_close(logits, functional_call(model, per_task[1], (batch.query_x[1],)))


def test_adapted_parameters_cover_every_algorithm_and_alias():
    model = Conv4(hidden=4, image_size=16)
    names = [n for n, _ in model.named_parameters()]
    everything, head = names, ["head.weight", "head.bias"]
    body = [n for n in names if not n.startswith("head.")]
    expected = {"maml": everything, "fomaml": everything, "reptile": everything, "anil": head, "boil": body,
                "multitask": head, "nil_training": head, "multiclass": head, "pretrain": head, "nil": head}
    for algorithm, chosen in expected.items():
        predicate = adapted_parameters(algorithm)
        assert [n for n in names if predicate(n)] == chosen, algorithm
        assert get_algorithm(algorithm, ignore_unused=True).test_time_trainable(names[0]) == (chosen != head)
    custom = adapted_parameters("maml", trainable=["conv4", "head"])
    assert [n for n in names if custom(n)] == [n for n in names if n.startswith(("conv4.", "head."))]
    from repana.meta.config import from_dict
    from repana.meta.train import eval_trainable
    for algorithm, chosen in expected.items():
        config = from_dict({"algorithm": algorithm, "dataset": "glyphs"})
        assert [n for n in names if eval_trainable(config)(n)] == chosen
        # bn_inner_loop = false: batch norm never adapts at test time either
        without_bn = eval_trainable(config.replace(bn_inner_loop=False))
        assert [n for n in names if without_bn(n)] == [n for n in chosen if ".bn." not in n], algorithm


def test_batch_norm_parameters_are_named_by_one_predicate():
    from repana.models import is_batch_norm_parameter

    for net in (Conv4(hidden=4, image_size=16), ResNetSmall(hidden=4, image_size=16, n_blocks=2)):
        modules = dict(net.named_modules())
        expected = [n for n, _ in net.named_parameters()
                    if isinstance(modules[n.rsplit(".", 1)[0]], torch.nn.modules.batchnorm._BatchNorm)]
        assert [n for n, _ in net.named_parameters() if is_batch_norm_parameter(n)] == expected
        assert len(expected) >= 8


@pytest.mark.parametrize("bn_inner_loop", [True, False])
def test_test_time_adaptation_follows_the_checkpoints_config(bn_inner_loop):
    """What evaluation, predict and the analyses adapt (eval_trainable of the run's config): BOIL's head never
    moves at test time; with bn_inner_loop = false neither does batch norm."""
    from repana.meta.config import from_dict
    from repana.meta.train import eval_trainable

    model, batch = conv4(), make_batch(7)
    params = {n: p.detach() for n, p in model.named_parameters()}
    config = from_dict({"algorithm": "boil", "dataset": "glyphs", "bn_inner_loop": bn_inner_loop})
    spec = InnerLoop(3, 0.4, eval_trainable(config))
    for adapted in adapt_tasks(model, params, batch.support_x, batch.support_y, spec):  # the conv4_episode path
        assert torch.equal(adapted["head.weight"], params["head.weight"])
        assert torch.equal(adapted["head.bias"], params["head.bias"])
        assert not torch.equal(adapted["conv1.conv.weight"], params["conv1.conv.weight"])
        assert torch.equal(adapted["conv2.bn.weight"], params["conv2.bn.weight"]) == (not bn_inner_loop)
    logits = adapted_query_logits(model, params, batch.support_x, batch.support_y, batch.query_x, spec)
    torch.testing.assert_close(logits, reference_logits(model, params, batch, 3, 0.4, spec.trainable),
                               rtol=1e-10, atol=1e-12)


def test_freeze_layers_by_name_or_position():
    conv_names = [n for n, _ in Conv4(hidden=4, image_size=16).named_parameters()]
    by_position = freeze_layers(None, (1, 2))
    by_name = freeze_layers("all", ["conv1", "conv2"])
    assert [n for n in conv_names if by_position(n)] == [n for n in conv_names if by_name(n)] == \
        [n for n in conv_names if not n.startswith(("conv1.", "conv2."))]
    head_only = freeze_layers("head", ["conv1"])
    assert [n for n in conv_names if head_only(n)] == ["head.weight", "head.bias"]
    net = ResNetSmall(hidden=4, image_size=16, n_blocks=2)
    res_names = [n for n, _ in net.named_parameters()]
    frozen = freeze_layers(None, [1], layer_names=net.layer_names)
    assert not any(frozen(n) for n in res_names if n.startswith("block1."))
    assert all(frozen(n) for n in res_names if n.startswith(("block2.", "head.")))
    with pytest.raises(Exception, match="position"):
        freeze_layers(None, [7])


# ----- a second backbone meta-trains through the public API -----------------------------------------

@pytest.fixture(scope="module")
def glyph_episodes(tmp_path_factory):
    from repana.data.glyphs import load_glyph_splits

    splits = load_glyph_splits(n_train=8, n_val=3, n_test=3, n_drawers=6,
                               cache_dir=tmp_path_factory.mktemp("glyphs"))
    return splits


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_resnet_meta_trains_with_maml_and_anil_on_glyphs(glyph_episodes, algorithm):
    from repana.data import EpisodeSampler

    torch.manual_seed(0)
    model = build_model({"arch": "resnet", "in_channels": 1, "n_classes": 3, "hidden": 8, "image_size": 28,
                         "n_blocks": 2, "bn_stats": "batch"})
    assert isinstance(model, ResNetSmall) and build_model(dict(model.config)).config == model.config
    algo = get_algorithm(algorithm, inner_steps=2, inner_lr=0.4)
    sampler = EpisodeSampler(glyph_episodes["train"], ways=3, shots=1, queries=3, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = sampler.sample(tasks=4)
    before = [p.detach().clone() for p in model.parameters()]
    first_loss = algo.meta_gradients(model, fixed)[1]["loss"]
    for _ in range(8):
        grads, metrics = algo.meta_gradients(model, sampler.sample(tasks=4))
        for name, p in model.named_parameters():
            p.grad = grads[name]
        optimizer.step()
        assert 0.0 <= metrics["accuracy"] <= 1.0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert algo.meta_gradients(model, fixed)[1]["loss"] < first_loss    # trained on 32 tasks
    result = evaluate(model, sampler.sample(tasks=3), steps=2, lr=0.4, trainable=adapted_parameters(algorithm))
    assert 0.0 <= result.accuracy <= 1.0 and result.n_episodes == 3
