"""User errors on every command (compare aside) are one clear line and exit 1, found before any work:
a device that is not there, an output path that cannot be written, a folder given for a checkpoint."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from repana.cli import main
from repana.errors import ConfigError
from repana.meta.checkpoint import save_checkpoint
from repana.meta.config import TrainConfig
from repana.models import build_model
from cli_helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


@pytest.fixture
def checkpoint(tmp_path):
    config = TrainConfig(dataset="glyphs", hidden=8, ways=3, algorithm="anil", inner_steps_test=1,
                         test_episodes=3)
    model_config = config.model_config()
    torch.manual_seed(0)
    run = tmp_path / "run"
    return save_checkpoint(run / "checkpoints" / "latest.pt", model=build_model(model_config),
                           model_config=model_config, algorithm="anil", config=config.to_dict(), step=0)


@pytest.fixture
def episode(tmp_path):
    """A 3-way 1-shot support folder and a flat query folder."""
    rng = np.random.default_rng(0)
    support, query = tmp_path / "support", tmp_path / "query"
    for label in ("a", "b", "c"):
        (support / label).mkdir(parents=True)
        Image.fromarray((rng.random((28, 28)) < 0.2).astype(np.uint8) * 255).save(support / label / "0.png")
    query.mkdir()
    Image.fromarray((rng.random((28, 28)) < 0.2).astype(np.uint8) * 255).save(query / "q.png")
    return support, query


@pytest.fixture
def blocker(tmp_path):
    """A regular file: no path below it can be written, whoever runs the test (root included)."""
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts its real work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started working before checking its arguments")

    for module, name in (("repana.meta.evaluate", "evaluate"), ("repana.meta.evaluate", "predict"),
                         ("repana.meta.checkpoint", "load_checkpoint"), ("repana.meta.train", "train"),
                         ("repana.data", "load_splits"), ("repana.data.download", "download_omniglot")):
        monkeypatch.setattr(importlib.import_module(module), name, refuse)
    from repana.analysis.reproduce import Reproduction

    for method in ("run", "write_plan"):
        monkeypatch.setattr(Reproduction, method, refuse)



@no_gpu
def test_evaluate_on_a_missing_gpu(checkpoint, capsys, no_work):
    assert main(["evaluate", str(checkpoint), "--device", "cuda"]) == 1
    one_line_error(capsys, "repana evaluate: error: --device cuda: no CUDA GPU is available", "--device cpu")


@no_gpu
def test_predict_on_a_missing_gpu(checkpoint, episode, capsys, no_work):
    support, query = episode
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query),
                 "--device", "cuda:1"]) == 1
    one_line_error(capsys, "repana predict: error: --device cuda:1: no CUDA GPU is available")


def test_a_device_that_does_not_exist(checkpoint, capsys, no_work):
    assert main(["evaluate", str(checkpoint), "--device", "gpu"]) == 1
    one_line_error(capsys, "--device 'gpu' is not a device: use cpu, cuda, cuda:N, mps")


def test_evaluate_checks_its_csv_before_evaluating(checkpoint, blocker, capsys, no_work):
    assert main(["evaluate", str(checkpoint), "--csv", str(blocker / "episodes.csv")]) == 1
    one_line_error(capsys, "--csv", f"{blocker} is a file, so nothing can be written under it")
    folder = blocker.parent / "results"
    folder.mkdir()
    assert main(["evaluate", str(checkpoint), "--csv", str(folder)]) == 1
    one_line_error(capsys, f"--csv {folder} is a folder; give a file name, e.g. {folder / 'episodes.csv'}")


def test_evaluate_writes_its_csv_when_the_path_is_fine(checkpoint, tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "episodes.csv"
    assert main(["evaluate", str(checkpoint), "--episodes", "2", "--csv", str(out)]) == 0
    assert out.is_file() and len(out.read_text().splitlines()) == 3
    assert not list((tmp_path / "new" / "folder").glob(".repana-write-check-*"))  # the probe is removed


def test_predict_checks_its_out_before_reading_images(checkpoint, episode, blocker, capsys, no_work):
    support, query = episode
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query),
                 "--out", str(blocker / "p.csv")]) == 1
    one_line_error(capsys, "repana predict: error: --out")


def test_train_checks_its_out_before_training(blocker, capsys, no_work):
    assert main(["train", "--preset", "quick", "--out", str(blocker / "run")]) == 1
    one_line_error(capsys, "repana train: error: --out", "is a file")
    assert main(["train", "--preset", "quick", "--out", str(blocker)]) == 1
    one_line_error(capsys, f"--out {blocker} is a file, not a folder")


def test_reproduce_checks_its_out_before_working(blocker, capsys, no_work):
    assert main(["reproduce", "--out", str(blocker / "results")]) == 1
    one_line_error(capsys, "repana reproduce: error: --out")


@pytest.mark.parametrize("action", ["show", "grid"])
def test_data_figures_check_their_out_before_loading(action, blocker, capsys, no_work):
    assert main(["data", action, "--out", str(blocker / "x.png")]) == 1
    one_line_error(capsys, f"repana data: error: --out {blocker / 'x.png'}")


def test_data_download_checks_its_data_root(blocker, capsys, no_work):
    assert main(["data", "download", "omniglot", "--data-root", str(blocker / "data")]) == 1
    one_line_error(capsys, "--data-root")


def test_evaluate_a_run_folder_names_the_file_to_pass(checkpoint, capsys, no_work):
    run = checkpoint.parent.parent
    for folder in (run, checkpoint.parent):
        assert main(["evaluate", str(folder)]) == 1
        err = one_line_error(capsys, f"{folder} is a folder, not a checkpoint file: pass {checkpoint}")
        assert "does not exist" not in err
    empty = run.parent / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 1
    one_line_error(capsys, "is a folder, not a checkpoint file: pass a checkpoint file, e.g. RUN/checkpoints/latest.pt")


def test_predict_a_run_folder(checkpoint, episode, capsys, no_work):
    support, query = episode
    assert main(["predict", str(checkpoint.parent.parent), "--support", str(support), "--query", str(query)]) == 1
    one_line_error(capsys, "is a folder, not a checkpoint file")


@no_gpu
def test_no_traceback_from_the_console(checkpoint):
    """The whole process: exit code 1 and exactly one line on stderr."""
    done = subprocess.run([sys.executable, "-m", "repana", "evaluate", str(checkpoint), "--device", "cuda"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "repana evaluate: error: --device cuda: no CUDA GPU is available here (this torch is built without "
        "CUDA); use --device cpu"] or "no CUDA GPU is available here; use --device cpu" in done.stderr


def test_train_records_an_absolute_data_root(tmp_path, monkeypatch, capsys):
    """A relative --data-root is stored absolute, so evaluate / analyze find the data from anywhere."""
    import repana.meta.train as trainer

    seen = {}

    def record(config, run_dir, **kwargs):
        seen["data_root"] = config.data_root
        raise ConfigError("recorded")

    monkeypatch.setattr(trainer, "train", record)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "quick", "--data-root", "my_data", "--out", "run"]) == 1
    assert seen["data_root"] == str(tmp_path / "my_data")


def test_evaluate_says_when_the_runs_relative_data_root_is_not_found_here(tmp_path, monkeypatch, capsys):
    from repana.meta import checkpoint as checkpoints

    config = TrainConfig(dataset="omniglot", data_root="shared/data", hidden=8, ways=3, algorithm="anil")
    model_config = config.model_config(n_classes=3)
    path = tmp_path / "ckpt.pt"
    checkpoints.save_checkpoint(path, model=build_model(model_config), model_config=model_config, algorithm="anil",
                                config=config.to_dict(), step=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(path)]) == 1
    # a relative root recorded by an older run is read relative to the current folder, and named when absent
    one_line_error(capsys, f"the run's data root '{elsewhere / 'shared' / 'data'}' is not found from",
                    "pass --data-root DIR (the folder holding omniglot/)")


def test_an_os_error_during_a_command_is_one_line(monkeypatch, capsys):
    """A file system that refuses while a command works (after its checks passed): no traceback."""
    import repana.cli.data as data_cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/srv/data/omniglot")

    monkeypatch.setattr(data_cli, "run_info", refuse)
    assert main(["data", "info"]) == 1
    one_line_error(capsys, "repana data: error: [Errno 13] Permission denied: '/srv/data/omniglot'")


FACTORIES = '''
import torch


def net():
    return torch.nn.Sequential(torch.nn.Linear(3, 4))


def factory_that_raises():
    raise RuntimeError("weights for this net are\\n on another machine")
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """An importable module ``cli_error_factories`` with a working factory and one that raises."""
    (tmp_path / "cli_error_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_error_factories"
    sys.modules.pop("cli_error_factories", None)


def _compare(tmp_path, inputs, factory="cli_error_factories:net"):
    return main(["compare", "--model-a", factory, "--inputs", str(inputs), "--layers-a", "0",
                 "--out", str(tmp_path / "compared")])


def test_compare_names_unreadable_numpy_inputs(tmp_path, factories, capsys):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert _compare(tmp_path, empty) == 1
    one_line_error(capsys, f"cannot read inputs '{empty}': the file is empty (0 bytes), not a .npy file "
                           "written by numpy.save")
    np.savez(tmp_path / "good.npz", x=np.ones((6, 3), dtype=np.float32))
    whole = (tmp_path / "good.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[:len(whole) // 2])
    assert _compare(tmp_path, truncated) == 1
    one_line_error(capsys, f"cannot read inputs '{truncated}': the file is truncated or corrupt (BadZipFile:")
    np.save(tmp_path / "good.npy", np.ones((6, 3), dtype=np.float32))
    cut = tmp_path / "cut.npy"
    cut.write_bytes((tmp_path / "good.npy").read_bytes()[:100])
    assert _compare(tmp_path, cut) == 1
    one_line_error(capsys, f"cannot read inputs '{cut}': the file is truncated or corrupt (ValueError:")


def test_a_garbage_npz_is_not_called_an_object_array(tmp_path, factories, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an archive at all" * 4)
    assert _compare(tmp_path, garbage) == 1
    err = one_line_error(capsys, f"cannot read inputs '{garbage}': it is not a .npz archive (a zip file written "
                                 "by numpy.savez) (its first bytes are b'not '); the file is corrupt")
    assert "object" not in err
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert _compare(tmp_path, objects) == 1
    one_line_error(capsys, "it holds Python objects (an object-dtype array), not numbers")


def test_compare_says_the_factory_failed_with_its_message(tmp_path, factories, capsys):
    np.save(tmp_path / "x.npy", np.ones((6, 3), dtype=np.float32))
    assert _compare(tmp_path, tmp_path / "x.npy", "cli_error_factories:factory_that_raises") == 1
    one_line_error(capsys, "repana compare: error: factory 'cli_error_factories:factory_that_raises' failed when "
                           "called with {}: RuntimeError: weights for this net are on another machine")


def test_train_config_that_is_not_text(tmp_path, capsys, no_work):
    config = tmp_path / "binary.pkl"
    config.write_bytes(b"\x80\x04\x95\x10\x00\x00")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    one_line_error(capsys, f"repana train: error: config file {config} is not a TOML text file: byte 0 is not "
                           "UTF-8 (invalid start byte); give a .toml file")


@pytest.mark.parametrize("seed", ["1180591620717411303424", "-1"])
def test_train_seed_outside_the_seed_range(tmp_path, capsys, no_work, seed):
    assert main(["train", "--preset", "quick", "--seed", seed, "--out", str(tmp_path / "run")]) == 1
    one_line_error(capsys, f"repana train: error: seed = {seed} is outside the seed range 0 to 4294967295 "
                           "(2**32 - 1)")


@pytest.mark.parametrize("command", ["evaluate", "predict", "analyze"])
def test_a_text_file_given_as_checkpoint(tmp_path, episode, capsys, command):
    text = tmp_path / "notes.pt"
    text.write_text("hello world\nthese are notes, not weights\n")
    support, query = episode
    argv = {"evaluate": ["evaluate", str(text)],
            "predict": ["predict", str(text), "--support", str(support), "--query", str(query)],
            "analyze": ["analyze", "learning_curves", "--checkpoint", str(text), "--out", str(tmp_path / "a")]}
    assert main(argv[command]) == 1
    one_line_error(capsys, f"repana {command}: error: checkpoint {text} is not a torch checkpoint (truncated or "
                           "corrupt)")


@pytest.mark.parametrize("argv", [["evaluate", "CKPT", "--seed", "-1"],
                                  ["analyze", "learning_curves", "--checkpoint", "CKPT", "--seed", "-1",
                                   "--out", "OUT"],
                                  ["data", "show", "--seed", "-1", "--out", "OUT/episode.png"]])
def test_negative_seeds_are_one_line(checkpoint, tmp_path, capsys, no_work, argv):
    argv = [str(checkpoint) if a == "CKPT" else a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 1
    one_line_error(capsys, f"repana {argv[0]}: error: --seed -1 is outside the seed range 0 to 4294967295")


def test_data_show_names_the_figure_formats(tmp_path, capsys, no_work):
    out = tmp_path / "d.xyz"
    assert main(["data", "show", "glyphs", "--out", str(out)]) == 1
    one_line_error(capsys, f"repana data: error: --out {out} has format 'xyz'; figures are written as ",
                   "pdf", "png", "svg", f"(e.g. {tmp_path / 'd.png'})")


def test_data_download_refuses_what_is_not_a_url(tmp_path, capsys):
    assert main(["data", "download", "omniglot", "--url", "images_background=notaurl",
                 "--data-root", str(tmp_path / "data")]) == 1
    one_line_error(capsys, "repana data: error: the URL of archive images_background is 'notaurl', not a URL: give "
                           "https://HOST/PATH (schemes: https, http, ftp, file)")
    assert not (tmp_path / "data" / "omniglot").exists()  # refused before any folder or download


def test_compare_with_two_datapoints_says_the_values_are_degenerate(tmp_path, factories, capsys):
    import pandas as pd

    inputs = tmp_path / "two.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32))
    with pytest.warns(UserWarning, match="2 of 2 similarity values are degenerate"):
        assert main(["compare", "--model-a", "cli_error_factories:net", "--inputs", str(inputs), "--layers-a", "0",
                     "--measure", "cka", "procrustes", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("1 of these values are degenerate (near 1 by construction") == 2
    frame = pd.read_csv(tmp_path / "out" / "similarity.csv")
    assert frame["degenerate"].tolist() == [True, True]


# ----- values that gave silent wrong results or unbounded work: refused at once -----

@pytest.mark.parametrize("lr, needle", [("nan", "--lr nan (with 1 inner step) is not a finite number"),
                                        ("1e308", "--lr 1e+308 (with 1 inner step) is above the limit of 100"),
                                        ("-1", "--lr -1 (with 1 inner step) must not be negative")])
def test_evaluate_and_predict_refuse_a_non_finite_or_absurd_lr(lr, needle, checkpoint, episode, capsys, no_work):
    assert main(["evaluate", str(checkpoint), "--steps", "1", "--lr", lr]) == 1
    one_line_error(capsys, "repana evaluate: error: " + needle)
    support, query = episode
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query), "--steps", "1",
                 "--lr", lr]) == 1
    one_line_error(capsys, "repana predict: error: " + needle)


@pytest.mark.parametrize("argv, needle", [
    (["--episodes", "1000000000"], "--episodes 1000000000 is above the limit of 100,000"),
    (["--steps", "100000000"], "--steps 100000000 is above the limit of 1,000"),
])
def test_evaluate_refuses_work_above_the_limits(argv, needle, checkpoint, capsys, no_work):
    assert main(["evaluate", str(checkpoint), *argv]) == 1
    one_line_error(capsys, needle, "repana/limits.py")


@pytest.fixture
def no_analysis_work(monkeypatch, no_work):
    import repana.analysis.registry as registry

    def refuse(*args, **kwargs):
        raise AssertionError("the analysis loaded a checkpoint before checking its arguments")

    monkeypatch.setattr(registry, "load_analysis_checkpoint", refuse)


@pytest.mark.parametrize("argv, needle", [(["--lr", "nan"], "--lr nan is not a finite number"),
                                          (["--queries", "0"], "--queries 0 must be at least 1"),
                                          (["--episodes", "1000000000"],
                                           "--episodes 1000000000 is above the limit of 100,000")])
def test_analyze_checks_lr_queries_and_episodes_before_working(argv, needle, checkpoint, tmp_path, capsys,
                                                               no_analysis_work):
    assert main(["analyze", "freezing", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "a"), *argv]) == 1
    one_line_error(capsys, "repana analyze: error: " + needle)


def test_evaluate_refuses_contradictory_layer_sets(checkpoint, capsys):
    assert main(["evaluate", str(checkpoint), "--freeze", "conv1", "--adapt", "conv1"]) == 1
    one_line_error(capsys, "--freeze and --adapt both name conv1")
    # the checkpoint is ANIL's: the head adapts, so freezing it leaves nothing to adapt
    assert main(["evaluate", str(checkpoint), "--freeze", "head"]) == 1
    one_line_error(capsys, "--freeze head freezes every layer that adapts (head)", "pass --adapt with no layer")
    assert main(["evaluate", str(checkpoint), "--freeze", "conv1", "--adapt", "conv2", "head", "--episodes", "2"]) == 0
    assert "adapting conv2,head" in capsys.readouterr().out


@pytest.mark.parametrize("iterations, needle", [
    ("0", "iterations = 0 must be at least 1"),
    ("99999999999999999999999", "iterations = 99999999999999999999999 is above the limit of 1,000,000"),
])
def test_train_refuses_no_iterations_and_absurd_iterations(iterations, needle, tmp_path, capsys, no_work):
    assert main(["train", "--preset", "quick", "--iterations", iterations, "--out", str(tmp_path / "run")]) == 1
    one_line_error(capsys, "repana train: error: " + needle)
    assert not (tmp_path / "run").exists()


def test_a_refused_pickle_checkpoint_advises_what_the_command_has(tmp_path, capsys):
    """evaluate has no --unsafe-pickle (only compare does): the advice is load_checkpoint in Python."""
    import fractions

    path = tmp_path / "obj.pt"
    torch.save({"format": "repana-checkpoint", "x": fractions.Fraction(1, 3)}, path)
    assert main(["evaluate", str(path)]) == 1
    err = one_line_error(capsys, "repana evaluate: error:", "load_checkpoint(path, unsafe_pickle=True)")
    assert "--unsafe-pickle" not in err


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "omniglot", "--data-root", "MISSING"], "Omniglot not found under"),
    (["--threads", "-1"], "--threads -1 must be at least 1"),
    (["--seeds", "100000"], "--seeds 100000 is above the limit of 100"),
    (["--max-workers", "4"], "--max-workers: --plan only writes the jobs"),
])
def test_reproduce_plan_refuses_what_its_jobs_could_not_do(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--out", "out", "--plan", "plan", *argv]) == 1
    one_line_error(capsys, "repana reproduce: error: " + needle)
    assert not (tmp_path / "plan").exists()
