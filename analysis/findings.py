"""The report's tables, computed once from a study.

Trials whose metric sits at a trivial predictor's score are *collapsed*: they keep their
rows in every per-trial table (flagged), and are left out of the plateau statistics, the
Pareto frontiers and the recommendations. The sentences that sum the tables up are in
:mod:`analysis.summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.anova import anova_table, omega_sq_bootstrap
from analysis.batch import batch_comparison_table, batch_difference_table
from analysis.cells import cells_table
from analysis.claims import claims_table
from analysis.collapse import collapse_table
from analysis.critical_batch import critical_batch_table
from analysis.edges import edges_table
from analysis.isolation import get_isolation_info, grid_nuisance
from analysis.load import TRIAL_KEY, StudyData
from analysis.main_effects import main_effects_table
from analysis.overfitting import overfitting_table
from analysis.pareto import pareto_costs, pareto_table
from analysis.plateau import plateau_table
from analysis.recommend import recommendations_table
from analysis.scaling import scaling_table
from analysis.stats import (
    DetectableDifference,
    detectable_difference,
    higher_is_better,
    interval_frame,
    metric_bounds,
)
from gridrun.layout import DEFAULT_METRIC

__all__ = ["ReportTables", "class_scores", "compute_tables", "curves_by_cell"]


@dataclass(frozen=True)
class ReportTables:
    """Every table of the report; ``final`` is one row per analysed trial (with its
    ``collapsed`` flag), ``metric`` the metric the tables are about."""

    metric: str
    final: pd.DataFrame
    cells: pd.DataFrame
    collapse: pd.DataFrame
    recommendations: pd.DataFrame
    anova: pd.DataFrame
    importance: pd.DataFrame
    main_effects: pd.DataFrame
    plateau: pd.DataFrame
    overfitting: pd.DataFrame
    curves_by_cell: pd.DataFrame
    edges: pd.DataFrame
    batch: pd.DataFrame
    batch_differences: pd.DataFrame
    critical_batch: pd.DataFrame
    claims: pd.DataFrame
    pareto: pd.DataFrame
    scaling: pd.DataFrame
    detectable: DetectableDifference
    # note: None when the grid declares no nuisance factors; then neither a section nor a CSV
    isolation: pd.DataFrame | None = None

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        isolation = {} if self.isolation is None else {"isolation": self.isolation}
        return {
            "recommendations": self.recommendations,
            "claims": self.claims,
            "cells": self.cells,
            "collapse": self.collapse,
            "anova": self.anova,
            "importance": self.importance,
            "main_effects": self.main_effects,
            "batch": self.batch,
            "batch_differences": self.batch_differences,
            "critical_batch": self.critical_batch,
            "plateau": self.plateau,
            "overfitting": self.overfitting,
            "curves_by_cell": self.curves_by_cell,
            "edges": self.edges,
            "pareto": self.pareto,
            "scaling": self.scaling,
        } | isolation


def curves_by_cell(plateau: pd.DataFrame, overfitting: pd.DataFrame) -> pd.DataFrame:
    """Per cell: ``seeds``; ``plateaued`` (seeds whose run has plateaued by the cell's
    epoch) and their median ``plateau_epoch``; ``plateaus_later`` (seeds whose run
    plateaus only after the cell's epoch); median ``gain_after_trial`` (what the run gains
    after the cell's epoch); ``stuck_epochs`` (most leading epochs at a trivial score);
    ``overfit`` (seeds with a confirmed onset by the cell's epoch) and its median
    ``overfit_epoch``; ``unconfirmed`` (onsets too late to confirm); ``transient_rises``
    (sum) and ``best_minus_last`` (median)."""
    columns = ["cell_id", "seeds", "plateaued", "plateau_epoch", "plateaus_later",
               "gain_after_trial", "stuck_epochs", "overfit", "overfit_epoch", "unconfirmed",
               "transient_rises", "best_minus_last"]  # fmt: skip
    if plateau.empty and overfitting.empty:
        return pd.DataFrame(columns=columns)
    p = plateau.assign(
        epoch=plateau["plateau_epoch"].astype(float),
        later=plateau["run_plateau_epoch"].notna() & plateau["plateau_epoch"].isna(),
    ).groupby("cell_id")
    o = overfitting.assign(
        epoch=overfitting["overfit_epoch"].astype(float),
        unconfirmed=overfitting["unconfirmed_onset_epoch"].astype(float),
    ).groupby("cell_id")
    out = pd.DataFrame(
        {
            "seeds": p.size(),
            "plateaued": p["epoch"].count(),
            "plateau_epoch": p["epoch"].median(),
            "plateaus_later": p["later"].sum(),
            "gain_after_trial": p["gain_after_trial"].median(),
            "stuck_epochs": p["stuck_epochs"].max(),
            "overfit": o["epoch"].count(),
            "overfit_epoch": o["epoch"].median(),
            "unconfirmed": o["unconfirmed"].count(),
            "transient_rises": o["transient_rises"].sum(),
            "best_minus_last": o["best_minus_last"].median(),
        }
    )
    return out.rename_axis("cell_id").reset_index()[columns]


def class_scores(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per trial, at its own (last) epoch: the per-class IoU columns of ``metric``'s split
    (``val_iou_c0``, ``val_iou_c1``, ...) and its mean IoU (``val_miou``); and with a test
    split, ``test_at_best``: the test score at the epoch validation picks as best.

    Binary studies from before per-class columns were recorded get background IoU from
    mIoU = (background + foreground) / 2.
    """
    split = "test" if metric.startswith("test_") else "val"
    name = metric.split("_", 1)[1] if metric.startswith(("val_", "test_", "train_")) else metric
    keys = list(TRIAL_KEY)
    if curves.empty:
        return pd.DataFrame(columns=keys)
    c = curves.sort_values([*keys, "epoch"])
    last = c.groupby(keys, sort=True).tail(1).set_index(keys)
    per_class = sorted(
        (col for col in c.columns if col.startswith(f"{split}_iou_c") and c[col].notna().any()),
        key=lambda col: int(col.rsplit("c", 1)[1]),
    )
    out = last[per_class].copy()
    miou = f"{split}_miou"
    if miou in last.columns and last[miou].notna().any():
        out[miou] = last[miou]
        binary = f"{split}_iou" in last.columns and not per_class
        if binary:
            out[f"{split}_iou_c1"] = last[f"{split}_iou"]
            out[f"{split}_iou_c0"] = 2 * last[miou] - last[f"{split}_iou"]
    val, test = f"val_{name}", f"test_{name}"
    if split == "val" and test in c.columns and c[test].notna().any():
        v = c.dropna(subset=[val])
        grouped = v.groupby(keys, sort=True)[val]
        pick = grouped.idxmax() if higher_is_better(val) else grouped.idxmin()
        out["test_at_best"] = v.loc[pick.to_numpy()].set_index(keys)[test]
    return out.reset_index()


def _cells_with_extras(
    final: pd.DataFrame,
    collapse: pd.DataFrame,
    extras: pd.DataFrame,
    metric: str,
    params,
    factors: Sequence[str],
) -> pd.DataFrame:
    """The cells table with ``collapsed`` (collapsed seeds), per-class IoU means and, with
    a test split, the test score at the best validation epoch with its interval."""
    cells = cells_table(final, metric, params, factors)
    flags = final.merge(collapse[[*TRIAL_KEY, "collapsed"]], on=list(TRIAL_KEY), how="left")
    count = flags.groupby("cell_id")["collapsed"].sum().astype(int)
    cells["collapsed"] = cells["cell_id"].map(count).fillna(0).astype(int)
    if extras.empty or len(extras.columns) <= len(TRIAL_KEY):
        return cells
    per_trial = final[list(TRIAL_KEY)].merge(extras, on=list(TRIAL_KEY), how="left")
    score_cols = [c for c in extras.columns if c not in (*TRIAL_KEY, "test_at_best")]
    means = per_trial.groupby("cell_id")[score_cols].mean()
    cells = cells.join(means, on="cell_id")
    if "test_at_best" in per_trial.columns:
        test = interval_frame(
            per_trial.dropna(subset=["test_at_best"]), ["cell_id"], "test_at_best", params,
            bounds=metric_bounds(metric),
        ).set_index("cell_id")  # fmt: skip
        for stat in ("mean", "ci_low", "ci_high"):
            cells[f"test_at_best_{stat}"] = cells["cell_id"].map(test[stat])
    return cells


def _grid_levels(data: StudyData) -> dict[str, list] | None:
    factors = data.grid.get("factors")
    return {k: list(v) for k, v in factors.items()} if isinstance(factors, dict) else None


def compute_tables(data: StudyData) -> ReportTables:
    """All tables from the ``ok`` trials; plateau and overfitting need curves."""
    metric, params = data.metric, data.params
    curve_metric = metric if metric in data.curves.columns else DEFAULT_METRIC
    collapse = collapse_table(data.final, data.baselines, metric, params, data.factors)
    final = data.final.merge(collapse[[*TRIAL_KEY, "collapsed"]], on=list(TRIAL_KEY), how="left")
    final["collapsed"] = final["collapsed"].fillna(False).astype(bool)
    cells = _cells_with_extras(
        data.final, collapse, class_scores(data.curves, curve_metric), metric, params,
        data.factors,
    )
    healthy = cells[cells["collapsed"] == 0]
    plateau = plateau_table(
        data.curves, curve_metric, params, baselines=data.baselines, factors=data.factors
    )
    overfitting = overfitting_table(data.curves, curve_metric, params, data.factors)
    anova = anova_table(data.final, "final", data.factors)
    bounds = metric_bounds(metric)
    # note: a power law of 1 − metric only means something for scores in [0, 1]
    unit = higher_is_better(metric) and bounds == (0.0, 1.0)
    return ReportTables(
        metric=metric,
        final=final,
        cells=cells,
        collapse=collapse,
        recommendations=recommendations_table(cells, metric, params),
        anova=anova,
        importance=omega_sq_bootstrap(data.final, anova, "final", params),
        main_effects=main_effects_table(data.final, params, metric, data.factors),
        plateau=plateau,
        overfitting=overfitting,
        curves_by_cell=curves_by_cell(plateau, overfitting),
        edges=edges_table(healthy, plateau, _grid_levels(data), metric, params=params),
        batch=batch_comparison_table(data.curves, curve_metric, params, factors=data.factors),
        batch_differences=batch_difference_table(data.curves, curve_metric, params, data.factors),
        critical_batch=critical_batch_table(
            data.curves, curve_metric, data.baselines, params, data.factors
        ),
        claims=claims_table(data),
        pareto=pareto_table(healthy, higher_is_better(metric), costs=pareto_costs(data.ok)),
        scaling=scaling_table(healthy if unit else cells.iloc[0:0], params),
        detectable=detectable_difference(data.final, bounds, params),
        isolation=get_isolation_info(data) if grid_nuisance(data.grid) else None,
    )

