"""Learning curves of a selection of cells, every seed drawn, with the plateau (▼) marked
on the validation-metric curve and the confirmed overfitting onset (✕) on the
validation-loss curve of the seed they were computed from.

Cells that differ only in ``epochs`` share one training run, so only the longest cell of
each run is a candidate, and its panel marks the epochs the run's shorter cells are read
at (a dotted line, "ep8 cell"); with more runs than panels, the cells named first (the
recommended, best and worst cells) are shown, then the best of the rest. The trivial
predictors' validation scores are dashed lines on the metric panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.baselines import Baselines
from analysis.figures import BaselineLine, baseline_lines, draw_baselines, panel_grid
from analysis.load import StudyData
from analysis.overfitting import overfitting_table
from analysis.plateau import plateau_table
from gridrun.layout import DEFAULT_METRIC

__all__ = [
    "CurvePanel",
    "CurvesInfo",
    "plot_learning_curves",
    "get_learning_curves_info",
    "get_learning_curves_plot",
]

MAX_PANELS = 12


@dataclass(frozen=True)
class CurvePanel:
    """One cell: its per-seed ``curves`` (seed, epoch and the series), its ``marks``:
    per seed and kind (``plateau`` on ``val_<metric>``, ``onset`` on ``val_loss``) the
    epoch and the value of that seed's curve there, and ``cell_epochs``: the epochs at
    which the other, shorter cells of its training run are read."""

    cell_id: str
    curves: pd.DataFrame
    marks: pd.DataFrame
    cell_epochs: tuple[int, ...] = ()


@dataclass(frozen=True)
class CurvesInfo:
    """``baselines``: the trivial predictors' validation scores on the metric."""

    metric: str
    panels: list[CurvePanel]
    candidates: int
    baselines: tuple[BaselineLine, ...] = ()


def _longest_per_run(curves: pd.DataFrame) -> pd.Series:
    """Map every cell to the longest cell of its training run (itself without one)."""
    cells = curves.groupby("cell_id")[["training_run", "epochs"]].first()
    run = cells["training_run"].where(cells["training_run"].notna(), cells.index.to_series())
    longest = cells.assign(run=run).sort_values("epochs", kind="stable").groupby("run").tail(1)
    return run.map(longest.reset_index().set_index("run")["cell_id"])


def get_learning_curves_info(
    curves: pd.DataFrame,
    plateau: pd.DataFrame,
    overfitting: pd.DataFrame,
    metric: str,
    priority: Sequence[str] = (),
    limit: int = MAX_PANELS,
    baselines: Baselines | None = None,
) -> CurvesInfo:
    """Panels for up to ``limit`` cells, each the longest cell of its training run: those
    of the ``priority`` cells first, in that order, then the rest by cell id.

    The plateau is the run's (``run_plateau_epoch`` of the per-run plateau table, else
    ``plateau_epoch``); the onset is ``overfit_epoch``, which holds confirmed onsets only
    (an unconfirmed one is in ``unconfirmed_onset_epoch`` and is not marked).
    """
    val = f"val_{metric.removeprefix('val_').removeprefix('train_')}"
    lines = baseline_lines(baselines, val)
    if curves.empty:
        return CurvesInfo(metric, [], 0, lines)
    longest = _longest_per_run(curves)
    epochs_of = curves.groupby("cell_id")["epochs"].first()
    candidates = list(dict.fromkeys(longest))
    order = [longest[c] for c in priority if c in longest.index] + sorted(candidates)
    chosen = list(dict.fromkeys(order))[:limit]
    plateau_col = "run_plateau_epoch" if "run_plateau_epoch" in plateau.columns else "plateau_epoch"
    panels = []
    shown = curves[curves["cell_id"].isin(chosen)]
    for cell_id in chosen:
        c = shown[shown["cell_id"] == cell_id].sort_values(["seed", "epoch"])
        marks = []
        for kind, table, col, series in (
            ("plateau", plateau, plateau_col, val),
            ("onset", overfitting, "overfit_epoch", "val_loss"),
        ):
            if series not in c.columns:
                continue
            rows = table[(table["cell_id"] == cell_id) & table[col].notna()]
            at = rows[["seed", col]].rename(columns={col: "epoch"}).astype({"epoch": int})
            hit = at.merge(c[["seed", "epoch", series]], on=["seed", "epoch"])
            marks.append(hit.rename(columns={series: "value"}).assign(kind=kind, series=series))
        marks_df = (
            pd.concat(marks, ignore_index=True)
            if marks
            else pd.DataFrame(columns=["seed", "epoch", "value", "kind", "series"])
        )
        own = int(epochs_of[cell_id])
        shorter = {int(epochs_of[k]) for k in longest.index[longest == cell_id]} - {own}
        panel = CurvePanel(cell_id, c.reset_index(drop=True), marks_df, tuple(sorted(shorter)))
        panels.append(panel)
    return CurvesInfo(metric, panels, len(candidates), lines)


