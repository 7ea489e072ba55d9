"""Batch size read at equal epochs and at equal optimizer steps, and the critical batch size.

With one learning rate for every batch size, batch 2 takes twice the optimizer steps of
batch 4 per epoch, so a comparison at equal epochs mixes the batch size with the number
of updates (the Tuning Playbook's epoch budget against its step budget). Batch sizes are
therefore read both ways, per *group*: the training runs that differ only in batch size
(same image size, data set size and every other factor but epochs). A group's *run* per
(batch size, seed) is its longest recorded curve: the longest trial of each training
run, and of runs that do not share epochs the longest.

McCandlish et al. 2018 (*An Empirical Model of Large-Batch Training*): the steps S and
the examples E = B·S needed to reach a target score trade off as
(S/S_min − 1)(E/E_min − 1) = 1, that is S(B) = S_min + E_min / B. Below the critical
batch size B_crit = E_min / S_min, doubling the batch nearly halves the steps; above it,
it mostly doubles the examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from matplotlib.figure import Figure
from scipy import stats

from analysis.baselines import Baselines
from analysis.figures import BaselineLine, draw_baselines, log_axis, panel_grid
from analysis.load import FACTORS, RunData
from analysis.params import DEFAULT_PARAMS, Params
from analysis.plateau import smooth_centred
from analysis.stats import format_interval, higher_is_better, interval_frame, metric_bounds

__all__ = [
    "StepsInfo",
    "StepsPanel",
    "TradeoffFit",
    "batch_comparison_table",
    "batch_difference_table",
    "batch_rule",
    "batch_sentences",
    "critical_batch_sentences",
    "critical_batch_table",
    "fit_tradeoff",
    "lr_text",
    "plot_batch_steps",
    "steps_to_target_table",
]

COMPARISONS: tuple[str, ...] = ("equal epochs", "equal steps")
MIN_BATCH_LEVELS = 3
MAX_PANELS = 6
_RUN = "_run"


def _group_keys(df: pd.DataFrame) -> list[str]:
    """The factors a group of runs shares: all but ``epochs`` and ``batch_size``."""
    return [f for f in FACTORS if f not in ("epochs", "batch_size") and f in df.columns]


def _group_label(keys: list[str], values: tuple) -> str:
    """``image 128, dataset 24``."""
    return ", ".join(f"{k.removesuffix('_size')} {v}" for k, v in zip(keys, values, strict=True))


def _runs(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One curve per (group, batch_size, seed) with ``epoch``, ``step`` and ``metric``.

    Without a ``step`` column steps are epoch × ⌈dataset_size / batch_size⌉, as the
    runner counts them (the last partial batch kept).
    """
    keys = _group_keys(curves)
    columns = [*keys, "batch_size", "seed", "epoch", "step", metric]
    if curves.empty or metric not in curves.columns:
        return pd.DataFrame(columns=columns)
    c = curves.dropna(subset=[metric]).copy()
    own = c["cell_id"].astype(str) + "/" + c["seed"].astype(str)
    run = c["training_run"] if "training_run" in c.columns else pd.Series(None, index=c.index)
    c[_RUN] = run.where(run.notna(), own).astype(str)
    computed = c["epoch"] * np.ceil(c["dataset_size"] / c["batch_size"])
    c["step"] = c["step"].fillna(computed) if "step" in c.columns else computed
    # note: the longest trial of a run holds the run's whole curve; the others repeat it
    ends = c.groupby([_RUN, "cell_id", "seed"], sort=False)["epoch"].max().reset_index()
    ends = ends.sort_values("epoch", kind="stable").groupby(_RUN).tail(1)
    c = c.merge(ends[["cell_id", "seed"]], on=["cell_id", "seed"])
    per_key = c.groupby([*keys, "batch_size", "seed", _RUN], sort=False)["epoch"].max()
    longest = per_key.reset_index().sort_values("epoch", kind="stable")
    longest = longest.groupby([*keys, "batch_size", "seed"]).tail(1)
    c = c[c[_RUN].isin(longest[_RUN])]
    return c.sort_values([*keys, "batch_size", "seed", "epoch"], ignore_index=True)[columns]


