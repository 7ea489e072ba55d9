"""Drawing helpers shared by the plot modules: panel grids, level selection, seed points."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["NO_INTERVAL_NOTE", "draw_levels", "panel_grid", "spread_levels"]

NO_INTERVAL_NOTE = "points: single seeds, where too few seeds for an interval"


def panel_grid(n: int, cols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n`` visible panels, ``cols`` to a row."""
    cols = max(1, min(n, cols))
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def spread_levels(levels: list, limit: int) -> list:
    """At most ``limit`` of the sorted ``levels``, evenly spread, first and last kept."""
    if len(levels) <= limit:
        return list(levels)
    picks = np.unique(np.round(np.linspace(0, len(levels) - 1, limit)).astype(int))
    return [levels[i] for i in picks]


def draw_levels(
    ax: Axes,
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    x: str,
    positions: dict,
    color,
    label: str | None = None,
) -> None:
    """Mean per level with its interval as a band, or, where a level has no interval
    (too few seeds), the seeds themselves as points."""
    t = table.sort_values(x)
    xs = t[x].map(positions).to_numpy(float)
    ax.plot(xs, t["mean"], marker="o", ms=4, color=color, label=label)
    if t["ci_low"].notna().all():
        ax.fill_between(xs, t["ci_low"], t["ci_high"], color=color, alpha=0.2, lw=0)
    else:
        ax.scatter(seeds[x].map(positions), seeds["value"], s=18, color=color, alpha=0.7, lw=0)
