"""Where a validation curve stops improving, in the spirit of Keras ``EarlyStopping``.

The decision runs on a *centred* moving median, so epoch-to-epoch noise does
not reset the patience counter. A centred window adds no lag, and a median
(unlike a mean) keeps a corner sharp: a curve that rises and is flat from
epoch 20 has its plateau at 20, not at 20 + window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.load import FACTORS, TRIAL_KEY, higher_is_better

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
    values: np.ndarray,
    min_delta: float = 0.005,
    patience: int = 5,
    window: int = 5,
    higher_better: bool = True,
) -> PlateauResult:
    """Find where the curve stops improving by more than ``min_delta`` for ``patience`` epochs.

    Scanning the smoothed curve like ``EarlyStopping``, the best value moves
    only when beaten by more than ``min_delta``; a plateau starts at the last
    such move once ``patience`` epochs pass without one. A stall that training
    later breaks out of, rising more than ``patience × min_delta`` above it (what
    steady improvement at the threshold rate would have gained over the
    patience), is not a plateau: the scan goes on for the next one. A curve
    still improving at the end has none. ``value`` is the smoothed metric at the
    plateau; ``gain_after`` the smoothed change from there to the last epoch,
    signed so that improvement is positive (negative when the curve fell back).
    """
    sign = 1.0 if higher_better else -1.0
    smooth = sign * smooth_centred(values, window)
    best, best_at, wait = -np.inf, 0, 0
    plateau: tuple[int, float] | None = None
    for t, v in enumerate(smooth):
        if np.isnan(v):
            continue
        if plateau is not None and v > plateau[1] + patience * min_delta:
            plateau = None  # broke out of that stall
        if v > best + min_delta:
            best, best_at, wait = v, t, 0
            continue
        wait += 1
        if wait >= patience and plateau is None:
            plateau = (best_at, best)
    if plateau is None:
        return PlateauResult(None, np.nan, np.nan)
    last = smooth[~np.isnan(smooth)][-1]
    return PlateauResult(plateau[0], float(sign * plateau[1]), float(last - plateau[1]))


def plateau_table(
    curves: pd.DataFrame,
    metric: str = "val_iou",
    min_delta: float = 0.005,
    patience: int = 5,
    window: int = 5,
) -> pd.DataFrame:
    """One row per (cell, seed): ``plateau_epoch``, ``plateau_value``,
    ``gain_after_plateau`` and ``epochs_after_plateau`` (all NaN without a plateau).
    """
    rows = []
    higher = higher_is_better(metric)
    for (cell_id, seed), g in curves.groupby(list(TRIAL_KEY), sort=True):
        epochs = g["epoch"].to_numpy()
        res = detect_plateau(g[metric].to_numpy(), min_delta, patience, window, higher)
        found = res.index is not None
        rows.append(
            {
                "cell_id": cell_id,
                **{f: g[f].iloc[0] for f in FACTORS},
                "seed": seed,
                "plateau_epoch": epochs[res.index] if found else np.nan,
                "plateau_value": res.value,
                "gain_after_plateau": res.gain_after,
                "epochs_after_plateau": epochs[-1] - epochs[res.index] if found else np.nan,
            }
        )
    columns = [
        "cell_id",
        *FACTORS,
        "seed",
        "plateau_epoch",
        "plateau_value",
        "gain_after_plateau",
        "epochs_after_plateau",
    ]
    out = pd.DataFrame(rows, columns=columns)
    return out.astype({"plateau_epoch": "Int64", "epochs_after_plateau": "Int64"})
