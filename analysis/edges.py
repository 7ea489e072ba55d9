"""Whether the best cells point past the grid: at a factor's lowest or highest level with
a worse neighbour level, or still improving at their last epoch.

A best cell at the largest image size whose next smaller size scores worse says the
optimum may lie beyond the grid: the grid should be extended in that direction. A run
still improving at its last epoch says the same of ``epochs``. A cell inside the grid's
range in every factor, with a run that has stopped improving, says the grid brackets
what it found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.cells import extra_factors
from analysis.load import FACTORS
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import DEFAULT_METRIC

__all__ = ["edge_sentences", "edges_table"]

EDGE_COLUMNS: list[str] = [
    "rank", "cell_id", "final_mean", "factor", "level", "n_levels", "edge", "neighbour_level",
    "neighbour_mean", "neighbour_worse", "extend", "seeds", "improving_seeds",
    "still_improving", "trial_epoch", "recent_gain", "gain_after_trial",
]  # fmt: skip


def _improving(plateau: pd.DataFrame, cell_id: str, params: Params) -> dict[str, float]:
    """Per cell over its seeds: a seed's run is still improving at the trial's epoch when
    it has not plateaued by then and either gained more than ``min_delta`` over the last
    ``patience`` epochs or gains more than the plateau rule allows after the epoch."""
    rows = plateau[plateau["cell_id"] == cell_id] if len(plateau) else plateau
    if rows.empty:
        return {"seeds": 0, "improving_seeds": 0, "still_improving": False}
    recent = rows["recent_gain"].to_numpy(float)
    later = rows["gain_after_trial"].to_numpy(float)
    with np.errstate(invalid="ignore"):
        gaining = (recent > params.min_delta) | (later > params.patience * params.min_delta)
    improving = rows["plateau_epoch"].isna().to_numpy() & gaining
    return {
        "seeds": len(rows),
        "improving_seeds": int(improving.sum()),
        # note: a majority of seeds, so one lucky seed does not speak for the cell
        "still_improving": bool(2 * improving.sum() > len(rows)),
        "trial_epoch": float(rows["trial_epoch"].astype(float).max()),
        "recent_gain": float(np.nanmedian(recent)) if not np.isnan(recent).all() else np.nan,
        "gain_after_trial": float(np.nanmedian(later)) if not np.isnan(later).all() else np.nan,
    }


def _neighbour(cells: pd.DataFrame, cell: pd.Series, factor: str, level: object) -> float:
    """The mean of the cell that differs from ``cell`` only in ``factor`` (at ``level``)."""
    same = np.ones(len(cells), dtype=bool)
    for f in [*FACTORS, *extra_factors(cells)]:
        if f in cells.columns:
            same &= (cells[f] == (level if f == factor else cell[f])).to_numpy()
    hit = cells.loc[same, "final_mean"]
    return float(hit.iloc[0]) if len(hit) else np.nan


def _distinct_runs(cells: pd.DataFrame, plateau: pd.DataFrame, top: int) -> list:
    """The ``top`` best cells, skipping a cell whose training runs a better one already
    holds (an 8-epoch cell read off the best cell's 16-epoch runs says nothing new)."""
    runs = (
        plateau.groupby("cell_id")["training_run"].agg(frozenset)
        if len(plateau) and "training_run" in plateau.columns
        else pd.Series(dtype=object)
    )
    seen: set = set()
    chosen = []
    for item in cells.iterrows():
        own = runs.get(item[1]["cell_id"], frozenset())
        if own and own <= seen:
            continue
        seen |= own
        chosen.append(item)
        if len(chosen) == top:
            break
    return chosen


def edges_table(
    cells: pd.DataFrame,
    plateau: pd.DataFrame,
    grid_levels: Mapping[str, Sequence[float]] | None = None,
    metric: str = DEFAULT_METRIC,
    top: int = 3,
    params: Params = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """One row per (one of the ``top`` best cells, factor); a cell whose training runs
    a better cell holds is skipped.

    ``cells`` is :func:`analysis.cells.cells_table` (best first), ``plateau``
    :func:`analysis.plateau.plateau_table`, ``grid_levels`` the levels of each factor in
    the grid (default: those in ``cells``). Columns: ``level`` and ``n_levels``; ``edge``
    (``lowest``/``highest``, null inside the range or for a factor with one level);
    ``neighbour_level`` and ``neighbour_mean`` (the next level inward, other factors
    equal), ``neighbour_worse`` (null without that cell); ``extend`` (at an edge whose
    neighbour is worse; at the most ``epochs``, when the cell has curves: whether its run
    is still improving);
    per cell ``seeds``, ``improving_seeds``, ``still_improving`` (most seeds),
    ``trial_epoch`` and the seeds' median ``recent_gain`` and ``gain_after_trial``.
    """
    if cells.empty:
        return pd.DataFrame(columns=EDGE_COLUMNS)
    # note: only a numeric factor has levels beyond the grid's; a text one (model.encoder)
    # has no "larger" level to extend to
    numeric = [f for f in extra_factors(cells) if pd.api.types.is_numeric_dtype(cells[f])]
    factors = [*(f for f in FACTORS if f in cells.columns), *numeric]
    levels = {
        f: sorted(set(grid_levels[f]) if grid_levels and f in grid_levels else set(cells[f]))
        for f in factors
    }
    sign = 1.0 if higher_is_better(metric) else -1.0
    rows = []
    for rank, (_, cell) in enumerate(_distinct_runs(cells, plateau, top), start=1):
        state = _improving(plateau, cell["cell_id"], params)
        for f in factors:
            lv, here = levels[f], cell[f]
            edge = None
            if len(lv) >= 2 and here in lv:
                edge = "lowest" if here == lv[0] else "highest" if here == lv[-1] else None
            inward = None if edge is None else lv[1] if edge == "lowest" else lv[-2]
            mean = _neighbour(cells, cell, f, inward) if inward is not None else np.nan
            worse = pd.NA if np.isnan(mean) else bool(sign * mean < sign * cell["final_mean"])
            extend = edge is not None and worse is True
            if f == "epochs" and here == max(lv) and state["seeds"]:
                # note: the run's own curve says more about longer training than a
                # shorter cell does: a plateaued run is not extended, an improving one is
                extend = state["still_improving"]
            rows.append(
                {
                    "rank": rank, "cell_id": cell["cell_id"], "final_mean": cell["final_mean"],
                    "factor": f, "level": here, "n_levels": len(lv), "edge": edge,
                    "neighbour_level": inward, "neighbour_mean": mean, "neighbour_worse": worse,
                    "extend": extend, **state,
                }  # fmt: skip
            )
    return pd.DataFrame(rows).reindex(columns=EDGE_COLUMNS)


def _level(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return f"{int(number)}" if number.is_integer() else f"{number:g}"


def _place(factor: str, edge: str, level: object) -> str:
    if factor == "epochs":
        return f"the {'most' if edge == 'highest' else 'fewest'} epochs ({_level(level)})"
    return f"the {'largest' if edge == 'highest' else 'smallest'} {factor} ({_level(level)})"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _ordinal(rank: int) -> str:
    return {1: "The best cell", 2: "The 2nd best cell", 3: "The 3rd best cell"}.get(
        rank, f"The {rank}th best cell"
    )


def _still_improving(first: pd.Series, params: Params) -> str:
    epoch = _level(first["trial_epoch"])
    seeds = (
        "" if first["improving_seeds"] == first["seeds"]
        else f" in {first['improving_seeds']} of {first['seeds']} seeds"
    )  # fmt: skip
    if first["gain_after_trial"] > params.patience * params.min_delta:
        gain = f"{first['gain_after_trial']:+.3f} later in its run"
    else:
        gain = f"{first['recent_gain']:+.3f} over the last {params.patience} epochs"
    return f"still improving at epoch {epoch}{seeds} ({gain})"


def edge_sentences(
    edges: pd.DataFrame, metric: str = DEFAULT_METRIC, params: Params = DEFAULT_PARAMS
) -> list[str]:
    """Per top cell of :func:`edges_table`, where it points past the grid and which way to
    extend it; for the best cell also when it points nowhere."""
    out = []
    for rank, rows in edges.groupby("rank", sort=True):
        first, cell_id = rows.iloc[0], rows.iloc[0]["cell_id"]
        at = rows[(rows["extend"]) & rows["edge"].notna()]
        sits = [_place(r.factor, r.edge, r.level) for r in at.itertuples()]
        improving = _still_improving(first, params) if first["still_improving"] else ""
        if sits:
            text = f"sits at {_join(sits)}" + (f", and its run is {improving}" if improving else "")
        elif improving:
            text = f"is {improving}"
        else:
            if rank == 1:
                curves = (
                    f" and its run is not still improving at epoch {_level(first['trial_epoch'])}"
                    if first["seeds"] else ""
                )  # fmt: skip
                out.append(
                    f"The best cell {cell_id} points past the grid in no factor (none at its "
                    f"lowest or highest level with a worse neighbour level){curves}."
                )
            continue
        ways = [
            f"{r.factor} {'above' if r.edge != 'lowest' else 'below'} {_level(r.level)}"
            for r in rows[rows["extend"]].itertuples()
        ]
        text = f"{_ordinal(int(rank))} {cell_id} {text}"
        out.append(f"{text}: extend {_join(ways)}." if ways else f"{text}.")
    return out
