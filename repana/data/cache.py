"""On-disk cache of preprocessed arrays, keyed by the source's checksum and the transform.

A cache file is ``<cache_dir>/<name>-<key>.npz`` where ``key`` is the sha256 of the JSON of the
key parts (source checksum, transform options, format version). It is written atomically
(:mod:`repana.io`: temporary file + rename), and it records the sha256 of its own arrays: a file
that fails to load or whose content does not match that record (truncated, half-written by some
other tool, disk error) is never returned — it is rebuilt and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from repana.io import atomic_write
from repana.paths import default_cache_dir

CACHE_FORMAT = 1
_META = "__cache_meta__"


def cache_key(parts: Mapping) -> str:
    """sha256 (24 hex) of ``parts`` as canonical JSON (sorted keys)."""
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``arrays`` (in sorted name order)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_signature(folder: str | os.PathLike) -> str:
    """Cheap checksum of an extracted folder: sha256 of every file's relative path, size and mtime."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_cached(path: str | os.PathLike, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of cache file ``path`` when it is complete and made for ``key``, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop(_META)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    if meta.get("key") != key or meta.get("digest") != arrays_digest(arrays):
        return None
    return arrays


def save_cached(path: str | os.PathLike, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and their digest to ``path`` atomically."""
    meta = json.dumps({"key": key, "digest": arrays_digest(arrays)})
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays, **{_META: np.array(meta)})


def cached_arrays(name: str, key_parts: Mapping, build: Callable[[], dict[str, np.ndarray]],
                  cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> dict[str, np.ndarray]:
    """``build()``'s arrays, read from the cache when a valid entry for ``key_parts`` exists.

    ``cache_dir`` defaults to :func:`repana.paths.default_cache_dir` (``REPANA_CACHE_DIR``). Arrays
    must not be object arrays (they are loaded with ``allow_pickle=False``). A cache that cannot be
    written (read-only folder) only warns.
    """
    key = cache_key(key_parts)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{name}-{key}.npz"
    if use_cache:
        arrays = load_cached(path, key)
        if arrays is not None:
            return arrays
    arrays = build()
    if use_cache:
        try:
            save_cached(path, key, arrays)
        except OSError as error:
            warnings.warn(f"could not write the data cache {path} ({error}); data will be rebuilt next time",
                          stacklevel=2)
    return arrays
