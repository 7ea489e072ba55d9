"""What a metric means and how sure we are of it: the one home of "higher is better",
the metric's range, the interval over seeds, the Welch test between cells and the
smallest difference the seeds can detect.

Intervals are Student t intervals of the mean over seeds, computed on a scale fitted to
the metric's range and transformed back: the logit for scores in [0, 1] (seed values
clipped to [0.001, 0.999] first), the log for values in [0, ∞) (losses, times), the
values themselves otherwise. So an IoU interval stays inside (0, 1) and is as wide as
three seeds warrant; a percentile bootstrap over three seeds returns about their range,
which covers the true mean about three times in four. The point estimate is the
arithmetic mean of the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis.params import DEFAULT_PARAMS, Params
from gridrun.layout import FACTORS

__all__ = [
    "DetectableDifference",
    "decimals",
    "detectable_difference",
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


_CLIP = 1e-3  # how close to a bound of the metric a seed value may sit on the interval's scale


def _to_scale(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """The scale the t interval is computed on: logit for a range bounded on both sides,
    log of the distance to the one finite bound, the values themselves for none."""
    lo, hi = bounds
    if np.isfinite(lo) and np.isfinite(hi):
        u = np.clip((values - lo) / (hi - lo), _CLIP, 1.0 - _CLIP)
        return np.log(u / (1.0 - u))
    if np.isfinite(lo):
        return np.log(np.maximum(values - lo, _CLIP))
    if np.isfinite(hi):
        return np.log(np.maximum(hi - values, _CLIP))
    return values


def _from_scale(z: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    lo, hi = bounds
    if np.isfinite(lo) and np.isfinite(hi):
        return lo + (hi - lo) / (1.0 + np.exp(-z))
    if np.isfinite(lo):
        return lo + np.exp(z)
    if np.isfinite(hi):
        return hi - np.exp(z)
    return z


def _t_bounds(
    values: np.ndarray, bounds: tuple[float, float], level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Student t bounds of the mean of each row of ``values`` (groups × seeds), computed on
    the metric's scale (see :func:`_to_scale`) and transformed back."""
    n = values.shape[1]
    z = _to_scale(values, bounds)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * z.std(axis=1, ddof=1) / math.sqrt(n)
    ends = [_from_scale(z.mean(axis=1) + sign * half, bounds) for sign in (-1.0, 1.0)]
    if bounds[1] < math.inf and not np.isfinite(bounds[0]):
        ends.reverse()  # note: distance to an upper bound falls as the value rises
    # note: seeds tied at a clipped value (an IoU of 0.000 in every seed) give an interval
    # at the clip value; it is widened to hold the mean, the point the table reports
    mean = values.mean(axis=1)
    return np.minimum(ends[0], mean), np.maximum(ends[1], mean)


def _intervals(
    groups: list[np.ndarray], bounds: tuple[float, float], params: Params
) -> np.ndarray:
    """Rows of (n, mean, ci_low, ci_high, std) for each group of seed values."""
    clean = [g[~np.isnan(g)] for g in groups]
    sizes = np.array([len(g) for g in clean], dtype=int)
    flat = np.concatenate(clean) if clean else np.empty(0)
    return _packed_intervals(flat, sizes, bounds, params)


def _packed_intervals(
    flat: np.ndarray, sizes: np.ndarray, bounds: tuple[float, float], params: Params
) -> np.ndarray:
    """:func:`_intervals` of groups packed one after another in ``flat`` (no NaNs),
    ``sizes[i]`` values each; groups of one size are computed together."""
    out = np.full((len(sizes), 5), np.nan)
    out[:, 0] = sizes
    starts = np.cumsum(sizes) - sizes
    for n in np.unique(sizes[sizes > 0]):
        rows = np.flatnonzero(sizes == n)
        values = flat[starts[rows, None] + np.arange(n)]
        out[rows, 1] = values.mean(axis=1)
        if n >= 2:
            out[rows, 4] = values.std(axis=1, ddof=1)
        if n >= max(params.min_seeds, 2):
            out[rows, 2], out[rows, 3] = _t_bounds(values, bounds, params.level)
    return out


def mean_interval(
    values: pd.Series | np.ndarray,
    params: Params = DEFAULT_PARAMS,
    *,
    bounds: tuple[float, float],
) -> tuple[float, float, float]:
    """Mean and its t interval over seeds on the scale of ``bounds`` (see module doc); NaN
    bounds below ``params.min_seeds``."""
    row = _intervals([np.asarray(values, dtype=float)], bounds, params)[0]
    return float(row[1]), float(row[2]), float(row[3])


