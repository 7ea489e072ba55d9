"""The critical batch size of McCandlish et al. 2018 (*An Empirical Model of Large-Batch
Training*): the steps S and the examples E = B·S needed to reach a target score trade off
as (S/S_min − 1)(E/E_min − 1) = 1, that is S(B) = S_min + E_min / B. Below the critical
batch size B_crit = E_min / S_min, doubling the batch nearly halves the steps; above it,
it mostly doubles the examples. Fitted per group of runs that differ only in batch size
(:mod:`analysis.batch`) with at least ``MIN_BATCH_LEVELS`` batch sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm

from analysis.baselines import Baselines
from analysis.batch import MIN_BATCH_LEVELS, group_keys, group_label, run_curves
from analysis.load import FACTORS
from analysis.params import DEFAULT_PARAMS, Params
from analysis.plateau import smooth_runs
from analysis.stats import higher_is_better
from gridrun.layout import DEFAULT_METRIC

__all__ = [
    "TradeoffFit",
    "critical_batch_sentences",
    "critical_batch_table",
    "fit_tradeoff",
    "steps_to_target_table",
]


STEPS_COLUMNS_TAIL: list[str] = [
    "batch_size", "seed", "floor", "floor_from", "target", "steps", "examples", "first_epoch",
]  # fmt: skip


def _crossing(steps: np.ndarray, values: np.ndarray, target: float) -> tuple[float, bool]:
    """The first step at which ``values`` (signed: higher is better) reach ``target``,
    linearly interpolated between epochs; NaN if never. True when already at the first
    epoch, where the step is an upper bound."""
    hit = np.flatnonzero(values >= target)
    if not len(hit):
        return np.nan, False
    i = int(hit[0])
    if i == 0:
        return float(steps[0]), True
    frac = (target - values[i - 1]) / (values[i] - values[i - 1])
    return float(steps[i - 1] + frac * (steps[i] - steps[i - 1])), False


def steps_to_target_table(
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    baselines: Baselines | None = None,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """Per group with ≥ 3 batch sizes (:func:`analysis.batch.group_keys` of ``factors``),
    per (batch size, seed): the optimizer ``steps``
    and ``examples`` (batch size × steps) to reach the group's ``target``.

    Each run's curve is smoothed by the plateau rule's centred ``params.window``-epoch
    median (:func:`analysis.plateau.smooth_centred`) and read at the first crossing of
    the target, interpolated linearly in steps between epochs (``first_epoch``: reached
    by the first epoch, the step is an upper bound; NaN steps: never reached). The target
    lies ``params.target_fraction`` of the way from ``floor`` to the weakest batch
    size's best mean (smoothed, over seeds); ``floor`` is the best trivial predictor's
    score (``floor_from`` names it) or, without baselines for the metric, the group's
    lowest first-epoch mean. A group whose weakest batch size never beats the floor has
    no target (NaN).
    """
    runs = run_curves(curves, metric, factors)
    keys = group_keys(runs, factors)
    sign = 1.0 if higher_is_better(metric) else -1.0
    trivial = baselines.best(metric) if baselines is not None else None
    rows = []
    if runs.empty:
        return pd.DataFrame(rows, columns=[*keys, *STEPS_COLUMNS_TAIL])
    # note: runs are sorted by group, batch size, seed and epoch: each run is contiguous
    run_of = runs.groupby([*keys, "batch_size", "seed"], sort=False).ngroup().to_numpy()
    bounds = np.r_[0, np.flatnonzero(np.diff(run_of)) + 1, len(runs)]
    smooth = smooth_runs(runs[metric].to_numpy(float), bounds, params.window)
    smooth = sign * smooth
    runs = runs.assign(_smooth=smooth)
    step, batch, seeds = (runs[c].to_numpy() for c in ("step", "batch_size", "seed"))
    step = step.astype(float)
    # note: every group at once; a key with a null value is in no group, as in groupby
    by_group = runs.groupby(keys, sort=True)
    levels = by_group["batch_size"].nunique()
    by_batch = [*keys, "batch_size"]
    mean_curve = runs.groupby([*by_batch, "epoch"])["_smooth"].mean()
    weakest = mean_curve.groupby(level=by_batch).max().groupby(level=keys).min()
    weakest = weakest.reindex(levels.index).to_numpy()
    if trivial is None:
        first = runs["epoch"] == runs.groupby(by_batch)["epoch"].transform("min")
        firsts = runs[first].groupby(by_batch)[metric].mean().mul(sign)
        floors = firsts.groupby(level=keys).min().reindex(levels.index).to_numpy()
    group_of = by_group.ngroup().to_numpy()[bounds[:-1]]
    order = np.argsort(group_of, kind="stable")
    run_bounds = np.c_[bounds[:-1], bounds[1:]][order]
    at = np.searchsorted(group_of[order], np.arange(len(levels) + 1))
    for g, (key, count) in enumerate(levels.items()):
        if count < MIN_BATCH_LEVELS:
            continue
        key = key if isinstance(key, tuple) else (key,)
        weak = weakest[g]
        if trivial is not None:
            floor_from, floor = trivial[0], sign * trivial[1]
        else:
            floor_from, floor = "first epoch", floors[g]
        target = floor + params.target_fraction * (weak - floor) if weak > floor else np.nan
        for start, end in run_bounds[at[g] : at[g + 1]]:
            b, seed = batch[start], seeds[start]
            steps, first_epoch = _crossing(step[start:end], smooth[start:end], target)
            rows.append(
                [*key, b, seed, sign * floor, floor_from, sign * target, steps, b * steps,
                 first_epoch]  # fmt: skip
            )
    return pd.DataFrame(rows, columns=[*keys, *STEPS_COLUMNS_TAIL])


@dataclass(frozen=True)
class TradeoffFit:
    """S(B) = s_min + e_min / B; ``b_crit`` = e_min / s_min with its percentile interval;
    ``why`` says why there is no fit (empty when there is one)."""

    s_min: float
    e_min: float
    b_crit: float
    ci_low: float
    ci_high: float
    r2: float
    why: str = ""


def _bootstrap_bcrit(batch: np.ndarray, steps: np.ndarray, params: Params) -> tuple[float, float]:
    """Percentile interval of B_crit refitted on seeds resampled within batch sizes.

    The design (1/B per point) is the same in every resample, so each refit is a
    weighted sum of the resampled per-batch step totals. A resample with S_min ≤ 0 has
    no serial floor (B_crit = ∞); one with E_min ≤ 0 gains nothing from batching (0).
    """
    x = 1.0 / batch
    xbar, sxx = x.mean(), float(((x - x.mean()) ** 2).sum())
    rng = np.random.default_rng(params.rng_seed)
    slope, total = np.zeros(params.n_boot_bcrit), np.zeros(params.n_boot_bcrit)
    for b in np.unique(batch):
        y = steps[batch == b]
        sums = y[rng.integers(0, len(y), size=(params.n_boot_bcrit, len(y)))].sum(axis=1)
        slope += (1.0 / b - xbar) * sums / sxx
        total += sums
    intercept = total / len(steps) - slope * xbar
    with np.errstate(divide="ignore", invalid="ignore"):
        b_crit = np.where(intercept > 0, slope / intercept, np.inf)
    b_crit = np.where(slope <= 0, 0.0, b_crit)
    tail = (1.0 - params.level) / 2
    return float(np.quantile(b_crit, tail, method="lower")), float(
        np.quantile(b_crit, 1.0 - tail, method="higher")
    )


def fit_tradeoff(
    batch: np.ndarray, steps: np.ndarray, params: Params = DEFAULT_PARAMS
) -> TradeoffFit:
    """Least squares (statsmodels OLS) of steps on 1 / batch over per-seed points.

    The interval resamples seeds within batch sizes (``params.n_boot_bcrit`` resamples, RNG
    seed ``params.rng_seed``); none when a batch size has fewer than
    ``params.min_seeds`` seeds.
    """
    batch, steps = np.asarray(batch, dtype=float), np.asarray(steps, dtype=float)
    levels, counts = np.unique(batch, return_counts=True)
    if len(levels) < MIN_BATCH_LEVELS:
        return TradeoffFit(*[np.nan] * 6, why=f"{len(levels)} batch sizes; the fit needs ≥ 3")
    fit = sm.OLS(steps, sm.add_constant(1.0 / batch)).fit()
    s_min, e_min = (float(v) for v in fit.params)
    r2 = float(fit.rsquared)
    if e_min <= 0:
        why = (
            f"non-positive E_min ({e_min:.3g}): the steps do not fall with the batch size, "
            "so B_crit lies below the smallest batch measured"
        )
        return TradeoffFit(s_min, e_min, np.nan, np.nan, np.nan, r2, why)
    if s_min <= 0:
        why = (
            f"non-positive S_min ({s_min:.3g}): the steps fall as fast as 1 / batch size, "
            "so B_crit lies beyond the largest batch measured"
        )
        return TradeoffFit(s_min, e_min, np.nan, np.nan, np.nan, r2, why)
    lo, hi = np.nan, np.nan
    if counts.min() >= max(params.min_seeds, 2):
        lo, hi = _bootstrap_bcrit(batch, steps, params)
    return TradeoffFit(s_min, e_min, e_min / s_min, lo, hi, r2)


CRITICAL_COLUMNS_TAIL: list[str] = [
    "batch_sizes", "levels", "floor", "floor_from", "target", "points", "unreached",
    "first_epoch", "s_min", "e_min", "b_crit", "ci_low", "ci_high", "r2", "why",
]  # fmt: skip


def critical_batch_table(
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    baselines: Baselines | None = None,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """One row per group with two or more batch sizes (:func:`analysis.batch.group_keys`
    of ``factors``): McCandlish et al.'s fit of the
    steps to the target (:func:`steps_to_target_table`) against the batch size.

    Columns: the group's factors, ``batch_sizes`` (text) and ``levels``, ``floor``,
    ``floor_from`` and ``target``, ``points`` fitted (batch size × seed), ``unreached``
    (seeds that never reach the target, left out), ``first_epoch`` (points reached by
    the first epoch: upper bounds), ``s_min`` (steps), ``e_min`` (examples), ``b_crit``
    with ``ci_low``/``ci_high``, ``r2`` of the fit on the points, and ``why`` when there
    is no fit: fewer than 3 batch sizes, no target, a batch size that never reaches the
    target, or a non-positive S_min or E_min.
    """
    runs = run_curves(curves, metric, factors)
    keys = group_keys(runs, factors)
    points = steps_to_target_table(curves, metric, baselines, params, factors)
    # note: each group's points as arrays, split once (a lookup per group is slow)
    split = {k if isinstance(k, tuple) else (k,): p for k, p in points.groupby(keys, sort=True)}
    rows = []
    for key, levels in runs.groupby(keys, sort=True)["batch_size"].unique().items():
        batches = sorted(int(b) for b in levels)
        if len(batches) < 2:
            continue
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key, strict=True))
        row |= {"batch_sizes": ", ".join(map(str, batches)), "levels": len(batches)}
        row |= dict.fromkeys(CRITICAL_COLUMNS_TAIL[2:-1], np.nan) | {"why": ""}
        if len(batches) < MIN_BATCH_LEVELS:
            row["why"] = f"{len(batches)} batch sizes; the fit needs ≥ {MIN_BATCH_LEVELS}"
            rows.append(row)
            continue
        p = split[key]
        floor, floor_from, target = (p[c].iat[0] for c in ("floor", "floor_from", "target"))
        row |= {"floor": floor, "floor_from": floor_from, "target": target}
        steps = p["steps"].to_numpy(float)
        reached = ~np.isnan(steps)
        batch = p["batch_size"].to_numpy()[reached]
        row |= {"points": int(reached.sum()), "unreached": int((~reached).sum())}
        row["first_epoch"] = int(p["first_epoch"].to_numpy()[reached].sum())
        never = sorted(set(batches) - set(batch.astype(int)))
        if np.isnan(target):
            row["why"] = f"the weakest batch size never beats the floor ({floor_from})"
        elif never:
            row["why"] = (
                f"batch {', '.join(map(str, never))} never reaches the target "
                f"{target:.3f}"
            )
        else:
            fit = fit_tradeoff(batch, steps[reached], params)
            row |= {
                "s_min": fit.s_min, "e_min": fit.e_min, "b_crit": fit.b_crit,
                "ci_low": fit.ci_low, "ci_high": fit.ci_high, "r2": fit.r2, "why": fit.why,
            }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *CRITICAL_COLUMNS_TAIL])


def _count(v: float) -> str:
    return "∞" if np.isinf(v) else f"{v:.3g}"


def critical_batch_sentences(table: pd.DataFrame, metric: str) -> list[str]:
    """One sentence per group of :func:`critical_batch_table` with ≥ 3 batch sizes."""
    out = []
    keys = list(table.columns[: table.columns.get_loc(CRITICAL_COLUMNS_TAIL[0])])
    # note: rows as Series, as a setting's dotted path is no tuple field name
    for _, r in table[table["levels"] >= MIN_BATCH_LEVELS].iterrows():
        where = group_label(keys, tuple(r[k] for k in keys))
        head = f"Critical batch size ({where}; batches {r.batch_sizes}"
        if r.why:
            out.append(f"{head}): cannot be fitted — {r.why}.")
            continue
        value = _count(r.b_crit)
        if not np.isnan(r.ci_low):
            value += f" [{_count(r.ci_low)}, {_count(r.ci_high)}]"
        largest = int(r.batch_sizes.split(", ")[-1])
        text = (
            f"{head}; steps to {metric} {r.target:.3f}, fitted as S = S_min + E_min / B, "
            f"McCandlish et al. 2018): B_crit ≈ {value} (S_min {r.s_min:.0f} steps, E_min "
            f"{r.e_min:.0f} examples, R² {r.r2:.2f}); below it doubling the batch nearly "
            "halves the steps, above it mostly doubles the examples"
        )
        if r.b_crit > largest:
            text += f"; it lies beyond the largest batch measured ({largest}): extrapolated"
        out.append(text + ".")
    return out
