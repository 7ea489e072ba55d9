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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from analysis.baselines import Baselines
from analysis.collapse import collapsed_curve
from analysis.load import FACTORS, rolling_runs, split_runs
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
    return _plateau_of_smoothed(raw, params, higher_better, trivial)


def _plateau_of_smoothed(
    raw: np.ndarray, params: Params, higher_better: bool, trivial: Sequence[float]
) -> PlateauResult:
    """:func:`detect_plateau` of a curve already smoothed by :func:`smooth_centred`."""
    sign = 1.0 if higher_better else -1.0
    kept = np.flatnonzero(~np.isnan(raw))
    s, patience = sign * raw[kept], params.patience
    at_floor = collapsed_curve(raw[kept], trivial, params.collapse_margin, higher_better)
    stuck = int(np.argmin(at_floor)) if not at_floor.all() else len(at_floor)
    if len(s) <= patience:
        return PlateauResult(None, np.nan, np.nan, stuck)
    candidates = s[: len(s) - patience]
    near = sliding_window_view(s[1:], patience).max(axis=1)[: len(candidates)]
    later = np.maximum.accumulate(s[::-1])[::-1][1 : len(candidates) + 1]
    # note: a small tolerance so that a gain of exactly min_delta counts as "at most"
    eps = 1e-12
    ok = (near <= candidates + params.min_delta + eps) & (
        later <= candidates + patience * params.min_delta + eps
    )
    ok &= ~at_floor[: len(candidates)]
    if not ok.any():
        return PlateauResult(None, np.nan, np.nan, stuck)
    t = int(np.argmax(ok))
    return PlateauResult(int(kept[t]), float(sign * s[t]), float(s[-1] - s[t]), stuck)


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


def _trial_row(
    run: PlateauResult, smooth: np.ndarray, run_epochs: np.ndarray, trial_epoch: float,
    patience: int,
) -> list[float]:  # fmt: skip
    """The run's plateau read at one trial's epoch (``smooth`` signed: better is higher)."""
    k = min(int(np.searchsorted(run_epochs, trial_epoch)), len(run_epochs) - 1)
    run_at = run_epochs[run.index] if run.index is not None else np.nan
    by_trial = run_at if run_at <= trial_epoch else np.nan
    after = smooth[k + 1 :]
    gain_after_trial = (
        np.nanmax(after) - smooth[k] if len(after) and not np.isnan(after).all() else np.nan
    )
    return [
        trial_epoch, run_epochs[-1], run_at, by_trial, run.value, run.gain_after,
        gain_after_trial, smooth[k] - smooth[max(k - patience, 0)], trial_epoch - by_trial,
        run.stuck,
    ]  # fmt: skip


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
    runs = {}
    for j in np.unique(longest):
        raw = smoothed[bounds[j] : bounds[j + 1]]
        plateau = _plateau_of_smoothed(raw, params, higher, trivial)
        runs[j] = (plateau, sign * raw, epochs[bounds[j] : bounds[j + 1]])
    rows = [
        _trial_row(*runs[j], epochs[bounds[i + 1] - 1], params.patience)
        for i, j in enumerate(longest)
    ]
    out = pd.concat([heads, pd.DataFrame(rows, columns=_NUMBERS, dtype=float)], axis=1)
    extra = [f for f in heads.columns if f not in PLATEAU_COLUMNS]
    at = PLATEAU_COLUMNS.index("seed")
    columns = [*PLATEAU_COLUMNS[:at], *extra, *PLATEAU_COLUMNS[at:]]
    return out[columns].astype(dict.fromkeys(_INT_COLUMNS, "Int64"))