def interval_frame(
    df: pd.DataFrame,
    by: list[str],
    value: str,
    params: Params = DEFAULT_PARAMS,
    *,
    bounds: tuple[float, float],
) -> pd.DataFrame:
    """One row per group of ``by``: ``n, mean, std, ci_low, ci_high`` of ``value``, the
    interval over the group's rows on the scale of ``bounds``."""
    columns = [*by, "n", "mean", "std", "ci_low", "ci_high"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    grouped = df.groupby(by, sort=True)
    code = grouped.ngroup().fillna(-1).to_numpy(dtype=int)
    keys = grouped.size().index
    values = df[value].to_numpy(dtype=float)
    keep = (code >= 0) & ~np.isnan(values)
    order = np.argsort(code[keep], kind="stable")
    sizes = np.bincount(code[keep], minlength=len(keys))
    rows = _packed_intervals(values[keep][order], sizes, bounds, params)
    out = keys.to_frame(index=False, name=by) if len(by) > 1 else pd.DataFrame({by[0]: keys})
    out["n"] = rows[:, 0].astype(int)
    out["mean"], out["std"] = rows[:, 1], rows[:, 4]
    out["ci_low"], out["ci_high"] = rows[:, 2], rows[:, 3]
    return out[columns]


def seed_mean_intervals(
    final: pd.DataFrame,
    by: list[str],
    params: Params = DEFAULT_PARAMS,
    value: str = "final",
    *,
    bounds: tuple[float, float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metric per level combination of ``by``, averaged over the other factors within
    each seed, then over seeds: ``(intervals, per_seed)``.

    ``intervals`` has ``by, n, mean, std, ci_low, ci_high`` (``n`` counts seeds);
    ``per_seed`` has ``by, seed, value``, the points a plot shows when there are too few
    seeds for an interval.
    """
    per_seed = final.groupby([*by, "seed"], sort=True)[value].mean().rename("value")
    per_seed = per_seed.reset_index()
    return interval_frame(per_seed, by, "value", params, bounds=bounds), per_seed


@dataclass(frozen=True)
class DetectableDifference:
    """The smallest difference between two cells' mean metrics that a two-sided t test
    over their seeds finds at level ``alpha`` with probability ``power``.

    ``pooled_sd``: the within-cell SD of the seeds, pooled over cells (``df`` = Σ(n − 1)
    degrees of freedom); ``seeds``: the most common seed count of a cell, the ``n`` of each
    side of the test. NaN ``difference`` when no cell has two seeds.
    """

    difference: float
    pooled_sd: float
    seeds: int
    df: int
    alpha: float
    power: float

    def sentence(self, metric: str) -> str:
        if not np.isfinite(self.difference):
            return f"With one seed per cell no difference in {metric} can be tested."
        return (
            f"With {self.seeds} seeds per cell and a seed-to-seed SD of {self.pooled_sd:.2g}, "
            f"two cells' mean {metric} must differ by at least {self.difference:.2g} for a "
            f"t test to tell them apart ({self.power:.0%} power, two-sided "
            f"{self.alpha:g} level); closer cells cannot be told apart."
        )


def _detectable(sd: float, n: int, alpha: float, power: float) -> float:
    """Solve power(δ) = ``power`` for a two-sided t test of two groups of ``n``."""
    dof = 2 * (n - 1)
    crit = stats.t.ppf(1 - alpha / 2, dof)
    se = sd * math.sqrt(2 / n)

    def shortfall(delta: float) -> float:
        nc = delta / se
        reached = stats.nct.sf(crit, dof, nc) + stats.nct.cdf(-crit, dof, nc)
        return reached - power

    upper = se * (crit + stats.norm.ppf(power) + 1.0)
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-12 * upper))


def detectable_difference(
    final: pd.DataFrame, bounds: tuple[float, float], params: Params = DEFAULT_PARAMS
) -> DetectableDifference:
    """:class:`DetectableDifference` of the ``final`` metric of one row per trial.

    The test compares two cells of the typical seed count with the pooled seed SD taken
    as their SD, so it has 2(n − 1) degrees of freedom; a difference beyond the width of
    the metric's range (``bounds``) is reported as that width's worth: no two cells of
    such a grid can be told apart.
    """
    clean = final.dropna(subset=["final"])
    by = ["cell_id"] if "cell_id" in clean.columns else [f for f in FACTORS if f in clean]
    groups = clean.groupby(by)["final"]
    n = groups.size()
    dof = int((n - 1).sum())
    sd = float(math.sqrt(groups.var(ddof=1).fillna(0).mul(n - 1).sum() / dof)) if dof else np.nan
    seeds = int(n.mode().max()) if len(n) else 0
    if not dof or seeds < 2:
        return DetectableDifference(np.nan, sd, seeds, dof, params.alpha, params.power)
    width = bounds[1] - bounds[0]
    delta = min(_detectable(sd, seeds, params.alpha, params.power), width) if sd > 0 else 0.0
    return DetectableDifference(delta, sd, seeds, dof, params.alpha, params.power)


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
