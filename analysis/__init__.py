"""Results in, tables and pictures out. Never imports ray, nor any of gridrun but its
``layout``, ``claims`` (the claim language), ``painting`` (the overlay painter TensorBoard
uses too) and ``storage`` (every study file it reads or writes, on a local disk or
behind a URI).

    import analysis
    run = analysis.load("runs/quick")                 # StudyData: the tables, split
    cells = analysis.cells_table(run.final, run.metric)
    analysis.recommendations_table(cells, run.metric)
    analysis.plot_learning_curves(run)                # a matplotlib Figure
    analysis.write_report("runs/quick")               # runs/quick/report/index.html

Every analysis is a pure function returning a DataFrame; every ``plot_*`` returns a
Figure and is split, Optuna-style, into a pure ``get_*_info`` and a thin
``get_*_plot``. Thresholds live in one :class:`Params`; "higher is better", the
metric's range and the interval over seeds live in :mod:`analysis.stats`.
"""

from analysis.anova import anova_table, omega_sq_bootstrap
from analysis.baselines import Baselines
from analysis.batch import batch_comparison_table, batch_difference_table, plot_batch_steps
from analysis.cells import cells_table
from analysis.claims import claims_table, judge_claims
from analysis.collapse import collapse_table
from analysis.critical_batch import critical_batch_table
from analysis.edges import edges_table
from analysis.findings import ReportTables, compute_tables
from analysis.importance import importance_table, plot_factor_importance
from analysis.interactions import plot_interactions
from analysis.learning_curves import plot_learning_curves
from analysis.load import FACTORS, AnalysisInputError, StudyData, final_metrics, load
from analysis.main_effects import main_effects_table, plot_main_effects
from analysis.overfitting import overfitting_table
from analysis.overlays import plot_overlays
from analysis.parallel import plot_parallel_coordinates
from analysis.params import Params
from analysis.pareto import pareto_table, plot_pareto
from analysis.plateau import plateau_table
from analysis.recommend import recommendation_sentences, recommendations_table
from analysis.report import Report, write_report
from analysis.scaling import scaling_table
from analysis.stats import (
    detectable_difference,
    higher_is_better,
    interval_frame,
    mean_interval,
    metric_bounds,
)
from analysis.summary import summarize

__all__ = [
    "AnalysisInputError",
    "Baselines",
    "FACTORS",
    "Params",
    "Report",
    "ReportTables",
    "StudyData",
    "anova_table",
    "batch_comparison_table",
    "batch_difference_table",
    "cells_table",
    "claims_table",
    "collapse_table",
    "compute_tables",
    "critical_batch_table",
    "detectable_difference",
    "edges_table",
    "final_metrics",
    "higher_is_better",
    "importance_table",
    "interval_frame",
    "judge_claims",
    "load",
    "main_effects_table",
    "mean_interval",
    "metric_bounds",
    "omega_sq_bootstrap",
    "overfitting_table",
    "pareto_table",
    "plateau_table",
    "plot_batch_steps",
    "plot_factor_importance",
    "plot_interactions",
    "plot_learning_curves",
    "plot_main_effects",
    "plot_overlays",
    "plot_parallel_coordinates",
    "plot_pareto",
    "recommendation_sentences",
    "recommendations_table",
    "scaling_table",
    "summarize",
    "write_report",
]
