"""Where a validation curve stops improving.

The rule (``Params.plateau_rule`` states it in the report): the plateau starts at the
first epoch t, with at least ``patience`` epochs after it, from which the smoothed
curve gains at most ``min_delta`` over the next ``patience`` epochs and never more than
``patience × min_delta`` later. Every later epoch is compared with the value *at t*,
not with a running best that a single noisy epoch could move, so noise below
``min_delta`` cannot restart the count; and a stall that training later climbs out of
is not a plateau. The curve is smoothed by a *centred* moving median first: a centred
window adds no lag, and a median (unlike a mean) removes a one-epoch spike and keeps a
corner sharp, so a curve that rises and is flat from epoch 20 has its plateau at 20.

A plateau is a property of a *training run*: trials that differ only in ``epochs``
share one run, and the run's whole recorded curve decides. A cell read off the run at
its own epoch has plateaued by then only if the run's plateau starts at or before it,
so no trial is called plateaued while its run gains more than the rule allows later.
An epoch where the smoothed curve sits at a trivial predictor's score (collapsed, see
:mod:`analysis.collapse`) cannot start a plateau: flat at the floor is a stuck model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from analysis.baselines import Baselines
from analysis.collapse import collapsed_curve
from analysis.load import FACTORS, pad_runs, rolling_runs, split_runs
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better
from gridrun.layout import DEFAULT_METRIC

__all__ = ["PlateauResult", "detect_plateau", "plateau_table", "smooth_centred", "smooth_runs"]


@dataclass(frozen=True)
class PlateauResult:
    """``index`` is the 0-based position of the plateau's start; ``None`` if none.
    ``stuck`` counts the leading epochs whose smoothed value is at a trivial score."""

    index: int | None
    value: float
    gain_after: float
    stuck: int = 0


def smooth_centred(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving median; the window shrinks at both ends, NaNs are skipped."""
    series = pd.Series(np.asarray(values, dtype=float))
    return series.rolling(window, center=True, min_periods=1).median().to_numpy()


def smooth_runs(values: np.ndarray, bounds: np.ndarray, window: int = 5) -> np.ndarray:
    """:func:`smooth_centred` of each run of ``values`` at once; run ``i`` is
    ``values[bounds[i] : bounds[i + 1]]`` (``bounds`` from 0 to ``len(values)``)."""
    return rolling_runs(values, bounds, window, "median", center=True, min_periods=1)


def detect_plateau(
    values: np.ndarray,
    params: Params = DEFAULT_PARAMS,
    higher_better: bool = True,
    trivial: Sequence[float] = (),
) -> PlateauResult:
    """The plateau of one curve under the module's rule.

    ``value`` is the smoothed metric at the plateau; ``gain_after`` the smoothed change
    from there to the last epoch, signed so that improvement is positive (negative when
    the curve fell back). ``trivial`` holds the trivial predictors' scores of the metric:
    an epoch whose smoothed value is collapsed on them cannot start the plateau.
    """
    raw = smooth_centred(values, params.window)
    found = _plateaus(raw[None, :], params, higher_better, trivial)
    index = int(found.index[0])
    return PlateauResult(
        index if index >= 0 else None, float(found.value[0]), float(found.gain_after[0]),
        int(found.stuck[0]),
    )  # fmt: skip


@dataclass(frozen=True)
class _Plateaus:
    """:func:`detect_plateau` of each row of a matrix: ``index`` is -1 where there is none
    (``value`` and ``gain_after`` NaN there)."""

    index: np.ndarray
    value: np.ndarray
    gain_after: np.ndarray
    stuck: np.ndarray


def _plateaus(
    raw: np.ndarray, params: Params, higher_better: bool, trivial: Sequence[float]
) -> _Plateaus:
    """The rule on every row of ``raw`` (curves already smoothed by :func:`smooth_centred`,
    NaN-padded) at once. NaNs are skipped: each row's values are moved to its front in
    order and the rule is applied to the first ``n`` of them."""
    sign = 1.0 if higher_better else -1.0
    rows, patience = np.arange(len(raw)), params.patience
    if raw.shape[1] == 0:
        raw = np.full((len(raw), 1), np.nan)
    kept = np.argsort(np.isnan(raw), axis=1, kind="stable")
    values = np.take_along_axis(raw, kept, axis=1)
    n = (~np.isnan(raw)).sum(axis=1)
    column = np.arange(raw.shape[1])
    inside = column < n[:, None]
    at_floor = collapsed_curve(values, trivial, params.collapse_margin, higher_better)
    off_floor = ~at_floor & inside
    stuck = np.where(off_floor.any(axis=1), off_floor.argmax(axis=1), n)
    s = np.where(inside, sign * values, -np.inf)
    width = max(raw.shape[1] - patience, 0)
    padded = np.pad(s, ((0, 0), (0, patience + 1)), constant_values=-np.inf)
    near = sliding_window_view(padded[:, 1:], patience, axis=1).max(axis=2)[:, :width]
    later = np.maximum.accumulate(padded[:, ::-1], axis=1)[:, ::-1][:, 1 : width + 1]
    candidates = s[:, :width]
    # note: a small tolerance so that a gain of exactly min_delta counts as "at most"
    eps = 1e-12
    ok = (near <= candidates + params.min_delta + eps) & (
        later <= candidates + patience * params.min_delta + eps
    )
    ok &= ~at_floor[:, :width] & (column[:width] < (n - patience)[:, None])
    found = ok.any(axis=1)
    t = ok.argmax(axis=1) if width else np.zeros(len(raw), dtype=int)
    last = s[rows, np.maximum(n - 1, 0)]
    at = s[rows, np.minimum(t, raw.shape[1] - 1)]
    with np.errstate(invalid="ignore"):  # -inf - -inf where a row has no plateau
        gain_after = np.where(found, last - at, np.nan)
    return _Plateaus(
        np.where(found, kept[rows, t] if width else -1, -1),
        np.where(found, sign * at, np.nan),
        gain_after,
        stuck,
    )


