"""Batch size read at equal epochs and at equal optimizer steps.

With one learning rate for every batch size, batch 2 takes twice the optimizer steps of
batch 4 per epoch, so a comparison at equal epochs mixes the batch size with the number
of updates (the Tuning Playbook's epoch budget against its step budget). Batch sizes are
therefore read both ways, per *group*: the training runs that differ only in batch size
(same image size, data set size and every other factor but epochs). A group's *run* per
(batch size, seed) is its longest recorded curve: the longest trial of each training
run, and of runs that do not share epochs the longest. The critical batch size fitted
from the same runs is in :mod:`analysis.critical_batch`.
"""

from __future__ import annotations

import textwrap
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.figures import BaselineLine, draw_baselines, log_axis, panel_grid
from analysis.load import FACTORS, StudyData
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import format_interval, higher_is_better, interval_frame, metric_bounds
from gridrun.layout import DEFAULT_METRIC, GROUPED_KEY

__all__ = [
    "StepsInfo",
    "StepsPanel",
    "MIN_BATCH_LEVELS",
    "batch_comparison_table",
    "batch_difference_table",
    "batch_rule",
    "batch_sentences",
    "group_keys",
    "group_label",
    "run_curves",
    "lr_text",
    "plot_batch_steps",
    "get_steps_info",
    "get_steps_plot",
]

COMPARISONS: tuple[str, ...] = ("equal epochs", "equal steps")
MIN_BATCH_LEVELS = 3
MAX_PANELS = 6
_RUN = "_run"


def group_keys(df: pd.DataFrame, factors: Sequence[str] = FACTORS) -> list[str]:
    """The ``factors`` (a study's :attr:`StudyData.factors`) a group of runs shares: all
    but ``epochs``, ``batch_size`` and a setting tied to the batch size (levels grouped
    with it, such as ``{batch_size: 8, train.lr: 0.001}``), which the comparison reads
    at each batch size's own level."""
    keys = [f for f in factors if f not in ("epochs", "batch_size") and f in df.columns]
    return [f for f in keys if f in FACTORS or not _tied_to_batch(df, f)]


def _tied_to_batch(df: pd.DataFrame, factor: str) -> bool:
    if "batch_size" not in df.columns or df[factor].nunique() < 2:
        return False
    return bool(df.groupby("batch_size")[factor].nunique().max() == 1)


def group_label(keys: list[str], values: tuple) -> str:
    """``image 128, dataset 24``."""
    return ", ".join(f"{k.removesuffix('_size')} {v}" for k, v in zip(keys, values, strict=True))


# note: a report reads the runs of one curves frame five times (tables and plots) and
# the batch readings twice; each is computed once per frame, metric and factors while
# the frame lives
_Kept = dict[tuple[int, str, tuple[str, ...]], tuple[weakref.ref, pd.DataFrame]]
_RUNS: _Kept = {}
_READINGS: _Kept = {}


def _kept(
    kept: _Kept,
    compute: Callable[[pd.DataFrame, str, Sequence[str]], pd.DataFrame],
    curves: pd.DataFrame,
    metric: str,
    factors: Sequence[str],
) -> pd.DataFrame:
    key = (id(curves), metric, tuple(factors))
    found = kept.get(key)
    if found is not None and found[0]() is curves:
        return found[1]
    result = compute(curves, metric, factors)
    for stale in [k for k, (ref, _) in kept.items() if ref() is None]:
        del kept[stale]
    kept[key] = (weakref.ref(curves), result)
    return result


def run_curves(
    curves: pd.DataFrame, metric: str, factors: Sequence[str] = FACTORS
) -> pd.DataFrame:
    """One curve per (group, batch_size, seed) with ``epoch``, ``step`` and ``metric``.

    Without a ``step`` column steps are epoch × ⌈dataset_size / batch_size⌉, as the
    runner counts them (the last partial batch kept). ``curves`` is read as unchanging:
    the result is kept for the next call with the same frame (pandas copies on write,
    so changing the result leaves the kept one as it was).
    """
    return _kept(_RUNS, _run_curves, curves, metric, factors)


def _run_curves(curves: pd.DataFrame, metric: str, factors: Sequence[str]) -> pd.DataFrame:
    keys = group_keys(curves, factors)
    columns = [*keys, "batch_size", "seed", "epoch", "step", metric]
    if curves.empty or metric not in curves.columns:
        return pd.DataFrame(columns=columns)
    needed = [*keys, "batch_size", "dataset_size", "cell_id", "seed", "epoch", "step",
              "training_run", metric]  # fmt: skip
    c = curves[[k for k in dict.fromkeys(needed) if k in curves.columns]]
    c = c.dropna(subset=[metric])
    run = c["training_run"] if "training_run" in c.columns else pd.Series(None, index=c.index)
    missing = run.isna()
    if missing.any():
        own = c.loc[missing, "cell_id"].astype(str) + "/" + c.loc[missing, "seed"].astype(str)
        run = run.where(~missing, own)
    c = c.assign(**{_RUN: run.astype(str)})
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


def _readings(curves: pd.DataFrame, metric: str, factors: Sequence[str]) -> pd.DataFrame:
    """Per group with two or more batch sizes, comparison, batch size and seed: the
    metric at the comparison's budget, with the ``epoch`` and ``step`` read at (kept,
    as :func:`run_curves` is, for the next call with the same frame)."""
    return _kept(_READINGS, _read_runs, curves, metric, factors)


