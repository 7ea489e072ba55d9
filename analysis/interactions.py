"""Two-factor interaction plots and heatmaps of the final metric.

For each pair of varying factors the metric is averaged over the other factors within
each seed, then over seeds, with the interval of :mod:`analysis.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysis.figures import NO_INTERVAL_NOTE, draw_levels, panel_grid, spread_levels
from analysis.load import RunData, varying_factors
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import seed_mean_intervals

__all__ = ["PairInfo", "plot_interactions"]

MAX_LINES = 6  # hue levels drawn per panel; more are thinned evenly


@dataclass(frozen=True)
class PairInfo:
    """``table``: per (x level, hue level) ``n, mean, std, ci_low, ci_high`` (``n``
    counts seeds); ``seeds``: the per-seed averages (``value``)."""

    x: str
    hue: str
    table: pd.DataFrame
    seeds: pd.DataFrame

    def heatmap(self) -> pd.DataFrame:
        """Means with the hue factor's levels as rows and the x factor's as columns."""
        return self.table.pivot(index=self.hue, columns=self.x, values="mean")


def _get_interaction_info(final: pd.DataFrame, params: Params = DEFAULT_PARAMS) -> list[PairInfo]:
    """One :class:`PairInfo` per pair of factors with at least two levels.

    The factor with more levels goes on the x axis; the other draws the lines.
    """
    pairs = []
    for a, b in combinations(varying_factors(final), 2):
        x, hue = (b, a) if final[b].nunique() > final[a].nunique() else (a, b)
        table, seeds = seed_mean_intervals(final, [x, hue], params)
        pairs.append(PairInfo(x, hue, table, seeds))
    return pairs


def _get_interaction_plot(pairs: list[PairInfo], metric: str) -> Figure:
    """A panel per pair: metric against the x factor, a line and a band per hue level."""
    fig, axes = panel_grid(len(pairs), 3, 4.4, 3.3)
    thinned = False
    for ax, pair in zip(axes, pairs, strict=True):
        levels = sorted(pair.table[pair.x].unique())
        positions = {lvl: i for i, lvl in enumerate(levels)}
        all_hues = sorted(pair.table[pair.hue].unique())
        hues = spread_levels(all_hues, MAX_LINES)
        thinned |= len(hues) < len(all_hues)
        for color, h in zip(sns.color_palette("viridis", len(hues)), hues, strict=True):
            table = pair.table[pair.table[pair.hue] == h]
            seeds = pair.seeds[pair.seeds[pair.hue] == h]
            draw_levels(ax, table, seeds, pair.x, positions, color, label=str(h))
        ax.set_xticks(range(len(levels)), [str(v) for v in levels], fontsize=8)
        ax.set_xlabel(pair.x)
        ax.set_ylabel(metric)
        ax.set_title(f"{pair.x} × {pair.hue}", fontsize=10)
        ax.legend(title=pair.hue, fontsize=7, title_fontsize=7, ncols=2)
    title = f"interactions: mean {metric}, band = interval over seeds"
    if thinned:
        title += f"; at most {MAX_LINES} evenly spread levels drawn per panel"
    if any(p.table["ci_low"].isna().any() for p in pairs):
        title += f"\n{NO_INTERVAL_NOTE}"
    fig.suptitle(title, fontsize=10)
    return fig


def _get_heatmap_plot(pairs: list[PairInfo], metric: str) -> Figure:
    """A heatmap of the mean metric per pair of factor levels."""
    fig, axes = panel_grid(len(pairs), 3, 4.4, 3.5)
    for ax, pair in zip(axes, pairs, strict=True):
        grid = pair.heatmap()
        sns.heatmap(
            grid,
            annot=grid.size <= 64,
            fmt=".2f",
            cmap="viridis",
            ax=ax,
            cbar_kws={"label": metric},
            annot_kws={"fontsize": 7},
        )
        ax.set_title(f"mean {metric}: {pair.hue} × {pair.x}", fontsize=10)
    return fig


def plot_interactions(run: RunData, kind: str = "lines") -> Figure:
    """Interaction plots (``kind="lines"``) or heatmaps (``"heatmap"``) for every pair."""
    pairs = _get_interaction_info(run.final, run.params)
    draw = _get_heatmap_plot if kind == "heatmap" else _get_interaction_plot
    return draw(pairs, run.metric)
