"""The report's tables, computed from a run's data, and the sentences that sum them up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.anova import AnovaResult, anova_table
from analysis.cells import cells_table
from analysis.load import FACTORS, RunData, final_metrics, higher_is_better
from analysis.overfitting import overfitting_table
from analysis.pareto import pareto_table
from analysis.plateau import plateau_table
from analysis.scaling import scaling_table

__all__ = ["ReportTables", "compute_tables", "summarize"]


@dataclass(frozen=True)
class ReportTables:
    """Every table of the report; ``final`` is one row per analysed trial."""

    final: pd.DataFrame
    cells: pd.DataFrame
    anova: AnovaResult
    plateau: pd.DataFrame
    overfitting: pd.DataFrame
    pareto: pd.DataFrame
    scaling: pd.DataFrame

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        return {
            "cells": self.cells,
            "anova": self.anova.table,
            "plateau": self.plateau,
            "overfitting": self.overfitting,
            "pareto": self.pareto,
            "scaling": self.scaling,
        }


def compute_tables(data: RunData) -> ReportTables:
    """All tables from the ``ok`` trials; plateau and overfitting need curves."""
    higher = higher_is_better(data.metric)
    final = final_metrics(data)
    cells = cells_table(final, higher)
    curve_metric = data.metric if data.metric in data.curves.columns else "val_iou"
    return ReportTables(
        final=final,
        cells=cells,
        anova=anova_table(final, "final"),
        plateau=plateau_table(data.curves, curve_metric),
        overfitting=overfitting_table(data.curves, curve_metric),
        pareto=pareto_table(cells, higher),
        # note: a power law of 1 − metric only means something for IoU-like scores
        scaling=scaling_table(cells) if higher else scaling_table(cells.iloc[0:0]),
    )


def _cell_label(row: pd.Series) -> str:
    return ", ".join(f"{f}={int(row[f])}" for f in FACTORS)


def _cell_sentence(kind: str, row: pd.Series, metric: str) -> str:
    ci = ""
    if not np.isnan(row["final_ci_low"]):
        ci = f" (95% CI {row['final_ci_low']:.3f}–{row['final_ci_high']:.3f})"
    return (
        f"{kind} cell: {_cell_label(row)}: {metric} {row['final_mean']:.3f}{ci}"
        f" over {int(row['n'])} seed(s)"
    )


def _anova_sentences(anova: AnovaResult) -> list[str]:
    effects = anova.table[anova.table["term"] != "Residual"]
    if effects.empty:
        return ["ANOVA skipped: no factor varies or there are too few trials."]
    significant = effects[effects["p_value"] < 0.05]
    if significant.empty:
        return ["no factor or interaction is significant at p < 0.05."]
    large = significant[significant["omega_sq"] >= 0.01].sort_values("omega_sq", ascending=False)
    out = [
        f"{r.term} explains {r.omega_sq:.0%} of the variance "
        f"(ω² {r.omega_sq:.2f}, partial η² {r.partial_eta_sq:.2f}, p={r.p_value:.1g})"
        for r in large.head(4).itertuples()
    ]
    rest = significant[~significant["term"].isin(large.head(4)["term"])]
    if len(rest):
        out.append(f"also significant (p < 0.05) with smaller effects: {', '.join(rest['term'])}")
    return out


def _curve_sentences(tables: ReportTables, metric: str) -> list[str]:
    out = []
    plateau, over = tables.plateau, tables.overfitting
    if len(plateau):
        found = plateau["plateau_epoch"].notna()
        if found.any():
            p = plateau[found]
            out.append(
                f"{found.mean():.0%} of trials plateau, at median epoch "
                f"{p['plateau_epoch'].median():.0f} with {p['epochs_after_plateau'].median():.0f} "
                f"epochs after it gaining a median {p['gain_after_plateau'].median():+.3f}"
            )
        else:
            out.append("no trial plateaus: every validation curve still improves at its end.")
    if len(over):
        onset = over["overfit_epoch"].dropna()
        out.append(
            f"{len(onset)} of {len(over)} trials overfit (GL > 5 while training loss falls)"
            + (f", median onset epoch {onset.median():.0f}" if len(onset) else "")
            + f"; stopping at the best epoch keeps a median {over['best_minus_last'].median():.3f}"
            f" {metric}"
        )
    return out


def _cost_sentences(tables: ReportTables, metric: str) -> list[str]:
    out = []
    front = tables.pareto[tables.pareto["on_time_frontier"]].sort_values("train_time_s")
    if len(front) >= 2:
        lo, hi = front.iloc[0], front.iloc[-1]
        out.append(
            f"time frontier: {len(front)} cells, from {lo['train_time_s']:.0f} s ({metric} "
            f"{lo['final_mean']:.3f}) to {hi['train_time_s']:.0f} s ({hi['final_mean']:.3f})"
        )
    scaling = tables.scaling
    if len(scaling):
        threshold = scaling["doubling_below_1pt_at"].median()
        smallest, largest = scaling["min_size"].min(), scaling["max_size"].max()
        # note: outside the measured sizes the power law is an extrapolation; say so
        if threshold <= smallest:
            where = f"a doubling gains < 1 point already from the smallest size ({smallest:.0f})"
        elif threshold <= largest:
            where = f"past ~{threshold:.0f} images a doubling gains < 1 point"
        else:
            where = (
                f"a doubling past the largest size measured ({largest:.0f}) still gains a "
                f"median {100 * scaling['doubling_gain_at_max'].median():.1f} points"
            )
        out.append(f"data scaling: median exponent {scaling['exponent'].median():.2f}; {where}")
    return out


def summarize(data: RunData, tables: ReportTables) -> list[str]:
    """Short sentences for the terminal, most important first."""
    metric = data.metric
    n_cells = tables.final["cell_id"].nunique()
    findings = [f"{len(tables.final)} trials analysed over {n_cells} cells ({metric})."]
    findings += data.notes
    dropped = len(data.ok) - len(tables.final)
    if dropped:
        findings.append(f"{dropped} ok trials have no final {metric} and were left out.")
    cells = tables.cells
    if len(cells):
        findings.append(_cell_sentence("best", cells.iloc[0], metric))
    if len(cells) > 1:
        findings.append(_cell_sentence("worst", cells.iloc[-1], metric))
    if len(tables.final):
        findings += _anova_sentences(tables.anova)
    findings += _curve_sentences(tables, metric)
    findings += _cost_sentences(tables, metric)
    return findings
