"""Devices: one rule for what names a device, and one check that it exists on this machine.

- :func:`parse_device`: the name alone (``cpu``, ``cuda``, ``cuda:N``, ``mps``, or a narrower set of kinds),
  for devices that will be used elsewhere: the training jobs a Ray cluster or SLURM runs on other nodes.
- :func:`check_device`: the name, and the device exists here (its backend is available and the index is below
  the device count), for everything this process computes on: ``repana compare / evaluate / predict / train /
  reproduce`` and :class:`repana.capture.Capture` (its ``device``).

Both raise :class:`~repana.errors.InputError` with one line naming the device and the fix. Light to import: torch
is imported inside the functions.
"""

from __future__ import annotations

from typing import Sequence

from repana.errors import InputError

KINDS = ("cpu", "cuda", "mps")


def parse_device(device, kinds: Sequence[str] = KINDS, what: str = "device"):
    """``device`` (a string or ``torch.device``) as a ``torch.device`` whose type is one of ``kinds``, else
    :class:`InputError`. ``what`` names it in the message (``"--device"`` for a command-line flag)."""
    import torch

    names = ", ".join(f"{kind}, {kind}:N" if kind == "cuda" else kind for kind in kinds)
    try:
        resolved = torch.device(str(device).strip()) if not isinstance(device, torch.device) else device
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"{what} {str(device)!r} is not a device: use {names}") from None
    if resolved.type not in kinds:
        raise InputError(f"{what} {str(device)!r} is not a device here: use {names}")
    return resolved


def check_device(device, what: str = "device"):
    """:func:`parse_device`, then that the device exists on this machine; the ``torch.device``."""
    import torch

    resolved = parse_device(device, KINDS, what)
    if resolved.type == "cpu":
        return resolved
    backend = torch.cuda if resolved.type == "cuda" else getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        built = " (this torch is built without CUDA)" if resolved.type == "cuda" and torch.version.cuda is None else ""
        kind = "CUDA GPU" if resolved.type == "cuda" else f"{resolved.type} device"
        raise InputError(f"{what} {device}: no {kind} is available here{built}; use {what} cpu")
    count = getattr(backend, "device_count", None)
    if resolved.index is not None and count is not None and resolved.index >= count():
        raise InputError(f"{what} {device}: this machine has {count()} {resolved.type} device(s), "
                         f"{resolved.type}:0 to {resolved.type}:{count() - 1}")
    return resolved
