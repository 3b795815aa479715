"""The CUDA code paths against the CPU ones: skipped where there is no GPU (CI, laptops).

On CUDA, MAML/FOMAML fold the whole meta-batch into channels and ANIL runs the body once on a
``(tasks, n, C, H, W)`` batch with per-task batch-norm statistics; neither runs on CPU by default.
In float64 both must give the CPU per-episode results to rounding; float32 (TF32 off) matches the
float64 reference as the CPU float32 path does; training on CUDA writes checkpoints that load on CPU
and resumes after a kill to the same parameters. Run on a GPU machine with
``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from repana.meta.algorithms import get_algorithm
from repana.meta.checkpoint import load_checkpoint
from repana.meta.evaluate import evaluate
from repana.meta.train import StopTraining, train
from repana.models import Conv4
from test_adapt import WAYS, assert_grads_equal, make_batch, reference_meta_gradients
from test_evaluate import episodes
from test_train import small_config, small_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: these tests check the GPU code paths")


def to_device(batch: SimpleNamespace, device, dtype=None) -> SimpleNamespace:
    return SimpleNamespace(**{k: v.to(device, dtype if v.is_floating_point() and dtype else v.dtype)
                              for k, v in vars(batch).items()})


def float64_model(pooling: str) -> Conv4:
    torch.manual_seed(0)
    model = Conv4(in_channels=1, n_classes=WAYS, hidden=6, image_size=16, pooling=pooling).double()
    with torch.no_grad():  # non-trivial batch-norm affine parameters
        for name, p in model.named_parameters():
            if "bn" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture
def spy_paths(monkeypatch):
    """Counts calls of the folded layout and of 5-D (tasks, n, ...) body forwards."""
    from repana.meta.inner import folded, tasks

    calls = {"folded": 0, "five_d": 0}
    folded_logits = folded.query_logits
    monkeypatch.setattr(folded, "query_logits",
                        lambda *a, **k: calls.__setitem__("folded", calls["folded"] + 1) or folded_logits(*a, **k))
    functional_call = tasks.functional_call

    def counting_call(model, params, args, kwargs=None):
        if args[0].dim() == 5:
            calls["five_d"] += 1
        return functional_call(model, params, args, kwargs)

    monkeypatch.setattr(tasks, "functional_call", counting_call)
    return calls


@pytest.mark.parametrize("pooling", ["max", "stride"])
@pytest.mark.parametrize("algorithm,first_order,trainable", [
    ("maml", False, None), ("fomaml", True, None), ("anil", False, "head"), ("anil", True, "head")])
def test_cuda_meta_gradients_equal_the_cpu_per_episode_results_in_float64(pooling, algorithm, first_order,
                                                                          trainable, spy_paths):
    model = float64_model(pooling)
    batch = make_batch(torch.Generator().manual_seed(1))
    kwargs = dict(inner_steps=2, inner_lr=0.3, first_order=first_order)
    cpu_grads, cpu_metrics = get_algorithm(algorithm, fold=False, **kwargs).meta_gradients(model, batch)
    if pooling == "max":  # the plain-autograd reference of test_adapt (max-pool network)
        names = [n for n, _ in model.named_parameters() if trainable is None or n.startswith("head")]
        assert_grads_equal(cpu_grads, reference_meta_gradients(model, batch, 2, 0.3, names, first_order))
    gpu_model = copy.deepcopy(model).cuda()
    gpu_grads, gpu_metrics = get_algorithm(algorithm, **kwargs).meta_gradients(gpu_model, to_device(batch, "cuda"))
    assert all(g.is_cuda for g in gpu_grads.values())
    assert_grads_equal({n: g.cpu() for n, g in gpu_grads.items()}, cpu_grads)
    assert gpu_metrics == pytest.approx(cpu_metrics, rel=1e-9)
    if trainable is None:
        assert spy_paths["folded"] == 1              # the whole meta-batch folded into channels
        if not first_order:
            bias = gpu_grads["conv1.conv.bias"].abs().max().item()
            assert bias < 1e-12 * max(1.0, gpu_grads["conv1.conv.weight"].abs().max().item())
    else:
        assert spy_paths["folded"] == 0 and spy_paths["five_d"] >= 2  # support and query bodies, 5-D


@pytest.mark.parametrize("algorithm,trainable", [("maml", None), ("anil", "head")])
def test_cuda_float32_meta_gradients_match_the_float64_reference(algorithm, trainable, monkeypatch):
    """float32 with TF32 off (PyTorch's default lets cuDNN convolutions use TF32, ~1e-3 relative)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = float64_model("max")
    batch = make_batch(torch.Generator().manual_seed(1))
    grads, _ = get_algorithm(algorithm, inner_steps=2, inner_lr=0.3).meta_gradients(
        copy.deepcopy(model).float().cuda(), to_device(batch, "cuda", torch.float32))
    names = [n for n, _ in model.named_parameters() if trainable is None or n.startswith("head")]
    ref = reference_meta_gradients(model, batch, 2, 0.3, names, first_order=False)
    scale = max(g.abs().max().item() for g in ref.values())
    assert_grads_equal({n: g.double().cpu() for n, g in grads.items()}, ref, rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("bn_support_query", ["apart", "together"])
def test_cuda_evaluation_equals_cpu_in_float64(bn_support_query):
    torch.manual_seed(3)
    model = Conv4(n_classes=3, hidden=6, image_size=16, pooling="stride").double()
    batch = episodes(7, tasks=6)
    batch.support_x, batch.query_x = batch.support_x.double(), batch.query_x.double()
    gpu_model = copy.deepcopy(model).cuda()
    for options in (dict(trainable=None), dict(trainable="head"), dict(trainable={"conv3", "conv4", "head"}),
                    dict(method="nil")):
        cpu = evaluate(model, batch, steps=4, lr=0.5, bn_support_query=bn_support_query, fold=False, **options)
        gpu = evaluate(gpu_model, batch, steps=4, lr=0.5, bn_support_query=bn_support_query, **options)
        # the same predictions: per-episode accuracies equal up to the rounding of their means
        np.testing.assert_allclose(gpu.per_episode, cpu.per_episode, rtol=0, atol=1e-12, err_msg=str(options))
        assert gpu.n_episodes == 6
    assert 0.0 < cpu.accuracy < 1.0  # the comparison is not between two constant outputs


def test_cuda_training_resumes_exactly_and_its_checkpoints_load_on_cpu(tmp_path):
    config = small_config(algorithm="maml")
    train(config, tmp_path / "full", data=small_data(), show_progress=False, device="cuda")

    def kill_after_step_5(step, metrics):
        if step == 5:
            raise StopTraining

    train(config, tmp_path / "part", data=small_data(), show_progress=False, device="cuda",
          callback=kill_after_step_5)
    torch.manual_seed(123)
    torch.cuda.manual_seed_all(456)  # the resumed process starts with other RNG states
    resumed = train(config, tmp_path / "part", resume=True, data=small_data(), show_progress=False, device="cuda")
    assert resumed.resumed_from == 4 and resumed.steps == 6
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")
    part = load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt")
    assert all(t.device.type == "cpu" for t in full.state_dict.values())
    for name in full.state_dict:
        assert torch.equal(part.state_dict[name], full.state_dict[name]), name
    cpu_model = Conv4(**full.model_config)
    cpu_model.load_state_dict(full.state_dict)
    result = evaluate(cpu_model, episodes(5, tasks=4, ways=3, shots=1, queries=2, size=16), steps=1, lr=0.4)
    assert result.n_episodes == 4
