"""Training curves per cell: seed mean with a min-max band, faceted by
image size × data set size and coloured by batch size, with the detected
plateau (▼) and overfitting onset (✕) epochs marked on the validation curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["LearningCurvesInfo", "get_learning_curves_info", "get_learning_curves_plot"]

SERIES: tuple[str, ...] = ("train_iou", "val_iou", "train_loss", "val_loss")
_CELL: list[str] = ["cell_id", "image_size", "dataset_size", "batch_size", "epochs"]


@dataclass(frozen=True)
class LearningCurvesInfo:
    """``bands``: per (cell, epoch) the seed ``mean``/``min``/``max`` of each series,
    as columns ``<series>_mean`` etc.; ``marks``: per cell the median plateau
    and overfitting epochs over seeds (NaN where none).
    """

    bands: pd.DataFrame
    marks: pd.DataFrame


def get_learning_curves_info(
    curves: pd.DataFrame, plateau: pd.DataFrame, overfitting: pd.DataFrame
) -> LearningCurvesInfo:
    series = [s for s in SERIES if s in curves.columns]
    agg = curves.groupby([*_CELL, "epoch"])[series].agg(["mean", "min", "max"])
    agg.columns = [f"{s}_{stat}" for s, stat in agg.columns]
    bands = agg.reset_index()
    marks = bands[_CELL].drop_duplicates().set_index("cell_id")
    for table, col in ((plateau, "plateau_epoch"), (overfitting, "overfit_epoch")):
        epochs = table.groupby("cell_id")[col].apply(lambda s: s.astype(float).median())
        marks[col] = epochs.reindex(marks.index)
    return LearningCurvesInfo(bands, marks.reset_index())


def _mark(ax, band: pd.DataFrame, epoch: float, column: str, marker: str, color) -> None:
    if np.isnan(epoch):
        return
    at = band.iloc[int(np.argmin(np.abs(band["epoch"].to_numpy() - epoch)))]
    ax.plot([at["epoch"]], [at[column]], marker=marker, color=color, ms=8, mec="black", ls="")


def _limits(bands: pd.DataFrame, lows: list[str], highs: list[str]) -> tuple[float, float]:
    lo = np.nanmin(bands[[c for c in lows if c in bands]].to_numpy(float), initial=np.inf)
    hi = np.nanmax(bands[[c for c in highs if c in bands]].to_numpy(float), initial=-np.inf)
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    pad = 0.04 * (hi - lo) or 0.05
    return lo - pad, hi + pad


def get_learning_curves_plot(info: LearningCurvesInfo, kind: str = "iou") -> Figure:
    """``kind`` is ``iou`` or ``loss``: train (dashed) and validation (solid) curves."""
    bands, marks = info.bands, info.marks
    rows = sorted(bands["image_size"].unique())
    cols = sorted(bands["dataset_size"].unique())
    fig = Figure(figsize=(3.4 * len(cols) + 1.5, 2.8 * len(rows)), layout="constrained")
    # note: shared axes make every artist re-autoscale the whole group, which is
    # slow with a hundred cells; common limits are set once at the end instead
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    batch_sizes = sorted(bands["batch_size"].unique())
    palette = dict(zip(batch_sizes, sns.color_palette("tab10", len(batch_sizes)), strict=True))
    val, train = f"val_{kind}", f"train_{kind}"
    per_cell = dict(tuple(bands.groupby("cell_id")))
    for (i, size), (j, n) in ((r, c) for r in enumerate(rows) for c in enumerate(cols)):
        ax = axes[i, j]
        ax.set_title(f"image {size}, data {n}", fontsize=9)
        facet = marks[(marks["image_size"] == size) & (marks["dataset_size"] == n)]
        for cell in facet.itertuples():
            band = per_cell[cell.cell_id]
            color = palette[cell.batch_size]
            for col, style in ((train, "--"), (val, "-")):
                if f"{col}_mean" not in band or band[f"{col}_mean"].isna().all():
                    continue
                epoch = band["epoch"].to_numpy(float)
                ax.plot(epoch, band[f"{col}_mean"].to_numpy(), ls=style, color=color, lw=1.2)
                ax.fill_between(
                    epoch,
                    band[f"{col}_min"].to_numpy(float),
                    band[f"{col}_max"].to_numpy(float),
                    color=color,
                    alpha=0.15,
                    lw=0,
                )
            if f"{val}_mean" in band:
                _mark(ax, band, cell.plateau_epoch, f"{val}_mean", "v", color)
                _mark(ax, band, cell.overfit_epoch, f"{val}_mean", "X", color)
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
    ymin, ymax = _limits(bands, [f"{train}_min", f"{val}_min"], [f"{train}_max", f"{val}_max"])
    for ax in axes.ravel():
        ax.set_xlim(0, bands["epoch"].max() + 1)
        ax.set_ylim(ymin, ymax)
        ax.label_outer()
    handles = [Line2D([], [], color=c, label=f"batch {b}") for b, c in palette.items()]
    handles += [
        Line2D([], [], color="gray", ls="--", label="train"),
        Line2D([], [], color="gray", ls="-", label="validation"),
        Line2D([], [], color="gray", marker="v", ls="", mec="black", label="plateau"),
        Line2D([], [], color="gray", marker="X", ls="", mec="black", label="overfitting onset"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(f"learning curves ({kind}): seed mean, band = min–max over seeds")
    return fig
