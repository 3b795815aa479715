"""repana's figure style, applied through a context so that a user's matplotlib settings never change.

    from repana.plots.style import paper_style
    with paper_style():                  # matplotlib.rc_context: restored on exit, even on error
        figure = my_own_figure()

The plotting functions of :mod:`repana.plots` draw inside :func:`paper_style` and build
``matplotlib.figure.Figure`` objects directly (not through pyplot): importing or calling them changes
neither ``matplotlib.rcParams`` nor the backend. Show a figure in a notebook by leaving it as the
cell's value, save it with ``figure.savefig`` or :func:`repana.plots.paper.save_figure`.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

__all__ = ["PAPER_STYLE", "paper_style", "styled"]

PAPER_STYLE = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
               "figure.dpi": 110, "savefig.bbox": "tight"}


@contextmanager
def paper_style(**overrides) -> Iterator[None]:
    """rcParams of repana's figures (:data:`PAPER_STYLE`, then ``overrides`` with dots written as
    underscores: ``font_size=11``) for the duration of the ``with`` block."""
    import matplotlib

    params = {**PAPER_STYLE, **{key.replace("_", "."): value for key, value in overrides.items()}}
    with matplotlib.rc_context(params):
        yield


def styled(function):
    """Decorator: call ``function`` inside :func:`paper_style`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with paper_style():
            return function(*args, **kwargs)
    return wrapper
