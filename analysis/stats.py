"""What a metric means and how sure we are of it: the one home of "higher is better",
the metric's range, the interval over seeds and the Welch test between cells.

Intervals are percentile bootstraps of the mean over seeds. A percentile bootstrap
interval lies between the smallest and the largest seed, so an IoU interval can never
leave [0, 1], whatever the spread; a t interval on three seeds of 0.97, 0.99, 1.0
would. The resamples come from an RNG with a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.params import DEFAULT_PARAMS, Params

__all__ = [
    "decimals",
    "format_interval",
    "format_p",
    "higher_is_better",
    "interval_frame",
    "mean_interval",
    "metric_bounds",
    "seed_mean_intervals",
    "welch_worse_p",
]

_UNIT_INTERVAL = ("iou", "dice", "precision", "recall", "acc", "f1")


def higher_is_better(metric: str) -> bool:
    """Losses fall as training improves; every other metric (IoU, Dice, ...) rises."""
    return "loss" not in metric


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values live in: [0, 1] for IoU-type scores, [0, ∞) for losses."""
    if "loss" in metric:
        return 0.0, math.inf
    if any(word in metric for word in _UNIT_INTERVAL):
        return 0.0, 1.0
    return -math.inf, math.inf


def _bootstrap(values: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds of the mean for each row of ``values`` (groups × seeds)."""
    n = values.shape[1]
    # note: one resample matrix per group size, seeded by (rng_seed, n), so a cell's
    # interval does not depend on which other cells are in the table
    rng = np.random.default_rng([params.rng_seed, n])
    draws = rng.integers(0, n, size=(params.n_boot, n))
    weights = np.zeros((params.n_boot, n))
    np.add.at(weights, (np.arange(params.n_boot)[:, None], draws), 1.0 / n)
    means = values @ weights.T
    tail = (1.0 - params.level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail], axis=1)
    return lo, hi


def _intervals(groups: list[np.ndarray], params: Params) -> np.ndarray:
    """Rows of (n, mean, ci_low, ci_high, std) for each group of seed values."""
    out = np.full((len(groups), 5), np.nan)
    clean = [g[~np.isnan(g)] for g in groups]
    sizes = np.array([len(g) for g in clean])
    for i, g in enumerate(clean):
        out[i, 0] = len(g)
        if len(g):
            out[i, 1] = g.mean()
        if len(g) >= 2:
            out[i, 4] = g.std(ddof=1)
    for n in np.unique(sizes[sizes >= max(params.min_seeds, 2)]):
        rows = np.flatnonzero(sizes == n)
        lo, hi = _bootstrap(np.stack([clean[i] for i in rows]), params)
        out[rows, 2], out[rows, 3] = lo, hi
    return out


def mean_interval(
    values: pd.Series | np.ndarray, params: Params = DEFAULT_PARAMS
) -> tuple[float, float, float]:
    """Mean and its bootstrap interval over seeds; NaN bounds below ``params.min_seeds``."""
    row = _intervals([np.asarray(values, dtype=float)], params)[0]
    return float(row[1]), float(row[2]), float(row[3])


def interval_frame(
    df: pd.DataFrame, by: list[str], value: str, params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """One row per group of ``by``: ``n, mean, std, ci_low, ci_high`` of ``value``."""
    columns = [*by, "n", "mean", "std", "ci_low", "ci_high"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    keys, groups = [], []
    for key, g in df.groupby(by, sort=True)[value]:
        keys.append(key if isinstance(key, tuple) else (key,))
        groups.append(g.to_numpy(dtype=float))
    rows = _intervals(groups, params)
    out = pd.DataFrame(keys, columns=by)
    out["n"] = rows[:, 0].astype(int)
    out["mean"], out["std"] = rows[:, 1], rows[:, 4]
    out["ci_low"], out["ci_high"] = rows[:, 2], rows[:, 3]
    return out[columns]


def seed_mean_intervals(
    final: pd.DataFrame, by: list[str], params: Params = DEFAULT_PARAMS, value: str = "final"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metric per level combination of ``by``, averaged over the other factors within
    each seed, then over seeds: ``(intervals, per_seed)``.

    ``intervals`` has ``by, n, mean, std, ci_low, ci_high`` (``n`` counts seeds);
    ``per_seed`` has ``by, seed, value``, the points a plot shows when there are too few
    seeds for an interval.
    """
    per_seed = final.groupby([*by, "seed"], sort=True)[value].mean().rename("value")
    per_seed = per_seed.reset_index()
    return interval_frame(per_seed, by, "value", params), per_seed


def welch_worse_p(
    mean: np.ndarray,
    std: np.ndarray,
    n: np.ndarray,
    ref_mean: float,
    ref_std: float,
    ref_n: int,
    higher_better: bool = True,
) -> np.ndarray:
    """One-sided Welch t-test p-values that each cell is worse than the reference cell.

    Small p: the cell is significantly worse. NaN where either side has fewer than two
    seeds. Two cells without spread are compared exactly: p is 0 if worse, else 1.
    """
    mean, std, n = (np.asarray(a, dtype=float) for a in (mean, std, n))
    diff = (mean - ref_mean) * (1.0 if higher_better else -1.0)
    va, vb = std**2 / n, ref_std**2 / ref_n
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (ref_n - 1))
        p = stats.t.cdf(diff / se, dof)
    exact = se == 0
    p = np.where(exact, np.where(diff < 0, 0.0, 1.0), p)
    return np.where((n < 2) | (ref_n < 2), np.nan, p)


def decimals(width: float, default: int = 3) -> int:
    """Decimal places that show an interval of ``width`` to two significant digits."""
    if not np.isfinite(width) or width <= 0:
        return default
    return int(min(6, max(0, 1 - math.floor(math.log10(width)))))


def format_interval(mean: float, lo: float, hi: float, default: int = 3) -> str:
    """``0.712 [0.701, 0.724]``, rounded to what the interval supports; the mean alone
    (at ``default`` decimals) without one."""
    if np.isnan(mean):
        return ""
    if np.isnan(lo) or np.isnan(hi):
        return f"{mean:.{default}f}"
    d = decimals(hi - lo, default)
    return f"{mean:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def format_p(p: float) -> str:
    """``p = 0.031``, or ``p < 0.001`` where two digits would read as zero."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
