"""Conv4: sizes from the papers, stable names, config round trip, MAML batch norm, per-task batching."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.errors import ConfigError, InputError
from repana.models import Conv3x3, Conv4, build_model, forward_macs, is_head_parameter


@pytest.mark.parametrize("kwargs,n_features", [
    ({"in_channels": 1, "hidden": 64, "image_size": 28, "pooling": "max"}, 64),      # 28-14-7-3-1
    ({"in_channels": 1, "hidden": 64, "image_size": 28, "pooling": "stride"}, 256),  # 28-14-7-4-2 (MAML Omniglot)
    ({"in_channels": 3, "hidden": 32, "image_size": 84, "pooling": "max"}, 800),     # 84-42-21-10-5 (MiniImageNet)
])
def test_feature_sizes_match_the_papers(kwargs, n_features):
    model = Conv4(n_classes=5, **kwargs)
    x = torch.rand(3, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
    assert model.n_features == n_features
    assert model.features(x).shape == (3, n_features)
    assert model(x).shape == (3, 5)
    assert model.head.in_features == n_features


def test_names_and_body_head_split():
    model = Conv4(hidden=8)
    assert model.layer_names == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert [n for n, _ in model.named_children()] == model.layer_names
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if is_head_parameter(n)] == ["head.weight", "head.bias"]
    assert len([n for n in names if not is_head_parameter(n)]) == 16  # 4 blocks x (conv w, b, bn w, b)
    assert "conv2.conv.weight" in names and "conv3.bn.bias" in names


def test_config_round_trip_rebuilds_the_same_network():
    model = Conv4(in_channels=3, n_classes=7, hidden=8, image_size=32, pooling="stride", bn_stats="running")
    clone = build_model(dict(model.config))
    clone.load_state_dict(model.state_dict())
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(clone(x), model(x))
    assert clone.config == model.config and isinstance(model.config, dict)
    with pytest.raises(ConfigError, match="unknown"):
        build_model({**model.config, "depth": 5})


def test_batch_statistics_also_at_test_time():
    model = Conv4(hidden=8)
    x = torch.rand(6, 1, 28, 28)
    train_out = model(x)
    model.eval()
    torch.testing.assert_close(model(x), train_out)            # no running statistics
    assert not torch.allclose(model(x[:3]), train_out[:3])      # the batch changes the normalisation
    running = Conv4(hidden=8, bn_stats="running")
    running(x)                                                   # train mode: updates running stats
    running.eval()
    torch.testing.assert_close(running(x[:3]), running(x)[:3])  # eval: per-example, batch-independent


def test_task_batch_uses_per_task_statistics():
    model = Conv4(hidden=8)
    x = torch.rand(3, 5, 1, 28, 28) * torch.tensor([1.0, 3.0, 0.2]).view(3, 1, 1, 1, 1)
    batched = model(x)
    one_by_one = torch.stack([model(x[t]) for t in range(3)])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    joint = model(x.flatten(0, 1)).view(3, 5, -1)   # one batch for all tasks would differ
    assert not torch.allclose(joint, one_by_one, atol=1e-3)


def test_partial_forward_composes_and_hooks_fire_under_functional_call():
    model = Conv4(hidden=8)
    x = torch.rand(4, 1, 28, 28)
    h = model(x, stop=2)
    assert h.shape == (4, 8, 7, 7)
    torch.testing.assert_close(model(h, start=2), model(x))
    torch.testing.assert_close(model(model.features(x), start=4), model(x))
    seen = []
    model.conv1.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    params = {n: p * 1.0 for n, p in model.named_parameters()}
    functional_call(model, params, (x,))
    assert seen == [torch.Size([4, 8, 14, 14])]
    with pytest.raises(InputError):
        model(x, start=3, stop=2)


def test_bad_configs():
    with pytest.raises(ConfigError, match="pooling"):
        Conv4(pooling="avg")
    with pytest.raises(ConfigError, match="bn_stats"):
        Conv4(bn_stats="none")
    with pytest.raises(ConfigError, match="image_size"):
        Conv4(image_size=8)
    with pytest.raises(ConfigError, match="hidden"):
        Conv4(hidden=0)


@pytest.mark.parametrize("images_per_call", [1, 12, 1000])
def test_forward_tasks_groups_small_tasks_exactly(images_per_call, monkeypatch):
    """CPU: tasks with few images run in 5-D groups (here 2 + 2 + 1 tasks of 6 images at 12 per call)."""
    from repana.meta.inner import tasks

    torch.manual_seed(0)
    model = Conv4(n_classes=3, hidden=5, image_size=16).double()
    params = dict(model.named_parameters())
    x = torch.rand(5, 6, 1, 16, 16, dtype=torch.float64)
    monkeypatch.setattr(tasks, "CPU_IMAGES_PER_CALL", images_per_call)
    grouped = tasks.forward_tasks(model, params, x, stop=4)
    for t in range(5):
        torch.testing.assert_close(grouped[t], functional_call(model, params, (x[t],), {"stop": 4}),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_channels,stride", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_cpu_float32_conv_is_channels_last_and_equals_conv2d_in_every_derivative_order(in_channels, stride):
    torch.manual_seed(0)
    conv = Conv3x3(in_channels, 5, stride=stride)
    x = torch.rand(4, in_channels, 9, 10)
    weight, bias = conv.weight.detach().clone().requires_grad_(True), conv.bias.detach().clone().requires_grad_(True)
    out = torch.func.functional_call(conv, {"weight": weight, "bias": bias}, (x,))
    assert out.is_contiguous(memory_format=torch.channels_last)
    w64, b64 = weight.detach().double().requires_grad_(True), bias.detach().double().requires_grad_(True)
    reference = F.conv2d(x.double(), w64, b64, stride=stride, padding=1)
    torch.testing.assert_close(out.double(), reference, rtol=1e-5, atol=1e-6)
    # first and second derivatives (MAML differentiates the inner gradient): d/dw of |d loss/dw|^2
    direction = torch.rand(out.shape, generator=torch.Generator().manual_seed(1))
    values = []
    for o, w, b in ((out, weight, bias), (reference, w64, b64)):
        gw, gb = torch.autograd.grad(((o * direction.to(o.dtype)) ** 2).sum(), [w, b], create_graph=True)
        values.append((gw, gb, *torch.autograd.grad((gw ** 2).sum() + (gb ** 2).sum(), [w, b])))
    for ours, ref in zip(*values):
        torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-5)


def test_inference_and_training_forwards_keep_the_nchw_feature_order():
    torch.manual_seed(0)
    model = Conv4(in_channels=1, n_classes=3, hidden=4, image_size=16)
    x = torch.rand(4, 1, 16, 16)
    layouts = []
    model.conv2.register_forward_hook(
        lambda module, inputs, output: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        fast = model(x, stop=4)
    trained = model(x, stop=4)
    reference = copy.deepcopy(model).double()(x.double(), stop=4)  # float64: plain nn.Conv2d, NCHW
    assert layouts == [True, True, False]
    torch.testing.assert_close(fast.double(), reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trained.detach(), fast)


def test_per_task_batch_norm_equals_batch_norm_of_each_task_in_every_derivative_order():
    """The CUDA 5-D batch norm (one reduction over all tasks), checked on CPU in float64: values, first
    and second derivatives equal those of F.batch_norm run task by task."""
    from repana.models import per_task_batch_norm

    gen = torch.Generator().manual_seed(4)
    tasks, n, channels = 3, 4, 5
    h = torch.randn(tasks * n, channels, 6, 6, generator=gen, dtype=torch.float64) * 2 + 1
    weight = torch.randn(channels, generator=gen, dtype=torch.float64)
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (h, weight, bias))

    def per_task(h, weight, bias):
        return per_task_batch_norm(h, tasks, weight, bias, 1e-5)

    def reference(h, weight, bias):
        return torch.cat([F.batch_norm(c, None, None, weight, bias, training=True, eps=1e-5) for c in h.chunk(tasks)])

    ours, ref = per_task(*inputs), reference(*inputs)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    mixed = F.batch_norm(h, None, None, weight, bias, training=True, eps=1e-5)  # statistics over all tasks
    assert not torch.allclose(ours, mixed, atol=1e-3)
    probe = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    first = [torch.autograd.grad((f(*inputs) * probe).sum(), inputs, create_graph=True) for f in (per_task, reference)]
    for a, b in zip(*first):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    second = [torch.autograd.grad(sum((g ** 2).sum() for g in grads), inputs, allow_unused=True,
                                  materialize_grads=True) for grads in first]
    for a, b in zip(*second):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert second[0][0].abs().max() > 1e-3  # the second derivative w.r.t. h is not trivially zero


# ----- Finn et al.'s Omniglot head input (spatial mean of conv4) ----------------------------------

@pytest.mark.parametrize("pooling,side", [("stride", 2), ("max", 1)])
def test_spatial_mean_head_input_averages_conv4_over_space(pooling, side):
    torch.manual_seed(0)
    model = Conv4(n_classes=5, hidden=64, image_size=28, pooling=pooling, head_input="spatial_mean")
    x = torch.rand(4, 1, 28, 28)
    conv4_map = model(x, stop=3)
    conv4_map = model.conv4(conv4_map)
    assert conv4_map.shape == (4, 64, side, side)
    assert model.n_features == 64 and model.head.in_features == 64          # Finn's 64, not 256
    torch.testing.assert_close(model.features(x), conv4_map.mean(dim=(2, 3)))
    torch.testing.assert_close(model(x), model.head(conv4_map.mean(dim=(2, 3))))
    tasks = torch.rand(2, 3, 1, 28, 28)                                      # per-task batches too
    assert model.features(tasks).shape == (2, 3, 64)
    flat = Conv4(n_classes=5, hidden=64, image_size=28, pooling=pooling)
    assert flat.n_features == 64 * side * side and "head_input" not in flat.config


def test_head_input_round_trips_through_config_and_checkpoints(tmp_path):
    from repana.meta.checkpoint import load_checkpoint, save_checkpoint

    model = Conv4(hidden=8, image_size=28, pooling="stride", head_input="spatial_mean")
    assert model.config["head_input"] == "spatial_mean"
    assert build_model(dict(model.config)).n_features == 8
    path = save_checkpoint(tmp_path / "c.pt", model=model, model_config=model.config, algorithm="maml",
                           config={}, step=1)
    restored = load_checkpoint(path).model()
    assert restored.head_input == "spatial_mean" and restored.config == model.config
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(restored.eval()(x), model.eval()(x))
    old = {"in_channels": 1, "n_classes": 5, "hidden": 8, "image_size": 28, "pooling": "stride", "bn_stats": "batch"}
    assert build_model(old).head_input == "flatten" and build_model(old).n_features == 8 * 4  # older checkpoints
    with pytest.raises(ConfigError, match="head_input"):
        Conv4(head_input="mean")


def test_finn_omniglot_presets_use_the_spatial_mean():
    from repana.meta.config import load_config

    for preset in ("omniglot-5way-1shot", "omniglot-5way-5shot", "omniglot-20way-1shot", "omniglot-20way-5shot"):
        config = load_config(preset)
        model = build_model(config.model_config())
        assert config.head_input == "spatial_mean" and model.n_features == 64, preset
    for preset in ("miniimagenet-5way-1shot", "quick", "omniglot-subset"):
        assert "head_input" not in load_config(preset).model_config(), preset


def test_nil_uses_the_spatial_mean_features():
    """NIL classifies by cosines between penultimate features: with head_input='spatial_mean' those are
    the 64 channel means of conv4 (the paper's NIL), not the flattened map."""
    from repana.meta.evaluate import predict
    from repana.meta.nil import nil_predict

    torch.manual_seed(1)
    model = Conv4(n_classes=5, hidden=16, image_size=28, pooling="stride", head_input="spatial_mean").eval()
    support_x, query_x = torch.rand(5, 1, 28, 28), torch.rand(10, 1, 28, 28)
    support_y = torch.arange(5)
    fs = model.conv4(model(support_x, stop=3)).mean(dim=(2, 3))
    fq = model.conv4(model(query_x, stop=3)).mean(dim=(2, 3))
    torch.testing.assert_close(predict(model, support_x, support_y, query_x, method="nil"),
                               nil_predict(fs, support_y, fq, 5))


def test_resnet_backbone_declares_the_layer_protocol():
    from repana.models import ResNetSmall

    torch.manual_seed(0)
    net = ResNetSmall(in_channels=1, n_classes=4, hidden=6, image_size=16, n_blocks=2)
    assert net.layer_names == ["block1", "block2", "head"]
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(net(net(x, stop=1), start=1), net(x))
    torch.testing.assert_close(net.head(net.features(x)), net(x))
    assert net.features(x).shape == (3, 6)
    tasks = torch.rand(2, 3, 1, 16, 16)
    torch.testing.assert_close(net(tasks)[1], net(tasks[1]))                # per-task batch statistics
    names = [n for n, _ in net.named_parameters()]
    assert [n for n in names if is_head_parameter(n)] == ["head.weight", "head.bias"]
    clone = build_model(dict(net.config))
    clone.load_state_dict(net.state_dict())
    torch.testing.assert_close(clone(x), net(x))
    with pytest.raises(ConfigError, match="arch"):
        build_model({**net.config, "arch": "vgg"})


def test_forward_multiply_adds_are_the_hand_counted_ones():
    quick = {"in_channels": 1, "n_classes": 5, "hidden": 32, "image_size": 28, "pooling": "max", "bn_stats": "batch"}
    # max-pool: 3x3 convs at 28, 14, 7, 3 pixels; 1 -> 32 -> 32 -> 32 -> 32 channels
    assert forward_macs(quick) == 9 * (28 * 28 * 1 * 32 + (14 * 14 + 7 * 7 + 3 * 3) * 32 * 32)
    assert forward_macs(quick, images=30) == 30 * forward_macs(quick) == 76_999_680   # the quick preset's task
    assert forward_macs(Conv4(**quick).config) == forward_macs(quick)
    # stride 2 (MAML's Omniglot network): outputs 14, 7, 4, 2 pixels; 64 filters
    stride = {**quick, "hidden": 64, "pooling": "stride"}
    assert forward_macs(stride) == 9 * (14 * 14 * 64 + (7 * 7 + 4 * 4 + 2 * 2) * 64 * 64)
    # MiniImageNet Conv4-32: 84, 42, 21, 10 pixels, 3 input channels: 27.4 M per image
    mini = {**quick, "in_channels": 3, "image_size": 84}
    assert forward_macs(mini) == 9 * (84 * 84 * 3 * 32 + (42 * 42 + 21 * 21 + 10 * 10) * 32 * 32)
    # the residual network has no count (the thread policy takes it as large work); an unknown one is refused
    assert forward_macs(build_model({"arch": "resnet", "n_blocks": 2}).config, images=80) is None
    with pytest.raises(ConfigError, match="arch = 'vit' is not one of"):
        forward_macs({"arch": "vit"})
