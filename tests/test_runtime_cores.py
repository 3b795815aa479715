"""repana.runtime.cores: the cores this process may use and those idle now."""

import os
import subprocess
import sys

import pytest

from repana.runtime import cores


def test_usable_cores_follow_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(cores, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(cores, "_physical_cores", lambda cpus: None)
    assert cores.usable_cores() == 6
    monkeypatch.setattr(cores, "_cgroup_cpu_limit", lambda: 3)
    assert cores.usable_cores() == 3
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    monkeypatch.undo()
    assert cores._cgroup_cpu_limit(str(tmp_path / "cpu.max")) == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores._cgroup_cpu_limit(str(tmp_path / "cpu.max")) is None
    (tmp_path / "cpu.max").write_text("50000 100000\n")   # half a CPU: still one
    assert cores._cgroup_cpu_limit(str(tmp_path / "cpu.max")) == 1
    assert cores._cgroup_cpu_limit(str(tmp_path / "missing")) is None


def test_without_an_affinity_mask_the_cpu_count_is_used(monkeypatch):
    def no_affinity(pid):
        raise OSError("not on this system")

    monkeypatch.setattr(cores.os, "sched_getaffinity", no_affinity, raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 12)
    monkeypatch.setattr(cores, "_cgroup_cpu_limit", lambda: None)
    assert cores.usable_cores() == 12
    monkeypatch.setattr(cores.os, "cpu_count", lambda: None)   # unknown: one core
    assert cores.usable_cores() == 1


def test_hyper_threads_of_one_core_count_once(tmp_path, monkeypatch):
    for cpu, siblings in enumerate(["0,4", "1,5", "2,6", "3,7", "0,4", "1,5", "2,6", "3,7"]):
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert cores._physical_cores(set(range(8)), str(tmp_path)) == 4
    assert cores._physical_cores({0, 4}, str(tmp_path)) == 1        # one core's two hyper-threads
    assert cores._physical_cores({0, 9}, str(tmp_path)) is None      # unknown CPU: no claim
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(cores, "_cgroup_cpu_limit", lambda: None)
    real = cores._physical_cores
    monkeypatch.setattr(cores, "_physical_cores", lambda cpus: real(cpus, str(tmp_path)))
    assert cores.usable_cores() == 4


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
    assert cores.idle_cores(0.1, str(stat), cpus={0, 1}) == pytest.approx(0.9)
    _write_stat(stat, [(0, 100, 50), (1, 100, 50), (2, 0, 0)])
    assert cores.idle_cores(0.1, str(stat), cpus={0, 1, 2}) == pytest.approx(1.9)
    assert cores.idle_cores(0.1, str(tmp_path / "missing")) is None


def test_idle_cores_sees_a_busy_process(tmp_path):
    if cores.idle_cores(0.05) is None:
        pytest.skip("no /proc/stat here")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        cpus = set(os.sched_getaffinity(busy.pid))
        # the busy loop runs on one of its CPUs all the time: at most len(cpus) - 1 of them are idle
        assert cores.idle_cores(0.3, cpus=cpus) <= len(cpus) - 0.5
    finally:
        busy.kill()
        busy.wait()
