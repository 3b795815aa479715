"""Progress off a terminal: a plain line at a steady interval, with a fake clock."""

from __future__ import annotations

import io

import pytest

from repana.errors import ConfigError
from repana.progress import LogProgress, progress


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_with_step_rate_eta_and_the_latest_loss():
    clock, out = FakeClock(), io.StringIO()
    bar = LogProgress(total=100, desc="maml run", unit="step", interval=30, clock=clock, stream=out)
    for step in range(1, 101):
        clock.now += 0.5                      # 2 steps per second
        bar.set_postfix(loss=f"{1 / step:.3f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "maml run: step 60/100 (60%), 2.00 step/s, ETA 00:20, loss=0.017"
    assert lines[1] == "maml run: step 100/100 (100%), 2.00 step/s, done in 00:50, loss=0.010"
    assert len(lines) == 2


def test_resumed_work_counts_its_rate_from_where_it_started():
    clock, out = FakeClock(), io.StringIO()
    bar = LogProgress(total=1000, initial=900, unit="step", desc="anil", interval=10, clock=clock, stream=out)
    clock.now += 10
    bar.update(5)
    assert out.getvalue() == "anil: step 905/1000 (90%), 0.50 step/s, ETA 03:10\n"


def test_work_shorter_than_the_interval_prints_nothing():
    clock, out = FakeClock(), io.StringIO()
    items = list(LogProgress(range(5), desc="quick", interval=30, clock=clock, stream=out))
    assert items == [0, 1, 2, 3, 4] and out.getvalue() == ""


def test_off_a_terminal_progress_logs_lines_and_the_interval_is_configurable(monkeypatch, capsys):
    monkeypatch.delenv("REPANA_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    monkeypatch.setenv("REPANA_PROGRESS_INTERVAL", "5")
    bar = progress(total=3, desc="x")
    assert isinstance(bar, LogProgress) and bar.interval == 5
    assert not isinstance(progress(total=3, enabled=False), LogProgress)   # an explicit choice wins
    monkeypatch.setenv("REPANA_PROGRESS_INTERVAL", "0")
    assert not isinstance(progress(total=3), LogProgress)
    monkeypatch.setenv("REPANA_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="REPANA_PROGRESS_INTERVAL = 'soon' must be a number of seconds"):
        progress(total=3)


def test_byte_counts_are_scaled():
    clock, out = FakeClock(), io.StringIO()
    with LogProgress(total=4_000_000, desc="omniglot", unit="B", unit_scale=True, interval=1, clock=clock,
                     stream=out) as bar:
        clock.now += 2
        bar.update(1_000_000)
    assert out.getvalue().splitlines()[0] == "omniglot: 1.00MB/4.00MB (25%), 500kB/s, ETA 00:06"
