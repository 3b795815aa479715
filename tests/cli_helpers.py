"""Shared assertion for the CLI error tests."""

from __future__ import annotations


def one_line_error(capsys, *needles: str) -> str:
    """The captured stderr, asserted to be one line without a traceback that contains every needle."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