PLATEAU_COLUMNS: list[str] = [
    "cell_id", *FACTORS, "seed", "training_run", "trial_epoch", "run_epochs",
    "run_plateau_epoch", "plateau_epoch", "plateau_value", "gain_after_plateau",
    "gain_after_trial", "recent_gain", "epochs_after_plateau", "stuck_epochs",
]  # fmt: skip
_INT_COLUMNS = (
    "trial_epoch", "run_epochs", "run_plateau_epoch", "plateau_epoch", "epochs_after_plateau",
    "stuck_epochs",
)  # fmt: skip
_NUMBERS = PLATEAU_COLUMNS[PLATEAU_COLUMNS.index("trial_epoch") :]


def plateau_table(
    curves: pd.DataFrame,
    metric: str = DEFAULT_METRIC,
    params: Params = DEFAULT_PARAMS,
    baselines: Baselines | None = None,
    factors: Sequence[str] = FACTORS,
) -> pd.DataFrame:
    """One row per (cell, seed), the plateau found on its training run's whole curve;
    the ``factors`` beyond the four (a study's :attr:`StudyData.factors`) follow
    ``batch_size`` where the curves have them.

    Run columns: ``training_run``, ``run_epochs`` (its last recorded epoch),
    ``run_plateau_epoch``, ``plateau_value`` (smoothed metric there) and
    ``gain_after_plateau`` (smoothed change from it to the run's end), null without a
    run plateau; ``stuck_epochs`` (leading epochs at a trivial score, with
    ``baselines``). Trial columns, read at ``trial_epoch`` (its last curve epoch):
    ``plateau_epoch`` (the run's plateau when it starts by then, else null),
    ``epochs_after_plateau`` (trial epochs past it), ``gain_after_trial`` (the run's
    best smoothed value after the trial's epoch minus the value at it; NaN when the
    trial is the run's end) and ``recent_gain`` (smoothed change over the trial's last
    ``patience`` epochs). Gains are signed so that improvement is positive.
    """
    if curves.empty or metric not in curves.columns:
        empty = pd.DataFrame(columns=PLATEAU_COLUMNS)
        return empty.astype(dict.fromkeys(_INT_COLUMNS, "Int64"))
    curves, heads, bounds, longest = split_runs(curves, factors)
    values, epochs = curves[metric].to_numpy(float), curves["epoch"].to_numpy(float)
    higher = higher_is_better(metric)
    sign = 1.0 if higher else -1.0
    trivial = list(baselines.scores(metric).values()) if baselines is not None else []
    smoothed = smooth_runs(values, bounds, params.window)
    run_rows = np.unique(longest)
    raw, run_lengths = pad_runs(smoothed, bounds, run_rows)
    found = _plateaus(raw, params, higher, trivial)
    run = np.searchsorted(run_rows, longest)
    run_epochs = pad_runs(epochs, bounds, run_rows)[0][run]
    smooth = sign * raw[run]
    trial_epoch = epochs[bounds[1:] - 1]
    with np.errstate(invalid="ignore"):
        k = np.minimum((run_epochs < trial_epoch[:, None]).sum(axis=1), run_lengths[run] - 1)
    trials = np.arange(len(longest))
    index = found.index[run]
    run_at = np.where(index >= 0, run_epochs[trials, np.maximum(index, 0)], np.nan)
    by_trial = np.where(run_at <= trial_epoch, run_at, np.nan)
    column = np.arange(smooth.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the run's last epoch: NaN
        best_after = np.nanmax(np.where(column > k[:, None], smooth, np.nan), axis=1)
    at_k = smooth[trials, k]
    rows = np.column_stack([
        trial_epoch, run_epochs[trials, run_lengths[run] - 1], run_at, by_trial,
        found.value[run], found.gain_after[run], best_after - at_k,
        at_k - smooth[trials, np.maximum(k - params.patience, 0)], trial_epoch - by_trial,
        found.stuck[run],
    ])  # fmt: skip
    out = pd.concat([heads, pd.DataFrame(rows, columns=_NUMBERS, dtype=float)], axis=1)
    extra = [f for f in heads.columns if f not in PLATEAU_COLUMNS]
    at = PLATEAU_COLUMNS.index("seed")
    columns = [*PLATEAU_COLUMNS[:at], *extra, *PLATEAU_COLUMNS[at:]]
    return out[columns].astype(dict.fromkeys(_INT_COLUMNS, "Int64"))
