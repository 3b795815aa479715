"""Checkpoints: round trip of weights, optimizer and RNG states; clear errors on bad files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from repana.errors import CheckpointError
from repana.meta.checkpoint import (FORMAT_VERSION, capture_rng_state, load_checkpoint, payload_checksum,
                                    restore_rng_state, save_checkpoint)
from repana.meta.config import TrainConfig
from repana.models import build_model

MODEL_CONFIG = {"in_channels": 1, "n_classes": 5, "hidden": 8, "image_size": 28, "pooling": "max",
                "bn_stats": "batch"}


def _trained_model_and_optimizer():
    model = build_model(MODEL_CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(10, 1, 28, 28)
    y = torch.arange(10) % 5
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, optimizer


def _save(path, model, optimizer, **extra):
    return save_checkpoint(path, model=model, model_config=MODEL_CONFIG, algorithm="anil",
                           config=TrainConfig(hidden=8).to_dict(), step=2, optimizer=optimizer,
                           metrics={"val_accuracy": 0.5}, **extra)


def test_round_trip_restores_weights_optimizer_and_metadata(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = _save(tmp_path / "c.pt", model, optimizer)
    ckpt = load_checkpoint(path)
    assert (ckpt.step, ckpt.algorithm, ckpt.metrics) == (2, "anil", {"val_accuracy": 0.5})
    rebuilt = ckpt.model()
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.rand(5, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), rebuilt(x))
    fresh = torch.optim.Adam(rebuilt.parameters(), lr=1e-3)
    fresh.load_state_dict(ckpt.optimizer_state)
    assert fresh.state_dict()["state"][0]["step"] == 2
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert ckpt.train_config().hidden == 8


def test_the_config_round_trips_bn_inner_loop_and_old_configs_read_the_default(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    config = TrainConfig(hidden=8, algorithm="boil", bn_inner_loop=False).to_dict()
    path = save_checkpoint(tmp_path / "c.pt", model=model, model_config=MODEL_CONFIG, algorithm="boil",
                           config=config, step=2)
    assert load_checkpoint(path).train_config().bn_inner_loop is False
    old = {k: v for k, v in TrainConfig(hidden=8).to_dict().items() if k != "bn_inner_loop"}
    path = save_checkpoint(tmp_path / "old.pt", model=model, model_config=MODEL_CONFIG, algorithm="maml",
                           config=old, step=2)
    assert load_checkpoint(path).train_config().bn_inner_loop is True


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    model, optimizer = _trained_model_and_optimizer()
    state = capture_rng_state({"seed": 0, "step": 2})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    _save(tmp_path / "c.pt", model, optimizer, rng=state)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt").rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert load_checkpoint(tmp_path / "c.pt").rng["sampler"] == {"seed": 0, "step": 2}


def test_truncated_file_is_a_clear_error(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = _save(tmp_path / "c.pt", model, optimizer)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        (tmp_path / "t.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(tmp_path / "t.pt")
    (tmp_path / "g.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_other_format_version_and_foreign_files_are_rejected(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    payload = torch.load(_save(tmp_path / "c.pt", model, optimizer), weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    payload["repana_version"] = "9.0.0"
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"format version 2 \(written by repana 9.0.0\)"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a repana checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_other_architecture_is_rejected(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = _save(tmp_path / "c.pt", model, optimizer)
    with pytest.raises(CheckpointError, match="another architecture: hidden = 8 \\(expected 64\\)"):
        load_checkpoint(path, expected_model_config={**MODEL_CONFIG, "hidden": 64})
    payload = torch.load(path, weights_only=True)
    payload["model_config"] = {**MODEL_CONFIG, "hidden": 16}  # weights of 8 filters, config says 16
    payload["checksum"]["hex"] = payload_checksum(payload)    # written so by a buggy writer, not corrupted
    torch.save(payload, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="another architecture.*shape mismatch"):
        load_checkpoint(tmp_path / "mixed.pt").model()


def test_failed_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, optimizer = _trained_model_and_optimizer()
    path = _save(tmp_path / "c.pt", model, optimizer)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of torch.save

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(path, model, optimizer)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    assert load_checkpoint(path).step == 2


# ----- integrity -----

def _flip_inside(path, tensor: torch.Tensor, out) -> None:
    """Copy ``path`` to ``out`` with one low mantissa bit flipped inside ``tensor``'s stored bytes."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0
    data[at + len(raw) // 2 - (len(raw) // 2) % 4] ^= 0x01   # lowest byte of a float32: stays finite
    out.write_bytes(bytes(data))


def test_flipped_bytes_in_the_weights_are_a_checksum_error(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = _save(tmp_path / "c.pt", model, optimizer)
    assert load_checkpoint(path).verified
    _flip_inside(path, model.state_dict()["conv1.conv.weight"], tmp_path / "flipped.pt")
    with pytest.raises(CheckpointError, match=r"flipped\.pt: checksum mismatch: the file is corrupt"):
        load_checkpoint(tmp_path / "flipped.pt")


def test_a_changed_config_is_a_checksum_error(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    payload = torch.load(_save(tmp_path / "c.pt", model, optimizer), weights_only=True)
    payload["config"]["inner_lr"] = 0.5
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "edited.pt")


def test_non_finite_weights_are_refused(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    with torch.no_grad():
        model.conv2.conv.weight[0, 0, 0, 0] = float("nan")
    path = _save(tmp_path / "nan.pt", model, optimizer)   # a consistent checksum: the run diverged
    with pytest.raises(CheckpointError, match=r"non-finite weights \(NaN or inf\) in conv2.conv.weight"):
        load_checkpoint(path)


def test_a_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    payload = torch.load(_save(tmp_path / "c.pt", model, optimizer), weights_only=True)
    del payload["checksum"], payload["runtime"]   # what repana 0.1.0 wrote
    torch.save(payload, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="has no checksum"):
        loaded = load_checkpoint(tmp_path / "old.pt")
    assert not loaded.verified and loaded.runtime == {}
    torch.testing.assert_close(loaded.state_dict["conv1.conv.weight"], model.state_dict()["conv1.conv.weight"])


def test_the_checkpoint_records_threads_and_torch_version(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    runtime = load_checkpoint(_save(tmp_path / "c.pt", model, optimizer)).runtime
    assert runtime["threads"] == torch.get_num_threads() and runtime["torch_version"] == torch.__version__


def test_a_refused_pickle_says_so_and_names_the_opt_in(tmp_path):
    import fractions

    torch.save({"format": "repana-checkpoint", "x": fractions.Fraction(1, 3)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "obj.pt")
    message = str(info.value)
    assert "safe loading" in message and "truncated" not in message
    # load_checkpoint's callers (evaluate, predict, analyze, train) have no --unsafe-pickle: the opt-in is Python
    assert "--unsafe-pickle" not in message
    assert "load_checkpoint(path, unsafe_pickle=True)" in message
    # torch's reason is not cut off
    assert "fractions.Fraction was not an allowed global by default" in message
    assert "add_safe_globals([fractions.Fraction])" in message


def test_random_bytes_and_folders_get_their_own_messages(tmp_path):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CheckpointError, match=r"not a torch checkpoint \(truncated or corrupt\)") as info:
        load_checkpoint(tmp_path / "random.pt")
    assert "unsafe" not in str(info.value)
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match=r"folder.pt is a folder, not a file"):
        load_checkpoint(tmp_path / "folder.pt")
