"""Trials that learned nothing the class frequencies do not give: *collapsed*.

A trivial predictor (every pixel background, every pixel foreground, every pixel one
class) scores something on every metric; ``baselines.json`` records it. A trial whose
final metric sits within ``Params.collapse_margin`` of one of those scores, or below the
best of them, has collapsed (``Params.collapse_rule`` states this in the report). The
same test, epoch by epoch, tells the plateau rule where a flat curve is a stuck model
and not a plateau. A loss has no trivial score, so nothing is flagged on a loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.baselines import Baselines
from analysis.load import FACTORS
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import BASELINES_FILE, DEFAULT_METRIC

__all__ = ["collapse_by_cell", "collapse_sentences", "collapse_table", "collapsed_curve"]

COLLAPSE_COLUMNS: list[str] = [
    "cell_id", "seed", *FACTORS, "training_run", "final", "collapsed", "nearest_trivial",
    "trivial_score", "above_trivial",
]  # fmt: skip


def collapsed_curve(
    values: np.ndarray,
    trivial_scores: Mapping[str, float] | Iterable[float],
    margin: float,
    higher_better: bool = True,
) -> np.ndarray:
    """Per value: at most the best trivial score + ``margin`` (for a lower-is-better
    metric: at least the best − ``margin``). No scores, or a NaN value: ``False``.

    "Within the margin of any trivial score" needs no test of its own: a value that
    close to a weaker trivial score is also below the best one + margin.
    """
    values = np.asarray(values, dtype=float)
    scores = trivial_scores.values() if isinstance(trivial_scores, Mapping) else trivial_scores
    scores = np.asarray(list(scores), dtype=float)
    if scores.size == 0:
        return np.zeros(values.shape, dtype=bool)
    sign = 1.0 if higher_better else -1.0
    best = np.max(sign * scores)
    with np.errstate(invalid="ignore"):
        return sign * values <= best + margin


def _no_check_note(baselines: Baselines | None, metric: str) -> str:
    if baselines is None:
        return (
            f"No collapse check: the study has no {BASELINES_FILE} (what trivial predictors "
            "score), so no trial is flagged as collapsed."
        )
    if not higher_is_better(metric):
        return f"No collapse check on {metric}: a loss has no trivial-predictor score."
    return f"No collapse check: {BASELINES_FILE} has no score for {metric}."


def collapse_table(
    final: pd.DataFrame,
    baselines: Baselines | None,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """One row per (cell, seed) of :func:`analysis.load.final_metrics` rows; the
    ``factors`` beyond the four (a study's :attr:`StudyData.factors`) follow ``batch_size``
    where ``final`` has them.

    Columns: ``collapsed`` (the rule of :func:`collapsed_curve` on ``final``),
    ``nearest_trivial`` (the trivial predictor whose score is closest to ``final``),
    ``trivial_score`` (its score) and ``above_trivial`` (``final`` − the best trivial
    score, signed so that better is positive). Without scores for ``metric`` (no
    baselines, or a loss) nothing is collapsed and ``attrs["note"]`` says why.
    """
    extra = [f for f in factors if f not in FACTORS and f in final.columns]
    at = COLLAPSE_COLUMNS.index("training_run")
    out = final.reindex(columns=[*COLLAPSE_COLUMNS[:at], *extra, *COLLAPSE_COLUMNS[at:]]).copy()
    out["final"] = out["final"].astype(float)
    scores = baselines.scores(metric) if baselines is not None else {}
    out["collapsed"] = False
    if not scores or out.empty:
        out["nearest_trivial"] = None
        out["trivial_score"] = np.nan
        out["above_trivial"] = np.nan
        if not scores:
            out.attrs["note"] = _no_check_note(baselines, metric)
        return out.reset_index(drop=True)
    higher = higher_is_better(metric)
    names, values = list(scores), np.array(list(scores.values()))
    v = out["final"].to_numpy(float)
    nearest = np.argmin(np.abs(v[:, None] - values[None, :]), axis=1)
    sign = 1.0 if higher else -1.0
    out["collapsed"] = collapsed_curve(v, values, params.collapse_margin, higher)
    out["nearest_trivial"] = [names[k] for k in nearest]
    out["trivial_score"] = values[nearest]
    out["above_trivial"] = sign * v - np.max(sign * values)
    out.attrs["rule"] = params.collapse_rule(metric)
    return out.reset_index(drop=True)


def collapse_by_cell(collapse: pd.DataFrame) -> pd.DataFrame:
    """Per cell with a collapsed seed: ``seeds``, ``collapsed_seeds``, the most common
    ``nearest_trivial`` of its collapsed seeds and the mean ``final`` over them; cells
    collapsed in most seeds first."""
    columns = ["cell_id", "seeds", "collapsed_seeds", "nearest_trivial", "final_mean"]
    if collapse.empty or not collapse["collapsed"].any():
        return pd.DataFrame(columns=columns)
    seeds = collapse.groupby("cell_id").size()
    hit = collapse[collapse["collapsed"]].groupby("cell_id")
    out = pd.DataFrame(
        {
            "seeds": seeds.reindex(hit.size().index),
            "collapsed_seeds": hit.size(),
            "nearest_trivial": hit["nearest_trivial"].agg(lambda s: s.mode().iloc[0]),
            "final_mean": hit["final"].mean(),
        }
    ).rename_axis("cell_id")
    out = out.reset_index().sort_values(["collapsed_seeds", "cell_id"], ascending=[False, True])
    return out[columns].reset_index(drop=True)


def collapse_sentences(collapse: pd.DataFrame, metric: str, limit: int = 6) -> list[str]:
    """The collapsed cells, named with the trivial predictor they sit at; the note when no
    check was possible; nothing when no trial collapsed."""
    if "note" in collapse.attrs:
        return [collapse.attrs["note"]]
    cells = collapse_by_cell(collapse)
    if cells.empty:
        return []
    named = [
        f"{r.cell_id} ({r.collapsed_seeds}/{r.seeds} seeds, {metric} {r.final_mean:.3f}, "
        f"{r.nearest_trivial})"
        for r in cells.head(limit).itertuples()
    ]
    more = f" and {len(cells) - limit} more" if len(cells) > limit else ""
    n = int(collapse["collapsed"].sum())
    return [
        f"{n} of {len(collapse)} trials {'is' if n == 1 else 'are'} collapsed (at or below a "
        "trivial predictor's "
        f"{metric}): {'; '.join(named)}{more}."
    ]
