"""repana.runtime.memory: glibc keeps freed memory, so conv passes stop page-faulting on fresh maps."""

import os
import subprocess
import sys
import textwrap

import pytest

from repana import cli
from repana.errors import ConfigError
from repana.runtime import memory

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


@pytest.mark.skipif(memory._glibc_mallopt() is None, reason="not glibc: retain_freed_memory is a no-op here")
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
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", memory.RETAIN_FREED_ENV):
        monkeypatch.delenv(name, raising=False)
    fake = _FakeMallopt()
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: fake)
    return fake


def test_sets_the_mmap_then_the_trim_threshold(fake_mallopt):
    assert memory.retain_freed_memory(256 << 20) is True
    assert fake_mallopt.calls == [(-3, 256 << 20), (-1, 256 << 20)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_refusals_and_other_c_libraries_return_false(fake_mallopt, monkeypatch):
    fake_mallopt.answer = 0
    assert memory.retain_freed_memory() is False
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: None)   # macOS, musl
    assert memory.retain_freed_memory() is False


@pytest.mark.parametrize("name,value", [("MALLOC_TRIM_THRESHOLD_", "1000"),
                                        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")])
def test_the_users_own_malloc_settings_win(fake_mallopt, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert memory.retain_freed_memory() is False
    assert fake_mallopt.calls == []


def test_unrelated_glibc_tunables_do_not_count(fake_mallopt, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")
    assert memory.retain_freed_memory() is True


@pytest.mark.parametrize("limit", [0, 1000, 1 << 31])
def test_limits_outside_a_c_int_of_at_least_1_mib_are_refused(fake_mallopt, limit):
    with pytest.raises(ConfigError, match="between 1 MiB and 2 GiB"):
        memory.retain_freed_memory(limit)


def test_environment_variable(fake_mallopt, monkeypatch):
    assert memory.retain_freed_memory_from_env() is True                 # unset: the 1 GiB default
    assert fake_mallopt.calls[-1] == (-1, memory.DEFAULT_RETAIN_BYTES)
    monkeypatch.setenv(memory.RETAIN_FREED_ENV, "64")
    assert memory.retain_freed_memory_from_env() is True
    assert fake_mallopt.calls[-1] == (-1, 64 << 20)
    monkeypatch.setenv(memory.RETAIN_FREED_ENV, "0")
    calls = len(fake_mallopt.calls)
    assert memory.retain_freed_memory_from_env() is False and len(fake_mallopt.calls) == calls
    for bad, message in (("lots", "whole number of MiB"), ("4096", "between 1 and 2047")):
        monkeypatch.setenv(memory.RETAIN_FREED_ENV, bad)
        with pytest.raises(ConfigError, match=message):
            memory.retain_freed_memory_from_env()


def test_every_command_retains_freed_memory_and_a_bad_setting_is_a_clear_error(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory_from_env", lambda: calls.append(1))
    assert cli.main(["train", "--list-presets"]) == 0
    assert calls == [1]
    monkeypatch.setattr(cli, "retain_freed_memory_from_env", memory.retain_freed_memory_from_env)
    monkeypatch.setenv(memory.RETAIN_FREED_ENV, "lots")
    assert cli.main(["train", "--list-presets"]) == 1
    assert "REPANA_RETAIN_FREED_MIB = 'lots' must be a whole number of MiB" in capsys.readouterr().err
