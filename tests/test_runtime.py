"""repana.runtime: glibc keeps freed memory, so conv passes stop page-faulting on fresh maps."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from repana import cli, runtime
from repana.errors import ConfigError

# Minor page faults of five no-grad forwards of 75 Omniglot-size images through a max-pool Conv4-64
# (after three warm-up passes): its conv1 and batch-norm maps are 15 MiB each, which glibc by default gives back
# to the kernel after every pass, so each pass faults them in again page by page.
FAULT_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from repana.models import Conv4
    from repana.runtime import retain_freed_memory
    torch.set_num_threads(1)
    if sys.argv[1] == "retain":
        assert retain_freed_memory(), "glibc refused the settings"
    model, x = Conv4(1, 5, 64, 28, pooling="max"), torch.rand(75, 1, 28, 28)
    with torch.no_grad():
        for _ in range(3):  # warm-up: the heap grows to its working size
            model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            model(x)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def _faults_per_forward(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(runtime._glibc_mallopt() is None, reason="not glibc: retain_freed_memory is a no-op here")
def test_retained_memory_is_reused_without_page_faults():
    default = _faults_per_forward("default")
    if default < 3840:  # less than one 15 MiB map (3,840 pages of 4 KiB) faulted in per pass
        pytest.skip(f"{default:.0f} page faults per pass with glibc's defaults here (huge pages, or another "
                    "allocator preloaded): nothing for retain_freed_memory to remove")
    assert _faults_per_forward("retain") < 100   # freed maps are reused (measured: 7,318 faults per pass, then 0)


class _FakeMallopt:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def __call__(self, option, value):
        self.calls.append((option, value))
        return self.answer


@pytest.fixture
def fake_mallopt(monkeypatch):
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", runtime.ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    fake = _FakeMallopt()
    monkeypatch.setattr(runtime, "_glibc_mallopt", lambda: fake)
    return fake


def test_sets_the_mmap_then_the_trim_threshold(fake_mallopt):
    assert runtime.retain_freed_memory(256 << 20) is True
    assert fake_mallopt.calls == [(-3, 256 << 20), (-1, 256 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_refusals_and_other_c_libraries_return_false(fake_mallopt, monkeypatch):
    fake_mallopt.answer = 0
    assert runtime.retain_freed_memory() is False
    monkeypatch.setattr(runtime, "_glibc_mallopt", lambda: None)   # macOS, musl
    assert runtime.retain_freed_memory() is False


@pytest.mark.parametrize("name,value", [("MALLOC_TRIM_THRESHOLD_", "1000"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")])
def test_the_users_own_malloc_settings_win(fake_mallopt, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert runtime.retain_freed_memory() is False
    assert fake_mallopt.calls == []


def test_unrelated_glibc_tunables_do_not_count(fake_mallopt, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert runtime.retain_freed_memory() is True


@pytest.mark.parametrize("limit", [0, 1000, 1 << 31])
def test_limits_outside_a_c_int_of_at_least_1_mib_are_refused(fake_mallopt, limit):
    with pytest.raises(ConfigError, match="between 1 MiB and 2 GiB"):
        runtime.retain_freed_memory(limit)


def test_environment_variable(fake_mallopt, monkeypatch):
    assert runtime.retain_freed_memory_from_env() is True                 # unset: the 1 GiB default
    assert fake_mallopt.calls[-1] == (-1, runtime.DEFAULT_RETAIN_BYTES)
    monkeypatch.setenv(runtime.ENV_VAR, "64")
    assert runtime.retain_freed_memory_from_env() is True
    assert fake_mallopt.calls[-1] == (-1, 64 << 20)
    monkeypatch.setenv(runtime.ENV_VAR, "0")
    calls = len(fake_mallopt.calls)
    assert runtime.retain_freed_memory_from_env() is False and len(fake_mallopt.calls) == calls
    for bad, message in (("lots", "whole number of MiB"), ("4096", "between 1 and 2047")):
        monkeypatch.setenv(runtime.ENV_VAR, bad)
        with pytest.raises(ConfigError, match=message):
            runtime.retain_freed_memory_from_env()


def test_every_command_retains_freed_memory_and_a_bad_setting_is_a_clear_error(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory_from_env", lambda: calls.append(1))
    assert cli.main(["train", "--list-presets"]) == 0
    assert calls == [1]
    monkeypatch.setattr(cli, "retain_freed_memory_from_env", runtime.retain_freed_memory_from_env)
    monkeypatch.setenv(runtime.ENV_VAR, "lots")
    assert cli.main(["train", "--list-presets"]) == 1
    assert "REPANA_RETAIN_FREED_MIB = 'lots' must be a whole number of MiB" in capsys.readouterr().err


# ----- thread defaults (issue 17, item 1) -----

def test_process_defaults_fill_only_what_the_user_left_unset(monkeypatch):
    import repana.runtime as runtime

    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 32)
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    runtime.configure_process_defaults(environ)
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "8",
                       "REPANA_DEFAULT_OMP_NUM_THREADS": "8"}   # marks the 8 as repana's, not the user's
    # torch is imported in this process: nothing could take effect here
    assert runtime.configure_process_defaults({}) == {}


def test_default_threads_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    import repana.runtime as runtime

    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(runtime, "_physical_cores", lambda cpus: None)
    assert runtime.usable_cores() == 6 and runtime.default_threads() == 6
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 3)
    assert runtime.usable_cores() == 3
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    monkeypatch.undo()
    assert runtime._cgroup_cpu_limit(str(tmp_path / "cpu.max")) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime._cgroup_cpu_limit(str(tmp_path / "cpu.max")) is None


def test_a_fresh_process_gets_the_passive_wait_policy_before_torch_loads():
    import subprocess
    import sys

    from repana.runtime import default_threads

    code = ("import os\nfrom repana.runtime import configure_process_defaults\n"
            "print(sorted(configure_process_defaults()))\nimport torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "REPANA_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout.splitlines()
    assert out == ["['KMP_BLOCKTIME', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY']", f"PASSIVE {default_threads()}"]


# ----- the automatic thread count: one thread for small networks, the idle cores for large work -----

QUICK_NET = {"in_channels": 1, "n_classes": 5, "hidden": 32, "image_size": 28, "pooling": "max", "bn_stats": "batch"}
MINI_NET = {"in_channels": 3, "n_classes": 5, "hidden": 32, "image_size": 84, "pooling": "max", "bn_stats": "batch"}


def test_hyper_threads_of_one_core_count_once(tmp_path, monkeypatch):
    for cpu, siblings in enumerate(["0,4", "1,5", "2,6", "3,7", "0,4", "1,5", "2,6", "3,7"]):
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert runtime._physical_cores(set(range(8)), str(tmp_path)) == 4
    assert runtime._physical_cores({0, 4}, str(tmp_path)) == 1        # one core's two hyper-threads
    assert runtime._physical_cores({0, 9}, str(tmp_path)) is None      # unknown CPU: no claim
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: None)
    real = runtime._physical_cores
    monkeypatch.setattr(runtime, "_physical_cores", lambda cpus: real(cpus, str(tmp_path)))
    assert runtime.usable_cores() == 4


def test_conv4_multiply_adds_are_the_hand_counted_ones():
    # max-pool: 3x3 convs at 28, 14, 7, 3 pixels; 1 -> 32 -> 32 -> 32 -> 32 channels
    assert runtime.conv4_macs_per_image(**QUICK_NET) == 9 * (28 * 28 * 1 * 32 + (14 * 14 + 7 * 7 + 3 * 3) * 32 * 32)
    # stride 2 (MAML's Omniglot network): outputs 14, 7, 4, 2 pixels; 64 filters
    assert runtime.conv4_macs_per_image(1, 64, 28, "stride") == 9 * (14 * 14 * 64 + (7 * 7 + 4 * 4 + 2 * 2) * 64 * 64)
    # MiniImageNet Conv4-32: 84, 42, 21, 10 pixels, 3 input channels: 27.4 M per image
    assert runtime.conv4_macs_per_image(**MINI_NET) == 9 * (84 * 84 * 3 * 32 + (42 * 42 + 21 * 21 + 10 * 10) * 32 * 32)


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
    assert runtime.thread_rule(work, usable, idle) == expected


def _write_stat(path, rows):
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{cpu} {busy} 0 0 {idle} 0 0 0 0 0 0" for cpu, busy, idle in rows]
    path.write_text("\n".join(lines + ["intr 1 2 3", "procs_running 3"]) + "\n")


def test_idle_cores_from_the_per_cpu_tick_counters(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    _write_stat(stat, [(0, 100, 50), (1, 100, 50), (2, 0, 0)])
    later = [(0, 200, 50), (1, 110, 140), (2, 0, 100)]   # cpu0 busy, cpu1 90% idle, cpu2 idle

    def sleep(seconds):
        _write_stat(stat, later)

    monkeypatch.setattr("time.sleep", sleep)
    assert runtime.idle_cores(0.1, str(stat), cpus={0, 1}) == pytest.approx(0.9)
    _write_stat(stat, [(0, 100, 50), (1, 100, 50), (2, 0, 0)])
    assert runtime.idle_cores(0.1, str(stat), cpus={0, 1, 2}) == pytest.approx(1.9)
    assert runtime.idle_cores(0.1, str(tmp_path / "missing")) is None


def test_idle_cores_sees_a_busy_process(tmp_path):
    if runtime.idle_cores(0.05) is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        cpus = set(os.sched_getaffinity(busy.pid))
        # the busy loop runs on one of its CPUs all the time: at most len(cpus) - 1 of them are idle
        assert runtime.idle_cores(0.3, cpus=cpus) <= len(cpus) - 0.5
    finally:
        busy.kill()
        busy.wait()


def test_repana_threads_overrides_the_rule(monkeypatch):
    monkeypatch.setattr(runtime, "idle_cores", lambda *a, **k: 2.0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    assert runtime.choose_threads(2.7e9, environ={}) == 2
    assert runtime.choose_threads(1e6, environ={}) == 1
    assert runtime.choose_threads(1e6, environ={"REPANA_THREADS": "3"}) == 3
    assert runtime.choose_threads(2.7e9, environ={"REPANA_THREADS": "1"}) == 1
    assert runtime.choose_threads(2.7e9, environ={"REPANA_THREADS": "0"}) == 2   # 0: automatic
    assert runtime.conv4_threads(MINI_NET, 100, environ={}) == 2
    assert runtime.conv4_threads(QUICK_NET, 80, environ={}) == 1
    assert runtime.similarity_threads(environ={}) == 1
    assert runtime.similarity_threads(environ={"REPANA_THREADS": "2"}) == 2
    assert runtime.conv4_threads({**QUICK_NET, "arch": "resnet", "n_blocks": 3}, 80, environ={}) == 2   # not a Conv4: large
    for bad, message in (("many", "whole number of threads"), ("-2", "must not be negative")):
        with pytest.raises(ConfigError, match=f"REPANA_THREADS = .*{message}"):
            runtime.choose_threads(environ={"REPANA_THREADS": bad})
    environ = {"REPANA_THREADS": "3"}
    runtime.configure_process_defaults(environ)
    assert environ["OMP_NUM_THREADS"] == "3"


def test_an_omp_num_threads_set_outside_repana_counts_as_the_users(monkeypatch):
    monkeypatch.setattr(runtime, "idle_cores", lambda *a, **k: 2.0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    # a job script's or torchrun's count wins over the rule, for small and large work
    assert runtime.choose_threads(2.7e9, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert runtime.choose_threads(1e6, environ={"OMP_NUM_THREADS": "4"}) == 4
    assert runtime.explicit_threads({"OMP_NUM_THREADS": "3,1"}) == (3, "OMP_NUM_THREADS")
    assert runtime.explicit_threads({"OMP_NUM_THREADS": "3", "REPANA_THREADS": "2"}) == (2, "REPANA_THREADS")
    assert runtime.explicit_threads({"OMP_NUM_THREADS": "lots"}) is None
    # the default the repana command sets (and its child processes inherit) is not a choice of the user's
    environ = {}
    runtime.configure_process_defaults(environ)
    assert environ["OMP_NUM_THREADS"] == "2" and runtime.explicit_threads(environ) is None
    assert runtime.choose_threads(1e6, environ=environ) == 1
    environ["OMP_NUM_THREADS"] = "1"   # changed afterwards: the user's again
    assert runtime.explicit_threads(environ) == (1, "OMP_NUM_THREADS")


def test_small_work_never_watches_the_cpus(monkeypatch):
    def watched(*args, **kwargs):
        raise AssertionError("idle_cores called for small work")

    monkeypatch.setattr(runtime, "idle_cores", watched)
    assert runtime.conv4_threads(QUICK_NET, 30, environ={}) == 1


# ----- training: the chosen count is used, recorded, and kept on resume -----

def test_training_threads_come_from_config_env_checkpoint_or_the_rule(monkeypatch):
    from types import SimpleNamespace

    from repana.meta.config import load_config
    from repana.meta.train import training_threads

    monkeypatch.setattr(runtime, "idle_cores", lambda *a, **k: 2.0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
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


def test_set_conv4_threads_uses_the_automatic_count(monkeypatch):
    import torch

    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    runtime.set_conv4_threads(QUICK_NET, 80)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("REPANA_THREADS", "2")
    runtime.set_conv4_threads(QUICK_NET, 80)
    assert torch.get_num_threads() == 2


def test_similarity_products_use_openblas_only_on_one_thread(monkeypatch):
    import torch

    from repana.similarity import _blas

    if _blas._openblas_threads() is None:
        pytest.skip("numpy's BLAS is not an OpenBLAS with a settable thread count")
    get_threads, set_threads = _blas._openblas_threads()
    pool, calls = get_threads(), []
    set_threads(2)   # as numpy starts it on 2 cores (OMP_NUM_THREADS); restored below
    monkeypatch.setattr(_blas, "_openblas_threads", lambda: (get_threads, lambda n: (calls.append(n), set_threads(n))))
    x = torch.randn(300, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (x.T.numpy() @ x.numpy())
    torch.set_num_threads(1)
    try:
        assert torch.allclose(_blas.matmul(x.T, x), torch.from_numpy(expected))
    finally:
        set_threads(pool)
    assert calls == [1, 2]          # numpy on one OpenBLAS thread, the pool's count restored afterwards
    calls.clear()
    torch.set_num_threads(2)        # more threads: torch's passive OpenMP pool, not OpenBLAS's spinning one
    assert torch.allclose(_blas.matmul(x.T, x), torch.from_numpy(expected))
    assert calls == []
