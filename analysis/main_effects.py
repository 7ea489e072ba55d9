"""Main-effect plots: the final metric against each factor's levels, averaged over the
other factors within each seed, with the interval over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from analysis.baselines import Baselines
from analysis.figures import PanelsInfo, draw_levels, level_axis, panel_grid
from analysis.load import FACTORS, StudyData
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import metric_bounds, seed_mean_intervals
from gridrun.layout import DEFAULT_METRIC

__all__ = [
    "EffectInfo",
    "MainEffectsInfo",
    "main_effects_table",
    "plot_main_effects",
    "get_main_effects_info",
    "get_main_effects_plot",
]


@dataclass(frozen=True)
class EffectInfo:
    """``table``: per level ``n, mean, std, ci_low, ci_high``; ``seeds``: per level and
    seed the averaged metric (``value``)."""

    factor: str
    table: pd.DataFrame
    seeds: pd.DataFrame


MainEffectsInfo = PanelsInfo[EffectInfo]


def get_main_effects_info(
    final: pd.DataFrame,
    params: Params = DEFAULT_PARAMS,
    baselines: Baselines | None = None,
    metric: str = DEFAULT_METRIC,
    factors: Sequence[str] = FACTORS,
) -> MainEffectsInfo:
    """An :class:`EffectInfo` per factor of ``factors`` (a study's
    :attr:`StudyData.factors`) with two or more levels in ``final``, one shared y-range and
    the trivial predictors' scores on ``metric``."""
    infos = []
    for factor in factors:
        if factor in final.columns and final[factor].notna().any():
            bounds = metric_bounds(metric)
            table, seeds = seed_mean_intervals(final, [factor], params, bounds=bounds)
            infos.append(EffectInfo(factor, table, seeds))
    shown = [i for i in infos if len(i.table) > 1]
    single = {i.factor: i.table[i.factor].iloc[0] for i in infos if len(i.table) == 1}
    levels = [(i.table, i.seeds) for i in shown]
    return MainEffectsInfo.of(metric, shown, single, levels, baselines)


def main_effects_table(
    final: pd.DataFrame,
    params: Params = DEFAULT_PARAMS,
    metric: str = DEFAULT_METRIC,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """Long table of the level means of every factor with two or more levels: ``factor,
    level, n, mean, std, ci_low, ci_high``."""
    rows = [
        info.table.rename(columns={info.factor: "level"}).assign(factor=info.factor)
        for info in get_main_effects_info(final, params, metric=metric, factors=factors)
    ]
    columns = ["factor", "level", "n", "mean", "std", "ci_low", "ci_high"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def get_main_effects_plot(infos: MainEffectsInfo, metric: str) -> Figure:
    fig, axes = panel_grid(max(len(infos), 1), 4, 3.4, 2.9)
    for ax, info in zip(axes, infos, strict=False):
        levels = sorted(info.table[info.factor])
        positions = {lvl: i for i, lvl in enumerate(levels)}
        draw_levels(ax, info.table, info.seeds, info.factor, positions, "tab:blue")
        level_axis(ax, levels, info.factor, infos)
        ax.set_title(f"{info.factor}", fontsize=10)
    axes[0].set_ylabel(f"mean {metric}")
    if not len(infos):
        axes[0].set_axis_off()
    title = f"main effects on {metric}: mean over the other factors, band = interval over seeds"
    fig.suptitle(infos.title(title), fontsize=10)
    return fig


def plot_main_effects(run: StudyData) -> Figure:
    """Main-effect plots of ``run``'s final metric for every factor."""
    info = get_main_effects_info(run.final, run.params, run.baselines, run.metric, run.factors)
    return get_main_effects_plot(info, run.metric)
