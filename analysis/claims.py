"""Claims judged: the rules of thumb of the article gridrun answers and the grid file's
``claims:``, each supported, contradicted, inconclusive or not testable in this grid.

The unit of evidence is the seed. Each seed replicates the whole grid, so a level's
value in a seed is the mean over that seed's trials at the level (averaged over the
other factors), and two levels are compared by a paired t-test over seeds (seeds − 1
degrees of freedom). Trials that share a training run (cells differing only in epochs)
fall in one seed, so sharing never counts a run twice. One seed tests nothing.

- ``better``: the claimed levels' mean against the other levels' mean (each level
  weighing the same). Contradicted when they are worse (one-sided p < alpha) or when the
  upper end of their advantage's interval is below ``params.margin`` (no better by a
  margin that matters); supported when better at p < alpha; otherwise
  inconclusive. Not testable when no level, or every level, of the grid is claimed.
- ``best_in``: the best level inside the range (by mean) against each level outside.
  Contradicted when one outside level beats every inside level (p < alpha); supported
  when the best inside level beats a level below and a level above the range and no
  outside level beats it; not testable without a level inside, below and above the
  range (unless already contradicted); otherwise inconclusive.
- ``trend``: the response at the factor's largest level against its smallest. Supported
  when it moves in the claimed direction at p < alpha, contradicted when it moves the
  other way at p < alpha, or (for the metric and the train-validation gap) when the
  upper end of the claimed change's interval is below ``params.margin``. ``best_epoch`` is read
  once per training run over its whole curve (its longest trial) and is not testable
  when most runs are best at their last epoch: they are still improving.

Differences are shown with their two-sided (1 − 2 alpha) t interval (90 % at alpha 0.05),
which lies on one side of zero exactly when the one-sided test is significant, so each
verdict can be read off the interval shown; the levels' means carry ``params.level`` t
intervals. No p-value is adjusted for the several comparisons a ``best_in`` claim makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from scipy import stats

from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import decimals, format_interval, format_p, higher_is_better, metric_bounds
from gridrun.claims import RULES_OF_THUMB, Claim, parse_claims
from gridrun.layout import trial_id

if TYPE_CHECKING:
    from analysis.load import StudyData

__all__ = [
    "CLAIM_COLUMNS",
    "VERDICTS",
    "claim_sentence",
    "claims_table",
    "judge_claims",
    "study_claims",
]

VERDICTS = ("supported", "contradicted", "inconclusive", "not testable")
RULE, GRID_FILE = "rule of thumb", "grid file"
CLAIM_COLUMNS = [
    "claim", "source", "factor", "kind", "verdict", "test", "evidence", "needed",
    "difference", "ci_low", "ci_high", "p", "seeds",
]  # fmt: skip


@dataclass(frozen=True)
class _Paired:
    """A paired-by-seed difference, signed so that the claimed direction is positive."""

    mean: float
    # the two-sided (1 - 2 alpha) interval: it lies on one side of 0 exactly when the
    # one-sided test at alpha is significant, so the verdict can be read off it
    low: float
    high: float
    p_for: float  # one-sided p that the difference is positive
    p_against: float  # one-sided p that it is negative
    seeds: int


@dataclass(frozen=True)
class _Verdict:
    verdict: str
    evidence: str = ""
    needed: str = ""
    paired: _Paired | None = None
    sign: float = 1.0  # the paired difference times sign is the difference shown


@dataclass(frozen=True)
class _Context:
    metric: str
    params: Params
    bounds: tuple[float, float]


def _paired(diff: pd.Series, params: Params) -> _Paired | None:
    d = diff.dropna().to_numpy(dtype=float)
    n = len(d)
    if n < 2:
        return None
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if np.ptp(d) <= 1e-9 * max(1.0, abs(mean)):
        # note: seeds that agree (to rounding) are compared exactly, and a difference
        # of rounding error is none
        mean = 0.0 if abs(mean) <= 1e-9 else mean
        p_for, p_against = (0.0, 1.0) if mean > 0 else (1.0, 0.0 if mean < 0 else 1.0)
        return _Paired(mean, mean, mean, p_for, p_against, n)
    t = mean / se
    half = stats.t.ppf(1 - params.alpha, n - 1) * se
    return _Paired(
        mean, mean - half, mean + half, float(stats.t.sf(t, n - 1)), float(stats.t.cdf(t, n - 1)), n
    )


def _mean_text(values: pd.Series, bounds: tuple[float, float], params: Params) -> str:
    """The mean over seeds with its t interval, kept inside the value's range."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "no value"
    mean = float(v.mean())
    if len(v) < 2 or np.ptp(v) <= 1e-9 * max(1.0, abs(mean)):
        return f"{mean:.4g}" + ("" if len(v) < 2 else " (every seed)")
    half = stats.t.ppf(0.5 + params.level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    lo, hi = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return format_interval(mean, lo, hi)


def _diff_text(paired: _Paired, sign: float, params: Params) -> str:
    """The difference with its interval and the one-sided p in the direction it points."""
    lo, hi = sorted((sign * paired.low, sign * paired.high))
    p = paired.p_for if paired.mean >= 0 else paired.p_against
    tail = f"{format_p(p)} (one-sided paired t over {paired.seeds} seeds)"
    if hi - lo <= 1e-9 * max(1.0, abs(paired.mean)):
        return f"difference {sign * paired.mean + 0.0:+.4g} in every seed, {tail}"
    d = decimals(hi - lo)
    level = f"{1 - 2 * params.alpha:.0%}"
    return f"difference {sign * paired.mean:+.{d}f} [{lo:+.{d}f}, {hi:+.{d}f}] ({level}), {tail}"


def _levels_text(levels: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in levels)


def _per_seed(frame: pd.DataFrame, factor: str) -> pd.DataFrame:
    """Seeds × levels: each seed's mean value at each level, over the other factors."""
    return frame.groupby(["seed", factor])["value"].mean().unstack(factor).sort_index(axis=1)


def _last_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """Each trial's curve row at its own (last) epoch."""
    return curves.sort_values(["cell_id", "seed", "epoch"]).groupby(["cell_id", "seed"]).tail(1)


def _response(
    claim: Claim, final: pd.DataFrame, curves: pd.DataFrame, metric: str
) -> tuple[pd.DataFrame | None, str]:
    """Rows of (factor, seed, value) for the claim's response, or why there are none."""
    factor, response = claim.factor, claim.response_name
    if response == "metric":
        return final.assign(value=final["final"]), ""
    if response in ("steps", "train_time_s"):
        values = final[response] if response in final.columns else pd.Series(dtype=float)
        if values.notna().sum() == 0:
            return None, f"the trials table has no {response}"
        return final.assign(value=values), ""
    if response == "train_val_gap":
        train = f"train_{metric.removeprefix('val_')}"
        if not metric.startswith("val_") or train not in curves.columns:
            return None, f"the curves have no training counterpart of {metric}"
        last = _last_rows(curves)[["cell_id", "seed", metric, train]]
        rows = final[["cell_id", "seed", factor]].merge(last, on=["cell_id", "seed"])
        # note: signed so that a larger gap is more overfitting, for losses too
        sign = 1.0 if higher_is_better(metric) else -1.0
        rows["value"] = sign * (rows[train] - rows[metric])
        if rows["value"].notna().sum() == 0:
            return None, f"the curves hold no {train} at the trials' epochs"
        return rows, ""
    # best_epoch: once per training run, over its whole curve (the run's longest trial)
    runs = final.dropna(subset=["best_epoch"])
    if factor != "epochs":
        alone = pd.Series(
            [trial_id(c, s) for c, s in zip(runs["cell_id"], runs["seed"], strict=True)],
            index=runs.index,
        )
        run_key = runs["training_run"].fillna(alone) if "training_run" in runs.columns else alone
        runs = runs.assign(_run=run_key).sort_values("epochs").groupby("_run").tail(1)
    if runs.empty:
        return None, "no trial has a best epoch"
    at_end = int((runs["best_epoch"] >= runs["epochs"]).sum())
    if at_end > len(runs) / 2:
        return None, (
            f"{at_end} of {len(runs)} runs are best at their last epoch, so they are still "
            f"improving: train longer than {int(runs['epochs'].max())} epochs to test it"
        )
    return runs.assign(value=runs["best_epoch"].astype(float)), ""


def _suggest(claim: Claim) -> tuple[int, int]:
    """Levels just below and just above a ``best_in`` range that would test it."""
    lo, hi = claim.range or (1, 1)
    width = hi - lo
    above = hi + width if width else 2 * hi
    below = lo - width if width and lo - width > 0 else max(1, lo // 2)
    return below, above


def _margin_verdict(
    paired: _Paired, margin: float | None, alpha: float, words: str
) -> tuple[str, str]:
    """Contradicted when the claimed side is worse (p < alpha) or its whole interval stays
    under ``margin``, supported when better, else inconclusive; and the evidence note for
    the margin case (``words`` with ``{high}``, the interval's upper end)."""
    if paired.p_against < alpha:
        return "contradicted", ""
    if margin is not None and paired.high < margin:
        said = words.format(high=f"{paired.high:.3g}")
        return "contradicted", f"; {said}, under the margin {margin:g}"
    if paired.p_for < alpha:
        return "supported", ""
    return "inconclusive", ""


def _judge_better(claim: Claim, table: pd.DataFrame, sign: float, ctx: _Context) -> _Verdict:
    levels = list(table.columns)
    claimed = [v for v in levels if claim.claimed(v)]
    others = [v for v in levels if v not in claimed]
    what = claim.levels_text()
    if not claimed:
        return _Verdict(
            "not testable",
            needed=f"the grid's {claim.factor} levels are {_levels_text(levels)}: "
            f"add a level {what} to test it",
        )
    if not others:
        return _Verdict(
            "not testable",
            needed=f"every {claim.factor} level of the grid ({_levels_text(levels)}) is "
            f"{what}: add one that is not to test it",
        )
    ours, theirs = table[claimed].mean(axis=1), table[others].mean(axis=1)
    evidence = (
        f"{claim.factor} {what}: {_mean_text(ours, ctx.bounds, ctx.params)}; other levels "
        f"({_levels_text(others)}): {_mean_text(theirs, ctx.bounds, ctx.params)}"
    )
    paired = _paired(sign * (ours - theirs), ctx.params)
    if paired is None:
        return _Verdict("inconclusive", evidence, "two or more seeds")
    evidence += f"; {_diff_text(paired, sign, ctx.params)}"
    margin = ctx.params.margin
    verdict, note = _margin_verdict(paired, margin, ctx.params.alpha, "at most {high} better")
    return _Verdict(verdict, evidence + note, paired=paired, sign=sign)


def _judge_best_in(claim: Claim, table: pd.DataFrame, sign: float, ctx: _Context) -> _Verdict:
    lo, hi = claim.range or (0, 0)
    levels = list(table.columns)
    inside = [v for v in levels if lo <= v <= hi]
    below, above = [v for v in levels if v < lo], [v for v in levels if v > hi]
    low_pick, high_pick = _suggest(claim)
    span, factor = claim.range_text(), claim.factor
    at = f"at {span}" if lo == hi else f"in {span}"
    if factor == "epochs" and not above:
        reach = f"the longest run is {max(levels):g} epochs: train to ≥ {high_pick}"
        missing_above = f"{reach} to test {span}"
    else:
        missing_above = f"no {factor} level above {span}: add {high_pick} to test it"
    missing_below = f"no {factor} level below {span}: add {low_pick} to test it"
    if not inside:
        if factor == "epochs" and not above:
            needed = f"{reach} (with an epochs level in {span}) to test {span}"
        else:
            wanted = [span if lo == hi else f"a level in {span}"]
            wanted += [] if below else [str(low_pick)]
            wanted += [] if above else [str(high_pick)]
            needed = (
                f"the grid's {factor} levels are {_levels_text(levels)}: "
                f"add {' and '.join(wanted)} to test {span}"
            )
        return _Verdict("not testable", needed=needed)
    means = sign * table[inside].mean(axis=0)
    best = means.idxmax()
    outside = [*below, *above]
    comparisons = {v: _paired(sign * (table[best] - table[v]), ctx.params) for v in outside}
    best_text = _mean_text(table[best], ctx.bounds, ctx.params)
    evidence = f"best {at}: {factor} {best:g} {best_text}"
    for v, paired in comparisons.items():
        evidence += f"; {v:g}: {_mean_text(table[v], ctx.bounds, ctx.params)}"
        if paired is not None:
            evidence += f" ({best:g} − {v:g}: {sign * paired.mean:+.3g}, {format_p(paired.p_for)})"
    gaps = [text for side, text in ((below, missing_below), (above, missing_above)) if not side]
    if any(p is None for p in comparisons.values()) or not comparisons:
        return _Verdict("not testable" if gaps else "inconclusive", evidence, "; ".join(gaps))
    alpha = ctx.params.alpha
    for v in outside:
        beats = [_paired(sign * (table[v] - table[i]), ctx.params) for i in inside]
        if all(p is not None and p.p_for < alpha for p in beats):
            every = span if lo == hi else f"every level in {span}"
            return _Verdict("contradicted", f"{evidence}; {v:g} beats {every}")
    if gaps:
        return _Verdict("not testable", evidence, "; ".join(gaps))
    beaten = {v for v, p in comparisons.items() if p is not None and p.p_for < alpha}
    beats_best = [v for v, p in comparisons.items() if p is not None and p.p_against < alpha]
    if beats_best or not (beaten & set(below) and beaten & set(above)):
        return _Verdict("inconclusive", evidence)
    return _Verdict("supported", evidence)


def _judge_trend(claim: Claim, table: pd.DataFrame, bounds: tuple, ctx: _Context) -> _Verdict:
    levels = list(table.columns)
    low, high = levels[0], levels[-1]
    sign = 1.0 if claim.direction == "increases" else -1.0
    response = claim.response_name
    evidence = (
        f"{response} at {claim.factor} {low:g}: {_mean_text(table[low], bounds, ctx.params)}; "
        f"at {high:g}: {_mean_text(table[high], bounds, ctx.params)}"
    )
    paired = _paired(sign * (table[high] - table[low]), ctx.params)
    if paired is None:
        return _Verdict("inconclusive", evidence, "two or more seeds")
    evidence += f"; {_diff_text(paired, sign, ctx.params)}"
    margin = ctx.params.margin if response in ("metric", "train_val_gap") else None
    verdict, note = _margin_verdict(paired, margin, ctx.params.alpha, "changes by at most {high}")
    return _Verdict(verdict, evidence + note, paired=paired, sign=sign)


def _test_text(claim: Claim, ctx: _Context) -> str:
    text = _test_words(claim, ctx)
    if claim.factor == "batch_size" and claim.response_name in ("metric", "train_time_s"):
        # note: at one learning rate and equal epochs a smaller batch also takes more steps
        text += (
            "; read at equal epochs, where a smaller batch also takes more optimizer steps "
            "(the Batch size section compares at equal steps too)"
        )
    return text


def _test_words(claim: Claim, ctx: _Context) -> str:
    a, f, metric = ctx.params.alpha, claim.factor, ctx.metric
    seeds = f"per seed averaged over the other factors; one-sided paired t over seeds, α = {a:g}"
    margin = f"; contradicted also when the interval of the gain lies under {ctx.params.margin:g}"
    if claim.kind == "better":
        return f"{metric} at {f} {claim.levels_text()} against the other levels, {seeds}{margin}"
    if claim.kind == "best_in":
        lo, hi = claim.range or (0, 0)
        where = f"{'at' if lo == hi else 'in'} {claim.range_text()}"
        return (
            f"the best {f} level {where} against each level outside on {metric}, {seeds}: "
            "it must beat a level below and one above, and none may beat it; contradicted "
            "when one level outside beats every level inside"
        )
    what = {
        "metric": metric,
        "best_epoch": "the epoch at which each training run is best",
        "train_val_gap": f"training minus validation {metric.removeprefix('val_')} at the "
        "trial's epoch",
        "train_time_s": "training time at equal epochs",
        "steps": "optimizer steps",
    }[claim.response_name]
    verb = (claim.direction or "").removesuffix("s")
    tail = margin if claim.response_name in ("metric", "train_val_gap") else ""
    return f"does {what} {verb} from the smallest to the largest {f}? Per {seeds[4:]}{tail}"


def _judge(claim: Claim, final: pd.DataFrame, curves: pd.DataFrame, ctx: _Context) -> _Verdict:
    factor = claim.factor
    levels = sorted(final[factor].dropna().unique()) if factor in final.columns else []
    if not levels:
        return _Verdict("not testable", needed=f"the trials table has no {factor}")
    if claim.kind == "trend" and not pd.api.types.is_numeric_dtype(final[factor]):
        # note: a text setting (model.encoder) has no smallest and largest level
        return _Verdict("not testable", needed=f"a trend needs numeric levels; {factor} is text")
    if claim.kind == "trend" and len(levels) < 2:
        return _Verdict(
            "not testable",
            needed=f"the grid has one {factor} level ({levels[0]:g}): add a larger one, "
            f"e.g. {2 * levels[0]:g}, to test it",
        )
    frame, why = (
        (final.assign(value=final["final"]), "")
        if claim.kind != "trend"
        else _response(claim, final, curves, ctx.metric)
    )
    if frame is None:
        return _Verdict("not testable", needed=why)
    table = _per_seed(frame.dropna(subset=["value"]), factor)
    sign = 1.0 if higher_is_better(ctx.metric) else -1.0
    if claim.kind == "better":
        return _judge_better(claim, table, sign, ctx)
    if claim.kind == "best_in":
        return _judge_best_in(claim, table, sign, ctx)
    bounds = {"metric": ctx.bounds, "train_val_gap": (-math.inf, math.inf)}
    return _judge_trend(claim, table, bounds.get(claim.response_name, (0.0, math.inf)), ctx)


def judge_claims(
    claims: Sequence[Claim],
    final: pd.DataFrame,
    curves: pd.DataFrame,
    metric: str,
    params: Params = DEFAULT_PARAMS,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """One row per claim: its verdict, the test in words, the numbers and what would test it.

    ``final`` is :func:`analysis.load.final_metrics` (``final`` is the metric at the
    trial's epoch); ``curves`` the curve rows (``train_<name>`` next to ``val_<name>``);
    ``bounds`` the metric's range for the intervals (default :func:`metric_bounds`).
    Columns: ``claim``, ``source`` (rule of thumb | grid file), ``factor``, ``kind``,
    ``verdict`` (one of :data:`VERDICTS`), ``test``, ``evidence`` (level means with
    intervals, the paired difference and its one-sided p), ``needed`` (what would test
    a claim that is not testable or lacks seeds), and the numbers behind the evidence:
    ``difference`` (claimed side minus the other, in the response's units), its two-sided
    (1 − 2 alpha) interval ``ci_low``/``ci_high``, the one-sided ``p`` in the claimed
    direction and the ``seeds`` compared.
    """
    ctx = _Context(metric, params, bounds or metric_bounds(metric))
    rows = []
    for claim in claims:
        v = _judge(claim, final, curves, ctx)
        p = v.paired
        low, high = sorted((v.sign * p.low, v.sign * p.high)) if p else (math.nan, math.nan)
        rows.append({
            "claim": claim.title,
            "source": RULE if claim in RULES_OF_THUMB else GRID_FILE,
            "factor": claim.factor,
            "kind": claim.kind,
            "verdict": v.verdict,
            "test": _test_text(claim, ctx),
            "evidence": v.evidence,
            "needed": v.needed,
            "difference": v.sign * p.mean if p else math.nan,
            "ci_low": low,
            "ci_high": high,
            "p": p.p_for if p else math.nan,
            "seeds": p.seeds if p else 0,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def study_claims(grid: Mapping[str, Any]) -> tuple[list[Claim], list[str]]:
    """The rules of thumb, then the grid file's own claims (those not among the rules),
    and notes on a ``claims:`` value that does not read as claims."""
    try:
        own = parse_claims(grid.get("claims"))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        note = f"claims{where}: {message}; the grid file's claims are skipped."
        return list(RULES_OF_THUMB), [note]
    return [*RULES_OF_THUMB, *(c for c in own if c not in RULES_OF_THUMB)], []


def claims_table(data: StudyData) -> pd.DataFrame:
    """:func:`judge_claims` of a loaded study (:class:`analysis.load.StudyData`): the rules of
    thumb and the claims of its grid file."""
    claims, _ = study_claims(data.grid)
    return judge_claims(claims, data.final, data.curves, data.metric, data.params)


def claim_sentence(table: pd.DataFrame) -> str:
    """``Rules of thumb: 1 supported, 2 contradicted, 3 not testable in this grid (see
    Rules of thumb).``, with the grid file's claims counted after them; empty without claims."""

    def counts(rows: pd.DataFrame) -> str:
        n = rows["verdict"].value_counts()
        words = {"not testable": "not testable in this grid"}
        return ", ".join(f"{n[v]} {words.get(v, v)}" for v in VERDICTS if n.get(v, 0))

    parts = []
    for source, label in ((RULE, "Rules of thumb"), (GRID_FILE, "the grid file's claims")):
        rows = table[table["source"] == source]
        if len(rows):
            parts.append(f"{label}: {counts(rows)}")
    if not parts:
        return ""
    text = "; ".join(parts)
    return f"{text[0].upper()}{text[1:]} (see Rules of thumb)."
