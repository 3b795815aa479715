"""One writer per run folder: an exclusive ``flock`` on ``RUN/.repana.lock`` held while a run trains.

Two ``repana train`` (or ``train_rl``) processes on one run folder would both append to its
``metrics.csv`` and overwrite each other's checkpoints; the second one to start gets a
:class:`RunFolderBusy` naming the holder's pid instead. The kernel releases a ``flock`` when its
process ends however it ends (a kill included), so a lock file left by a killed run is taken over at
once: the file's presence means nothing, only a held lock does. The holder's pid is written into the
file for the message. Local file systems and NFSv4 honour ``flock`` between processes (on Linux NFS
emulates it with byte-range locks, seen by every client); on a platform without ``fcntl`` the lock is
a no-op.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from repana.errors import InputError

LOCK_NAME = ".repana.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux / macOS
    fcntl = None


class RunFolderBusy(InputError):
    """A run folder another live process is training in; ``pid``: that process (None if unknown)."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


def _read_pid(handle: int) -> int | None:
    try:
        text = os.pread(handle, 32, 0).decode("ascii", errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def _busy(run_dir: Path, pid: int | None) -> RunFolderBusy:
    who = f"process {pid}" if pid is not None else "another process"
    return RunFolderBusy(f"run folder {run_dir} is in use: {who} is training in it (lock {run_dir / LOCK_NAME}); "
                         "wait for it to end or choose another --out", pid)


@contextlib.contextmanager
def locked_run_folder(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block (creates ``run_dir``); raises
    :class:`RunFolderBusy` at once, without waiting, when another process holds it."""
    run_dir = Path(run_dir)
    if fcntl is None:
        yield run_dir
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_path = run_dir / LOCK_NAME
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(run_dir, _read_pid(handle)) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield run_dir
        except BaseException:
            if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
                lock_path.unlink()     # a run that failed before writing anything leaves no folder behind
                run_dir.rmdir()
            raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def run_folder_holder(run_dir: str | os.PathLike) -> int | None:
    """The pid of the process holding ``run_dir``'s lock (-1 when held by a process whose pid is not
    recorded), or None when nobody holds it (no lock file, or one left by a process that ended)."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(handle)
            return -1 if pid is None else pid
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None
    finally:
        os.close(handle)


def check_run_folder_free(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunFolderBusy` when another process holds ``run_dir``'s lock."""
    pid = run_folder_holder(run_dir)
    if pid is not None:
        raise _busy(Path(run_dir), None if pid < 0 else pid)
