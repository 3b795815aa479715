"""Atomic writes: the final file appears only on success, with ordinary permissions."""

import os
import stat

import pytest

from repana.io import atomic_write, atomic_write_text


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half-written")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_atomic_write_uses_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644


def test_atomic_write_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="supports modes"):
        with atomic_write(tmp_path / "c.txt", "a"):
            pass
