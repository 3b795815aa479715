"""Checks the commands run on their arguments before any work, so that a bad device, an output path
that cannot be written or a folder given for a file is one clear line at once, not a traceback after
minutes of computing. Light to import (no torch). Devices: :func:`repana.devices.check_device`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from repana.errors import InputError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_can_create_in(folder: Path, flag: str, given: Path) -> None:
    """Raise unless files can be created in ``folder`` (made when missing): probed with a temporary
    file in the nearest folder that exists, which is removed at once."""
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise InputError(f"{flag} {given}: {existing} is a file, so nothing can be written under it; "
                         "choose another path")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".repana-write-check-")
    except OSError as error:
        raise InputError(f"{flag} {given}: cannot write in {existing} ({error.strerror or error}); "
                         "choose a folder you can write to") from None
    os.close(handle)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, flag: str, example_name: str = "out.csv") -> Path:
    """Raise :class:`InputError` unless a file can be written at ``path`` (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name, e.g. {path / example_name}")
    _check_can_create_in(path.parent, flag, path)
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Raise :class:`InputError` unless files can be written in the folder ``path`` (made when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file, not a folder; choose a folder for the outputs")
    _check_can_create_in(path, flag, path)
    return path


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Raise a pointed :class:`InputError` when ``path`` is a folder (a run folder, its checkpoints/)."""
    path = Path(path)
    if path.is_dir():
        found = next((c for c in (path / "checkpoints" / "latest.pt", path / "latest.pt") if c.is_file()), None)
        hint = (f"pass {found}" if found is not None
                else "pass a checkpoint file, e.g. RUN/checkpoints/latest.pt or RUN/checkpoints/step_001000.pt")
        raise InputError(f"{path} is a folder, not a checkpoint file: {hint}")
    return path


def check_seed(value: int | None, flag: str = "--seed") -> int | None:
    """Raise :class:`InputError` unless ``value`` is None or a seed from 0 to
    :data:`repana.seeds.MAX_SEED`; return it."""
    from repana.seeds import seed_problem

    if value is not None and (problem := seed_problem(value, flag)) is not None:
        raise InputError(problem.replace(f"{flag} = ", f"{flag} ", 1))
    return value


def check_figure_file(path: str | os.PathLike, flag: str, example_name: str = "figure.png") -> Path:
    """:func:`check_output_file`, and :class:`InputError` unless matplotlib can write the file's format
    (its suffix: png, pdf, svg, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = check_output_file(path, flag, example_name)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in formats:
        what = f"format {suffix!r}" if suffix else "no file suffix"
        raise InputError(f"{flag} {path} has {what}; figures are written as {', '.join(formats)} "
                         f"(e.g. {path.with_suffix('.png')})")
    return path
