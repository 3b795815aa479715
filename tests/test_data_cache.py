"""The preprocessed-array cache: reuse, keying, and never reading back a half-written or damaged file."""

from __future__ import annotations

import numpy as np
import pytest

from repana.data.cache import cache_key, cached_arrays, load_cached


class Builder:
    def __init__(self, value: int = 7):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return {"images": np.full((3, 4), self.value, dtype=np.uint8), "names": np.array(["a", "bb", "ccc"])}


def test_built_once_then_read(tmp_path):
    build = Builder()
    first = cached_arrays("toy", {"source": "abc"}, build, cache_dir=tmp_path)
    second = cached_arrays("toy", {"source": "abc"}, build, cache_dir=tmp_path)
    assert build.calls == 1
    assert np.array_equal(first["images"], second["images"]) and second["names"].tolist() == ["a", "bb", "ccc"]
    assert cache_key({"source": "abc"}) != cache_key({"source": "abd"})
    cached_arrays("toy", {"source": "abd"}, build, cache_dir=tmp_path)  # another source checksum: rebuilt
    assert build.calls == 2


def test_half_written_cache_is_never_read_back(tmp_path):
    build = Builder()
    cached_arrays("toy", {"k": 1}, build, cache_dir=tmp_path)
    (path,) = tmp_path.glob("toy-*.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a crash of some other writer, a full disk...
    assert load_cached(path, cache_key({"k": 1})) is None
    rebuilt = cached_arrays("toy", {"k": 1}, Builder(9), cache_dir=tmp_path)
    assert rebuilt["images"][0, 0] == 9
    assert load_cached(path, cache_key({"k": 1}))["images"][0, 0] == 9  # replaced by a complete file


def test_tampered_content_fails_its_digest(tmp_path):
    cached_arrays("toy", {"k": 1}, Builder(), cache_dir=tmp_path)
    (path,) = tmp_path.glob("toy-*.npz")
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["images"] = arrays["images"] + 1  # valid npz, wrong content for its recorded digest
    np.savez(path, **arrays)
    assert load_cached(path, cache_key({"k": 1})) is None
    assert load_cached(path.with_name("missing.npz"), "x") is None


def test_failed_build_leaves_no_file(tmp_path):
    def broken():
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError):
        cached_arrays("toy", {"k": 2}, broken, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
