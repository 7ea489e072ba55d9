"""Two-factor interaction plots and heatmaps of the final metric.

For each pair of varying factors the metric is averaged over the other factors within
each seed, then over seeds, with the interval of :mod:`analysis.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from analysis.baselines import Baselines
from analysis.figures import PanelsInfo, draw_levels, level_axis, panel_grid, spread_levels
from analysis.load import FACTORS, StudyData, varying_factors
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import metric_bounds, seed_mean_intervals
from gridrun.layout import DEFAULT_METRIC

__all__ = [
    "InteractionsInfo",
    "PairInfo",
    "plot_interactions",
    "get_heatmap_plot",
    "get_interaction_info",
    "get_interaction_plot",
]

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


InteractionsInfo = PanelsInfo[PairInfo]


def get_interaction_info(
    final: pd.DataFrame,
    params: Params = DEFAULT_PARAMS,
    baselines: Baselines | None = None,
    metric: str = DEFAULT_METRIC,
    factors: Sequence[str] = FACTORS,
) -> InteractionsInfo:
    """One :class:`PairInfo` per pair of ``factors`` (a study's :attr:`StudyData.factors`)
    with at least two levels in ``final``.

    The factor with more levels goes on the x axis; the other draws the lines.
    """
    pairs = []
    varying = varying_factors(final, factors)
    for a, b in combinations(varying, 2):
        x, hue = (b, a) if final[b].nunique() > final[a].nunique() else (a, b)
        bounds = metric_bounds(metric)
        table, seeds = seed_mean_intervals(final, [x, hue], params, bounds=bounds)
        pairs.append(PairInfo(x, hue, table, seeds))
    single = {
        f: final[f].dropna().iloc[0]
        for f in factors
        if f in final.columns and f not in varying and final[f].notna().any()
    }
    levels = [
        (group, p.seeds[p.seeds[p.hue] == h]) for p in pairs for h, group in p.table.groupby(p.hue)
    ]
    return InteractionsInfo.of(metric, pairs, single, levels, baselines)


def get_interaction_plot(pairs: InteractionsInfo, metric: str) -> Figure:
    """A panel per pair: metric against the x factor, a line and a band per hue level,
    every panel on the same y-range."""
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
        level_axis(ax, levels, pair.x, pairs)
        ax.set_ylabel(metric)
        ax.set_title(f"{pair.x} × {pair.hue}", fontsize=10)
        ax.legend(title=pair.hue, fontsize=7, title_fontsize=7, ncols=2)
    title = f"interactions: mean {metric}, band = interval over seeds"
    if thinned:
        title += f"; at most {MAX_LINES} evenly spread levels drawn per panel"
    fig.suptitle(pairs.title(title), fontsize=10)
    return fig


def get_heatmap_plot(pairs: InteractionsInfo, metric: str) -> Figure:
    """A heatmap of the mean metric per pair of factor levels, one colour scale for all."""
    fig, axes = panel_grid(len(pairs), 3, 4.4, 3.5)
    vmin = min((p.table["mean"].min() for p in pairs), default=None)
    vmax = max((p.table["mean"].max() for p in pairs), default=None)
    for ax, pair in zip(axes, pairs, strict=True):
        grid = pair.heatmap()
        sns.heatmap(
            grid,
            vmin=vmin,
            vmax=vmax,
            annot=grid.size <= 64,
            fmt=".2f",
            cmap="viridis",
            ax=ax,
            cbar_kws={"label": metric},
            annot_kws={"fontsize": 7},
        )
        ax.set_title(f"mean {metric}: {pair.hue} × {pair.x}", fontsize=10)
    if pairs.single_level:
        fig.suptitle(pairs.single_level_text, fontsize=10)
    return fig


def plot_interactions(run: StudyData, kind: str = "lines") -> Figure:
    """Interaction plots (``kind="lines"``) or heatmaps (``"heatmap"``) for every pair."""
    pairs = get_interaction_info(run.final, run.params, run.baselines, run.metric, run.factors)
    draw = get_heatmap_plot if kind == "heatmap" else get_interaction_plot
    return draw(pairs, run.metric)
