"""Overfitting onsets from Prechelt's early-stopping criteria, kept only when they persist.

Prechelt (1998), "Early Stopping - But When?": the generalization loss
GL(t) = 100 * (E_va(t) / min_{t' <= t} E_va(t') - 1) and the training progress
P_k(t) = 1000 * (sum of the last k training losses / (k * their minimum) - 1).

A rise of GL above the threshold is an onset only if the validation loss never returns
below the minimum it rose from; since that minimum is the lowest value up to the rise,
this holds exactly for rises after the curve's overall minimum. Rises before it are
*transient*: the curve came back down and set a new minimum. They are counted, not
reported as onsets (``Params.onset_rule`` states this in the report).

An onset is a property of the *training run*: it is found on the run's whole recorded
curve and a cell read off the run at its own epoch shows it only once it has happened.
An onset the run cannot confirm (fewer than ``Params.onset_confirm`` later epochs, or a
median GL over them at or below the threshold) is *unconfirmed*: reported apart, not as
an onset, since a rise in the last epoch or two may be noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import FACTORS, pad_runs, rolling_runs, split_runs
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import DEFAULT_METRIC

__all__ = [
    "OnsetResult",
    "generalization_loss",
    "overfit_onset",
    "overfitting_table",
    "training_progress",
]

OVERFITTING_COLUMNS: list[str] = [
    "cell_id", *FACTORS, "seed", "training_run", "trial_epoch", "val_min_epoch",
    "overfit_epoch", "unconfirmed_onset_epoch", "run_overfit_epoch", "transient_rises",
    "gl_max", "gl_final", "progress_final", "train_val_gap", "best_minus_last",
]  # fmt: skip
_INT_COLUMNS = (
    "trial_epoch", "val_min_epoch", "overfit_epoch", "unconfirmed_onset_epoch",
    "run_overfit_epoch",
)  # fmt: skip
_NUMBERS = OVERFITTING_COLUMNS[OVERFITTING_COLUMNS.index("trial_epoch") :]


def generalization_loss(val_loss: np.ndarray) -> np.ndarray:
    """GL(t) in percent above the lowest validation loss seen up to t (along the last
    axis: each row of a matrix is a curve; NaNs are skipped by the running minimum)."""
    val_loss = np.asarray(val_loss, dtype=float)
    return 100.0 * (val_loss / np.fmin.accumulate(val_loss, axis=-1) - 1.0)


def training_progress(train_loss: np.ndarray, k: int = 5) -> np.ndarray:
    """P_k(t) over the strip of the k epochs ending at t; NaN before the first full strip.

    Prechelt reads it at strip ends only; here it slides, one value per epoch.
    """
    strips = pd.Series(np.asarray(train_loss, dtype=float)).rolling(k, min_periods=k)
    return (1000.0 * (strips.mean() / strips.min() - 1.0)).to_numpy()


def _runs_progress(train_loss: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """:func:`training_progress` of each trial's curve at once; trial ``i`` is
    ``train_loss[bounds[i] : bounds[i + 1]]``."""
    mean = rolling_runs(train_loss, bounds, k, "mean")
    return 1000.0 * (mean / rolling_runs(train_loss, bounds, k, "min") - 1.0)


@dataclass(frozen=True)
class OnsetResult:
    """``index``: the 0-based onset, ``None`` if none; ``confirmed``: the curve has at
    least ``onset_confirm`` epochs after it and their median GL stays above the threshold;
    ``transient_rises``: rises above the threshold that later returned below the minimum
    they rose from, starting at the 0-based ``transient_starts``."""

    index: int | None
    transient_rises: int
    confirmed: bool = False
    transient_starts: tuple[int, ...] = ()


def overfit_onset(
    train_loss: np.ndarray, val_loss: np.ndarray, params: Params = DEFAULT_PARAMS
) -> OnsetResult:
    """The first epoch after the validation minimum with GL > ``params.gl_alpha`` while
    the training loss is still below its value at that minimum, and whether the epochs
    after it confirm it.

    The second condition tells overfitting (training still improves while validation
    worsens) from a run that degrades on both.
    """
    train = np.asarray(train_loss, dtype=float)[None, :]
    val = np.asarray(val_loss, dtype=float)[None, :]
    onsets = _onsets(train, val, np.array([val.shape[1]]), params)
    transient = tuple(int(t) for t in np.flatnonzero(onsets.transient[0]))
    if onsets.index[0] < 0:
        return OnsetResult(None, len(transient), False, transient)
    return OnsetResult(int(onsets.index[0]), len(transient), bool(onsets.confirmed[0]), transient)


@dataclass(frozen=True)
class _Onsets:
    """:func:`overfit_onset` of each row of a padded matrix: ``index`` (-1 for none),
    ``confirmed`` and ``transient`` (True where a transient rise starts)."""

    index: np.ndarray
    confirmed: np.ndarray
    transient: np.ndarray


def _onsets(train: np.ndarray, val: np.ndarray, lengths: np.ndarray, params: Params) -> _Onsets:
    """The rule of :func:`overfit_onset` applied to every row of NaN-padded loss
    matrices at once (row ``r`` holds ``lengths[r]`` epochs)."""
    gl = generalization_loss(val)
    above = gl > params.gl_alpha
    column = np.arange(val.shape[1])
    lowest = np.nanargmin(val, axis=1)
    starts = above & ~np.pad(above, ((0, 0), (1, 0)))[:, :-1]
    transient = starts & (column < lowest[:, None])
    at_lowest = train[np.arange(len(train)), lowest]
    with np.errstate(invalid="ignore"):
        rising = above & (column > lowest[:, None]) & (train < at_lowest[:, None])
    found = rising.any(axis=1)
    first = np.where(found, rising.argmax(axis=1), -1)
    later = np.where(column > first[:, None], gl, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no later epoch: NaN, not confirmed
        median = np.nanmedian(later, axis=1)
    confirmed = found & (lengths - first - 1 >= params.onset_confirm) & (median > params.gl_alpha)
    return _Onsets(first, confirmed, transient)


def overfitting_table(
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """One row per (cell, seed) with both losses; onsets from its training run's curve.
    The ``factors`` beyond the four (a study's :attr:`StudyData.factors`) follow
    ``batch_size`` where the curves have them.

    Run columns: ``training_run`` and ``run_overfit_epoch`` (the run's confirmed onset,
    whatever the trial's epoch). At the trial's own epoch ``trial_epoch``:
    ``overfit_epoch`` (the run's confirmed onset when it is at or before it, else null),
    ``unconfirmed_onset_epoch`` (likewise for an onset the run does not confirm),
    ``transient_rises`` (the run's transient rises begun by then), ``val_min_epoch``,
    ``gl_max``, ``gl_final``, ``progress_final`` (P_k at the trial's epoch),
    ``train_val_gap`` (train − validation ``metric`` there, when the train curve
    exists) and ``best_minus_last`` (best − last ``metric`` over its epochs: what
    stopping at the best epoch would have kept).
    """
    empty = pd.DataFrame(columns=OVERFITTING_COLUMNS).astype(dict.fromkeys(_INT_COLUMNS, "Int64"))
    if curves.empty:
        return empty
    curves = curves.dropna(subset=["val_loss", "train_loss"])
    if curves.empty:
        return empty
    curves, heads, bounds, longest = split_runs(curves, factors)
    epochs = curves["epoch"].to_numpy(float)
    train, val = curves["train_loss"].to_numpy(float), curves["val_loss"].to_numpy(float)
    nan = np.full(len(curves), np.nan)
    score = curves[metric].to_numpy(float) if metric in curves.columns else nan
    train_metric = metric.replace("val_", "train_", 1)
    train_score = curves[train_metric].to_numpy(float) if train_metric in curves else nan
    pick = np.nanmax if higher_is_better(metric) else np.nanmin
    ends = bounds[1:] - 1
    trial_val, lengths = pad_runs(val, bounds)
    run_rows = np.unique(longest)
    run_train = pad_runs(train, bounds, run_rows)[0]
    # note: the runs' rows of the trials' matrix, cut to the runs' longest curve
    run_val = trial_val[run_rows, : run_train.shape[1]]
    runs = _onsets(run_train, run_val, lengths[run_rows], params)
    run = np.searchsorted(run_rows, longest)
    index = runs.index[run]
    at = np.where(index >= 0, epochs[bounds[longest] + np.maximum(index, 0)], np.nan)
    confirmed = runs.confirmed[run]
    reached = at <= epochs[ends]
    rises = np.cumsum(runs.transient, axis=1)[run, lengths - 1]
    gl = generalization_loss(trial_val)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a trial without the metric: NaN
        best = pick(pad_runs(score, bounds)[0], axis=1)
    rows = np.column_stack([
        epochs[ends],
        epochs[bounds[:-1] + np.nanargmin(trial_val, axis=1)],
        np.where(confirmed & reached, at, np.nan),
        np.where(~confirmed & reached, at, np.nan),
        np.where(confirmed, at, np.nan),
        rises,
        np.nanmax(gl, axis=1),
        gl[np.arange(len(gl)), lengths - 1],
        _runs_progress(train, bounds, params.progress_k)[ends],
        train_score[ends] - score[ends],
        np.abs(best - score[ends]),
    ])  # fmt: skip
    out = pd.concat([heads, pd.DataFrame(rows, columns=_NUMBERS)], axis=1)
    extra = [f for f in heads.columns if f not in OVERFITTING_COLUMNS]
    at = OVERFITTING_COLUMNS.index("seed")
    columns = [*OVERFITTING_COLUMNS[:at], *extra, *OVERFITTING_COLUMNS[at:]]
    return out[columns].astype(
        {**dict.fromkeys(_INT_COLUMNS, "Int64"), "transient_rises": int}
    )
