"""Factor importance: each ANOVA term's ω² (the share of the metric's variance it
explains) as a bar, with its bootstrap interval from resampling training runs (a run's
trials together, so trials read off one run are not counted as independent)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.anova import anova_table, omega_sq_bootstrap
from analysis.load import FACTORS, StudyData
from analysis.params import DEFAULT_PARAMS, Params

__all__ = [
    "importance_table",
    "plot_factor_importance",
    "get_importance_info",
    "get_importance_plot",
]

MAX_TERMS = 12


def importance_table(
    final: pd.DataFrame, params: Params = DEFAULT_PARAMS, factors: Sequence[str] = FACTORS
) -> pd.DataFrame:
    """``term, omega_sq, ci_low, ci_high, p_value`` for every ANOVA term of ``factors``
    (a study's :attr:`StudyData.factors`), largest first; ``p_value`` from the term's
    stratum (between or within training runs, see :func:`analysis.anova.anova_table`)."""
    return omega_sq_bootstrap(final, anova_table(final, "final", factors), "final", params)


def get_importance_info(importance: pd.DataFrame, limit: int = MAX_TERMS) -> pd.DataFrame:
    """The ``limit`` largest terms, smallest first (the order bars are drawn bottom-up)."""
    return importance.head(limit).iloc[::-1].reset_index(drop=True)


def get_importance_plot(info: pd.DataFrame, metric: str, total: int, params: Params) -> Figure:
    fig = Figure(figsize=(9, 1.1 + 0.34 * max(len(info), 1)), layout="constrained")
    ax = fig.subplots()
    ys = np.arange(len(info))
    has_ci = info["ci_low"].notna().to_numpy()
    colors = np.where(info["p_value"].to_numpy(float) < params.alpha, "tab:blue", "0.65")
    ax.barh(ys, info["omega_sq"], color=colors)
    lo = (info["omega_sq"] - info["ci_low"]).clip(lower=0).to_numpy()
    hi = (info["ci_high"] - info["omega_sq"]).clip(lower=0).to_numpy()
    ax.errorbar(info["omega_sq"][has_ci], ys[has_ci], xerr=[lo[has_ci], hi[has_ci]],
                fmt="none", ecolor="black", capsize=3, lw=1)  # fmt: skip
    ax.set_yticks(ys, info["term"], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"ω² (share of the variance of final {metric})")
    shown = f", top {len(info)} of {total} terms" if total > len(info) else ""
    why = (
        f"whiskers: {params.level:.0%} bootstrap over training runs"
        if has_ci.any()
        else "no interval: one seed"
    )
    ax.set_title(
        f"factor importance{shown}\nblue: p < {params.alpha:g}, grey: not significant; {why}",
        fontsize=9,
    )
    return fig


def plot_factor_importance(run: StudyData) -> Figure:
    """Bar chart of the ω² of every ANOVA term of ``run``, with intervals."""
    table = importance_table(run.final, run.params, run.factors)
    return get_importance_plot(
        get_importance_info(table), run.metric, len(table), run.params
    )
