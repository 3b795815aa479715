"""Figures from repana's tidy DataFrames (or their CSVs): layer-similarity heatmaps and per-layer
plots (:mod:`repana.plots.similarity`) and the paper's figures (:mod:`repana.plots.paper`).

Nothing here changes the user's matplotlib: figures are ``matplotlib.figure.Figure`` objects (no pyplot,
no backend chosen) and repana's style is applied through :func:`repana.plots.style.paper_style`, a
``matplotlib.rc_context``."""

from repana.plots.similarity import plot_similarity_by_layer, plot_similarity_heatmap
from repana.plots.style import paper_style

__all__ = ["plot_similarity_heatmap", "plot_similarity_by_layer", "paper_style"]
