"""The trainer: run folder layout, metrics.csv, rolling checkpoints, and exact resume after a kill."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from repana.data.dataset import ImageClassDataset
from repana.errors import ConfigError
from repana.meta.checkpoint import load_checkpoint
from repana.meta.config import TrainConfig, load_toml, from_dict
from repana.meta.train import StopTraining, step_seed, train


def synthetic_dataset(n_classes: int, per_class: int = 6, size: int = 16, seed: int = 0) -> ImageClassDataset:
    """Each class: a random binary prototype; its images flip 10% of the pixels."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, size, size)) < 0.3
    flips = rng.random((n_classes, per_class, size, size)) < 0.1
    images = (prototypes[:, None] ^ flips).astype(np.uint8)[:, :, None] * 255
    labels = np.repeat(np.arange(n_classes), per_class)
    return ImageClassDataset(images.reshape(-1, 1, size, size), labels, [f"c{i}" for i in range(n_classes)])


def small_data() -> dict:
    return {"train": synthetic_dataset(12, seed=0), "val": synthetic_dataset(6, seed=1)}


def small_config(**changes) -> TrainConfig:
    values = dict(name="t", dataset="glyphs", image_size=16, hidden=8, ways=3, shots=1, queries_train=2,
                  queries_test=2, algorithm="maml", meta_batch_size=2, inner_lr=0.4, inner_steps_train=1,
                  inner_steps_test=1, iterations=6, val_every=3, val_episodes=4, log_every=1,
                  checkpoint_every=2, keep_checkpoints=2, save_steps=[0, 1])
    values.update(changes)
    return from_dict(values)


