"""repana.runtime.threads: the one thread policy (the user's count, else one thread for small work and the idle
cores for large), the OpenMP defaults set before torch loads, and torch's and numpy's BLAS thread pools."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from repana.errors import ConfigError
from repana.models import forward_macs
from repana.runtime import cores, threads


@pytest.fixture
def two_idle_cores(monkeypatch):
    """A machine with 2 usable cores, both idle."""
    monkeypatch.setattr(cores, "idle_cores", lambda *a, **k: 2.0)
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)


# ----- thread defaults of the repana command -----

def test_process_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.setattr(cores, "usable_cores", lambda: 32)
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.configure_process_defaults(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "8",
                       "REPANA_DEFAULT_OMP_NUM_THREADS": "8"}   # marks the 8 as repana's, not the user's
    # torch is imported in this process: nothing could take effect here
    assert threads.configure_process_defaults({}) == {}


def test_default_threads_are_the_usable_cores_at_most_eight(monkeypatch):
    monkeypatch.delenv("REPANA_THREADS", raising=False)
    for usable, expected in ((1, 1), (6, 6), (8, 8), (64, 8)):
        monkeypatch.setattr(cores, "usable_cores", lambda usable=usable: usable)
        assert threads.default_threads() == expected
    assert threads.default_threads({"REPANA_THREADS": "12"}) == 12   # the user's count is not capped


def test_a_fresh_process_gets_the_passive_wait_policy_before_torch_loads():
    code = ("import os\nfrom repana.runtime import configure_process_defaults\n"
            "print(sorted(configure_process_defaults()))\nimport torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "REPANA_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout.splitlines()
    assert out == ["['KMP_BLOCKTIME', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY']",
                   f"PASSIVE {threads.default_threads({})}"]


# ----- the automatic thread count: one thread for small networks, the idle cores for large work -----

QUICK_NET = {"in_channels": 1, "n_classes": 5, "hidden": 32, "image_size": 28, "pooling": "max", "bn_stats": "batch"}
MINI_NET = {"in_channels": 3, "n_classes": 5, "hidden": 32, "image_size": 84, "pooling": "max", "bn_stats": "batch"}


@pytest.mark.parametrize("work,usable,idle,expected", [
    (7.7e7, 16, 16.0, 1),      # quick preset task (30 images): one thread however idle the machine
    (2.1e8, 2, 2.0, 1),        # Omniglot evaluation episode (80 images)
    (2.7e9, 2, 2.0, 2),        # MiniImageNet 5-way 5-shot task on an idle laptop: both cores
    (2.7e9, 2, 1.0, 1),        # ... next to one busy process: the idle core only
    (2.7e9, 2, 0.3, 1),        # ... on a machine busier than its cores: still one
    (2.7e9, 2, 1.6, 2),        # idle cores are rounded
    (2.7e9, 2, 1.4, 1),
    (2.7e9, 64, 40.0, 8),      # a big idle server: at most MAX_DEFAULT_THREADS
    (2.7e9, 64, 3.2, 3),       # a shared server: what is idle
    (2.7e9, 4, 12.0, 4),       # never more than the usable cores (cgroup quota, affinity)
    (None, 2, 2.0, 2),         # work of unknown size: large
    (None, 6, None, 6),        # load unknown (no /proc/stat): the usable cores
])
def test_thread_rule(work, usable, idle, expected):
    assert threads.thread_rule(work, usable, idle) == expected


def test_the_threshold_of_small_work_is_the_callers():
    assert threads.thread_rule(4.2e8, 2, 2.0) == 1                              # below 10^9: one thread
    assert threads.thread_rule(4.2e8, 2, 2.0, parallel_min_macs=1e8) == 2       # the RL policy's 10^8
    assert threads.thread_rule(0.99e8, 2, 2.0, parallel_min_macs=1e8) == 1


def test_repana_threads_overrides_the_rule(two_idle_cores):
    assert threads.choose_threads(2.7e9, environ={}) == 2
    assert threads.choose_threads(1e6, environ={}) == 1
    assert threads.choose_threads(1e6, environ={"REPANA_THREADS": "3"}) == 3
    assert threads.choose_threads(2.7e9, environ={"REPANA_THREADS": "1"}) == 1
    assert threads.choose_threads(2.7e9, environ={"REPANA_THREADS": "0"}) == 2   # 0: automatic
    assert threads.choose_threads(forward_macs(MINI_NET, 100), environ={}) == 2
    assert threads.choose_threads(forward_macs(QUICK_NET, 80), environ={}) == 1
    assert threads.similarity_threads(environ={}) == 1
    assert threads.similarity_threads(environ={"REPANA_THREADS": "2"}) == 2
    resnet = {**QUICK_NET, "arch": "resnet", "n_blocks": 3}
    del resnet["pooling"]
    assert threads.choose_threads(forward_macs(resnet, 80), environ={}) == 2   # not counted: large
    for bad, message in (("many", "whole number of threads"), ("-2", "must not be negative")):
        with pytest.raises(ConfigError, match=f"REPANA_THREADS = .*{message}"):
            threads.choose_threads(environ={"REPANA_THREADS": bad})
    environ = {"REPANA_THREADS": "3"}
    threads.configure_process_defaults(environ)
    assert environ["OMP_NUM_THREADS"] == "3"


def test_an_omp_num_threads_set_outside_repana_counts_as_the_users(two_idle_cores):
    # a job script's or torchrun's count wins over the rule, for small and large work
    assert threads.choose_threads(2.7e9, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert threads.choose_threads(1e6, environ={"OMP_NUM_THREADS": "4"}) == 4
    assert threads.explicit_threads({"OMP_NUM_THREADS": "3,1"}) == (3, "OMP_NUM_THREADS")
    assert threads.explicit_threads({"OMP_NUM_THREADS": "3", "REPANA_THREADS": "2"}) == (2, "REPANA_THREADS")
    assert threads.explicit_threads({"OMP_NUM_THREADS": "lots"}) is None
    # the default the repana command sets (and its child processes inherit) is not a choice of the user's
    environ = {}
    threads.configure_process_defaults(environ)
    assert environ["OMP_NUM_THREADS"] == "2" and threads.explicit_threads(environ) is None
    assert threads.choose_threads(1e6, environ=environ) == 1
    environ["OMP_NUM_THREADS"] = "1"   # changed afterwards: the user's again
    assert threads.explicit_threads(environ) == (1, "OMP_NUM_THREADS")


def test_small_work_never_watches_the_cpus(monkeypatch):
    def watched(*args, **kwargs):
        raise AssertionError("idle_cores called for small work")

    monkeypatch.setattr(cores, "idle_cores", watched)
    assert threads.choose_threads(forward_macs(QUICK_NET, 30), environ={}) == 1
    assert threads.run_threads(0, None, 5e7, environ={}, parallel_min_macs=1e8) == (1, "automatic")


def test_set_torch_threads_sets_and_returns_the_automatic_count(monkeypatch):
    import torch

    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)   # conftest restores the process's count
    assert threads.set_torch_threads(forward_macs(QUICK_NET, 80)) == 1
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("REPANA_THREADS", "2")
    assert threads.set_torch_threads(forward_macs(QUICK_NET, 80)) == 2
    assert torch.get_num_threads() == 2


# ----- training runs: one function for supervised and RL runs, the same counts as before -----

def test_run_threads_come_from_config_env_checkpoint_or_the_rule(two_idle_cores):
    assert threads.run_threads(3, 4, 2.7e9, environ={"REPANA_THREADS": "2"}) == (3, "config")
    assert threads.run_threads(0, 4, 2.7e9, environ={"REPANA_THREADS": "2"}) == (2, "REPANA_THREADS")
    assert threads.run_threads(0, 4, 2.7e9, environ={"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS")
    assert threads.run_threads(0, 4, 1e6, environ={}) == (4, "checkpoint")
    assert threads.run_threads(0, None, 1e6, environ={}) == (1, "automatic")
    assert threads.run_threads(0, 0, 2.7e9, environ={}) == (2, "automatic")      # 0 recorded: none
    assert threads.run_threads(0, None, None, environ={}) == (2, "automatic")    # unknown work: large


def test_training_threads_come_from_config_env_checkpoint_or_the_rule(two_idle_cores):
    from repana.meta.config import load_config
    from repana.meta.train import training_threads

    quick = load_config(preset="quick")
    mini = load_config(preset="miniimagenet-5way-5shot")
    recorded = SimpleNamespace(runtime={"threads": 4})
    assert training_threads(quick, environ={}) == (1, "automatic")
    assert training_threads(mini, environ={}) == (2, "automatic")
    assert training_threads(mini.replace(threads=1), environ={}) == (1, "config")
    assert training_threads(quick, environ={"REPANA_THREADS": "2"}) == (2, "REPANA_THREADS")
    assert training_threads(quick.replace(threads=3), environ={"REPANA_THREADS": "2"}) == (3, "config")
    assert training_threads(quick, recorded, environ={}) == (4, "checkpoint")
    assert training_threads(quick, recorded, environ={"REPANA_THREADS": "2"}) == (2, "REPANA_THREADS")
    assert training_threads(quick, SimpleNamespace(runtime={}), environ={}) == (1, "automatic")   # older checkpoints
    assert training_threads(mini, recorded, environ={"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS")


# The automatic counts the trainers and the evaluating commands chose before the thread policy was one module,
# over every (usable cores, idle cores) pair of these grids, in this order: usable 1, 2, 4, 16, each with idle
# None (unknown), 0.3, 1.6, 3.2, 40.
PINNED_USABLE = (1, 2, 4, 16)
PINNED_IDLE = (None, 0.3, 1.6, 3.2, 40.0)
ONE_THREAD = [1] * 20
IDLE_CORES = [1, 1, 1, 1, 1,  2, 1, 2, 2, 2,  4, 1, 2, 3, 4,  8, 1, 2, 3, 8]
PINNED_SUPERVISED = {   # training_threads: one task's (or batch's) images through the Conv4
    "quick": ONE_THREAD, "omniglot-subset": ONE_THREAD, "omniglot-5way-1shot": ONE_THREAD,
    "omniglot-5way-5shot": ONE_THREAD, "omniglot-20way-1shot": ONE_THREAD, "omniglot-20way-5shot": ONE_THREAD,
    "miniimagenet-5way-1shot": IDLE_CORES, "miniimagenet-5way-5shot": IDLE_CORES,
    "quick multiclass": ONE_THREAD, "miniimagenet-5way-5shot multiclass": IDLE_CORES,
    "miniimagenet-5way-1shot hidden=16": ONE_THREAD, "miniimagenet-5way-1shot hidden=8": ONE_THREAD,
}
PINNED_RL = {   # rl_training_threads: the whole meta-batch of states through the policy MLP (threshold 10^8)
    "tiny-nav": ONE_THREAD, "rl-2dnav": IDLE_CORES, "rl-halfcheetah-dir": IDLE_CORES,
    "rl-halfcheetah-vel": IDLE_CORES, "rl-2dnav meta_batch_size=2": ONE_THREAD,
}


def _supervised_config(name: str):
    from repana.meta.config import load_config

    preset, _, change = name.partition(" ")
    config = load_config(preset=preset)
    if change == "multiclass":
        return config.replace(algorithm="multiclass")
    if change:
        key, value = change.split("=")
        return config.replace(**{key: int(value)})
    return config


def _rl_config(name: str):
    from repana.rl.config import RLConfig, load_preset

    if name == "tiny-nav":
        return RLConfig(env="2d-navigation", meta_batch_size=3, fast_batch_size=4, horizon=20, hidden_sizes=[8, 8])
    preset, _, change = name.partition(" ")
    config = load_preset(preset)
    if change:
        key, value = change.split("=")
        return config.replace(**{key: int(value)})
    return config


def _over_the_grid(monkeypatch, choose) -> list[int]:
    chosen = []
    for usable in PINNED_USABLE:
        for idle in PINNED_IDLE:
            monkeypatch.setattr(cores, "usable_cores", lambda usable=usable: usable)
            monkeypatch.setattr(cores, "idle_cores", lambda *a, idle=idle, **k: idle)
            chosen.append(choose())
    return chosen


@pytest.mark.parametrize("name", PINNED_SUPERVISED)
def test_supervised_runs_and_their_evaluation_choose_the_pinned_counts(monkeypatch, name):
    from repana.meta.train import training_threads

    config = _supervised_config(name)
    assert _over_the_grid(monkeypatch, lambda: training_threads(config, environ={})) == \
        [(count, "automatic") for count in PINNED_SUPERVISED[name]]
    # repana evaluate / analyze / reproduce: one test episode through the same network
    episode = forward_macs(config.model_config(), config.ways * (config.shots + config.queries_test))
    assert _over_the_grid(monkeypatch, lambda: threads.choose_threads(episode, environ={})) == PINNED_SUPERVISED[name]


@pytest.mark.parametrize("name", PINNED_RL)
def test_rl_runs_choose_the_pinned_counts(monkeypatch, name):
    from repana.rl.train import rl_training_threads

    config = _rl_config(name)
    assert _over_the_grid(monkeypatch, lambda: rl_training_threads(config, environ={})) == \
        [(count, "automatic") for count in PINNED_RL[name]]


def test_a_run_records_its_automatic_thread_count_and_resume_keeps_it(tmp_path, monkeypatch):
    import torch
    from test_train import small_config, small_data

    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.train import StopTraining, train

    for name in ("REPANA_THREADS", "REPANA_ALLOW_THREAD_CHANGE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)   # the process's setting no longer decides (conftest restores it)
    summary = train(small_config(), tmp_path / "auto", data=small_data(), show_progress=False)
    assert summary.threads == 1    # a tiny network: one thread
    assert load_checkpoint(tmp_path / "auto" / "checkpoints" / "latest.pt").runtime["threads"] == 1
    assert torch.get_num_threads() == 2   # restored after training

    def kill(step, metrics):
        if step == 3:
            raise StopTraining

    monkeypatch.setenv("REPANA_THREADS", "2")
    run = tmp_path / "env"
    assert train(small_config(), run, data=small_data(), show_progress=False, callback=kill).threads == 2
    assert load_checkpoint(run / "checkpoints" / "latest.pt").runtime["threads"] == 2
    with pytest.raises(ConfigError, match="trained with 2 torch threads, this process would continue with 1"):
        monkeypatch.setenv("REPANA_THREADS", "1")   # an explicit other count is refused
        train(small_config(), run, resume=True, data=small_data(), show_progress=False)
    monkeypatch.delenv("REPANA_THREADS")
    resumed = train(small_config(), run, resume=True, data=small_data(), show_progress=False)
    assert resumed.threads == 2 and resumed.steps == 6   # automatic: the checkpoint's count, no refusal
    assert load_checkpoint(run / "checkpoints" / "latest.pt").runtime["threads"] == 2


# ----- numpy's OpenBLAS pool (threadpoolctl) -----

def _numpy_blas_pool() -> int:
    return threads._numpy_openblas().info()[0]["num_threads"]


@pytest.fixture
def numpy_openblas_on_two_threads():
    """numpy's OpenBLAS pool at 2 threads (as numpy starts it on 2 cores), its own count restored afterwards."""
    if not threads.numpy_blas_is_openblas():
        pytest.skip("numpy's BLAS is not an OpenBLAS with a settable thread count")
    with threads._numpy_openblas().limit(limits=2):
        yield


