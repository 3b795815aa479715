"""Atomic file writes: a crash or kill mid-write never leaves a partial file under the final name.

Every file repana writes (checkpoints, CSVs, figures, caches, configs) goes through these helpers:
the content is written to a temporary file in the same directory, flushed and fsynced, then moved
into place with ``os.replace`` (atomic on POSIX and Windows).

Temporary files are named ``.<final name>.repana-<random>.tmp``. A process killed mid-write (SIGKILL,
power loss) leaves one behind; :func:`remove_stale_temp_files` removes those of a folder (resumed
training runs call it on their run folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator


TEMP_MARK = ".repana-"
# ours: .<name>.repana-<mkstemp's 8 characters>.tmp; before the mark existed: .<name>.<8 characters>.tmp
TEMP_FILE = re.compile(r"^\..+(\.repana-|\.)[A-Za-z0-9_]{8}\.tmp$")


def process_start_time() -> float:
    """When this process started (seconds since the epoch): from /proc on Linux, else the time
    this module was imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def remove_stale_temp_files(folder: str | os.PathLike, older_than: float | None = None) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` (not its sub-folders)
    when a process was killed mid-write: only names of its pattern, only files last modified before
    ``older_than`` (seconds since the epoch; default: this process's start, so a write in progress in
    this process is never touched). Returns the removed paths."""
    folder = Path(folder)
    cutoff = process_start_time() if older_than is None else older_than
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if TEMP_FILE.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
    return sorted(removed)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_file_mode())  # mkstemp creates 0600; give the usual umask mode
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_save_csv(frame, path: str | os.PathLike) -> None:
    """Save a pandas DataFrame as CSV (no index) atomically."""
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)


def atomic_savefig(figure, path: str | os.PathLike, **savefig_kwargs) -> None:
    """Save a matplotlib figure atomically; the format comes from the suffix of ``path``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format=fmt, **savefig_kwargs)
