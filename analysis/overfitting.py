"""Overfitting onsets from Prechelt's early-stopping criteria, kept only when they persist.

Prechelt (1998), "Early Stopping - But When?": the generalization loss
GL(t) = 100 * (E_va(t) / min_{t' <= t} E_va(t') - 1) and the training progress
P_k(t) = 1000 * (sum of the last k training losses / (k * their minimum) - 1).

A rise of GL above the threshold is an onset only if the validation loss never returns
below the minimum it rose from; since that minimum is the lowest value up to the rise,
this holds exactly for rises after the curve's overall minimum. Rises before it are
*transient*: the curve came back down and set a new minimum. They are counted, not
reported as onsets (``Params.onset_rule`` states this in the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import FACTORS, split_trials
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better

__all__ = [
    "OnsetResult",
    "generalization_loss",
    "overfit_onset",
    "overfitting_table",
    "training_progress",
]

OVERFITTING_COLUMNS: list[str] = [
    "cell_id", *FACTORS, "seed", "val_min_epoch", "overfit_epoch", "transient_rises", "gl_max",
    "gl_final", "progress_final", "train_val_gap", "best_minus_last",
]  # fmt: skip


def generalization_loss(val_loss: np.ndarray) -> np.ndarray:
    """GL(t) in percent above the lowest validation loss seen up to t."""
    val_loss = np.asarray(val_loss, dtype=float)
    return 100.0 * (val_loss / np.fmin.accumulate(val_loss) - 1.0)


def training_progress(train_loss: np.ndarray, k: int = 5) -> np.ndarray:
    """P_k(t) over the strip of the k epochs ending at t; NaN before the first full strip.

    Prechelt reads it at strip ends only; here it slides, one value per epoch.
    """
    strips = pd.Series(np.asarray(train_loss, dtype=float)).rolling(k, min_periods=k)
    return (1000.0 * (strips.mean() / strips.min() - 1.0)).to_numpy()


@dataclass(frozen=True)
class OnsetResult:
    """``index``: the 0-based onset, ``None`` if none; ``transient_rises``: rises above the
    threshold that later returned below the minimum they rose from."""

    index: int | None
    transient_rises: int


def overfit_onset(
    train_loss: np.ndarray, val_loss: np.ndarray, params: Params = DEFAULT_PARAMS
) -> OnsetResult:
    """The first epoch after the validation minimum with GL > ``params.gl_alpha`` while
    the training loss is still below its value at that minimum.

    The second condition tells overfitting (training still improves while validation
    worsens) from a run that degrades on both.
    """
    train_loss = np.asarray(train_loss, dtype=float)
    val_loss = np.asarray(val_loss, dtype=float)
    above = generalization_loss(val_loss) > params.gl_alpha
    lowest = int(np.nanargmin(val_loss))
    starts = np.flatnonzero(above & ~np.r_[False, above[:-1]])
    transient = int((starts < lowest).sum())
    after = np.arange(len(val_loss)) > lowest
    onset = np.flatnonzero(above & after & (train_loss < train_loss[lowest]))
    return OnsetResult(int(onset[0]) if len(onset) else None, transient)


def overfitting_table(
    curves: pd.DataFrame, metric: str = "val_iou", params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """One row per (cell, seed) with both losses.

    Columns: ``val_min_epoch``, ``overfit_epoch`` (null if none), ``transient_rises``,
    ``gl_max``, ``gl_final``, ``progress_final`` (P_k at the last epoch),
    ``train_val_gap`` (final train − validation ``metric``, when the train curve exists)
    and ``best_minus_last`` (best − last ``metric``: what stopping at the best epoch
    would have kept).
    """
    empty = pd.DataFrame(columns=OVERFITTING_COLUMNS).astype({"overfit_epoch": "Int64"})
    if curves.empty:
        return empty
    curves = curves.dropna(subset=["val_loss", "train_loss"])
    if curves.empty:
        return empty
    curves, heads, bounds = split_trials(curves)
    epochs = curves["epoch"].to_numpy()
    train, val = curves["train_loss"].to_numpy(float), curves["val_loss"].to_numpy(float)
    nan = np.full(len(curves), np.nan)
    score = curves[metric].to_numpy(float) if metric in curves.columns else nan
    train_metric = metric.replace("val_", "train_", 1)
    train_score = curves[train_metric].to_numpy(float) if train_metric in curves else nan
    pick = np.nanmax if higher_is_better(metric) else np.nanmin
    rows = np.full((len(heads), 8), np.nan)
    for i in range(len(heads)):
        lo, hi = bounds[i], bounds[i + 1]
        gl = generalization_loss(val[lo:hi])
        onset = overfit_onset(train[lo:hi], val[lo:hi], params)
        s = score[lo:hi]
        best = pick(s) if not np.isnan(s).all() else np.nan
        rows[i] = (
            epochs[lo + int(np.nanargmin(val[lo:hi]))],
            epochs[lo + onset.index] if onset.index is not None else np.nan,
            onset.transient_rises,
            np.nanmax(gl),
            gl[-1],
            training_progress(train[lo:hi], params.progress_k)[-1],
            train_score[hi - 1] - s[-1],
            abs(best - s[-1]),
        )
    out = heads.copy()
    for j, col in enumerate(OVERFITTING_COLUMNS[6:]):
        out[col] = rows[:, j]
    return out[OVERFITTING_COLUMNS].astype(
        {"val_min_epoch": "Int64", "overfit_epoch": "Int64", "transient_rises": int}
    )
