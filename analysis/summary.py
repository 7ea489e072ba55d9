"""The sentences that sum a study's tables up, for the terminal and the report's first
screen: what to use first, then what can go wrong with it (collapse, the edge of the
grid), what matters and how sure the seeds make it, batch size at equal epochs and at
equal steps, the rules of thumb, the curves, then caveats."""

from __future__ import annotations

import pandas as pd

from analysis.batch import batch_sentences, lr_text
from analysis.claims import claim_sentence
from analysis.collapse import collapse_sentences
from analysis.critical_batch import critical_batch_sentences
from analysis.edges import edge_sentences
from analysis.findings import ReportTables
from analysis.load import StudyData
from analysis.params import Params
from analysis.recommend import recommendation_sentences
from analysis.scaling import MIN_SIZES
from analysis.stats import format_interval, format_p, higher_is_better

__all__ = ["lead_count", "summarize"]

MAX_LEAD = 4  # recommendation sentences on the first screen; the table has every size


def _importance_sentences(tables: ReportTables, params: Params) -> list[str]:
    """Every significant term whose ω² reaches ``params.min_omega_sq``, largest first;
    the smaller significant terms in one closing sentence."""
    effects = tables.importance
    if effects.empty:
        return ["ANOVA skipped: no factor varies or there are too few trials."]
    unit = tables.anova.attrs.get("unit", "")
    significant = effects[effects["p_value"] < params.alpha]
    if significant.empty:
        return [f"No factor or interaction is significant at p < {params.alpha:g}. {unit}".strip()]
    named = significant[significant["omega_sq"] >= params.min_omega_sq]
    out = []
    parts = [
        f"{r.term} {r.omega_sq:.0%} (ω² {format_interval(r.omega_sq, r.ci_low, r.ci_high, 2)}, "
        f"{format_p(r.p_value)})"
        for r in named.itertuples()
    ]
    if parts:
        out.append(
            f"What matters, as shares of the variance of final {tables.metric}: "
            + "; ".join(parts)
            + "."
            + (f" {unit}" if unit else "")
        )
    rest = significant[significant["omega_sq"] < params.min_omega_sq]
    if len(rest):
        out.append(
            f"Also significant (p < {params.alpha:g}), each under {params.min_omega_sq:.0%} "
            f"of the variance: {', '.join(rest['term'])}."
        )
    return out


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _plateau_sentence(tables: ReportTables, metric: str) -> list[str]:
    """Plateaus as the runs show them, among the trials that did not collapse."""
    plateau = tables.plateau
    if plateau.empty:
        return []
    keys = ["cell_id", "seed"]
    flags = tables.final[[*keys, "collapsed"]]
    p = plateau.merge(flags, on=keys, how="left")
    p = p[~p["collapsed"].fillna(False).astype(bool)]
    runs = plateau.groupby("training_run")["stuck_epochs"].max().fillna(0)
    stuck = runs[runs > 0]
    if p.empty:
        return [f"No plateau statistics: every trial with a curve is collapsed ({metric})."]
    found = p["plateau_epoch"].notna()
    later = p["run_plateau_epoch"].notna() & ~found
    text = (
        f"Plateaus, judged on each training run's whole curve: {int(found.sum())} of {len(p)} "
        "trials that did not collapse had plateaued by their own epoch"
    )
    if found.any():
        text += (
            f" (median epoch {p.loc[found, 'plateau_epoch'].median():.0f}, the run gaining "
            f"a median {p.loc[found, 'gain_after_plateau'].median():+.3f} {metric} after it)"
        )
    if later.any():
        gain = p.loc[later, "gain_after_trial"].median()
        text += (
            f"; {_count(int(later.sum()), 'was', 'were')} read before their run plateaued "
            f"(the run gains a median {gain:+.3f} later)"
        )
    never = int((p["run_plateau_epoch"].isna()).sum())
    if never:
        text += f"; {never} belong to runs that never plateau (still improving or noisy)"
    if len(stuck):
        text += (
            f". {len(stuck)} of {len(runs)} training runs start stuck at a trivial score "
            f"(median {stuck.median():.0f} epochs) before they take off; a stuck start is "
            "not a plateau"
        )
    return [text + "."]


def _onset_sentence(tables: ReportTables, metric: str) -> list[str]:
    over = tables.overfitting
    if over.empty:
        return []
    onset = over["overfit_epoch"].dropna()
    unconfirmed = int(over["unconfirmed_onset_epoch"].notna().sum())
    transient = int(over["transient_rises"].sum())
    text = f"{len(onset)} of {len(over)} trials overfit by their own epoch (confirmed onsets"
    text += f", median epoch {onset.median():.0f})" if len(onset) else ")"
    if unconfirmed:
        text += (
            "; 1 onset comes too late in its run to confirm and is not counted"
            if unconfirmed == 1
            else f"; {unconfirmed} onsets come too late in their run to confirm and are not counted"
        )
    if transient:
        rises = "rise of the validation loss was" if transient == 1 else "rises of the validation loss were"  # noqa: E501
        text += f"; {transient} transient {rises} ignored"
    return [
        f"{text}; stopping at the best epoch keeps a median "
        f"{over['best_minus_last'].median():.3f} {metric}."
    ]