def test_numpy_blas_threads_sets_the_pool_inside_the_block_only(numpy_openblas_on_two_threads):
    assert _numpy_blas_pool() == 2
    with threads.numpy_blas_threads(1):
        assert _numpy_blas_pool() == 1
    assert _numpy_blas_pool() == 2
    with pytest.raises(RuntimeError), threads.numpy_blas_threads(1):   # restored when the block fails too
        raise RuntimeError("failed product")
    assert _numpy_blas_pool() == 2


def test_similarity_products_use_openblas_only_on_one_thread(monkeypatch, numpy_openblas_on_two_threads):
    import torch

    from repana.similarity import _blas

    pools = []
    real = _blas.numpy_blas_threads

    @contextmanager
    def watched(count):
        with real(count):
            pools.append(_numpy_blas_pool())
            yield

    monkeypatch.setattr(_blas, "numpy_blas_threads", watched)
    x = torch.randn(300, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.from_numpy(x.T.numpy() @ x.numpy())
    torch.set_num_threads(1)   # conftest restores the process's count
    assert torch.allclose(_blas.matmul(x.T, x), expected)
    assert pools == [1] and _numpy_blas_pool() == 2   # numpy on one OpenBLAS thread, the pool's count restored
    sums, squares = _blas.column_sums(x)
    assert torch.allclose(sums, x.sum(dim=0)) and torch.allclose(squares, (x * x).sum(dim=0))
    assert pools == [1, 1] and _numpy_blas_pool() == 2
    pools.clear()
    torch.set_num_threads(2)   # more threads: torch's passive OpenMP pool, not OpenBLAS's spinning one
    assert torch.allclose(_blas.matmul(x.T, x), expected)
    assert pools == []
