"""Progress of long work: a tqdm bar on a terminal, a plain line at a steady interval in logs.

:func:`progress` returns a tqdm bar when stderr is a terminal (or ``REPANA_PROGRESS=1``). When it is
not (CI, ``nohup``, a cluster job's log file) a bar would print nothing useful, so it returns a
:class:`LogProgress` that prints one line every ``REPANA_PROGRESS_INTERVAL`` seconds (default 30;
0 turns the lines off) with the count, rate, ETA and the latest values given to ``set_postfix``
(e.g. the training loss)::

    maml run: step 1200/1500 (80%), 2.41 step/s, ETA 02:04, loss=0.412, acc=0.853

Work that ends within one interval prints nothing; work that printed lines prints a last one when it
closes. ``enabled=False`` (or ``REPANA_PROGRESS=0``) silences both.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from repana.errors import ConfigError

T = TypeVar("T")
INTERVAL_ENV = "REPANA_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def progress_enabled(enabled: bool | None = None) -> bool:
    """Resolve whether to draw a bar: explicit choice, else ``REPANA_PROGRESS`` (0/1), else a TTY."""
    if enabled is not None:
        return enabled
    env = os.environ.get("REPANA_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress_interval() -> float:
    """Seconds between log lines off a terminal: ``$REPANA_PROGRESS_INTERVAL`` (default 30; 0: none)."""
    value = os.environ.get(INTERVAL_ENV, "").strip()
    if not value:
        return DEFAULT_INTERVAL_S
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{INTERVAL_ENV} = {value!r} must be a number of seconds (0 turns the lines off)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{INTERVAL_ENV} = {value!r} must be a finite number of seconds >= 0")
    return seconds


def _log_mode(enabled: bool | None) -> bool:
    """True when progress goes to the log as lines: not forced either way and stderr is no terminal."""
    return enabled is None and os.environ.get("REPANA_PROGRESS") is None and not sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             enabled: bool | None = None, unit: str = "it", **kwargs):
    """A tqdm bar (rate and ETA) over ``iterable`` on a terminal; off a terminal (unless ``enabled``
    or ``REPANA_PROGRESS`` decides) a :class:`LogProgress` printing a line every interval."""
    if _log_mode(enabled):
        interval = progress_interval()
        if interval > 0:
            return LogProgress(iterable, desc=desc, total=total, unit=unit, interval=interval, **kwargs)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(enabled),
                dynamic_ncols=True, **kwargs)


class LogProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``, ``with``) printing a plain line
    to ``stream`` (default stderr) at most every ``interval`` seconds of ``clock``."""

    def __init__(self, iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", initial: int = 0, interval: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, stream=None, unit_scale: bool = False, **_ignored):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self.initial = int(initial)
        self.interval, self.clock, self.stream, self.unit_scale = float(interval), clock, stream, unit_scale
        self.postfix: dict[str, str] = {}
        self.start = self.last_print = clock()
        self.lines = 0
        self.closed = False

    def __iter__(self) -> Iterator[T]:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        self.postfix = {k: str(v) for k, v in {**(ordered_dict or {}), **values}.items()}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_print >= self.interval:
            self._print(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:
            self._print(self.clock(), done=True)

    def line(self, now: float, done: bool = False) -> str:
        """The progress line at time ``now`` (count, percent, rate over this process, ETA, postfix)."""
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        count = self._amount(self.n)
        if self.total:
            count += f"/{self._amount(self.total)}"
        parts = [f"{self.unit} {count}" if not self.unit_scale else count]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{self._amount(rate, rate=True)}{'' if self.unit_scale else ' '}{self.unit}/s")
        if done:
            parts.append(f"done in {tqdm.format_interval(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {tqdm.format_interval(max(self.total - self.n, 0) / rate)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return f"{self.desc or 'progress'}: " + ", ".join(parts)

    def _amount(self, value: float, rate: bool = False) -> str:
        if self.unit_scale:
            return tqdm.format_sizeof(value) + ("" if rate else self.unit)
        return f"{value:.2f}" if rate else str(int(value))

    def _print(self, now: float, done: bool = False) -> None:
        print(self.line(now, done), file=self.stream or sys.stderr, flush=True)
        self.last_print = now
        self.lines += 1
