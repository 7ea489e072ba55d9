"""Per-cell summaries over seeds, with t-based 95% confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.load import FACTORS

__all__ = ["cells_table", "mean_ci"]


def mean_ci(values: pd.Series | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the Student-t confidence interval of the mean; NaN bounds for n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, mean - half, mean + half


def _summary(x: pd.Series, prefix: str) -> dict[str, float]:
    mean, lo, hi = mean_ci(x)
    std = float(x.std(ddof=1)) if x.notna().sum() >= 2 else np.nan
    return {
        f"{prefix}_mean": mean,
        f"{prefix}_std": std,
        f"{prefix}_ci_low": lo,
        f"{prefix}_ci_high": hi,
    }


def cells_table(final: pd.DataFrame, higher_better: bool = True) -> pd.DataFrame:
    """One row per cell from :func:`analysis.load.final_metrics` rows.

    Columns: the factors, ``cell_id``, ``n`` (seeds), mean/std/95% CI of the
    ``final`` and ``best`` metric, and the seed means of ``best_epoch``,
    ``steps``, ``train_time_s`` and ``peak_mem_mb``. Sorted best cell first
    (``higher_better`` says which way is best).
    """
    rows = []
    for cell_id, g in final.groupby("cell_id", sort=True):
        rows.append(
            {
                "cell_id": cell_id,
                **{f: g[f].iloc[0] for f in FACTORS},
                "n": len(g),
                **_summary(g["final"], "final"),
                **_summary(g["best"], "best"),
                "best_epoch": g["best_epoch"].mean(),
                "steps": g["steps"].mean(),
                "train_time_s": g["train_time_s"].mean(),
                "peak_mem_mb": g["peak_mem_mb"].mean(),
            }
        )
    stats_cols = [
        f"{p}_{s}" for p in ("final", "best") for s in ("mean", "std", "ci_low", "ci_high")
    ]
    columns = [
        *FACTORS,
        "cell_id",
        "n",
        *stats_cols,
        "best_epoch",
        "steps",
        "train_time_s",
        "peak_mem_mb",
    ]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values("final_mean", ascending=not higher_better, kind="stable").reset_index(
        drop=True
    )
