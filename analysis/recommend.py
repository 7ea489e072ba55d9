"""What to use: per image size, the cheapest cell that is as good as the best one.

A cell *qualifies* when its mean metric is within ``Params.margin`` of the best cell of
its image size and a one-sided Welch t-test over seeds does not find it worse (p ≥
``Params.alpha``). Among the qualifying cells the cheapest is picked twice: by measured
train time and by optimizer steps. Fewer steps are no saving when they take longer (a
smaller batch per step is not a cheaper step), so the pick by steps never takes more
measured train time than the best cell; without such a cell it is the best cell itself.
Cells with a collapsed seed (the cells table's ``collapsed`` column, where present) are
never recommended, nor the best cell the others are measured against. When no cell of
an image size is significantly worse than its best, the grid cannot separate them, and
the table says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.cells import extra_factors
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import format_interval, format_p, higher_is_better, welch_worse_p
from gridrun.layout import DEFAULT_METRIC

__all__ = ["COST_NAMES", "recommendation_sentences", "recommendations_table"]

COST_NAMES: dict[str, str] = {"train_time_s": "train time", "steps": "steps"}
# note: what "cheaper" means for each cost, as the sentences state it
_CHEAPER: dict[str, str] = {
    "train_time_s": "a lower train time",
    "steps": "fewer steps and no more train time",
}
RECOMMENDATION_COLUMNS: list[str] = [
    "image_size", "by", "cell_id", "dataset_size", "epochs", "batch_size", "n", "mean",
    "ci_low", "ci_high", "best_cell_id", "best_mean", "gap", "p_worse", "cost", "best_cost",
    "cost_ratio", "qualifying", "cells", "separable",
]  # fmt: skip


def _candidates(
    g: pd.DataFrame, best: pd.Series, cost: str, qualifies: np.ndarray
) -> pd.DataFrame:
    """The qualifying cells with a measured ``cost``; by steps only those that take no
    more train time than the best cell where both times are measured."""
    keep = qualifies & g[cost].notna().to_numpy()
    if cost == "steps" and pd.notna(best["train_time_s"]):
        keep &= ~(g["train_time_s"] > best["train_time_s"]).to_numpy()
    return g[keep]


def _group(g: pd.DataFrame, metric: str, params: Params, extra: list[str]) -> list[dict]:
    sign = 1.0 if higher_is_better(metric) else -1.0
    if "collapsed" in g.columns:
        g = g[~(g["collapsed"].fillna(0) > 0)]
    g = g.dropna(subset=["final_mean"])
    if g.empty:
        return []
    best = g.loc[(sign * g["final_mean"]).idxmax()]
    gap = sign * (best["final_mean"] - g["final_mean"])
    p = welch_worse_p(
        g["final_mean"], g["final_std"].fillna(0.0), g["n"],
        best["final_mean"], 0.0 if pd.isna(best["final_std"]) else best["final_std"], best["n"],
        higher_is_better(metric),
    )  # fmt: skip
    worse = p < params.alpha
    # note: a tiny tolerance so that a gap of exactly the margin qualifies
    qualifies = (gap.to_numpy() <= params.margin + 1e-12) & ~worse
    rows = []
    for cost in COST_NAMES:
        candidates = _candidates(g, best, cost, qualifies)
        if candidates.empty or pd.isna(best[cost]):
            continue
        pick_at = candidates.sort_values([cost, "final_mean"], ascending=[True, sign < 0]).index[0]
        pick, i = g.loc[pick_at], g.index.get_loc(pick_at)
        rows.append(
            {
                "image_size": best["image_size"],
                "by": cost,
                "cell_id": pick["cell_id"],
                **{f: pick[f] for f in ("dataset_size", "epochs", "batch_size", *extra)},
                "n": pick["n"],
                "mean": pick["final_mean"],
                "ci_low": pick["final_ci_low"],
                "ci_high": pick["final_ci_high"],
                "best_cell_id": best["cell_id"],
                "best_mean": best["final_mean"],
                "gap": float(gap.iloc[i]),
                # note: the best cell is not tested against itself
                "p_worse": np.nan if pick_at == best.name else float(p[i]),
                "cost": pick[cost],
                "best_cost": best[cost],
                "cost_ratio": pick[cost] / best[cost] if best[cost] else np.nan,
                "qualifying": int(qualifies.sum()),
                "cells": len(g),
                "separable": bool(worse.any()),
            }
        )
    return rows


def recommendations_table(
    cells: pd.DataFrame, metric: str = DEFAULT_METRIC, params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """Two rows per image size (``by`` = ``train_time_s`` and ``steps``) from
    :func:`analysis.cells.cells_table`; columns are documented in the README (a study's
    factors beyond the four follow ``batch_size``)."""
    extra = extra_factors(cells)
    rows = [
        row
        for _, g in cells.groupby("image_size", sort=True)
        for row in _group(g.reset_index(drop=True), metric, params, extra)
    ]
    at = RECOMMENDATION_COLUMNS.index("batch_size") + 1
    columns = [*RECOMMENDATION_COLUMNS[:at], *extra, *RECOMMENDATION_COLUMNS[at:]]
    return pd.DataFrame(rows, columns=columns)


def _picks(g: pd.DataFrame) -> str:
    """``by train time X at 0.31× its train time; by steps the best cell itself``."""
    parts = []
    for _, row in g.iterrows():
        what = COST_NAMES[row["by"]]
        if row["cell_id"] == row["best_cell_id"]:
            parts.append(f"by {what} the best cell itself")
        else:
            parts.append(f"by {what} {row['cell_id']} at {row['cost_ratio']:.2g}× its {what}")
    return "; ".join(parts)


def _use(size, g: pd.DataFrame, metric: str, margin: str) -> str:
    """The sentence for an image size whose grid separates cells: lead with the pick by
    the first cost (train time when measured), then say what the other cost picks."""
    lead, rest = g.iloc[0], g.iloc[1:]
    what = COST_NAMES[lead["by"]]
    value = format_interval(lead["mean"], lead["ci_low"], lead["ci_high"])
    if lead["cell_id"] == lead["best_cell_id"]:
        same = rest[rest["cell_id"] == lead["cell_id"]]
        rest = rest[rest["cell_id"] != lead["cell_id"]]
        text = (
            f"Image size {size}: use the best cell, {lead['cell_id']} ({metric} {value}); no "
            f"cell with {_CHEAPER[lead['by']]} is {margin} it and not significantly worse"
        )
        text += "".join(f", nor any with {_CHEAPER[by]}" for by in same["by"])
    else:
        text = (
            f"Image size {size}: use {lead['cell_id']} ({metric} {value}), {margin} the best "
            f"cell {lead['best_cell_id']} ({lead['best_mean']:.3f}) and not significantly worse "
            f"(one-sided Welch {format_p(lead['p_worse'])}), at {lead['cost_ratio']:.2g}× its "
            f"{what}"
        )
    for _, other in rest.iterrows():
        other_what = COST_NAMES[other["by"]]
        if other["cell_id"] == lead["cell_id"]:
            text += f" and {other['cost_ratio']:.2g}× its {other_what}"
        elif other["cell_id"] == other["best_cell_id"]:
            text += f"; by {other_what} the best cell itself is the cheapest"
        else:
            text += (
                f"; by {other_what}, {other['cell_id']} qualifies at "
                f"{other['cost_ratio']:.2g}× its {other_what}"
            )
    return text + "."


def recommendation_sentences(
    table: pd.DataFrame, metric: str, params: Params = DEFAULT_PARAMS
) -> list[str]:
    """One sentence per image size, the answer to "what should I use" first."""
    out = []
    margin = f"within {params.margin:g} of"
    for size, g in table.groupby("image_size", sort=True):
        first = g.iloc[0]
        best = f"{first['best_cell_id']} ({metric} {first['best_mean']:.3f})"
        if first["n"] < 2:
            out.append(
                f"Image size {size}: one seed per cell, so no test can tell cells apart; "
                f"{margin} the best cell {best}, the cheapest is {_picks(g)}."
            )
        elif not first["separable"]:
            out.append(
                f"Image size {size}: the grid cannot separate its {first['cells']} cells — none "
                f"is significantly worse than the best, {best}; {margin} it the cheapest is "
                f"{_picks(g)}."
            )
        else:
            out.append(_use(size, g, metric, margin))
    return out
