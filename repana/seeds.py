"""The range of random seeds repana accepts: 0 to :data:`MAX_SEED` (2**32 - 1), the range of
``numpy.random.seed`` (a 32-bit unsigned integer), which repana's training seeds next to
``torch.manual_seed`` (64-bit). Light to import: no numpy, no torch."""

from __future__ import annotations

MAX_SEED = 2**32 - 1


def seed_problem(value, name: str) -> str | None:
    """Why ``value`` is not a seed (a sentence naming ``name`` and the range), or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} = {value!r} must be an integer seed from 0 to {MAX_SEED} (2**32 - 1)"
    if not 0 <= value <= MAX_SEED:
        return f"{name} = {value} is outside the seed range 0 to {MAX_SEED} (2**32 - 1)"
    return None
