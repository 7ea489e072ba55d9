"""Cells on the Pareto frontier of mean metric against training time and peak memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.cells import cells_table
from analysis.load import FACTORS, RunData
from analysis.stats import higher_is_better

__all__ = ["ParetoInfo", "pareto_mask", "pareto_table", "plot_pareto"]

COSTS: dict[str, str] = {"train_time_s": "train time (s)", "peak_mem_mb": "peak memory (MB)"}


def pareto_mask(cost: np.ndarray, score: np.ndarray, higher_better: bool = True) -> np.ndarray:
    """True where no other point is at least as cheap and as good, and better in one.

    Points with a NaN cost or score are never on the frontier.
    """
    cost = np.asarray(cost, dtype=float)
    score = np.asarray(score, dtype=float) * (1.0 if higher_better else -1.0)
    valid = ~(np.isnan(cost) | np.isnan(score))
    mask = np.zeros(len(cost), dtype=bool)
    # note: sorted by cost, then best score first, a point is on the frontier
    # exactly when it beats every score seen so far
    order = np.lexsort((-score, cost))
    best = -np.inf
    for i in order:
        if valid[i] and score[i] > best:
            mask[i], best = True, score[i]
    return mask


def pareto_table(cells: pd.DataFrame, higher_better: bool = True) -> pd.DataFrame:
    """The cells on either frontier, with ``on_time_frontier`` and ``on_memory_frontier``."""
    out = cells[[*FACTORS, "cell_id", "n", "final_mean", *COSTS]].copy()
    score = out["final_mean"].to_numpy()
    out["on_time_frontier"] = pareto_mask(out["train_time_s"].to_numpy(), score, higher_better)
    out["on_memory_frontier"] = pareto_mask(out["peak_mem_mb"].to_numpy(), score, higher_better)
    keep = out["on_time_frontier"] | out["on_memory_frontier"]
    return out[keep].sort_values("final_mean", ascending=not higher_better).reset_index(drop=True)


@dataclass(frozen=True)
class ParetoInfo:
    """Per cost with data: every cell's (cost, score) and the frontier sorted by cost."""

    metric: str
    points: dict[str, pd.DataFrame]
    frontiers: dict[str, pd.DataFrame]


def _get_pareto_info(cells: pd.DataFrame, metric: str, higher_better: bool = True) -> ParetoInfo:
    points, frontiers = {}, {}
    for cost in COSTS:
        pts = cells[["cell_id", "image_size", cost, "final_mean"]].dropna()
        if pts.empty:
            continue
        mask = pareto_mask(pts[cost].to_numpy(), pts["final_mean"].to_numpy(), higher_better)
        points[cost] = pts.reset_index(drop=True)
        frontiers[cost] = pts[mask].sort_values(cost).reset_index(drop=True)
    return ParetoInfo(metric, points, frontiers)


def _get_pareto_plot(info: ParetoInfo) -> Figure:
    fig = Figure(figsize=(5.5 * max(len(info.points), 1), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(info.points), 1)))
    for ax, cost in zip(axes, info.points, strict=False):
        pts, front, label = info.points[cost], info.frontiers[cost], COSTS[cost]
        sizes = sorted(pts["image_size"].unique())
        for size in sizes:
            sel = pts[pts["image_size"] == size]
            ax.scatter(sel[cost], sel["final_mean"], s=18, alpha=0.7, label=f"image {size}")
        ax.step(front[cost], front["final_mean"], where="post", color="black", lw=1.2)
        ax.scatter(front[cost], front["final_mean"], s=40, facecolors="none", edgecolors="black")
        if (pts[cost] > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"mean {info.metric}")
        ax.set_title(f"Pareto frontier: {info.metric} vs {label}")
        if len(sizes) > 1:
            ax.legend(fontsize=8)
    return fig


def plot_pareto(run: RunData) -> Figure:
    """Mean metric of every cell against train time and peak memory, frontiers drawn."""
    cells = cells_table(run.final, run.metric, run.params)
    return _get_pareto_plot(_get_pareto_info(cells, run.metric, higher_is_better(run.metric)))
