"""Prediction overlays: true positives, false positives (red) and false negatives painted
over the input, for a few cells, from the files the runner writes.

``predictions/examples.npz`` holds the fixed validation images (``image``, uint8
N×E×E×3) and their labels (``truth``, uint8 N×E×E, 0 = background); a trial row's
``predictions`` column names an npz whose ``pred`` holds its predicted labels of the
same images at the cell's own epoch. They are painted by
:func:`gridrun.painting.paint_overlay`, as in TensorBoard: foreground is any label but 0
and the study's ``ignore_index`` (grid ``data.ignore_index``; 255 for torchvision
sources); an ignored pixel (a border, void) is left unpainted and out of every count, as
the metrics leave it out.

Each row is captioned with the report's metric for the trial shown, at the trial's
epoch (its ``final`` value); the per-image number is that image's foreground IoU and is
labelled so: it is not the metric the report ranks cells by.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.cells import cells_table
from analysis.load import FACTORS, StudyData
from gridrun.layout import DEFAULT_METRIC, EXAMPLES_FILE, OVERLAY_IMAGES, TRIAL_ID
from gridrun.painting import COLORS, overlay_masks, paint_overlay

if TYPE_CHECKING:
    from gridrun.storage import Storage

__all__ = [
    "COLORS",
    "OverlayInfo",
    "OverlayRow",
    "foreground_iou",
    "grid_ignore_index",
    "plot_overlays",
    "get_overlay_info",
    "get_overlay_plot",
]


def grid_ignore_index(grid: dict) -> int | None:
    """The mask value a study leaves out (``data.ignore_index`` of its resolved grid)."""
    value = (grid.get("data") or {}).get("ignore_index")
    return None if value is None else int(value)


def foreground_iou(
    truth: np.ndarray, pred: np.ndarray, ignore_index: int | None = None
) -> float:
    """TP / (TP + FP + FN) over one image's scored pixels; NaN when neither has foreground."""
    counts = {k: int(m.sum()) for k, m in overlay_masks(truth, pred, ignore_index).items()}
    total = counts["TP"] + counts["FP"] + counts["FN"]
    return counts["TP"] / total if total else float("nan")


@dataclass(frozen=True)
class OverlayRow:
    """One cell's trial (the seed with the median final metric) and its overlays, or a
    ``note`` saying why there are none. ``value`` is the trial's ``metric`` at its
    ``epoch`` (what the report ranks by); ``ious`` the shown images' foreground IoU."""

    label: str
    cell_id: str
    levels: str
    run_id: str = ""
    overlays: list[np.ndarray] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    note: str = ""
    metric: str = ""
    value: float = float("nan")
    epoch: int | None = None

    @property
    def caption(self) -> str:
        """``val_miou 0.384 at epoch 8``: the trial's score in the report's metric."""
        if not self.metric or not np.isfinite(self.value):
            return ""
        at = f" at epoch {self.epoch}" if self.epoch is not None else ""
        return f"{self.metric} {self.value:.3f}{at}"


@dataclass(frozen=True)
class OverlayInfo:
    images: list[np.ndarray]
    rows: list[OverlayRow]
    note: str = ""
    ignore_index: int | None = None


def _npz(files: Storage, rel: str) -> dict[str, np.ndarray] | None:
    try:
        return files.read_npz(rel)
    except FileNotFoundError:
        return None


