"""Where repana looks for data: ``--data-root`` beats ``REPANA_DATA_ROOT`` beats ``~/.cache/repana/data``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "REPANA_DATA_ROOT"


def default_data_root() -> Path:
    """The data root from ``REPANA_DATA_ROOT``, else ``~/.cache/repana/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "repana" / "data"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else :func:`default_data_root`."""
    return Path(root).expanduser() if root is not None else default_data_root()


def default_cache_dir() -> Path:
    """Cache for preprocessed arrays: ``REPANA_CACHE_DIR`` or ``~/.cache/repana/cache``."""
    env = os.environ.get("REPANA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "repana" / "cache"
