"""Load pickled dataset files without running code: only numpy arrays/dtypes and builtin containers.

The MiniImageNet cache pickles (``mini-imagenet-cache-*.pkl``) are plain dicts of numpy arrays and
lists, but ``pickle.load`` on a file from the internet can execute anything. :func:`safe_load`
resolves only the globals that rebuilding numpy arrays and builtin containers needs, and refuses
every other one with a :class:`~repana.errors.DataError` naming it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

from repana.errors import DataError

# (module, name) pairs that data pickles need: numpy array reconstruction (numpy 1.x module
# paths and numpy 2.x ``numpy._core``), dtypes, scalars, and builtin containers.
_NUMPY = {("numpy", "ndarray"), ("numpy", "dtype")}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY |= {(f"{_core}.multiarray", "_reconstruct"), (f"{_core}.multiarray", "scalar"),
               (f"{_core}.numeric", "_frombuffer")}
_BUILTINS = {("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes",
                                               "bytearray", "int", "float", "complex", "bool", "slice")}
# Python-2 era pickles store bytes as latin-1 text re-encoded with _codecs.encode (no side effects).
ALLOWED_GLOBALS = frozenset(_NUMPY | _BUILTINS | {("collections", "OrderedDict"), ("_codecs", "encode")})
_DTYPE_PREFIX = "numpy.dtypes"  # numpy >= 1.25 pickles dtypes as numpy.dtypes.<Kind>DType classes


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` allows only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file, *, source: str = "pickle"):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS or (module == _DTYPE_PREFIX and name.endswith("DType")):
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {self.source}: it references {module}.{name}, which is not a "
                        f"numpy array/dtype or builtin container (only data pickles are loaded, never code)")


def looks_like_html(head: bytes) -> bool:
    """True when the first bytes of a file are an HTML page (a failed cloud-drive download)."""
    text = head.lstrip()[:512].lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text


def safe_load(path: str | os.PathLike):
    """Unpickle ``path`` with :class:`SafeUnpickler`; clear errors for HTML pages and truncated files."""
    path = Path(path)
    data = path.read_bytes()
    if looks_like_html(data[:1024]):
        raise DataError(f"{path} is an HTML page ({len(data)} bytes), not a pickle: the download most likely "
                        f"stopped at a web page (e.g. a cloud-drive virus-scan or login page); download the "
                        f"file again and check its size")
    try:
        return SafeUnpickler(io.BytesIO(data), source=str(path)).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable pickle ({type(error).__name__}: {error}); the file is "
                        f"probably truncated or corrupt ({len(data)} bytes): download it again") from error
