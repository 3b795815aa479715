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


# ----- torch files: safe loading with messages that tell a refused pickle from a broken file -----

# ``torch.save`` writes a zip archive; before torch 1.6 (``_use_new_zipfile_serialization=False``) a
# pickle stream starting with protocol 2 and this magic number.
TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
UNSAFE_OPTION = "--unsafe-pickle"
UNSAFE_ADVICE = f"pass {UNSAFE_OPTION}"   # repana compare's opt-in; what torch_load advises by default


def is_pickle_stream(path: str | os.PathLike) -> bool:
    """True when the file parses as a complete pickle (read with pickletools: nothing is unpickled)."""
    import pickletools

    try:
        with open(path, "rb") as handle:
            for opcode, _, _ in pickletools.genops(handle):
                if opcode.name == "STOP":
                    return True
    except Exception:  # any parse failure: not a pickle
        return False
    return False


def looks_like_torch_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a zip archive (``torch.save``'s format) or a legacy torch pickle."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(len(TORCH_LEGACY_PREFIX))
    return head.startswith(TORCH_LEGACY_PREFIX) or zipfile.is_zipfile(path)


def _weights_only_refusal(message: str) -> str | None:
    """torch's reason when ``weights_only`` loading refused an object (``None`` for other errors).

    torch words both a refused global and a stream that is not a pickle at all as "Weights only load
    failed"; the latter says "Unsupported operand". The reason is torch's "WeightsUnpickler error"
    paragraph, whole.
    """
    import re

    if "Weights only load failed" not in message or "Unsupported operand" in message:
        return None
    text = re.sub(r"\x1b\[[0-9;]*m", "", message)
    reason = text.split("WeightsUnpickler error:", 1)[-1].split("\n\n", 1)[0]
    return " ".join(reason.split()) or " ".join(text.split())


def torch_load(path: str | os.PathLike, *, unsafe_pickle: bool = False, what: str = "file",
               error_class: type[Exception] = DataError, map_location="cpu", opt_in: str = UNSAFE_ADVICE):
    """``torch.load`` of ``path`` (``weights_only`` unless ``unsafe_pickle``) with one clear error line.

    Raises ``error_class`` naming the file when it does not exist, when it is not a torch file at all
    (random bytes, a truncated archive: "not a torch checkpoint (truncated or corrupt)"), when safe
    loading refused a pickled object (torch's reason in full, and ``opt_in`` as the way to load a
    trusted file: ``--unsafe-pickle`` of ``repana compare`` by default; callers on other paths name
    theirs), or when torch cannot read it otherwise.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if path.is_dir():
        raise error_class(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise error_class(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=not unsafe_pickle)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            IndexError, OSError, AttributeError, ImportError, TypeError) as error:
        message = str(error)
        size = path.stat().st_size
        if not looks_like_torch_file(path):
            if size == 0:
                raise error_class(f"{what} {path} is empty: not a torch checkpoint (truncated or corrupt)") from None
            if is_pickle_stream(path):  # torch.load reads torch.save files only, whatever weights_only says
                raise error_class(f"{what} {path} is a plain Python pickle, not a file written by torch.save; "
                                  "save it with torch.save(model.state_dict(), path)") from None
            raise error_class(f"{what} {path} is not a torch checkpoint (truncated or corrupt): {size} bytes "
                              "that are not a file written by torch.save (neither a torch zip archive nor a "
                              "legacy torch file)") from None
        refusal = None if unsafe_pickle else _weights_only_refusal(message)
        if refusal is not None:
            raise error_class(f"{what} {path} holds pickled Python objects that safe loading (torch.load "
                              f"weights_only=True) refuses, and nothing in it was run: {refusal} If you trust "
                              f"the file, {opt_in} (full pickle, which can run code)") from None
        first = " ".join(message.split("\n\n", 1)[0].split())
        raise error_class(f"{what} {path} is truncated or corrupt and cannot be read "
                          f"({type(error).__name__}: {first})") from None