def _row(
    files: Storage,
    label: str,
    cell_id: str,
    final: pd.DataFrame,
    examples: tuple[np.ndarray, np.ndarray],
    metric: str,
    ignore_index: int | None,
    factors: Sequence[str],
) -> OverlayRow:
    trials = final[final["cell_id"] == cell_id].sort_values("final", kind="stable")
    if trials.empty:
        return OverlayRow(label, cell_id, "", note="no finished trial.")
    trial = trials.iloc[(len(trials) - 1) // 2]
    levels = ", ".join(f"{f}={trial[f]}" for f in factors if f in FACTORS or f in trial.index)
    run_id, rel = str(trial[TRIAL_ID]), trial.get("predictions")
    epoch = int(trial["epochs"]) if pd.notna(trial.get("epochs")) else None
    partial = OverlayRow(
        label, cell_id, levels, run_id, metric=metric, value=float(trial["final"]), epoch=epoch
    )
    if rel is None or pd.isna(rel):
        return replace(partial, note=f"trial {run_id} has no predictions.")
    found = _npz(files, str(rel))
    if found is None or "pred" not in found:
        return replace(partial, note=f"{rel} is missing or holds no pred array.")
    images, truth = examples
    pred = found["pred"][: len(truth)]
    if pred.shape != truth.shape:
        return replace(partial, note=f"{rel}: pred {pred.shape} ≠ examples {truth.shape}.")
    triples = list(zip(images, truth, pred, strict=True))
    return replace(
        partial,
        overlays=[paint_overlay(i, t, p, ignore_index) for i, t, p in triples],
        ious=[foreground_iou(t, p, ignore_index) for _, t, p in triples],
    )


def get_overlay_info(
    files: Storage,
    picks: list[tuple[str, str]],
    final: pd.DataFrame,
    max_images: int = OVERLAY_IMAGES,
    metric: str = DEFAULT_METRIC,
    ignore_index: int | None = None,
    factors: Sequence[str] = FACTORS,
) -> OverlayInfo:
    """Overlays of the first ``max_images`` examples for each (label, cell_id) pick, each
    row captioned with its trial's ``factors`` and ``metric``; ``ignore_index`` pixels
    left unpainted."""
    examples = _npz(files, EXAMPLES_FILE)
    if examples is None:
        return OverlayInfo([], [], f"no {EXAMPLES_FILE}: the study saved no example images.")
    images, truth = examples["image"][:max_images], examples["truth"][:max_images]
    rows = [
        _row(files, label, cell, final, (images, truth), metric, ignore_index, factors)
        for label, cell in picks
    ]
    return OverlayInfo(list(images), rows, ignore_index=ignore_index)


def get_overlay_plot(info: OverlayInfo) -> Figure:
    """Inputs in the first row, then a row per cell with overlays: TP, FP (red), FN."""
    rows = [r for r in info.rows if r.overlays]
    n = max(len(info.images), 1)
    fig = Figure(figsize=(2.3 * n + 0.6, 2.45 * (len(rows) + 1) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for j, image in enumerate(info.images):
        axes[0, j].imshow(image)
        axes[0, j].set_title(f"example {j}", fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=9)
    for i, row in enumerate(rows, start=1):
        for j, (picture, iou) in enumerate(zip(row.overlays, row.ious, strict=True)):
            axes[i, j].imshow(picture)
            axes[i, j].set_title(
                f"this image's fg IoU {iou:.2f}" if np.isfinite(iou) else "no foreground",
                fontsize=7,
            )
        name = "\n".join(textwrap.wrap(row.cell_id.replace("_", " "), 14))
        axes[i, 0].set_ylabel(f"{row.label}\n{name}\n{row.caption}".strip(), fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=np.asarray(c) / 255, label=name) for name, c in COLORS.items()]
    if info.ignore_index is not None:
        label = f"label {info.ignore_index} (ignored): unpainted"
        handles.append(Patch(fc="none", ec="0.5", label=label))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return fig


def plot_overlays(
    run: StudyData, cells: list[str] | None = None, max_images: int = OVERLAY_IMAGES
) -> Figure:
    """Overlays of ``cells`` (default: the best and the worst cell) on the example images."""
    if cells is None:
        ranked = cells_table(run.final, run.metric, run.params, run.factors)["cell_id"].tolist()
        picks = list(dict.fromkeys([("best", ranked[0]), ("worst", ranked[-1])] if ranked else []))
    else:
        picks = [("", c) for c in cells]
    info = get_overlay_info(
        run.files, picks, run.final, max_images, run.metric, grid_ignore_index(run.grid),
        run.factors,
    )  # fmt: skip
    return get_overlay_plot(info)
