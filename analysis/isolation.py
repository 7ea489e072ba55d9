"""Isolation over nuisance settings (the Tuning Playbook's isolation plots): each
scientific factor's levels compared at their best nuisance setting, next to the plain
average over the nuisance settings.

A grid names its nuisance factors at the top level (``nuisance: [train.lr]``); every other
factor is scientific. For a scientific factor F, each combination of F's level and the
other scientific factors' levels is scored at the nuisance setting whose cell has the best
seed mean (the highest, or the lowest for a loss); a level's *isolated* value averages
those winning cells over the other factors' combinations within each seed, then over
seeds (the t interval of :mod:`analysis.stats`). Its *averaged* value averages every cell,
as the main-effect plots do. Where the best nuisance setting differs from level to level
(each batch size its own best learning rate), the two can rank the levels differently.

Picking the best of k settings on the same seeds that score it biases the isolated value
upward (the winner's curse): with no nuisance effect at all the expected excess over the
average is ``E[max of k standard normals] × seed SD / √seeds`` (``null_bias``). With
enough seeds the table also gives a *held-out* value, free of that bias: settings chosen
on half the seeds and scored on the other half, and the other way round.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import integrate, stats

from analysis.figures import panel_grid, shared_ylim
from analysis.load import TRIAL_KEY, StudyData
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import detectable_difference, higher_is_better, interval_frame, metric_bounds
from gridrun.layout import DEFAULT_METRIC, factor_names

__all__ = [
    "HELDOUT_SEEDS",
    "ISOLATION_COLUMNS",
    "expected_max",
    "get_isolation_info",
    "get_isolation_plot",
    "grid_nuisance",
    "isolation_rule",
    "isolation_sentences",
    "isolation_table",
    "plot_isolation",
]

# the fewest seeds that can be split into a half to choose on and a half to score on,
# each with two seeds or more
HELDOUT_SEEDS = 4

ISOLATION_COLUMNS = [
    "factor", "level", "nuisance", "combinations", "candidates", "n", "isolated_mean",
    "isolated_ci_low", "isolated_ci_high", "best_nuisance", "averaged_mean",
    "averaged_ci_low", "averaged_ci_high", "heldout_mean", "heldout_ci_low",
    "heldout_ci_high", "null_bias", "shown", "why",
]  # fmt: skip


def grid_nuisance(grid: Mapping[str, object]) -> tuple[str, ...]:
    """The factors the grid file declares ``nuisance:`` (a name or a list of names)."""
    declared = grid.get("nuisance") or ()
    return (declared,) if isinstance(declared, str) else tuple(str(f) for f in declared)


@cache
def expected_max(k: int) -> float:
    """E[max of ``k`` independent standard normals]: 0 for one, 1/√π for two, 0.846 for
    three."""
    if k <= 1:
        return 0.0

    def integrand(x: float) -> float:
        return x * k * stats.norm.pdf(x) * stats.norm.cdf(x) ** (k - 1)

    return float(integrate.quad(integrand, -np.inf, np.inf)[0])


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _setting(names: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{n}={_text(v)}" for n, v in zip(names, values, strict=True))


def _winners(
    final: pd.DataFrame, keys: list[str], nuisance: list[str], higher: bool
) -> pd.DataFrame:
    """Per combination of ``keys``: the nuisance setting whose cell has the best seed mean
    (ties to the first in level order), ``seeds`` (that cell's) and ``candidates``, the
    settings compared."""
    cells = final.groupby([*keys, *nuisance], sort=True)["final"]
    means = pd.concat([cells.mean(), cells.count().rename("seeds")], axis=1).reset_index()
    best = means.groupby(keys, sort=True)["final"]
    pick = best.idxmax() if higher else best.idxmin()
    out = means.loc[pick.to_numpy(), [*keys, *nuisance, "seeds"]].reset_index(drop=True)
    return out.assign(candidates=best.size().to_numpy())


def _scored(final: pd.DataFrame, winners: pd.DataFrame, factor: str, on: list[str]) -> pd.DataFrame:
    """Per level of ``factor`` and seed: the mean of the winning cells' trials."""
    rows = final.merge(winners[on], on=on, how="inner")
    return rows.groupby([factor, "seed"], sort=True)["final"].mean().rename("value").reset_index()


def _heldout(
    final: pd.DataFrame, keys: list[str], nuisance: list[str], higher: bool
) -> pd.DataFrame:
    """Per level of ``keys[0]`` and seed: the winning cells' value on seeds that did not
    choose them (seeds alternate between two halves; each half is scored at the settings
    the other half chose)."""
    seeds = sorted(final["seed"].unique())
    halves = [set(seeds[0::2]), set(seeds[1::2])]
    parts = []
    for choose, score in (halves, halves[::-1]):
        winners = _winners(final[final["seed"].isin(choose)], keys, nuisance, higher)
        parts.append(_scored(final[final["seed"].isin(score)], winners, keys[0], keys + nuisance))
    return pd.concat(parts, ignore_index=True)


def _best_text(won: pd.DataFrame, nuisance: list[str]) -> str:
    """The winning settings, most frequent first, each with the combinations it won
    (``train.lr=0.001 (3 of 4); train.lr=0.003 (1 of 4)``); a lone winner bare."""
    counts = Counter(tuple(r) for r in won[nuisance].itertuples(index=False))
    if len(counts) == 1:
        return _setting(nuisance, next(iter(counts)))
    return "; ".join(
        f"{_setting(nuisance, s)} ({c} of {len(won)})" for s, c in counts.most_common()
    )


def _shown(
    k: int, seeds: int, bias: float, names: str, heldout: pd.DataFrame | None
) -> tuple[str, str]:
    """The value a report puts forward for a level, and why."""
    if k == 1:
        return "averaged", f"one {names} setting per combination: nothing to choose"
    if heldout is not None:
        return "held-out", (
            f"{seeds} seeds: settings chosen on half the seeds, scored on the other half, so "
            "the choice does not inflate the value"
        )
    size = f"by about {bias:.2g}" if np.isfinite(bias) else "by an amount one seed cannot tell"
    return "isolated", (
        f"{seeds} seeds, too few to hold seeds out (≥ {HELDOUT_SEEDS}): optimistic, {size} "
        f"from choosing the best of {k} alone"
    )


def isolation_table(
    final: pd.DataFrame,
    factors: Sequence[str],
    nuisance: Sequence[str],
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """One row per level of each scientific factor with two or more levels, from one row
    per trial of ``final`` (``cell_id``, ``seed``, the factor columns and ``final``).

    ``factors`` are all the study's factors, ``nuisance`` those declared nuisance; the
    rest are scientific. Columns: ``factor``, ``level``, ``nuisance`` (the nuisance
    factors' names), ``combinations`` (of the other scientific factors' levels, averaged
    over), ``candidates`` (most nuisance settings compared in one combination), ``n``
    (seeds), ``isolated_mean`` with its interval (the level at the best nuisance setting of
    each combination, chosen on the cells' seed means), ``best_nuisance`` (the winning
    settings, with how many combinations each won), ``averaged_mean`` with its interval
    (over every nuisance setting), ``heldout_mean`` with its interval (with ≥
    HELDOUT_SEEDS seeds: chosen on one half of the seeds, scored on the other),
    ``null_bias`` (the excess of isolated over averaged expected from the choice alone,
    with no nuisance effect) and ``shown``/``why``: the value a report puts forward for
    the level (``held-out``, ``isolated`` or ``averaged``) and why.
    """
    nuisance = [f for f in nuisance if f in final.columns and final[f].notna().any()]
    scientific = [f for f in factors if f not in nuisance and f in final.columns]
    varying = [f for f in scientific if final[f].nunique(dropna=True) >= 2]
    if not nuisance or final.empty:
        return pd.DataFrame(columns=ISOLATION_COLUMNS)
    bounds, higher = metric_bounds(metric), higher_is_better(metric)
    sd = detectable_difference(final, bounds, params).pooled_sd  # within cells, pooled
    seeds = final["seed"].nunique()
    names = ", ".join(nuisance)
    rows = []
    for factor in varying:
        others = [f for f in scientific if f != factor and final[f].notna().all()]
        keys = [factor, *others]
        winners = _winners(final, keys, nuisance, higher)
        isolated = interval_frame(
            _scored(final, winners, factor, keys + nuisance), [factor], "value", params,
            bounds=bounds,
        ).set_index(factor)  # fmt: skip
        per_seed = final.groupby([factor, "seed"], sort=True)["final"].mean()
        averaged = interval_frame(
            per_seed.rename("value").reset_index(), [factor], "value", params, bounds=bounds
        ).set_index(factor)
        heldout = None
        if seeds >= HELDOUT_SEEDS:
            heldout = interval_frame(
                _heldout(final, keys, nuisance, higher), [factor], "value", params,
                bounds=bounds,
            ).set_index(factor)  # fmt: skip
        for level, won in winners.groupby(factor, sort=True):
            k = int(won["candidates"].max())
            # note: averaging over combinations leaves each one's selection bias whole
            bias = np.mean(
                [
                    expected_max(int(c)) * sd / math.sqrt(n)
                    for c, n in zip(won["candidates"], won["seeds"], strict=True)
                ]
            )
            iso, avg = isolated.loc[level], averaged.loc[level]
            row = {
                "factor": factor, "level": level, "nuisance": names,
                "combinations": len(won), "candidates": k, "n": int(iso["n"]),
                "isolated_mean": iso["mean"], "isolated_ci_low": iso["ci_low"],
                "isolated_ci_high": iso["ci_high"], "best_nuisance": _best_text(won, nuisance),
                "averaged_mean": avg["mean"], "averaged_ci_low": avg["ci_low"],
                "averaged_ci_high": avg["ci_high"],
                "null_bias": float(bias) if k > 1 else 0.0,
            }  # fmt: skip
            for stat in ("mean", "ci_low", "ci_high"):
                held = heldout is not None and level in heldout.index
                row[f"heldout_{stat}"] = heldout.loc[level, stat] if held else np.nan
            row["shown"], row["why"] = _shown(k, seeds, row["null_bias"], names, heldout)
            rows.append(row)
    return pd.DataFrame(rows, columns=ISOLATION_COLUMNS)


def _with_factors(data: StudyData) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """``data.final`` with a column for every factor of the grid (the settings beyond the
    four are read from the trials table) and the factors' names."""
    grid_factors = data.grid.get("factors")
    factors = factor_names(grid_factors if isinstance(grid_factors, Mapping) else None)
    final = data.final
    extra = [f for f in factors if f not in final.columns and f in data.ok.columns]
    if extra:
        final = final.merge(data.ok[[*TRIAL_KEY, *extra]], on=list(TRIAL_KEY), how="left")
    return final, factors


def get_isolation_info(
    data: StudyData, metric: str | None = None, params: Params | None = None
) -> pd.DataFrame:
    """:func:`isolation_table` of a study's final metric over the nuisance factors its grid
    declares; no rows when it declares none."""
    final, factors = _with_factors(data)
    metric = data.metric if metric is None else metric
    params = data.params if params is None else params
    return isolation_table(final, factors, grid_nuisance(data.grid), metric, params)


def isolation_rule(metric: str, params: Params = DEFAULT_PARAMS) -> str:
    """How the scientific factors are isolated, for the report's rules."""
    return (
        f"Isolation: for each level of a scientific factor and each combination of the other "
        f"scientific factors' levels, the nuisance setting whose cell has the best seed mean "
        f"{metric} is kept; isolated: those cells averaged over the combinations within each "
        f"seed, then over seeds ({params.level:.0%} t interval); averaged: every cell, as the "
        "main effects. Choosing the best on the seeds that score it inflates the isolated "
        "value (the winner's curse); null_bias is that inflation expected with no nuisance "
        f"effect (E[max of k normals] × seed SD / √seeds). With ≥ {HELDOUT_SEEDS} seeds, "
        "held-out: settings chosen on every other seed and scored on the rest, both ways "
        "round, free of that inflation."
    )


def _view(table: pd.DataFrame) -> str:
    shown = set(table["shown"])
    if shown == {"averaged"}:
        return "averaged"
    return "held-out" if "held-out" in shown else "isolated"


def _column(view: str) -> str:
    return {"held-out": "heldout", "isolated": "isolated", "averaged": "averaged"}[view]


def isolation_sentences(table: pd.DataFrame, metric: str) -> list[str]:
    """Which view the section shows, then per scientific factor its best level at the best
    nuisance setting and averaged over the settings, and whether the two rankings agree."""
    if table.empty:
        return []
    view = _view(table)
    names = table["nuisance"].iloc[0]
    head = {
        "held-out": f"Shown: each level at its best {names}, chosen on half the seeds and "
        "scored on the others (held-out), beside the average over every setting.",
        "isolated": f"Shown: each level at its best {names} (isolated), beside the average "
        "over every setting; the isolated values are optimistic: the same seeds chose and "
        "scored the settings (null_bias says by about how much).",
        "averaged": f"Shown: the average over {names}; each combination has one setting, "
        "so there is nothing to choose.",
    }[view]
    if view == "averaged":
        return [head]
    out = [head]
    col = _column(view)
    higher = higher_is_better(metric)
    for factor, g in table.groupby("factor", sort=False):
        iso = g.sort_values(f"{col}_mean", ascending=not higher, kind="stable")
        avg = g.sort_values("averaged_mean", ascending=not higher, kind="stable")
        top = iso.iloc[0]
        text = (
            f"{factor} at its best {names}: {_text(top['level'])} ranks first ({metric} "
            f"{top[f'{col}_mean']:.3f}, at {top['best_nuisance']})"
        )
        if list(iso["level"]) == list(avg["level"]):
            text += "; averaged over the settings the levels rank the same."
        else:
            first = avg.iloc[0]
            text += (
                f"; averaged over the settings {_text(first['level'])} ranks first "
                f"({first['averaged_mean']:.3f}): the average hides each level's best "
                f"{names}."
            )
        out.append(text)
    return out


def _band(ax, xs, frame: pd.DataFrame, col: str, color, label: str, style: str = "-") -> None:
    ax.plot(xs, frame[f"{col}_mean"], marker="o", ms=4, ls=style, color=color, label=label)
    if frame[f"{col}_ci_low"].notna().all():
        ax.fill_between(
            xs, frame[f"{col}_ci_low"], frame[f"{col}_ci_high"], color=color, alpha=0.15, lw=0
        )


def get_isolation_plot(table: pd.DataFrame, metric: str) -> Figure:
    """Per scientific factor: ``metric`` against its levels at the best nuisance setting
    (held-out where the table has it, and in-sample) and averaged, each isolated point
    labelled with the setting that won most of its combinations."""
    factors = list(dict.fromkeys(table["factor"]))
    fig, axes = panel_grid(max(len(factors), 1), 4, 3.6, 3.0)
    cols = [c for c in ("isolated", "averaged", "heldout") if table[f"{c}_mean"].notna().any()]
    values = [v for c in cols for s in ("mean", "ci_low", "ci_high") for v in table[f"{c}_{s}"]]
    ylim = shared_ylim(values, pad=0.12)  # note: room for the labels above the points
    for ax, factor in zip(axes, factors, strict=False):
        g = table[table["factor"] == factor].reset_index(drop=True)
        xs = np.arange(len(g), dtype=float)
        _band(ax, xs, g, "averaged", "0.45", "averaged")
        _band(ax, xs, g, "isolated", "tab:blue", "isolated (in-sample)", "--")
        if "heldout" in cols:
            _band(ax, xs, g, "heldout", "tab:orange", "isolated (held-out seeds)")
        for x, y, best in zip(xs, g["isolated_mean"], g["best_nuisance"], strict=True):
            # the winner on one line, how often it won (and "…": others won too) below
            label = (best if "; " not in best else best.split("; ")[0] + " …").replace(" (", "\n(")
            ax.annotate(
                label, (x, y), xytext=(0, 6),
                textcoords="offset points", ha="center", fontsize=6.5, color="tab:blue",
            )  # fmt: skip
        ax.set_xticks(xs, [_text(v) for v in g["level"]], fontsize=8)
        ax.set_xlim(-0.5, len(g) - 0.5)
        ax.set_xlabel(factor)
        ax.set_ylim(*ylim)
        ax.set_title(factor, fontsize=10)
    axes[0].set_ylabel(f"mean {metric}")
    if factors:
        axes[0].legend(fontsize=7, loc="best")
    else:
        axes[0].set_axis_off()
    names = table["nuisance"].iloc[0] if len(table) else "the nuisance factors"
    fig.suptitle(
        f"isolation plots of {metric}: each level at its best {names} vs averaged over "
        f"{names}\nband = interval over seeds; label: the setting that won",
        fontsize=10,
    )
    return fig


def plot_isolation(run: StudyData) -> Figure:
    """Isolation plots of ``run``'s final metric over the nuisance factors its grid declares."""
    return get_isolation_plot(get_isolation_info(run), run.metric)
