"""``KEY=VALUE`` assignments of the command line (``--set``), the value read as TOML.

    parse_assignment("iterations=50")        # ("iterations", 50)
    parse_assignment("algorithm=anil")       # ("algorithm", "anil"): a bare word is a string
    parse_assignment("hidden_sizes=[8, 8]")  # ("hidden_sizes", [8, 8])
"""

from __future__ import annotations

import tomllib
from typing import Any

from repana.errors import ConfigError


def parse_assignment(text: str, what: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value parsed as TOML (a bare word as a string).
    ConfigError naming ``what`` when the text has no ``=`` or no key."""
    key, sep, raw = str(text).partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"{what} {text!r} must look like key=value, e.g. {what} iterations=50")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw
