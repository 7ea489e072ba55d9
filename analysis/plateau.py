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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from analysis.load import split_trials
from analysis.params import DEFAULT_PARAMS, Params
from analysis.stats import higher_is_better

__all__ = ["PlateauResult", "detect_plateau", "plateau_table", "smooth_centred"]


@dataclass(frozen=True)
class PlateauResult:
    """``index`` is the 0-based position of the plateau's start; ``None`` if none."""

    index: int | None
    value: float
    gain_after: float


def smooth_centred(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving median; the window shrinks at both ends, NaNs are skipped."""
    series = pd.Series(np.asarray(values, dtype=float))
    return series.rolling(window, center=True, min_periods=1).median().to_numpy()


def detect_plateau(
    values: np.ndarray, params: Params = DEFAULT_PARAMS, higher_better: bool = True
) -> PlateauResult:
    """The plateau of one curve under the module's rule.

    ``value`` is the smoothed metric at the plateau; ``gain_after`` the smoothed change
    from there to the last epoch, signed so that improvement is positive (negative when
    the curve fell back).
    """
    sign = 1.0 if higher_better else -1.0
    smooth = sign * smooth_centred(values, params.window)
    kept = np.flatnonzero(~np.isnan(smooth))
    s, patience = smooth[kept], params.patience
    if len(s) <= patience:
        return PlateauResult(None, np.nan, np.nan)
    candidates = s[: len(s) - patience]
    near = sliding_window_view(s[1:], patience).max(axis=1)[: len(candidates)]
    later = np.maximum.accumulate(s[::-1])[::-1][1 : len(candidates) + 1]
    # note: a small tolerance so that a gain of exactly min_delta counts as "at most"
    eps = 1e-12
    ok = (near <= candidates + params.min_delta + eps) & (
        later <= candidates + patience * params.min_delta + eps
    )
    if not ok.any():
        return PlateauResult(None, np.nan, np.nan)
    t = int(np.argmax(ok))
    return PlateauResult(int(kept[t]), float(sign * s[t]), float(s[-1] - s[t]))


PLATEAU_COLUMNS: list[str] = [
    "cell_id", "image_size", "dataset_size", "epochs", "batch_size", "seed", "plateau_epoch",
    "plateau_value", "gain_after_plateau", "epochs_after_plateau",
]  # fmt: skip


def plateau_table(
    curves: pd.DataFrame, metric: str = "val_iou", params: Params = DEFAULT_PARAMS
) -> pd.DataFrame:
    """One row per (cell, seed): ``plateau_epoch``, ``plateau_value``,
    ``gain_after_plateau`` and ``epochs_after_plateau`` (all null without a plateau).
    """
    if curves.empty or metric not in curves.columns:
        return pd.DataFrame(columns=PLATEAU_COLUMNS).astype(
            {"plateau_epoch": "Int64", "epochs_after_plateau": "Int64"}
        )
    curves, heads, bounds = split_trials(curves)
    values, epochs = curves[metric].to_numpy(float), curves["epoch"].to_numpy()
    higher = higher_is_better(metric)
    found = np.full((len(heads), 4), np.nan)
    for i in range(len(heads)):
        lo, hi = bounds[i], bounds[i + 1]
        res = detect_plateau(values[lo:hi], params, higher)
        if res.index is not None:
            at = epochs[lo + res.index]
            found[i] = (at, res.value, res.gain_after, epochs[hi - 1] - at)
    out = heads.copy()
    for j, col in enumerate(PLATEAU_COLUMNS[-4:]):
        out[col] = found[:, j]
    return out[PLATEAU_COLUMNS].astype({"plateau_epoch": "Int64", "epochs_after_plateau": "Int64"})
