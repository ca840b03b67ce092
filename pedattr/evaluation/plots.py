"""Figures: per-attribute mean accuracy as a grouped bar chart (like the paper's Fig. 4).

Figures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas, without pyplot,
so nothing here touches matplotlib's global state or needs a display, and files are written
atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pedattr.utils.io import atomic_write

#: Width of one attribute's group of bars, in axis units (1 = the distance between groups).
_GROUP_WIDTH = 0.8
_DPI = 100


def plot_format(path: str | os.PathLike) -> str:
    """The image format a plot path asks for, from its extension (``png``, ``pdf``, ``svg``, ...).

    Raises:
        ValueError: no extension, or one matplotlib cannot write.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(
            f"{path}: cannot tell the image format from the extension; use one of "
            f"{', '.join('.' + name for name in sorted(supported))}"
        )
    return suffix


def short_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The shortest trailing parts of ``paths`` that tell them apart, as legend labels.

    ``["runs/a/best.safetensors", "runs/b/last.safetensors"]`` gives the file names;
    ``["runs/a/best.safetensors", "runs/b/best.safetensors"]`` gives ``a/best.safetensors``
    and ``b/best.safetensors``. Identical paths are numbered.
    """
    parts = [Path(path).parts or (str(path),) for path in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{'/'.join(p)} ({i + 1})" for i, p in enumerate(parts)]


def _as_fraction(value: float | None, series: str, attribute: str) -> float:
    """A value of the chart's input as a float (NaN where undefined), checked to be a fraction."""
    if value is None:
        return math.nan
    value = float(value)
    if not math.isnan(value) and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"series {series!r}, attribute {attribute!r}: {value} is not a fraction in [0, 1]; "
            "pass mA as compute_metrics returns it (the chart shows percent)"
        )
    return value


def _table(series: Mapping[str, Mapping[str, float | None]]) -> tuple[list[str], np.ndarray]:
    """Attribute names (first series' order, then any others' new names) and a [S, A] array
    of percentages, NaN where a series has no defined value."""
    if not series:
        raise ValueError("nothing to plot: no series given")
    names: list[str] = []
    for values in series.values():
        names += [name for name in values if name not in names]
    if not names:
        raise ValueError("nothing to plot: the series hold no attribute")
    table = np.array(
        [
            [_as_fraction(values.get(name), label, name) for name in names]
            for label, values in series.items()
        ],
        dtype=np.float64,
    )
    return names, 100 * table


def plot_attribute_accuracy(
    series: Mapping[str, Mapping[str, float | None]],
    out_path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Write a grouped bar chart of per-attribute mA, one colour per series.

    Args:
        series: series name (the legend label, e.g. a checkpoint file name) -> attribute name ->
            mA as a fraction in [0, 1], as in ``compute_metrics(...)["per_attribute"]``. None or
            NaN marks an undefined value: the bar is left out and "n/a" written in its place.
            Attributes appear in the first series' order.
        out_path: the image file; its extension picks the format (``.png``, ``.pdf``, ``.svg``).
        title: drawn above the chart.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no series or attributes, a value outside [0, 1], or an unknown extension.
    """
    image_format = plot_format(out_path)
    names, percent = _table(series)
    labels = list(series)
    num_series, num_attributes = percent.shape
    defined = percent[~np.isnan(percent)]
    # Chance level is 50 %: start the axis there unless some bar would not show.
    bottom = 50.0 if defined.size and defined.min() >= 50.0 else 0.0

    # Each attribute gets the same width whatever the count, so 51 names stay readable.
    width_inches = max(6.0, 1.5 + num_attributes * (0.14 + 0.1 * num_series))
    figure = Figure(figsize=(width_inches, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(num_attributes)
    bar_width = _GROUP_WIDTH / num_series
    for s, (label, row) in enumerate(zip(labels, percent, strict=True)):
        positions = x + (s - (num_series - 1) / 2) * bar_width
        shown = ~np.isnan(row)
        color = f"C{s % 10}"  # matplotlib's default colour cycle
        axes.bar(positions[shown], row[shown], bar_width, label=label, color=color)
        for position in positions[~shown]:
            axes.text(
                position,
                bottom + 1,
                "n/a",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=8,
                color=color,
            )
    axes.set_xticks(x, names, rotation=60, ha="right", rotation_mode="anchor")
    axes.set_xlim(-0.6, num_attributes - 0.4)
    axes.set_ylim(bottom, 100.0)
    axes.set_ylabel("mA (%)")
    xlabel = "attribute"
    if np.isnan(percent).any():
        xlabel += "\nn/a: mA undefined (no positive\nor no negative sample)"
    axes.set_xlabel(xlabel)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    if title:
        axes.set_title(title)
    if num_series > 1:
        figure.legend(loc="outside upper center", ncols=min(num_series, 4), frameon=False)
    atomic_write(out_path, lambda tmp: figure.savefig(tmp, format=image_format, dpi=_DPI))
    return Path(out_path)
