"""The report's tables, computed once from a study, and the sentences that sum them up."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.anova import anova_table, omega_sq_bootstrap
from analysis.cells import cells_table
from analysis.load import RunData
from analysis.main_effects import main_effects_table
from analysis.overfitting import overfitting_table
from analysis.params import Params
from analysis.pareto import pareto_table
from analysis.plateau import plateau_table
from analysis.recommend import recommendation_sentences, recommendations_table
from analysis.scaling import MIN_SIZES, scaling_table
from analysis.stats import format_interval, format_p, higher_is_better, metric_bounds

__all__ = ["ReportTables", "compute_tables", "curves_by_cell", "lead_count", "summarize"]

MAX_LEAD = 4  # recommendation sentences on the first screen; the table has every size


@dataclass(frozen=True)
class ReportTables:
    """Every table of the report; ``final`` is one row per analysed trial."""

    final: pd.DataFrame
    cells: pd.DataFrame
    recommendations: pd.DataFrame
    anova: pd.DataFrame
    importance: pd.DataFrame
    main_effects: pd.DataFrame
    plateau: pd.DataFrame
    overfitting: pd.DataFrame
    curves_by_cell: pd.DataFrame
    pareto: pd.DataFrame
    scaling: pd.DataFrame
    metric_name: str = "metric"

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        return {
            "recommendations": self.recommendations,
            "cells": self.cells,
            "anova": self.anova,
            "importance": self.importance,
            "main_effects": self.main_effects,
            "plateau": self.plateau,
            "overfitting": self.overfitting,
            "curves_by_cell": self.curves_by_cell,
            "pareto": self.pareto,
            "scaling": self.scaling,
        }


def curves_by_cell(plateau: pd.DataFrame, overfitting: pd.DataFrame) -> pd.DataFrame:
    """Per cell: ``seeds``, ``plateaued`` (seeds with a plateau), ``plateau_epoch``
    (median), ``overfit`` (seeds with an onset), ``overfit_epoch`` (median),
    ``transient_rises`` (sum) and ``best_minus_last`` (median)."""
    columns = ["cell_id", "seeds", "plateaued", "plateau_epoch", "overfit", "overfit_epoch",
               "transient_rises", "best_minus_last"]  # fmt: skip
    if plateau.empty and overfitting.empty:
        return pd.DataFrame(columns=columns)
    p = plateau.assign(epoch=plateau["plateau_epoch"].astype(float)).groupby("cell_id")
    o = overfitting.assign(epoch=overfitting["overfit_epoch"].astype(float)).groupby("cell_id")
    out = pd.DataFrame(
        {
            "seeds": p.size(),
            "plateaued": p["epoch"].count(),
            "plateau_epoch": p["epoch"].median(),
            "overfit": o["epoch"].count(),
            "overfit_epoch": o["epoch"].median(),
            "transient_rises": o["transient_rises"].sum(),
            "best_minus_last": o["best_minus_last"].median(),
        }
    )
    return out.rename_axis("cell_id").reset_index()[columns]


def compute_tables(data: RunData) -> ReportTables:
    """All tables from the ``ok`` trials; plateau and overfitting need curves."""
    metric, params, final = data.metric, data.params, data.final
    cells = cells_table(final, metric, params)
    curve_metric = metric if metric in data.curves.columns else "val_iou"
    plateau = plateau_table(data.curves, curve_metric, params)
    overfitting = overfitting_table(data.curves, curve_metric, params)
    anova = anova_table(final, "final")
    # note: a power law of 1 − metric only means something for scores in [0, 1]
    unit = higher_is_better(metric) and metric_bounds(metric) == (0.0, 1.0)
    return ReportTables(
        final=final,
        cells=cells,
        recommendations=recommendations_table(cells, metric, params),
        anova=anova,
        importance=omega_sq_bootstrap(final, anova, "final", params),
        main_effects=main_effects_table(final, params),
        plateau=plateau,
        overfitting=overfitting,
        curves_by_cell=curves_by_cell(plateau, overfitting),
        pareto=pareto_table(cells, higher_is_better(metric)),
        scaling=scaling_table(cells if unit else cells.iloc[0:0]),
        metric_name=metric,
    )


def _importance_sentences(tables: ReportTables, params: Params) -> list[str]:
    """Every significant term whose ω² reaches ``params.min_omega_sq``, largest first;
    the smaller significant terms in one closing sentence."""
    effects = tables.importance
    if effects.empty:
        return ["ANOVA skipped: no factor varies or there are too few trials."]
    unit = tables.anova.attrs.get("unit", "")
    significant = effects[effects["p_value"] < params.alpha]
    if significant.empty:
        return [f"No factor or interaction is significant at p < {params.alpha:g}. {unit}".strip()]
    named = significant[significant["omega_sq"] >= params.min_omega_sq]
    out = []
    parts = [
        f"{r.term} {r.omega_sq:.0%} (ω² {format_interval(r.omega_sq, r.ci_low, r.ci_high, 2)}, "
        f"{format_p(r.p_value)})"
        for r in named.itertuples()
    ]
    if parts:
        out.append(
            f"What matters, as shares of the variance of final {tables.metric_name}: "
            + "; ".join(parts)
            + "."
            + (f" {unit}" if unit else "")
        )
    rest = significant[significant["omega_sq"] < params.min_omega_sq]
    if len(rest):
        out.append(
            f"Also significant (p < {params.alpha:g}), each under {params.min_omega_sq:.0%} "
            f"of the variance: {', '.join(rest['term'])}."
        )
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
                f"{p['plateau_epoch'].median():.0f}, gaining a median "
                f"{p['gain_after_plateau'].median():+.3f} {metric} after it."
            )
        else:
            out.append("No trial plateaus: every validation curve still improves at its end.")
    if len(over):
        onset = over["overfit_epoch"].dropna()
        transient = int(over["transient_rises"].sum())
        text = f"{len(onset)} of {len(over)} trials overfit"
        if len(onset):
            text += f" (median onset epoch {onset.median():.0f})"
        if transient:
            text += f"; {transient} transient rises of the validation loss were ignored"
        out.append(
            f"{text}; stopping at the best epoch keeps a median "
            f"{over['best_minus_last'].median():.3f} {metric}."
        )
    return out


def _gap_sentence(tables: ReportTables, metric: str, params: Params) -> list[str]:
    """The train − validation gap of the metric at each trial's own epoch, where it is
    large: by image size, the range of the cells' mean gaps."""
    over = tables.overfitting.dropna(subset=["train_val_gap"])
    if over.empty or not higher_is_better(metric):
        return []
    by_cell = over.groupby(["image_size", "cell_id"])["train_val_gap"].mean().reset_index()
    widest = by_cell.groupby("image_size")["train_val_gap"].agg(["min", "max"])
    big = widest[widest["max"] >= params.notable_gap]
    if big.empty:
        return []
    parts = [
        f"{lo:.2f}–{hi:.2f} at {size} px" if hi - lo >= 0.005 else f"{hi:.2f} at {size} px"
        for size, (lo, hi) in big.iterrows()
    ]
    return [
        f"Train − validation gap of {metric} at the cells' own epochs (cell means): "
        f"{'; '.join(parts)}. A gap this size means the model fits its training images "
        "much better than unseen ones."
    ]


