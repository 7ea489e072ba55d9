"""Per-cell summaries over seeds, with the t intervals of :mod:`analysis.stats` on the
metric's scale."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.load import FACTORS
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better, interval_frame, metric_bounds
from gridrun.layout import DEFAULT_METRIC

__all__ = ["cell_factors", "cells_table", "extra_factors"]

_COSTS: tuple[str, ...] = ("best_epoch", "steps", "train_time_s", "peak_mem_mb")


def cell_factors(cells: pd.DataFrame) -> list[str]:
    """The factor columns of a :func:`cells_table` (those before ``cell_id``; none in a
    table without one)."""
    if "cell_id" not in cells.columns:
        return []
    return list(cells.columns[: cells.columns.get_loc("cell_id")])


def extra_factors(cells: pd.DataFrame) -> list[str]:
    """The factors of a :func:`cells_table` beyond the four (settings by dotted path)."""
    return [f for f in cell_factors(cells) if f not in FACTORS]


def cells_table(
    final: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """One row per cell from :func:`analysis.load.final_metrics` rows.

    Columns: the ``factors`` (a study's :attr:`~analysis.load.StudyData.factors`; the
    four always, the others where ``final`` has them), ``cell_id``, ``n`` (seeds),
    mean/std/interval of the ``final`` and ``best`` metric (``final_mean``,
    ``final_std``, ``final_ci_low``, ...; no interval below ``params.min_seeds`` seeds),
    and the seed means of ``best_epoch``, ``steps``, ``train_time_s`` and
    ``peak_mem_mb``. Sorted best cell first.
    """
    stats_cols = [
        f"{p}_{s}" for p in ("final", "best") for s in ("mean", "std", "ci_low", "ci_high")
    ]
    factors = [f for f in factors if f in FACTORS or f in final.columns]
    columns = [*factors, "cell_id", "n", *stats_cols, *_COSTS]
    if final.empty:
        return pd.DataFrame(columns=columns)
    out = final.groupby("cell_id", sort=True)[factors].first()
    bounds = metric_bounds(metric)
    for prefix in ("final", "best"):
        summary = interval_frame(final, ["cell_id"], prefix, params, bounds=bounds)
        summary = summary.set_index("cell_id")
        if prefix == "final":
            out["n"] = summary["n"]
        for stat in ("mean", "std", "ci_low", "ci_high"):
            out[f"{prefix}_{stat}"] = summary[stat]
    out = out.join(final.groupby("cell_id")[list(_COSTS)].mean())
    out = out.reset_index()[columns]
    ascending = not higher_is_better(metric)
    return out.sort_values("final_mean", ascending=ascending, kind="stable").reset_index(drop=True)
