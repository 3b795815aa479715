"""Progress bars for long work (tqdm), silenced when not attached to a terminal unless forced."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Resolve whether to draw a bar: explicit choice, else ``REPANA_PROGRESS`` (0/1), else a TTY."""
    if enabled is not None:
        return enabled
    env = os.environ.get("REPANA_PROGRESS")
    if env is not None:
        return env not in ("0", "false", "no", "")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             enabled: bool | None = None, unit: str = "it", **kwargs) -> "tqdm":
    """A tqdm bar (rate and ETA) over ``iterable``; disabled unless :func:`progress_enabled`."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(enabled),
                dynamic_ncols=True, **kwargs)