def _scaling_sentence(tables: ReportTables) -> list[str]:
    scaling, sizes = tables.scaling, tables.cells["dataset_size"].nunique()
    if scaling.empty:
        if sizes >= MIN_SIZES:
            return []
        return [
            f"No data-scaling fit: it needs ≥ {MIN_SIZES} data set sizes; the grid has {sizes}."
        ]
    r2 = scaling["r2"].median()
    text = (
        f"Data scaling (power law of 1 − metric over {len(scaling)} groups, median R² "
        f"{r2:.2f}): median exponent {scaling['exponent'].median():.2f}"
    )
    where = scaling["threshold"].value_counts()
    if where.get("in range", 0) * 2 > len(scaling):
        at = scaling["doubling_below_1pt_at"].median()
        text += f"; past ~{at:.0f} images a doubling gains < 1 point"
    elif where.get("beyond range", 0) * 2 > len(scaling):
        text += (
            f"; in {where['beyond range']} groups even the largest measured doubling gains ≥ 1 "
            "point, so more data would likely help (not extrapolated)"
        )
    else:
        text += "; within the measured sizes every doubling gains < 1 point"
    if r2 < 0.8:
        text += "; the law fits poorly, so read it with care"
    return [text + "."]


def _cost_sentence(tables: ReportTables, metric: str) -> list[str]:
    front = tables.pareto[tables.pareto["on_time_frontier"]].sort_values("train_time_s")
    if len(front) < 2:
        return []
    lo, hi = front.iloc[0], front.iloc[-1]
    return [
        f"Time frontier: {len(front)} cells, from {lo['train_time_s']:.0f} s ({metric} "
        f"{lo['final_mean']:.3f}) to {hi['train_time_s']:.0f} s ({hi['final_mean']:.3f})."
    ]


def _best_sentence(cells: pd.DataFrame, metric: str) -> str:
    row = cells.iloc[0]
    value = format_interval(row["final_mean"], row["final_ci_low"], row["final_ci_high"])
    return f"Best cell: {row['cell_id']}, {metric} {value} over {int(row['n'])} seed(s)."


def _lead(tables: ReportTables, metric: str, params: Params) -> list[str]:
    """A recommendation per image size; with many sizes, those of the best cells."""
    rec = tables.recommendations
    sentences = recommendation_sentences(rec, metric, params)
    if len(sentences) <= MAX_LEAD:
        return sentences
    sizes = sorted(rec["image_size"].unique())
    best = rec.groupby("image_size")["best_mean"].first()
    top = set(best.sort_values(ascending=not higher_is_better(metric)).index[: MAX_LEAD - 1])
    kept = [s for size, s in zip(sizes, sentences, strict=True) if size in top]
    rest = len(sizes) - len(kept)
    return [*kept, f"The other {rest} image sizes: see the Recommendations table."]


def lead_count(tables: ReportTables) -> int:
    """How many of :func:`summarize`'s first findings are recommendations."""
    return min(tables.recommendations["image_size"].nunique(), MAX_LEAD)


def summarize(data: RunData, tables: ReportTables) -> list[str]:
    """Short sentences for the terminal and the report's first screen, most useful first:
    the recommendations, the best cell, what matters, the curves, then caveats."""
    metric, params, cells = data.metric, data.params, tables.cells
    findings = _lead(tables, metric, params)
    if len(cells):
        findings.append(_best_sentence(cells, metric))
    if len(tables.final):
        findings += _importance_sentences(tables, params)
    findings += _curve_sentences(tables, metric)
    findings += _gap_sentence(tables, metric, params)
    findings += _scaling_sentence(tables)
    findings += _cost_sentence(tables, metric)
    few = int((cells["n"] < params.min_seeds).sum()) if len(cells) else 0
    if few:
        findings.append(
            f"{few} of {len(cells)} cells have fewer than {params.min_seeds} seeds: no interval "
            "is drawn for them (too few seeds to estimate one); plots show their seeds as points."
        )
    findings += data.notes
    dropped = len(data.ok) - len(tables.final)
    if dropped:
        findings.append(f"{dropped} ok trials have no final {metric} and were left out.")
    findings.append(f"{len(tables.final)} trials analysed over {cells['cell_id'].nunique()} cells.")
    return findings
