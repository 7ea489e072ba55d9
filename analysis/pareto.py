"""Cells on the Pareto frontier of mean metric against training time and peak memory.

Peak memory is a cost only where it is the model's: on a GPU the runner records the
peak torch allocated; on CPU it records the process's resident memory (RSS), which is
mostly the interpreter and the libraries and barely moves with the model. So the memory
frontier is drawn only when every trial ran on a GPU (:func:`memory_is_device_memory`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.baselines import Baselines
from analysis.cells import cells_table, extra_factors
from analysis.figures import BaselineLine, baseline_lines, draw_baselines, log_axis
from analysis.load import FACTORS, StudyData
from analysis.stats import higher_is_better

__all__ = [
    "COSTS",
    "ParetoInfo",
    "memory_is_device_memory",
    "memory_note",
    "pareto_costs",
    "pareto_mask",
    "pareto_table",
    "plot_pareto",
    "get_pareto_info",
    "get_pareto_plot",
]

COSTS: dict[str, str] = {"train_time_s": "train time (s)", "peak_mem_mb": "peak memory (MB)"}
FRONTIER_COLUMNS: dict[str, str] = {
    "train_time_s": "on_time_frontier",
    "peak_mem_mb": "on_memory_frontier",
}


def _on_gpu(trials: pd.DataFrame) -> pd.Series:
    if "device" not in trials.columns:
        return pd.Series(False, index=trials.index)
    return trials["device"].fillna("").astype(str).str.startswith("cuda")


def memory_is_device_memory(trials: pd.DataFrame) -> bool:
    """True when every trial records a ``device`` and it is a GPU (``cuda: <name>``), so
    ``peak_mem_mb`` is the peak memory torch allocated; False on CPU, for a mix, and
    for a study from before the device was recorded."""
    return bool(len(trials)) and bool(_on_gpu(trials).all())


def memory_note(trials: pd.DataFrame) -> str:
    """Why the memory frontier is left out; empty when it is drawn."""
    if memory_is_device_memory(trials):
        return ""
    if "device" not in trials.columns or trials["device"].isna().all():
        return (
            "No memory frontier: the trials do not record the device they ran on, so peak "
            "memory may be the process's resident memory (RSS) rather than the model's."
        )
    cpu = int((~_on_gpu(trials)).sum())
    return (
        f"No memory frontier: {cpu} of {len(trials)} trials ran on CPU, where peak memory "
        "is the process's resident memory (RSS), not the model's."
    )


def pareto_costs(trials: pd.DataFrame) -> tuple[str, ...]:
    """The costs a frontier is drawn for: train time, and peak memory on a GPU only."""
    return tuple(COSTS) if memory_is_device_memory(trials) else ("train_time_s",)


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


def pareto_table(
    cells: pd.DataFrame, higher_better: bool = True, costs: Sequence[str] = tuple(COSTS)
) -> pd.DataFrame:
    """The cells on a frontier of one of ``costs``: the factors, ``cell_id``, ``n``,
    ``final_mean``, each cost and whether the cell is on its frontier
    (``on_time_frontier``, ``on_memory_frontier``). A cost left out of ``costs`` (peak
    memory on CPU: :func:`pareto_costs`) has neither its column nor its frontier."""
    costs = [c for c in COSTS if c in costs]
    out = cells[[*FACTORS, *extra_factors(cells), "cell_id", "n", "final_mean", *costs]].copy()
    score = out["final_mean"].to_numpy()
    for cost in costs:
        out[FRONTIER_COLUMNS[cost]] = pareto_mask(out[cost].to_numpy(), score, higher_better)
    keep = out[[FRONTIER_COLUMNS[c] for c in costs]].any(axis=1)
    return out[keep].sort_values("final_mean", ascending=not higher_better).reset_index(drop=True)


@dataclass(frozen=True)
class ParetoInfo:
    """Per cost with data: every cell's (cost, score) and the frontier sorted by cost;
    ``baselines``: the trivial scores drawn; ``note``: why a cost is left out."""

    metric: str
    points: dict[str, pd.DataFrame]
    frontiers: dict[str, pd.DataFrame]
    baselines: tuple[BaselineLine, ...] = ()
    note: str = ""


def get_pareto_info(
    cells: pd.DataFrame,
    metric: str,
    higher_better: bool = True,
    costs: Sequence[str] = tuple(COSTS),
    baselines: Baselines | None = None,
    note: str = "",
) -> ParetoInfo:
    """Points and frontiers for each of ``costs`` that has data; ``note`` (e.g.
    :func:`memory_note`) says why a cost is missing."""
    points, frontiers = {}, {}
    for cost in (c for c in COSTS if c in costs):
        pts = cells[["cell_id", "image_size", cost, "final_mean"]].dropna()
        if pts.empty:
            continue
        mask = pareto_mask(pts[cost].to_numpy(), pts["final_mean"].to_numpy(), higher_better)
        points[cost] = pts.reset_index(drop=True)
        frontiers[cost] = pts[mask].sort_values(cost).reset_index(drop=True)
    return ParetoInfo(metric, points, frontiers, baseline_lines(baselines, metric), note)


def get_pareto_plot(info: ParetoInfo) -> Figure:
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
        log = log_axis(ax, pts[cost], "x")
        ax.set_xlabel(label + (", log scale" if log else ""))
        ax.set_ylabel(f"mean {info.metric}")
        ax.set_title(f"Pareto frontier: {info.metric} vs {label}", fontsize=10)
        ax.autoscale_view()
        draw_baselines(ax, info.baselines)
        if len(sizes) > 1:
            ax.legend(fontsize=8, loc="upper left")
    if not info.points:
        axes[0].set_axis_off()
    lines = ["dashed: trivial predictors' scores"] if info.baselines else []
    lines += textwrap.wrap(info.note, int(13 * fig.get_figwidth()))
    if lines:
        fig.suptitle("\n".join(lines), fontsize=9)
    return fig


def plot_pareto(run: StudyData) -> Figure:
    """Mean metric of every cell against train time, and against peak memory when every
    trial ran on a GPU; frontiers and the trivial predictors' scores drawn."""
    cells = cells_table(run.final, run.metric, run.params, run.factors)
    info = get_pareto_info(
        cells,
        run.metric,
        higher_is_better(run.metric),
        pareto_costs(run.ok),
        run.baselines,
        memory_note(run.ok),
    )
    return get_pareto_plot(info)
