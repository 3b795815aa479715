"""Figures of layer similarity from the tidy DataFrames of :class:`repana.compare.Comparison`.

* :func:`plot_similarity_heatmap`: layer (model A) x layer (model B) matrix, one panel per measure, shared
  colour scale with a labelled colour bar, values written in the cells when the matrix is small.
* :func:`plot_similarity_by_layer`: one value per layer (the diagonal ``layer_a == layer_b``, or any frame with
  one row per layer and measure) as lines or grouped bars, with error bars when the frame has ``low`` and
  ``high`` columns (e.g. from :func:`repana.similarity.bootstrap_ci`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from repana.errors import InputError

MEASURE_LABELS = {
    "cca": "mean CCA", "cca_r2": "mean squared CCA ($R^2_{CCA}$)", "svcca": "SVCCA", "pwcca": "PWCCA",
    "cka": "linear CKA", "cka_debiased": "debiased linear CKA", "cka_rbf": "RBF CKA",
    "procrustes": "Procrustes similarity", "cka_minibatch": "minibatch CKA",
}
ANNOTATE_MAX_CELLS = 12  # write the values when both sides have at most this many layers


def measure_label(name: str) -> str:
    return MEASURE_LABELS.get(name, name)


def _ordered_unique(values) -> list:
    return list(dict.fromkeys(values))


def _check_columns(frame: pd.DataFrame, needed: list[str]) -> None:
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise InputError(f"the similarity frame lacks columns {missing}; it has {list(frame.columns)}")


def plot_similarity_heatmap(frame: pd.DataFrame, measures: list[str] | None = None, *, label_a: str = "model A",
                            label_b: str = "model B", annotate: bool | None = None, cmap: str = "viridis",
                            vmin: float | None = 0.0, vmax: float | None = 1.0, title: str | None = None,
                            panel_size: float = 3.6) -> Figure:
    """Heatmap(s) of ``value`` by ``layer_a`` (rows) x ``layer_b`` (columns), one panel per measure.

    Layers keep the order of the frame. ``annotate=None`` writes values when the matrix has at most
    ``ANNOTATE_MAX_CELLS`` layers a side. ``vmin``/``vmax`` default to [0, 1]; pass None to fit the data.
    """
    _check_columns(frame, ["layer_a", "layer_b", "measure", "value"])
    if frame.empty:
        raise InputError("the similarity frame is empty")
    measures = measures or _ordered_unique(frame["measure"])
    rows, cols = _ordered_unique(frame["layer_a"]), _ordered_unique(frame["layer_b"])
    if annotate is None:
        annotate = max(len(rows), len(cols)) <= ANNOTATE_MAX_CELLS
    width = panel_size * len(measures) * max(1.0, len(cols) / 6) + 1.2
    height = panel_size * max(1.0, len(rows) / 6)
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures):
        part = frame[frame["measure"] == measure]
        if part.empty:
            raise InputError(f"no rows for measure {measure!r}; the frame has {_ordered_unique(frame['measure'])}")
        matrix = part.pivot_table(index="layer_a", columns="layer_b", values="value", aggfunc="mean")
        matrix = matrix.reindex(index=rows, columns=cols)
        image = ax.imshow(matrix.to_numpy(dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(f"layer ({label_b})")
        ax.set_ylabel(f"layer ({label_a})")
        ax.set_title(measure_label(measure))
        if annotate:
            _annotate(ax, matrix.to_numpy(dtype=float), image)
        colorbar = figure.colorbar(image, ax=ax, shrink=0.85)
        colorbar.set_label(measure_label(measure))
    if title:
        figure.suptitle(title)
    return figure


def _annotate(ax, values: np.ndarray, image) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isnan(values[i, j]):
                continue
            red, green, blue, _ = image.cmap(image.norm(values[i, j]))
            luminance = 0.299 * red + 0.587 * green + 0.114 * blue
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if luminance > 0.5 else "white")


def plot_similarity_by_layer(frame: pd.DataFrame, *, kind: str = "line", layer_column: str | None = None,
                             hue: str = "measure", ylabel: str = "similarity", title: str | None = None,
                             ylim: tuple[float, float] | None = (0.0, 1.05)) -> Figure:
    """One value per layer, one line (or bar group) per ``hue`` value (default: per measure).

    A frame with ``layer_a`` and ``layer_b`` is reduced to its diagonal (``layer_a == layer_b``: each layer of A
    against the same layer of B); otherwise ``layer_column`` names the layer column. Several rows for the same
    layer and hue are averaged, and their standard deviation drawn as error bars, unless the frame has
    ``low``/``high`` columns, which are drawn instead.
    """
    if kind not in ("line", "bar"):
        raise InputError(f"kind must be 'line' or 'bar', got {kind!r}")
    _check_columns(frame, ["value", hue])
    if layer_column is None:
        if {"layer_a", "layer_b"} <= set(frame.columns):
            frame = frame[frame["layer_a"] == frame["layer_b"]]
            if frame.empty:
                raise InputError("no rows with layer_a == layer_b; pass layer_column='layer_a' for another view")
            layer_column = "layer_a"
        else:
            layer_column = "layer"
    _check_columns(frame, [layer_column])
    layers = _ordered_unique(frame[layer_column])
    groups = _ordered_unique(frame[hue])
    figure = Figure(figsize=(max(4.0, 0.8 * len(layers) + 2.0), 3.4), layout="constrained")
    ax = figure.subplots()
    positions = np.arange(len(layers))
    width = 0.8 / max(len(groups), 1)
    for index, group in enumerate(groups):
        part = frame[frame[hue] == group]
        stats = part.groupby(layer_column, sort=False)["value"].agg(["mean", "std", "count"]).reindex(layers)
        if {"low", "high"} <= set(part.columns):
            bounds = part.groupby(layer_column, sort=False)[["low", "high"]].mean().reindex(layers)
            errors = np.vstack([stats["mean"] - bounds["low"], bounds["high"] - stats["mean"]])
        else:
            errors = stats["std"].fillna(0.0).to_numpy() if (stats["count"] > 1).any() else None
        label = measure_label(group) if hue == "measure" else str(group)
        if kind == "line":
            ax.errorbar(positions, stats["mean"], yerr=errors, marker="o", capsize=3, label=label)
        else:
            ax.bar(positions + (index - (len(groups) - 1) / 2) * width, stats["mean"], width, yerr=errors,
                   capsize=3, label=label)
    ax.set_xticks(positions, layers)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    if len(groups) > 1 or hue != "measure":
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return figure
