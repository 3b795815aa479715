"""Freed heap memory kept in the process for reuse (glibc's ``mallopt``), so conv passes stop page-faulting.

glibc's ``malloc`` serves large blocks (above a threshold that grows to at most 32 MiB) with ``mmap``
and gives them back to the kernel on ``free``, and it trims freed memory at the top of its heap as
soon as more than twice that threshold is free. A conv net on CPU allocates and frees maps of several
MiB to tens of MiB in every forward and backward pass, so each pass touches fresh pages and pays one
page fault per 4 KiB page: measured on one thread, a Conv4-64 max-pool forward of 75 Omniglot images
took 7,300 faults and 43 ms (median) instead of 0 faults and 19 ms; MiniImageNet's Conv4-32 on 75
84x84 images 51,000 faults and 173 ms forward, 362 ms forward+backward, instead of 82 and 226 ms.

:func:`retain_freed_memory` raises both glibc thresholds so that freed blocks stay in the process for
the next pass. The cost is resident memory: up to ``limit_bytes`` of freed memory is kept instead of
returned. ``repana`` commands call it on start (``REPANA_RETAIN_FREED_MIB=0`` turns it off); from
Python, call it once yourself. It changes the allocator of the whole process (like ``mallopt`` or the
``MALLOC_*_`` variables it stands for) and does nothing on other C libraries (macOS, musl) or where
the user set those thresholds (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or their
``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import os

from repana.errors import ConfigError

__all__ = ["retain_freed_memory", "retain_freed_memory_from_env", "DEFAULT_RETAIN_BYTES", "RETAIN_FREED_ENV"]

DEFAULT_RETAIN_BYTES = 1 << 30   # 1 GiB: every map of the paper's networks at CPU batch sizes fits
#: ``REPANA_RETAIN_FREED_MIB=N``: keep up to N MiB of freed memory (0: leave glibc's defaults).
RETAIN_FREED_ENV = "REPANA_RETAIN_FREED_MIB"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # glibc <malloc.h>
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def _glibc_mallopt():
    """glibc's ``mallopt`` function, or None on another C library."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded in this process (no library search)
        libc.gnu_get_libc_version  # only glibc has it (musl and macOS's libc do not)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def retain_freed_memory(limit_bytes: int = DEFAULT_RETAIN_BYTES) -> bool:
    """Keep up to ``limit_bytes`` of freed heap memory in the process instead of returning it to the
    kernel, and serve blocks below ``limit_bytes`` from that heap (module doc: why this pays).

    Returns True when glibc accepted both settings; False on another C library, when the user set
    these thresholds in the environment (theirs win), or when glibc refused a value. ``limit_bytes``
    must be an int in [1 MiB, 2 GiB).
    """
    limit = int(limit_bytes)
    if not (1 << 20) <= limit < (1 << 31):
        raise ConfigError(f"limit_bytes = {limit_bytes} must be between 1 MiB and 2 GiB (a C int)")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(os.environ.get(name) for name in _USER_VARIABLES) or any(t in tunables for t in _USER_TUNABLES):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    # mmap threshold first: setting it also stops glibc from moving the thresholds on its own
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


def retain_freed_memory_from_env() -> bool:
    """:func:`retain_freed_memory` with ``$REPANA_RETAIN_FREED_MIB`` MiB (unset: 1024; 0: off)."""
    value = os.environ.get(RETAIN_FREED_ENV, "").strip()
    if not value:
        return retain_freed_memory()
    try:
        mib = int(value)
    except ValueError:
        raise ConfigError(f"{RETAIN_FREED_ENV} = {value!r} must be a whole number of MiB (0 turns it off)") from None
    if mib == 0:
        return False
    if not 1 <= mib < 2048:
        raise ConfigError(f"{RETAIN_FREED_ENV} = {mib} must be between 1 and 2047 MiB (0 turns it off)")
    return retain_freed_memory(mib << 20)