def _read_runs(curves: pd.DataFrame, metric: str, factors: Sequence[str]) -> pd.DataFrame:
    runs = run_curves(curves, metric, factors)
    keys = group_keys(runs, factors)
    columns = [*keys, "comparison", "budget", "batch_size", "seed", "epoch", "step", metric]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    grouped = runs.groupby(keys, sort=True)
    runs = runs.assign(_group=grouped.ngroup())
    runs = runs[(grouped["batch_size"].transform("nunique") >= 2) & (runs["_group"] >= 0)]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    by_run = runs.groupby(["_group", "batch_size", "seed"], sort=False)
    parts = []
    for comparison, col in zip(COMPARISONS, ("epoch", "step"), strict=True):
        # note: a group's budget is the least its runs all reached
        budget = by_run[col].transform("max").groupby(runs["_group"]).transform("min")
        at = runs[runs[col] <= budget].groupby(["_group", "batch_size", "seed"]).tail(1)
        parts.append(at.assign(comparison=comparison, budget=budget[at.index]))
    out = pd.concat(parts).sort_values("_group", kind="stable", ignore_index=True)
    return out[columns]


def batch_comparison_table(
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    bounds: tuple[float, float] | None = None,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """Per group of runs that differ only in batch size (:func:`group_keys` of
    ``factors``), per comparison and batch size:
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
    readings = _readings(curves, metric, factors)
    keys = group_keys(readings, factors)
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
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
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
    readings = _readings(curves, metric, factors)
    keys = group_keys(readings, factors)
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


LR = "train.lr"  # the learning rate's path when it is a factor


def lr_text(grid: dict[str, Any]) -> str:
    """``lr 0.003 for every batch size (lr_scaling none)``, or how it scales with batch."""
    train = grid.get("train") or {}
    factors = grid.get("factors") or {}
    lr, scaling = train.get("lr"), train.get("lr_scaling") or "none"
    batches = factors.get("batch_size") or []
    base = train.get("lr_base_batch") or (min(batches) if batches else None)
    scaled = scaling != "none"
    at = f" at batch {base}" if base else ""
    tail = f", scaled in proportion to the batch size (lr_scaling {scaling})" if scaled else ""
    groups = [g for g in factors.get(GROUPED_KEY) or [] if isinstance(g, dict) and LR in g]
    if groups:
        # note: each batch size at its own lr, so batch sizes are compared at those
        pairs = "; ".join(
            f"batch {g['batch_size']}: {g[LR]:g}" if "batch_size" in g else f"{g[LR]:g}"
            for g in sorted(groups, key=lambda g: (g.get("batch_size", 0), g[LR]))
        )
        return f"lr set with the batch size ({pairs}{at if scaled else ''}){tail}"
    if factors.get(LR):
        levels = ", ".join(f"{v:g}" for v in sorted(factors[LR]))
        where = at if scaled else ""
        return f"lr as a factor ({levels}{where}){tail}, compared at each lr level"
    if lr is None:
        return "learning rate not recorded"
    if not scaled:
        return f"lr {lr:g} for every batch size (lr_scaling none)"
    return f"lr {lr:g}{at}{tail}"


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


def get_steps_info(
    curves: pd.DataFrame,
    metric: str,
    params: Params = DEFAULT_PARAMS,
    lr: str = "",
    baselines: dict[str, float] | None = None,
    limit: int = MAX_PANELS,
    factors: Sequence[str] = FACTORS,
) -> StepsInfo:
    """Panels for up to ``limit`` groups with two or more batch sizes, those whose best
    mean (over batch sizes and epochs) is highest first: the groups of the best cells."""
    runs = run_curves(curves, metric, factors)
    keys = group_keys(runs, factors)
    sign = 1.0 if higher_is_better(metric) else -1.0
    scored = []
    if len(runs):
        runs = runs[runs.groupby(keys)["batch_size"].transform("nunique") >= 2]
    if len(runs):
        # note: one interval_frame over every group, then split: the same rows per group
        by = [*keys, "batch_size", "epoch"]
        every = interval_frame(runs, by, metric, params, bounds=metric_bounds(metric))
        every = every.merge(runs.groupby(by)["step"].min().reset_index(), on=by)
        for key, lines in every.groupby(keys, sort=True):
            lines = lines.drop(columns=keys).reset_index(drop=True)
            key = key if isinstance(key, tuple) else (key,)
            scored.append((float((sign * lines["mean"]).max()), group_label(keys, key), lines))
    scored.sort(key=lambda s: -s[0])
    panels = [StepsPanel(title, lines) for _, title, lines in scored[:limit]]
    return StepsInfo(metric, lr, panels, len(scored), dict(baselines or {}))


def get_steps_plot(info: StepsInfo) -> Figure:
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
    title = f"{info.metric} against optimizer steps per batch size ({scope}; {info.lr})"
    # note: the lr sentence can be long; wrapped to the figure's width, never cut
    fig.suptitle("\n".join(textwrap.wrap(title, int(15 * fig.get_figwidth()))), fontsize=10)
    return fig


def plot_batch_steps(run: StudyData) -> Figure:
    """The metric against optimizer steps, one line per batch size, one panel per group."""
    metric = run.metric if run.metric in run.curves.columns else DEFAULT_METRIC
    scores = run.baselines.scores(metric) if run.baselines is not None else {}
    info = get_steps_info(
        run.curves, metric, run.params, lr_text(run.grid), scores, factors=run.factors
    )
    return get_steps_plot(info)


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


