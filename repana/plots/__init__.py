"""Figures from repana's tidy DataFrames (or their CSVs): layer-similarity heatmaps and per-layer
plots (:mod:`repana.plots.similarity`) and the paper's figures (:mod:`repana.plots.paper`)."""

from repana.plots.similarity import plot_similarity_by_layer, plot_similarity_heatmap

__all__ = ["plot_similarity_heatmap", "plot_similarity_by_layer"]