def get_learning_curves_plot(info: CurvesInfo, kind: str = "metric") -> Figure:
    """``kind`` ``metric`` (with plateau marks) or ``loss`` (with onset marks): train
    dashed, validation solid, one colour per seed."""
    base = info.metric.removeprefix("val_").removeprefix("train_")
    name = "loss" if kind == "loss" else base
    val, train = f"val_{name}", f"train_{name}"
    mark_kind = "onset" if kind == "loss" else "plateau"
    fig, axes = panel_grid(max(len(info.panels), 1), 4, 3.3, 2.6)
    seeds = sorted({s for p in info.panels for s in p.curves["seed"].unique()})
    palette = dict(zip(seeds, sns.color_palette("tab10", max(len(seeds), 1)), strict=False))
    for ax, panel in zip(axes, info.panels, strict=False):
        for seed, c in panel.curves.groupby("seed"):
            for col, style in ((train, "--"), (val, "-")):
                if col in c.columns and c[col].notna().any():
                    ax.plot(c["epoch"], c[col], ls=style, color=palette[seed], lw=1.1)
        marks = panel.marks[panel.marks["kind"] == mark_kind]
        for m in marks.itertuples():
            ax.plot([m.epoch], [m.value], ls="", marker="v" if mark_kind == "plateau" else "X",
                    ms=8, color=palette[m.seed], mec="black")  # fmt: skip
        for epoch in panel.cell_epochs:
            ax.axvline(epoch, color="0.45", ls=":", lw=0.9)
            ax.text(epoch, 0.98, f"ep{epoch} cell", transform=ax.get_xaxis_transform(),
                    rotation=90, ha="right", va="top", fontsize=6, color="0.35")  # fmt: skip
        if kind != "loss":
            draw_baselines(ax, info.baselines, suffix=" (val)")
        ax.set_title(panel.cell_id, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=palette[s], label=f"seed {s}") for s in seeds]
    handles += [
        Line2D([], [], color="gray", ls="--", label="train"),
        Line2D([], [], color="gray", ls="-", label="validation"),
        Line2D([], [], color="gray", ls="", mec="black", label=mark_kind,
               marker="v" if mark_kind == "plateau" else "X"),
    ]  # fmt: skip
    if kind != "loss" and info.baselines:
        handles.append(Line2D([], [], color="0.35", ls="--", lw=0.9, label="trivial (val)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8)
    shown = len(info.panels)
    scope = f"{shown} of {info.candidates} training runs" if shown < info.candidates else "all runs"
    fig.suptitle(f"learning curves ({name}), {scope}: every seed", fontsize=10)
    if not info.panels:
        axes[0].set_axis_off()
    return fig


def plot_learning_curves(run: StudyData, kind: str = "metric", cells: Sequence[str] = ()) -> Figure:
    """Learning curves of ``run`` (``kind`` ``metric`` or ``loss``); ``cells`` first; the
    trivial predictors' validation scores on the metric panels."""
    metric = run.metric if run.metric in run.curves.columns else DEFAULT_METRIC
    info = get_learning_curves_info(
        run.curves,
        plateau_table(run.curves, metric, run.params),
        overfitting_table(run.curves, metric, run.params),
        metric,
        list(cells),
        baselines=run.baselines,
    )
    return get_learning_curves_plot(info, kind)