def read_metrics(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def final_state(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt").state_dict


def test_step_seed_depends_only_on_seed_and_step():
    assert step_seed(0, 5) == step_seed(0, 5)
    assert len({step_seed(0, s) for s in range(1, 200)} | {step_seed(1, 1)}) == 200


def test_run_folder_layout_and_metrics(tmp_path):
    config = small_config()
    summary = train(config, tmp_path / "run", data=small_data(), show_progress=False)
    run = tmp_path / "run"
    assert summary.steps == 6 and summary.resumed_from == 0
    assert from_dict(load_toml(run / "config.toml")) == config
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    # rolling: the last 2 of steps 2, 4, 6; steps 0 (the initial network) and 1 are save_steps, kept
    assert names == ["latest.pt", "step_000000.pt", "step_000001.pt", "step_000004.pt", "step_000006.pt"]
    initial, after_one = (load_checkpoint(run / "checkpoints" / f"step_00000{s}.pt") for s in (0, 1))
    assert initial.step == 0 and initial.optimizer_state["state"] == {}
    assert not torch.equal(initial.state_dict["head.weight"], after_one.state_dict["head.weight"])
    assert load_checkpoint(run / "checkpoints" / "latest.pt").step == 6
    rows = read_metrics(run / "metrics.csv")
    assert list(rows[0]) == ["step", "split", "loss", "accuracy", "elapsed_s"]
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    assert [int(r["step"]) for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in val_rows] == [3, 6]
    assert all(0 <= float(r["accuracy"]) <= 1 for r in rows)
    assert all(float(r["loss"]) > 0 for r in train_rows)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed)
    assert summary.val_accuracy == pytest.approx(float(val_rows[-1]["accuracy"]), abs=1e-6)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt.algorithm == "maml" and ckpt.config == config.to_dict()
    assert ckpt.model_config == {"in_channels": 1, "n_classes": 3, "hidden": 8, "image_size": 16,
                                 "pooling": "max", "bn_stats": "batch"}


@pytest.mark.parametrize("algorithm", ["maml", "anil"])
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, algorithm):
    config = small_config(algorithm=algorithm)
    train(config, tmp_path / "full", data=small_data(), show_progress=False)

    def kill_after_step_5(step, metrics):
        if step == 5:
            raise StopTraining  # killed after step 5; the last checkpoint is step 4

    partial = train(config, tmp_path / "part", data=small_data(), show_progress=False, callback=kill_after_step_5)
    assert partial.steps == 5
    with open(tmp_path / "part" / "metrics.csv", "a") as handle:
        handle.write("6,train,0.12")  # a line torn by the kill
    latest = tmp_path / "part" / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # unreadable latest.pt: resume falls back to step_000004.pt
    torch.manual_seed(123)  # the resumed process starts with other global RNG states
    resumed = train(config, tmp_path / "part", resume=True, data=small_data(), show_progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == 6

    full, part = final_state(tmp_path / "full"), final_state(tmp_path / "part")
    for name in full:
        assert torch.equal(full[name], part[name]), name
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt").optimizer_state
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt").optimizer_state
    assert all(torch.equal(a["state"][k]["exp_avg_sq"], b["state"][k]["exp_avg_sq"]) for k in a["state"])
    strip = lambda rows: [(r["step"], r["split"], r["loss"], r["accuracy"]) for r in rows]  # noqa: E731
    assert strip(read_metrics(tmp_path / "full" / "metrics.csv")) == strip(read_metrics(tmp_path / "part" / "metrics.csv"))


def test_crash_inside_a_step_resumes_exactly(tmp_path):
    config = small_config(iterations=4, val_every=0)
    train(config, tmp_path / "full", data=small_data(), show_progress=False)

    def crash(step, metrics):
        if step == 3:
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        train(config, tmp_path / "part", data=small_data(), show_progress=False, callback=crash)
    train(config, tmp_path / "part", resume=True, data=small_data(), show_progress=False)
    full, part = final_state(tmp_path / "full"), final_state(tmp_path / "part")
    assert all(torch.equal(full[k], part[k]) for k in full)


def test_resume_can_extend_a_finished_run(tmp_path):
    train(small_config(iterations=6), tmp_path / "long", data=small_data(), show_progress=False)
    train(small_config(iterations=4), tmp_path / "ext", data=small_data(), show_progress=False)
    summary = train(small_config(iterations=6), tmp_path / "ext", resume=True, data=small_data(),
                    show_progress=False)
    assert summary.resumed_from == 4
    a, b = final_state(tmp_path / "long"), final_state(tmp_path / "ext")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    train(small_config(iterations=2), tmp_path / "run", data=small_data(), show_progress=False)
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        train(small_config(iterations=2), tmp_path / "run", data=small_data(), show_progress=False)
    with pytest.raises(ConfigError, match="inner_lr = 0.1 \\(run has 0.4\\)"):
        train(small_config(iterations=4, inner_lr=0.1), tmp_path / "run", resume=True, data=small_data(),
              show_progress=False)


def test_more_ways_than_classes_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ways = 8 is more than the 6 classes of the 'val' split"):
        train(small_config(ways=8), tmp_path / "run", data=small_data(), show_progress=False)


def test_pretraining_uses_a_head_over_all_training_classes(tmp_path):
    config = small_config(algorithm="pretrain", inner_steps_train=0, batch_size=16, iterations=3, val_every=3,
                          eval_method="nil")
    summary = train(config, tmp_path / "run", data=small_data(), show_progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt.model_config["n_classes"] == 12
    assert ckpt.state_dict["head.weight"].shape == (12, 8)
    assert summary.val_accuracy is not None


# ----- debris, messages and thread counts on resume -----

def _killed_run(tmp_path, config, kill_at: int = 5):
    def kill(step, metrics):
        if step == kill_at:
            raise StopTraining

    train(config, tmp_path / "run", data=small_data(), show_progress=False, callback=kill)
    return tmp_path / "run"


def test_resume_removes_stale_temp_files_of_the_run_only(tmp_path):
    import os

    from repana.io import process_start_time

    run = _killed_run(tmp_path, small_config())
    old = process_start_time() - 60
    debris = [run / "checkpoints" / ".latest.pt.repana-a1b2c3d4.tmp", run / "checkpoints" / ".step_000006.pt.k9_x7q2z.tmp",
              run / ".metrics.csv.repana-zz99yy88.tmp"]
    kept = [run / "checkpoints" / ".notes.tmp", run / "checkpoints" / "mine.tmp",
            run / "checkpoints" / ".latest.pt.repana-fresh123.tmp"]   # the last: newer than this process
    for path in debris + kept:
        path.write_bytes(b"x" * 100)
    for path in debris + kept[:2]:
        os.utime(path, (old, old))
    train(small_config(), run, resume=True, data=small_data(), show_progress=False)
    assert not any(p.exists() for p in debris)
    assert all(p.exists() for p in kept)


def test_atomic_write_names_its_temp_file_recognisably(tmp_path):
    from repana.io import TEMP_FILE, atomic_write

    with atomic_write(tmp_path / "latest.pt") as handle:
        handle.write(b"data")
        names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".latest.pt.repana-") and TEMP_FILE.match(names[0])


def test_resume_says_when_it_skips_an_unreadable_latest_checkpoint(tmp_path, capsys):
    run = _killed_run(tmp_path, small_config())
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    capsys.readouterr()
    train(small_config(), run, resume=True, data=small_data(), show_progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(latest) in err
    assert f"resuming from {run / 'checkpoints' / 'step_000004.pt'} (step 4) instead" in err


def test_resuming_a_finished_run_says_so_and_reports_its_last_loss(tmp_path, capsys):
    first = train(small_config(), tmp_path / "run", data=small_data(), show_progress=False)
    capsys.readouterr()
    again = train(small_config(), tmp_path / "run", resume=True, data=small_data(), show_progress=False)
    assert "is already complete (step 6 of 6)" in capsys.readouterr().err
    assert again.already_complete and again.steps == 6
    assert np.isfinite(again.train_loss) and abs(again.train_loss - first.train_loss) < 1e-5
    assert again.val_accuracy == first.val_accuracy


def test_resume_with_another_thread_count_is_refused_unless_allowed(tmp_path, monkeypatch):
    assert torch.get_num_threads() == 1   # conftest
    run = _killed_run(tmp_path, small_config())
    assert load_checkpoint(run / "checkpoints" / "latest.pt").runtime["threads"] == 1
    with pytest.raises(ConfigError, match=r"trained with 1 torch threads, this process would continue with 2.*"
                                          r"--set threads=1.*REPANA_ALLOW_THREAD_CHANGE=1"):
        train(small_config(threads=2), run, resume=True, data=small_data(), show_progress=False)
    monkeypatch.setenv("REPANA_ALLOW_THREAD_CHANGE", "1")
    summary = train(small_config(threads=2), run, resume=True, data=small_data(), show_progress=False)
    assert summary.steps == 6
    assert load_checkpoint(run / "checkpoints" / "latest.pt").runtime["threads"] == 2


def test_a_relative_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_config(data_root="data/here")
    assert config.data_root == str(tmp_path / "data" / "here")
    assert from_dict(config.to_dict()).data_root == config.data_root