def _gap_sentence(tables: ReportTables, metric: str, params: Params) -> list[str]:
    """The train − validation gap of the metric at each trial's own epoch, where it is
    large: by image size, the range of the cells' mean gaps."""
    over = tables.overfitting.dropna(subset=["train_val_gap"])
    if over.empty or not higher_is_better(metric):
        return []
    by_cell = over.groupby(["image_size", "cell_id"])["train_val_gap"].mean().reset_index()
    widest = by_cell.groupby("image_size")["train_val_gap"].agg(["min", "max"])
    big = widest[widest["max"] >= params.notable_gap]
    if big.empty:
        return []
    parts = [
        f"{lo:.2f}–{hi:.2f} at {size} px" if hi - lo >= 0.005 else f"{hi:.2f} at {size} px"
        for size, (lo, hi) in big.iterrows()
    ]
    return [
        f"Train − validation gap of {metric} at the cells' own epochs (cell means): "
        f"{'; '.join(parts)}. A gap this size means the model fits its training images "
        "much better than unseen ones."
    ]


def _scaling_sentence(tables: ReportTables, params: Params) -> list[str]:
    scaling, sizes = tables.scaling, tables.cells["dataset_size"].nunique()
    if scaling.empty:
        if sizes >= MIN_SIZES:
            return []
        return [
            f"No data-scaling fit: it needs ≥ {MIN_SIZES} data set sizes; the grid has {sizes}."
        ]
    r2 = scaling["r2"].median()
    text = (
        f"Data scaling (power law of 1 − metric over {len(scaling)} groups, median R² "
        f"{r2:.2f}): median exponent {scaling['exponent'].median():.2f}"
    )
    points = params.scaling_gain * 100
    gain = f"{points:g} point" + ("" if points == 1 else "s")
    where = scaling["threshold"].value_counts()
    if where.get("in range", 0) * 2 > len(scaling):
        at = scaling["doubling_below_1pt_at"].median()
        text += f"; past ~{at:.0f} images a doubling gains < {gain}"
    elif where.get("beyond range", 0) * 2 > len(scaling):
        text += (
            f"; in {where['beyond range']} groups even the largest measured doubling gains ≥ "
            f"{gain}, so more data would likely help (not extrapolated)"
        )
    else:
        text += f"; within the measured sizes every doubling gains < {gain}"
    if r2 < params.min_r2:
        text += "; the law fits poorly, so read it with care"
    return [text + "."]


def _cost_sentence(tables: ReportTables, metric: str) -> list[str]:
    front = tables.pareto[tables.pareto["on_time_frontier"]].sort_values("train_time_s")
    if len(front) < 2:
        return []
    lo, hi = front.iloc[0], front.iloc[-1]
    return [
        f"Time frontier: {len(front)} cells, from {lo['train_time_s']:.0f} s ({metric} "
        f"{lo['final_mean']:.3f}) to {hi['train_time_s']:.0f} s ({hi['final_mean']:.3f})."
    ]


def _best_sentence(cells: pd.DataFrame, metric: str) -> str:
    row = cells.iloc[0]
    value = format_interval(row["final_mean"], row["final_ci_low"], row["final_ci_high"])
    return f"Best cell: {row['cell_id']}, {metric} {value} over {int(row['n'])} seed(s)."


def _lead(tables: ReportTables, metric: str, params: Params) -> list[str]:
    """A recommendation per image size; with many sizes, those of the best cells."""
    rec = tables.recommendations
    sentences = recommendation_sentences(rec, metric, params)
    if len(sentences) <= MAX_LEAD:
        return sentences
    sizes = sorted(rec["image_size"].unique())
    best = rec.groupby("image_size")["best_mean"].first()
    top = set(best.sort_values(ascending=not higher_is_better(metric)).index[: MAX_LEAD - 1])
    kept = [s for size, s in zip(sizes, sentences, strict=True) if size in top]
    rest = len(sizes) - len(kept)
    return [*kept, f"The other {rest} image sizes: see the Recommendations table."]


def lead_count(tables: ReportTables) -> int:
    """How many of :func:`summarize`'s first findings are recommendations."""
    return min(tables.recommendations["image_size"].nunique(), MAX_LEAD)


def summarize(data: StudyData, tables: ReportTables) -> list[str]:
    """Short sentences for the terminal and the report's first screen, most useful first."""
    metric, params, cells = data.metric, data.params, tables.cells
    findings = _lead(tables, metric, params)
    findings += collapse_sentences(tables.collapse, metric)
    if len(cells):
        findings.append(_best_sentence(cells, metric))
    findings += edge_sentences(tables.edges, metric, params)[:1]
    if len(tables.final):
        findings += _importance_sentences(tables, params)
    findings += batch_sentences(tables.batch_differences, metric, lr_text(data.grid), params)
    findings += critical_batch_sentences(tables.critical_batch, metric)
    claims = claim_sentence(tables.claims)
    if claims:
        findings.append(claims)
    findings += _plateau_sentence(tables, metric)
    findings += _onset_sentence(tables, metric)
    findings += _gap_sentence(tables, metric, params)
    if len(cells) and cells["n"].max() >= 2:
        findings.append(tables.detectable.sentence(metric))
    findings += _scaling_sentence(tables, params)
    findings += _cost_sentence(tables, metric)
    few = int((cells["n"] < params.min_seeds).sum()) if len(cells) else 0
    if few:
        findings.append(
            f"{few} of {len(cells)} cells have fewer than {params.min_seeds} seeds: no interval "
            "is drawn for them (too few seeds to estimate one); plots show their seeds as points."
        )
    findings += data.notes
    dropped = len(data.ok) - len(tables.final)
    if dropped:
        findings.append(f"{dropped} ok trials have no final {metric} and were left out.")
    findings.append(f"{len(tables.final)} trials analysed over {cells['cell_id'].nunique()} cells.")
    return findings