def _readings(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per group with two or more batch sizes, comparison, batch size and seed: the
    metric at the comparison's budget, with the ``epoch`` and ``step`` read at."""
    runs = _runs(curves, metric)
    keys = _group_keys(runs)
    columns = [*keys, "comparison", "budget", "batch_size", "seed", "epoch", "step", metric]
    parts = []
    for _, g in runs.groupby(keys, sort=True):
        if g["batch_size"].nunique() < 2:
            continue
        ends = g.groupby(["batch_size", "seed"])[["epoch", "step"]].max()
        for comparison, col in zip(COMPARISONS, ("epoch", "step"), strict=True):
            budget = ends[col].min()
            at = g[g[col] <= budget].groupby(["batch_size", "seed"]).tail(1)
            parts.append(at.assign(comparison=comparison, budget=budget))
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def batch_comparison_table(
    curves: pd.DataFrame,
    metric: str = "val_iou",
    params: Params = DEFAULT_PARAMS,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Per group of runs that differ only in batch size, per comparison and batch size:
    the metric over seeds at an equal budget.

    ``equal epochs``: at ``budget``, the largest epoch every run of the group reached.
    ``equal steps``: at ``budget``, the largest optimizer step count every run of the
    group reached, each run read at its last epoch whose step is at most the budget; no
    interpolation is done, so a run may be read up to one epoch's steps short of it.
    Columns: the group's factors, ``comparison``, ``budget``, ``batch_size``, ``epoch``
    and ``step`` read at (the smallest over seeds), ``n`` seeds, ``mean``, ``std``,
    ``ci_low``, ``ci_high`` (the interval of :func:`analysis.stats.interval_frame`
    within ``bounds``, the metric's range by default). Only groups with two or more
    batch sizes appear.
    """
    readings = _readings(curves, metric)
    keys = _group_keys(readings)
    by = [*keys, "comparison", "budget", "batch_size"]
    columns = [*by, "epoch", "step", "n", "mean", "std", "ci_low", "ci_high"]
    if readings.empty:
        return pd.DataFrame(columns=columns)
    bounds = metric_bounds(metric) if bounds is None else bounds
    summary = interval_frame(readings, by, metric, params, bounds=bounds)
    at = readings.groupby(by, sort=True)[["epoch", "step"]].min().reset_index()
    return summary.merge(at, on=by)[columns]


DIFFERENCE_COLUMNS: list[str] = [
    "comparison", "budget_low", "budget_high", "groups", "best_batch", "batch_size", "n",
    "best_mean", "other_mean", "diff", "ci_low", "ci_high", "p_value", "best_step",
    "other_step", "best_epoch", "other_epoch",
]  # fmt: skip


def _paired(diffs: pd.Series, params: Params) -> tuple[float, float, float, float]:
    """Mean, Student t interval and two-sided p of per-seed differences; no interval
    (NaN) below ``params.min_seeds`` seeds."""
    d = diffs.to_numpy(float)
    mean = float(d.mean())
    if len(d) < max(params.min_seeds, 2):
        return mean, np.nan, np.nan, np.nan
    se = float(d.std(ddof=1)) / np.sqrt(len(d))
    if se == 0:
        return mean, mean, mean, 0.0 if mean else 1.0
    half = stats.t.ppf(0.5 + params.level / 2, len(d) - 1) * se
    p = 2 * stats.t.sf(abs(mean) / se, len(d) - 1)
    return mean, mean - half, mean + half, float(p)


def batch_difference_table(
    curves: pd.DataFrame, metric: str = "val_iou", params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """Per comparison, how much the best batch size beats each other one.

    ``best_batch`` scores best averaged over groups; ``diff`` is how much better it
    scores than ``batch_size`` (positive: better, in the metric's units), averaged over
    the groups that have both, then over seeds, with a Student t interval at
    ``params.level`` and a two-sided ``p_value`` of the differences paired by seed
    (``n`` seeds; no interval below ``params.min_seeds``). ``best_mean``/``other_mean``
    are the two batch sizes' means over those groups and seeds; ``best_step``,
    ``other_step``, ``best_epoch`` and ``other_epoch`` the median over groups of where
    they were read; ``budget_low``/``budget_high`` the range of the groups' budgets.
    """
    readings = _readings(curves, metric)
    keys = _group_keys(readings)
    sign = 1.0 if higher_is_better(metric) else -1.0
    rows = []
    for comparison in COMPARISONS:
        r = readings[readings["comparison"] == comparison]
        if r.empty:
            continue
        wide = r.pivot_table(index=[*keys, "seed"], columns="batch_size", values=metric)
        at = r.groupby([*keys, "batch_size"])[["step", "epoch"]].min()
        per_group = r.groupby([*keys, "batch_size"])[metric].mean()
        best = int((sign * per_group.groupby("batch_size").mean()).idxmax())
        for other in (b for b in wide.columns if b != best):
            pair = wide[[best, other]].dropna()
            if pair.empty:
                continue
            by_seed = (sign * (pair[best] - pair[other])).groupby("seed").mean()
            diff, lo, hi, p = _paired(by_seed, params)
            groups = pair.index.droplevel("seed").unique()
            where = {b: at.xs(b, level="batch_size").loc[groups] for b in (best, other)}
            budgets = r.loc[r.set_index(keys).index.isin(groups), "budget"]
            rows.append(
                {
                    "comparison": comparison,
                    "budget_low": budgets.min(),
                    "budget_high": budgets.max(),
                    "groups": len(groups),
                    "best_batch": best,
                    "batch_size": int(other),
                    "n": len(by_seed),
                    "best_mean": float(pair[best].mean()),
                    "other_mean": float(pair[other].mean()),
                    "diff": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_value": p,
                    "best_step": float(where[best]["step"].median()),
                    "other_step": float(where[other]["step"].median()),
                    "best_epoch": float(where[best]["epoch"].median()),
                    "other_epoch": float(where[other]["epoch"].median()),
                }
            )
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def lr_text(grid: dict[str, Any]) -> str:
    """``lr 0.003 for every batch size (lr_scaling none)``, or how it scales with batch."""
    train = grid.get("train") or {}
    lr, scaling = train.get("lr"), train.get("lr_scaling") or "none"
    if lr is None:
        return "learning rate not recorded"
    if scaling == "none":
        return f"lr {lr:g} for every batch size (lr_scaling none)"
    batches = (grid.get("factors") or {}).get("batch_size") or []
    base = train.get("lr_base_batch") or (min(batches) if batches else None)
    at = f" at batch {base}" if base else ""
    return f"lr {lr:g}{at}, scaled in proportion to the batch size (lr_scaling {scaling})"


def _budget_text(rows: pd.DataFrame, unit: str) -> str:
    lo, hi = rows["budget_low"].min(), rows["budget_high"].max()
    if lo == hi:
        return f"{lo:.0f} {unit}"
    return f"{lo:.0f}–{hi:.0f} {unit}, per group"


def _comparison_sentence(rows: pd.DataFrame, metric: str) -> str:
    first = rows.iloc[0]
    unit = "epochs" if first["comparison"] == "equal epochs" else "steps"
    best = int(first["best_batch"])
    parts = []
    for r in rows.itertuples():
        diff = format_interval(r.diff, r.ci_low, r.ci_high)
        other = f"batch {r.batch_size} ({r.other_mean:.3f})"
        if np.isnan(r.ci_low):
            parts.append(f"{other}: too few seeds to test")
        elif r.ci_low <= 0 <= r.ci_high:
            parts.append(f"batch {best} and {other}: cannot tell apart, difference {diff}")
        else:
            verb = "beats" if r.diff > 0 else "trails"
            parts.append(f"batch {best} {verb} {other} by {diff}")
    text = (
        f"At {first['comparison']} ({_budget_text(rows, unit)}), batch {best} scores highest "
        f"({metric} {first['best_mean']:.3f}): " + "; ".join(parts)
    )
    fewer = rows[rows["other_step"] < rows["best_step"]]
    if unit == "epochs" and len(fewer):
        r = fewer.iloc[-1]
        text += (
            f" — but batch {best} had {r['best_step'] / r['other_step']:.2g}× the optimizer "
            f"steps of batch {int(r['batch_size'])} there"
        )
    n, groups = int(rows["n"].max()), int(rows["groups"].max())
    return text + f" ({n} seeds, {groups} group{'s' if groups > 1 else ''})."


def batch_sentences(
    table: pd.DataFrame, metric: str, lr: str, params: Params = DEFAULT_PARAMS
) -> list[str]:
    """From :func:`batch_difference_table`: one sentence per comparison, each naming
    it (equal epochs, then equal steps), and the learning rate ``lr`` (:func:`lr_text`).
    A difference whose interval spans 0 reads "cannot tell apart"."""
    if table.empty:
        return []
    out = [
        _comparison_sentence(table[table["comparison"] == c], metric)
        for c in COMPARISONS
        if (table["comparison"] == c).any()
    ]
    return [
        *out,
        f"Batch sizes trained with {lr}; differences are means over groups, paired by seed, "
        f"with {params.level:.0%} t intervals over seeds.",
    ]


@dataclass(frozen=True)
class StepsPanel:
    """One group: per batch size and epoch, the ``step`` and the metric over seeds
    (``n``, ``mean``, ``ci_low``, ``ci_high``)."""

    title: str
    lines: pd.DataFrame


@dataclass(frozen=True)
class StepsInfo:
    metric: str
    lr: str
    panels: list[StepsPanel]
    groups: int
    baselines: dict[str, float]


def _get_steps_info(
    curves: pd.DataFrame,
    metric: str,
    params: Params = DEFAULT_PARAMS,
    lr: str = "",
    baselines: dict[str, float] | None = None,
    limit: int = MAX_PANELS,
) -> StepsInfo:
    """Panels for up to ``limit`` groups with two or more batch sizes, those whose best
    mean (over batch sizes and epochs) is highest first: the groups of the best cells."""
    runs = _runs(curves, metric)
    keys = _group_keys(runs)
    sign = 1.0 if higher_is_better(metric) else -1.0
    scored = []
    for key, g in runs.groupby(keys, sort=True):
        if g["batch_size"].nunique() < 2:
            continue
        by = ["batch_size", "epoch"]
        lines = interval_frame(g, by, metric, params, bounds=metric_bounds(metric))
        lines = lines.merge(g.groupby(by)["step"].min().reset_index(), on=by)
        key = key if isinstance(key, tuple) else (key,)
        scored.append((float((sign * lines["mean"]).max()), _group_label(keys, key), lines))
    scored.sort(key=lambda s: -s[0])
    panels = [StepsPanel(title, lines) for _, title, lines in scored[:limit]]
    return StepsInfo(metric, lr, panels, len(scored), dict(baselines or {}))


def _get_steps_plot(info: StepsInfo) -> Figure:
    """The metric against optimizer steps, one line per batch size (band: interval)."""
    fig, axes = panel_grid(max(len(info.panels), 1), 3, 3.8, 2.9)
    batches = sorted({b for p in info.panels for b in p.lines["batch_size"].unique()})
    colors = dict(zip(batches, [f"C{i}" for i in range(len(batches))], strict=True))
    for ax, panel in zip(axes, info.panels, strict=False):
        for b, line in panel.lines.groupby("batch_size"):
            line = line.sort_values("step")
            ax.plot(line["step"], line["mean"], color=colors[b], lw=1.3, label=f"batch {b}")
            if line["ci_low"].notna().all():
                ax.fill_between(line["step"], line["ci_low"], line["ci_high"], color=colors[b],
                                alpha=0.2, lw=0)  # fmt: skip
        draw_baselines(ax, [BaselineLine(n, v, info.metric) for n, v in info.baselines.items()])
        log_axis(ax, panel.lines["step"])
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("optimizer steps", fontsize=8)
        ax.set_ylabel(info.metric, fontsize=8)
        ax.tick_params(labelsize=7)
    if info.panels:
        axes[0].legend(fontsize=7)
    else:
        axes[0].set_axis_off()
    shown = len(info.panels)
    scope = f"{shown} of {info.groups} groups" if shown < info.groups else "every group"
    fig.suptitle(
        f"{info.metric} against optimizer steps per batch size ({scope}; {info.lr})", fontsize=10
    )
    return fig


def plot_batch_steps(run: RunData) -> Figure:
    """The metric against optimizer steps, one line per batch size, one panel per group."""
    metric = run.metric if run.metric in run.curves.columns else "val_iou"
    scores = run.baselines.scores(metric) if run.baselines is not None else {}
    info = _get_steps_info(run.curves, metric, run.params, lr_text(run.grid), scores)
    return _get_steps_plot(info)


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
    metric: str = "val_iou",
    baselines: Baselines | None = None,
    params: Params = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """Per group with ≥ 3 batch sizes, per (batch size, seed): the optimizer ``steps``
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
    runs = _runs(curves, metric)
    keys = _group_keys(runs)
    sign = 1.0 if higher_is_better(metric) else -1.0
    trivial = baselines.best(metric) if baselines is not None else None
    rows = []
    for key, g in runs.groupby(keys, sort=True):
        if g["batch_size"].nunique() < MIN_BATCH_LEVELS:
            continue
        key = key if isinstance(key, tuple) else (key,)
        by_run = g.groupby(["batch_size", "seed"], sort=True)
        smooth = by_run[metric].transform(lambda v: smooth_centred(v.to_numpy(), params.window))
        g = g.assign(_smooth=sign * smooth)
        mean_curve = g.groupby(["batch_size", "epoch"])["_smooth"].mean()
        weakest = mean_curve.groupby("batch_size").max().min()
        if trivial is not None:
            floor_from, floor = trivial[0], sign * trivial[1]
        else:
            first = g[g["epoch"] == g.groupby("batch_size")["epoch"].transform("min")]
            floor_from, floor = "first epoch", first.groupby("batch_size")[metric].mean().mul(
                sign
            ).min()
        target = floor + params.target_fraction * (weakest - floor) if weakest > floor else np.nan
        for (b, seed), run in g.groupby(["batch_size", "seed"], sort=True):
            steps, first_epoch = _crossing(
                run["step"].to_numpy(float), run["_smooth"].to_numpy(float), target
            )
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
    metric: str = "val_iou",
    baselines: Baselines | None = None,
    params: Params = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """One row per group with two or more batch sizes: McCandlish et al.'s fit of the
    steps to the target (:func:`steps_to_target_table`) against the batch size.

    Columns: the group's factors, ``batch_sizes`` (text) and ``levels``, ``floor``,
    ``floor_from`` and ``target``, ``points`` fitted (batch size × seed), ``unreached``
    (seeds that never reach the target, left out), ``first_epoch`` (points reached by
    the first epoch: upper bounds), ``s_min`` (steps), ``e_min`` (examples), ``b_crit``
    with ``ci_low``/``ci_high``, ``r2`` of the fit on the points, and ``why`` when there
    is no fit: fewer than 3 batch sizes, no target, a batch size that never reaches the
    target, or a non-positive S_min or E_min.
    """
    runs = _runs(curves, metric)
    keys = _group_keys(runs)
    points = steps_to_target_table(curves, metric, baselines, params).set_index(keys)
    rows = []
    for key, g in runs.groupby(keys, sort=True):
        batches = sorted(int(b) for b in g["batch_size"].unique())
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
        p = points.loc[[key]]
        first = p.iloc[0]
        row |= {"floor": first["floor"], "floor_from": first["floor_from"]}
        row["target"] = first["target"]
        reached = p.dropna(subset=["steps"])
        row |= {"points": len(reached), "unreached": len(p) - len(reached)}
        row["first_epoch"] = int(reached["first_epoch"].sum())
        never = sorted(set(batches) - set(reached["batch_size"].astype(int)))
        if np.isnan(first["target"]):
            row["why"] = f"the weakest batch size never beats the floor ({first['floor_from']})"
        elif never:
            row["why"] = (
                f"batch {', '.join(map(str, never))} never reaches the target "
                f"{first['target']:.3f}"
            )
        else:
            fit = fit_tradeoff(reached["batch_size"], reached["steps"], params)
            row |= {
                "s_min": fit.s_min, "e_min": fit.e_min, "b_crit": fit.b_crit,
                "ci_low": fit.ci_low, "ci_high": fit.ci_high, "r2": fit.r2, "why": fit.why,
            }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *CRITICAL_COLUMNS_TAIL])


def batch_rule(metric: str, params: Params = DEFAULT_PARAMS) -> str:
    """How the batch sizes are compared and B_crit is fitted, for the report's rules."""
    return (
        f"Batch size: runs that differ only in batch size are compared at equal epochs (the "
        f"longest every run reached) and at equal optimizer steps (the most every run "
        f"reached; each run at its last epoch within it, not interpolated); differences are "
        f"paired by seed with {params.level:.0%} t intervals. Critical batch size "
        f"(McCandlish et al. 2018), with ≥ {MIN_BATCH_LEVELS} batch sizes: the steps each "
        f"run's {metric} (centred {params.window}-epoch median) takes to reach a target "
        f"{params.target_fraction:.0%} of the way from the best trivial predictor's score "
        f"(without baselines, the lowest first-epoch mean) to the weakest batch size's best "
        f"mean, interpolated between epochs; S = S_min + "
        f"E_min / B fitted by least squares, B_crit = E_min / S_min, with a {params.level:.0%} "
        f"percentile interval over {params.n_boot_bcrit} resamples of seeds within batch "
        f"sizes (RNG seed {params.rng_seed})."
    )


def _count(v: float) -> str:
    return "∞" if np.isinf(v) else f"{v:.3g}"


def critical_batch_sentences(table: pd.DataFrame, metric: str) -> list[str]:
    """One sentence per group of :func:`critical_batch_table` with ≥ 3 batch sizes."""
    out = []
    keys = _group_keys(table)
    for r in table[table["levels"] >= MIN_BATCH_LEVELS].itertuples(index=False):
        where = _group_label(keys, tuple(getattr(r, k) for k in keys))
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
