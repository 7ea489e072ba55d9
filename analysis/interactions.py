"""Two-factor interaction plots and heatmaps of the final metric.

For each pair of varying factors the metric is averaged over the other
factors within each seed, then the seed averages give the mean and the
95% confidence interval of each (level, level) point.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import stats

from analysis.load import varying_factors

__all__ = [
    "PairInfo",
    "get_heatmap_plot",
    "get_interaction_info",
    "get_interaction_plot",
]


@dataclass(frozen=True)
class PairInfo:
    """``table`` has one row per (x level, hue level): ``mean, ci_low, ci_high, n_seeds``."""

    x: str
    hue: str
    table: pd.DataFrame

    def heatmap(self) -> pd.DataFrame:
        """Means with the hue factor's levels as rows and the x factor's as columns."""
        return self.table.pivot(index=self.hue, columns=self.x, values="mean")


def _pair_table(final: pd.DataFrame, x: str, hue: str) -> pd.DataFrame:
    per_seed = final.groupby([x, hue, "seed"])["final"].mean()
    g = per_seed.groupby(level=[x, hue])
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n_seeds": g.size()})
    half = stats.t.ppf(0.975, np.maximum(out["n_seeds"] - 1, 1)) * out["std"]
    half = half / np.sqrt(out["n_seeds"])
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out.drop(columns="std").reset_index()


def get_interaction_info(final: pd.DataFrame) -> list[PairInfo]:
    """One :class:`PairInfo` per pair of factors with at least two levels.

    The factor with more levels goes on the x axis; the other draws the lines.
    """
    factors = varying_factors(final)
    pairs = []
    for a, b in combinations(factors, 2):
        x, hue = (b, a) if final[b].nunique() > final[a].nunique() else (a, b)
        pairs.append(PairInfo(x, hue, _pair_table(final, x, hue)))
    return pairs


def _grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def get_interaction_plot(pairs: list[PairInfo], metric: str) -> Figure:
    """A panel per pair: metric against the x factor, a line and a CI band per hue level."""
    fig, axes = _grid(len(pairs), 4.6, 3.6)
    for ax, pair in zip(axes, pairs, strict=True):
        levels = sorted(pair.table[pair.x].unique())
        pos = {lvl: i for i, lvl in enumerate(levels)}
        hues = sorted(pair.table[pair.hue].unique())
        for color, h in zip(sns.color_palette("viridis", len(hues)), hues, strict=True):
            t = pair.table[pair.table[pair.hue] == h].sort_values(pair.x)
            xs = t[pair.x].map(pos)
            ax.plot(xs, t["mean"], marker="o", color=color, label=f"{h}")
            ax.fill_between(xs, t["ci_low"], t["ci_high"], color=color, alpha=0.2, lw=0)
        ax.set_xticks(range(len(levels)), [str(v) for v in levels])
        ax.set_xlabel(pair.x)
        ax.set_ylabel(metric)
        ax.set_title(f"{pair.x} × {pair.hue}")
        ax.legend(title=pair.hue, fontsize=8, title_fontsize=8)
    return fig


def get_heatmap_plot(pairs: list[PairInfo], metric: str) -> Figure:
    """A heatmap of the mean metric per pair of factor levels."""
    fig, axes = _grid(len(pairs), 4.6, 3.6)
    for ax, pair in zip(axes, pairs, strict=True):
        sns.heatmap(
            pair.heatmap(),
            annot=True,
            fmt=".3f",
            cmap="viridis",
            ax=ax,
            cbar_kws={"label": metric},
            annot_kws={"fontsize": 8},
        )
        ax.set_title(f"mean {metric}: {pair.hue} × {pair.x}")
    return fig
