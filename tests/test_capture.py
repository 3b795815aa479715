"""Activation capture: names and globs, functional_call, batching, DataLoaders, subsampling, errors."""

import pytest
import torch
from torch import nn

from repana.capture import ActivationRecorder, Capture, resolve_layers
from repana.errors import InputError


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x)).flatten(1))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallConvNet().eval()


@pytest.fixture
def inputs():
    return torch.randn(37, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def test_names_and_globs_resolve_in_model_order(model):
    assert resolve_layers(model, ["head", "conv?"]) == ["conv1", "conv2", "head"]
    assert resolve_layers(model, "conv*.0") == ["conv1.0", "conv2.0"]
    with pytest.raises(InputError, match=r"no module of SmallConvNet matches 'conv3'.*conv1, conv1\.0"):
        resolve_layers(model, ["conv3"])


def test_capture_matches_direct_computation_and_batches_concatenate(model, inputs):
    acts = Capture(layers=["conv1", "head"], batch_size=10).run(model, inputs)
    assert list(acts) == ["conv1", "head"]
    assert acts["conv1"].shape == (37, 4, 6, 6) and acts["conv1"].dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(acts["head"], model(inputs))
        torch.testing.assert_close(acts["conv1"], model.conv1(inputs))
    assert not acts["head"].requires_grad
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, torch.zeros(37)), batch_size=8)
    from_loader = Capture(layers=["head"], dtype=torch.float64).run(model, loader)
    assert from_loader["head"].dtype == torch.float64
    torch.testing.assert_close(from_loader["head"], acts["head"].double(), rtol=1e-5, atol=1e-6)


def test_hooks_fire_under_functional_call_with_other_parameters(model, inputs):
    doubled = {name: 2 * p.detach() for name, p in model.named_parameters()}
    with ActivationRecorder(model, ["head"]) as recorder:
        out = torch.func.functional_call(model, doubled, (inputs,))
        torch.testing.assert_close(recorder.activations["head"], out.detach())
        recorder.clear()
        assert recorder.activations == {}
        model(inputs)
    with torch.no_grad():
        assert not torch.allclose(recorder.activations["head"], out)
    acts = Capture(layers=["head"]).run(model, inputs, params=doubled)
    torch.testing.assert_close(acts["head"], out.detach())
    # hooks are removed on exit
    model(inputs)
    assert recorder.activations["head"].shape[0] == 37


def test_outputs_overwritten_by_a_later_in_place_relu_are_recorded_as_computed(inputs):
    # ResNet-style block: batch norm followed by ReLU(inplace=True), which rewrites the batch norm's output
    torch.manual_seed(2)
    block = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(144, 2)).eval()
    with torch.no_grad():
        expected_bn = block[1](block[0](inputs))
    assert expected_bn.min() < 0  # otherwise the ReLU would change nothing and the test could not fail
    for dtype in (torch.float32, None):
        acts = Capture(layers=["1", "2"], batch_size=16, dtype=dtype).run(block, inputs)
        torch.testing.assert_close(acts["1"], expected_bn)
        torch.testing.assert_close(acts["2"], expected_bn.clamp_min(0))
    with ActivationRecorder(block, ["1"]) as recorder, torch.no_grad():
        block(inputs)
    torch.testing.assert_close(recorder.activations["1"], expected_bn)


def test_subsampling_datapoints_is_reproducible_and_keeps_rows_consistent(model, inputs):
    full = Capture(layers=["conv2", "head"]).run(model, inputs)
    sub = Capture(layers=["conv2", "head"], max_datapoints=12, batch_size=5, seed=4).run(model, inputs)
    again = Capture(layers=["conv2", "head"], max_datapoints=12, seed=4).run(model, inputs)
    assert sub["head"].shape[0] == 12
    torch.testing.assert_close(sub["head"], again["head"])
    rows = torch.cdist(sub["head"], full["head"]).argmin(dim=1)
    assert rows.tolist() == sorted(rows.tolist()) and len(set(rows.tolist())) == 12
    torch.testing.assert_close(sub["conv2"], full["conv2"][rows])  # same datapoints in every layer
    batches = [(inputs[i:i + 8],) for i in range(0, 37, 8)]
    streamed = Capture(layers=["conv2", "head"], max_datapoints=12, seed=4).run(model, batches)
    streamed_rows = torch.cdist(streamed["head"], full["head"]).argmin(dim=1)
    assert streamed_rows.tolist() == sorted(streamed_rows.tolist()) and len(set(streamed_rows.tolist())) == 12
    torch.testing.assert_close(streamed["conv2"], full["conv2"][streamed_rows])
    assert streamed_rows.tolist() == torch.cdist(
        Capture(layers=["head"], max_datapoints=12, seed=4).run(model, batches)["head"],
        full["head"]).argmin(dim=1).tolist()


def test_subsampling_spatial_positions(model, inputs):
    full = Capture(layers=["conv1"]).run(model, inputs)
    sub = Capture(layers=["conv1"], max_positions=5, batch_size=9, seed=2).run(model, inputs)
    assert sub["conv1"].shape == (37, 4, 5)
    flat = full["conv1"].reshape(37, 4, 36)
    kept = [next(p for p in range(36) if torch.allclose(flat[:, :, p], sub["conv1"][:, :, i], atol=1e-6)) for i in range(5)]
    assert kept == sorted(kept) and len(set(kept)) == 5


def test_errors(model, inputs):
    with pytest.raises(InputError, match="its modules are"):
        Capture(layers=["fc"]).run(model, inputs)
    with pytest.raises(InputError, match="output selector 'head' has the name of a module"):
        Capture(outputs=["head"], layers=["head"]).run(model, inputs)


def test_settings_are_checked_once_and_shown_by_repr():
    """Each bad setting is one InputError naming it, raised where the settings are made, before any model."""
    for settings, message in [
        (dict(layers=["head"], max_datapoints=0), "max_datapoints must be >= 1, got 0"),
        (dict(layers=["head"], max_positions=0), "max_positions must be >= 1, got 0"),
        (dict(layers=["head"], batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(layers=[]), "no layers requested"),
        (dict(), "no layers requested"),
        (dict(outputs=["hidden_states[x"]), "cannot read output selector"),
        (dict(layers="conv1", layout="image"), "unknown layout 'image'"),
        (dict(layers="conv1", layout={"conv*": "tokens"}), "unknown layout 'tokens'"),
        (dict(layers="conv1", device="tpu"), "device 'tpu' is not a device"),
    ]:
        with pytest.raises(InputError, match=message):
            Capture(**settings)
    with pytest.raises(TypeError):
        Capture(["conv1"])  # settings are keyword-only
    capture = Capture(layers="conv?", outputs="logits", batch_size=8, device="cpu")
    assert capture.layers == ("conv?",) and capture.outputs == ("logits",) and capture.device == torch.device("cpu")
    assert repr(capture).startswith("Capture(layers=('conv?',), outputs=('logits',), output=None, layout=None, "
                                    "batch_size=8, max_datapoints=None")
    with pytest.raises(AttributeError):
        capture.seed = 1  # frozen
    assert capture == Capture(layers=["conv?"], outputs=["logits"], batch_size=8, device=torch.device("cpu"))
