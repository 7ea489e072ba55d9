"""Prediction overlays for the best and the worst cell, read from saved checkpoints.

Predictions come from ``gridrun.predict.predict_examples``, imported lazily so
that the analysis runs (and skips overlays with a note) without the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import FACTORS

__all__ = ["OverlayInfo", "get_overlay_info", "get_overlay_plot", "paint"]

Example = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class OverlayInfo:
    """One cell's examples (image, truth, prediction), or a ``note`` saying why none."""

    label: str
    cell_id: str
    run_id: str
    examples: list[Example]
    note: str = ""
    levels: str = ""


def paint(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """``image`` (uint8 HxWx3) with ``mask`` blended in ``color`` at 55% opacity."""
    out = image.astype(float).copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(color, dtype=float)
    return out.astype(np.uint8)


def _examples(run_dir: Path, run_id: str, max_images: int) -> tuple[list[Example], str]:
    try:
        from gridrun.predict import predict_examples
    except ImportError as exc:
        return [], f"no predictions: gridrun.predict is unavailable ({exc})."
    try:
        return list(predict_examples(run_dir, run_id, max_images=max_images)), ""
    except FileNotFoundError as exc:
        return [], f"no checkpoint for trial {run_id}: {exc}"


def get_overlay_info(
    run_dir: Path, cells: pd.DataFrame, final: pd.DataFrame, max_images: int = 4
) -> list[OverlayInfo]:
    """Examples for the first (best) and last (worst) row of ``cells``.

    Each cell's trial is the seed whose final metric is the cell's median, so
    the picture is typical of the cell rather than its luckiest seed.
    """
    if cells.empty:
        return []
    picks = [("best", cells.iloc[0])]
    if len(cells) > 1:
        picks.append(("worst", cells.iloc[-1]))
    infos = []
    for label, cell in picks:
        levels = ", ".join(f"{f}={cell[f]}" for f in FACTORS)
        trials = final[final["cell_id"] == cell["cell_id"]].sort_values("final")
        run_id = trials["run_id"].iloc[(len(trials) - 1) // 2]
        if pd.isna(run_id):
            infos.append(
                OverlayInfo(label, str(cell["cell_id"]), "", [], "trial has no run_id.", levels)
            )
            continue
        run_id = str(run_id)
        examples, note = _examples(run_dir, run_id, max_images)
        infos.append(OverlayInfo(label, str(cell["cell_id"]), run_id, examples, note, levels))
    return infos


def get_overlay_plot(info: OverlayInfo) -> Figure:
    """A row per example: the image, the prediction (p > 0.5) in red, the truth in green."""
    n = len(info.examples)
    fig = Figure(figsize=(7.5, 2.6 * n), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 3, squeeze=False))
    for row, (image, truth, pred) in zip(axes, info.examples, strict=True):
        panels = (image, paint(image, pred, (255, 0, 0)), paint(image, truth, (0, 200, 0)))
        for ax, panel, title in zip(
            row, panels, ("image", "prediction", "ground truth"), strict=True
        ):
            ax.imshow(panel)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{info.label} cell: {info.levels}\n(trial {info.run_id})", fontsize=10)
    return fig
