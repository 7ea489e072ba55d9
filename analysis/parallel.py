"""Parallel coordinates: one line per cell across every factor, coloured by its mean metric.

Each factor is an axis with its levels evenly spaced bottom to top; the last axis is
the cell's mean metric. The best cells are drawn last, on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from analysis.cells import cells_table, extra_factors
from analysis.load import FACTORS, StudyData
from analysis.stats import higher_is_better

__all__ = ["ParallelInfo", "plot_parallel_coordinates", "get_parallel_info", "get_parallel_plot"]


@dataclass(frozen=True)
class ParallelInfo:
    """``positions``: cells × axes in [0, 1] (factor levels, then the metric), drawing
    order; ``values``: each cell's mean metric; ``ticks``: per axis (position, label)."""

    axes: list[str]
    positions: np.ndarray
    values: np.ndarray
    ticks: list[list[tuple[float, str]]]
    metric: str


def get_parallel_info(cells: pd.DataFrame, metric: str) -> ParallelInfo:
    cells = cells.dropna(subset=["final_mean"])
    factors = [*(f for f in FACTORS if f in cells.columns), *extra_factors(cells)]
    sign = 1.0 if higher_is_better(metric) else -1.0
    cells = cells.iloc[np.argsort(sign * cells["final_mean"].to_numpy(), kind="stable")]
    columns, ticks = [], []
    for f in factors:
        levels = sorted(cells[f].unique())
        step = 1.0 / (len(levels) - 1) if len(levels) > 1 else 0.0
        where = {lvl: (i * step if len(levels) > 1 else 0.5) for i, lvl in enumerate(levels)}
        columns.append(cells[f].map(where).to_numpy(float))
        ticks.append([(where[lvl], str(lvl)) for lvl in levels])
    values = cells["final_mean"].to_numpy(float)
    lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    span = hi - lo or 1.0
    columns.append((values - lo) / span)
    ticks.append([(q, f"{lo + q * span:.3g}") for q in (0.0, 0.25, 0.5, 0.75, 1.0)])
    positions = np.stack(columns, axis=1) if len(values) else np.empty((0, len(factors) + 1))
    return ParallelInfo([*factors, metric], positions, values, ticks, metric)


def get_parallel_plot(info: ParallelInfo) -> Figure:
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(info.axes))
    norm = Normalize(
        *(np.nanmin(info.values), np.nanmax(info.values)) if len(info.values) else (0, 1)
    )
    segments = [np.column_stack([xs, row]) for row in info.positions]
    alpha = 0.8 if len(segments) <= 50 else max(0.15, 50 / len(segments))
    lines = LineCollection(segments, cmap=colormaps["viridis"], norm=norm, lw=1.2, alpha=alpha)
    lines.set_array(info.values)
    ax.add_collection(lines)
    for x, ticks in zip(xs, info.ticks, strict=True):
        ax.axvline(x, color="0.3", lw=0.8)
        for pos, label in ticks:
            ax.text(x + 0.03, pos, label, fontsize=8, va="center", ha="left",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.7, "pad": 0.5})  # fmt: skip
    ax.set_xlim(-0.1, len(xs) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, info.axes)
    ax.set_yticks([])
    ax.grid(False)
    # note: a separate mappable, so the colour bar is not faded by the lines' alpha
    fig.colorbar(ScalarMappable(norm, lines.get_cmap()), ax=ax, label=f"cell mean {info.metric}",
                 pad=0.01)  # fmt: skip
    ax.set_title(f"every cell across the factors, coloured by mean {info.metric}", fontsize=10)
    return fig


def plot_parallel_coordinates(run: StudyData) -> Figure:
    """Parallel-coordinates plot of ``run``'s cells over all factors, coloured by the metric."""
    cells = cells_table(run.final, run.metric, run.params, run.factors)
    return get_parallel_plot(get_parallel_info(cells, run.metric))
