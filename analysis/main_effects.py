"""Main-effect plots: the final metric against each factor's levels, averaged over the
other factors within each seed, with the interval over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from analysis.figures import NO_INTERVAL_NOTE, draw_levels, panel_grid
from analysis.load import FACTORS, RunData
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import seed_mean_intervals

__all__ = ["EffectInfo", "main_effects_table", "plot_main_effects"]


@dataclass(frozen=True)
class EffectInfo:
    """``table``: per level ``n, mean, std, ci_low, ci_high``; ``seeds``: per level and
    seed the averaged metric (``value``)."""

    factor: str
    table: pd.DataFrame
    seeds: pd.DataFrame


def _get_main_effects_info(
    final: pd.DataFrame, params: Params = DEFAULT_PARAMS
) -> list[EffectInfo]:
    """One :class:`EffectInfo` per factor in ``final`` (single-level factors included, so
    every factor of the grid is shown)."""
    infos = []
    for factor in FACTORS:
        if factor in final.columns and final[factor].notna().any():
            table, seeds = seed_mean_intervals(final, [factor], params)
            infos.append(EffectInfo(factor, table, seeds))
    return infos


def main_effects_table(final: pd.DataFrame, params: Params = DEFAULT_PARAMS) -> pd.DataFrame:
    """Long table of every factor's level means: ``factor, level, n, mean, ci_low, ci_high``."""
    rows = [
        info.table.rename(columns={info.factor: "level"}).assign(factor=info.factor)
        for info in _get_main_effects_info(final, params)
    ]
    columns = ["factor", "level", "n", "mean", "std", "ci_low", "ci_high"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _get_main_effects_plot(infos: list[EffectInfo], metric: str) -> Figure:
    fig, axes = panel_grid(len(infos), 4, 3.4, 2.9)
    for ax, info in zip(axes, infos, strict=True):
        levels = sorted(info.table[info.factor])
        positions = {lvl: i for i, lvl in enumerate(levels)}
        draw_levels(ax, info.table, info.seeds, info.factor, positions, "tab:blue")
        ax.set_xticks(range(len(levels)), [str(v) for v in levels], fontsize=8)
        ax.set_xlabel(info.factor)
        ax.set_title(f"{info.factor}", fontsize=10)
    if axes:
        axes[0].set_ylabel(f"mean {metric}")
    title = f"main effects on {metric}: mean over the other factors, band = interval over seeds"
    if any(info.table["ci_low"].isna().any() for info in infos):
        title += f"\n{NO_INTERVAL_NOTE}"
    fig.suptitle(title, fontsize=10)
    return fig


def plot_main_effects(run: RunData) -> Figure:
    """Main-effect plots of ``run``'s final metric for every factor."""
    return _get_main_effects_plot(_get_main_effects_info(run.final, run.params), run.metric)
