"""Data-set-size scaling: a power law of validation error, error = a · n^(−b).

Fitted by least squares on log error against log n over the cell means of one
(image_size, epochs, batch_size) group; error is 1 − metric for a metric in [0, 1]
where higher is better (IoU, Dice, ...). Two points always fit a line, so a fit needs
at least three data set sizes, and its quality (R² on the log scale, RMSE on the
metric's scale) is reported beside it. Nothing is extrapolated: a doubling is read off
the fit only where both n and 2n lie within the measured sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.params import DEFAULT_PARAMS, Params

__all__ = ["MIN_SIZES", "PowerLaw", "doubling_threshold", "fit_power_law", "scaling_table"]

GROUP: list[str] = ["image_size", "epochs", "batch_size"]
MIN_SIZES = 3
SCALING_COLUMNS: list[str] = [
    *GROUP, "n_sizes", "min_size", "max_size", "coefficient", "exponent", "r2", "rmse",
    "gain_last_doubling", "doubling_below_1pt_at", "threshold",
]  # fmt: skip
_ERROR_FLOOR = 1e-6


@dataclass(frozen=True)
class PowerLaw:
    """error(n) = coefficient · n^(−exponent); ``r2`` on the log-log fit."""

    coefficient: float
    exponent: float
    r2: float

    def error(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.asarray(n, dtype=float) ** (-self.exponent)


def fit_power_law(sizes: np.ndarray, error: np.ndarray) -> PowerLaw:
    """Least-squares line through (log n, log error); needs two distinct sizes."""
    x = np.log(np.asarray(sizes, dtype=float))
    y = np.log(np.clip(np.asarray(error, dtype=float), _ERROR_FLOOR, None))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else np.nan
    return PowerLaw(float(np.exp(intercept)), float(-slope), r2)


def doubling_threshold(law: PowerLaw, gain: float = DEFAULT_PARAMS.scaling_gain) -> float:
    """Data-set size past which doubling it lowers error by less than ``gain``.

    error(n) − error(2n) = a·n^(−b)·(1 − 2^(−b)) < gain, solved for n; 0 when
    the fit says more data never helps (b ≤ 0).
    """
    if law.exponent <= 0:
        return 0.0
    drop = law.coefficient * (1.0 - 2.0 ** (-law.exponent))
    return float((drop / gain) ** (1.0 / law.exponent))


def _row(key: tuple, per_size: pd.Series, gain: float) -> dict:
    sizes = per_size.index.to_numpy(dtype=float)
    error = 1.0 - per_size.to_numpy(dtype=float)
    law = fit_power_law(sizes, error)
    lo, hi = sizes.min(), sizes.max()
    threshold = doubling_threshold(law, gain)
    # note: a doubling n → 2n is read off the fit only when both ends were measured
    if threshold < lo:
        where, at = "below range", np.nan
    elif threshold <= hi / 2:
        where, at = "in range", threshold
    else:
        where, at = "beyond range", np.nan
    return {
        **dict(zip(GROUP, key, strict=True)),
        "n_sizes": len(sizes),
        "min_size": lo,
        "max_size": hi,
        "coefficient": law.coefficient,
        "exponent": law.exponent,
        "r2": law.r2,
        "rmse": float(np.sqrt(np.mean((law.error(sizes) - error) ** 2))),
        "gain_last_doubling": float(law.error(hi / 2) - law.error(hi)) if hi / 2 >= lo else np.nan,
        "doubling_below_1pt_at": at,
        "threshold": where,
    }


def scaling_table(cells: pd.DataFrame, params: Params = DEFAULT_PARAMS) -> pd.DataFrame:
    """One row per (image_size, epochs, batch_size) with at least :data:`MIN_SIZES` sizes.

    ``exponent`` is b in error ∝ n^(−b) (larger: more data helps more); ``r2`` and
    ``rmse`` (in metric units) say how well the law fits; ``gain_last_doubling`` is the
    fitted gain from half the largest size to the largest; ``doubling_below_1pt_at`` is
    the size past which a doubling adds < ``params.scaling_gain`` (1 point by default),
    given only when it and its double lie within the measured sizes; ``threshold`` says
    where it fell (``in range``, ``below range``: every measured doubling adds less,
    ``beyond range``: the largest measured doubling still adds at least that).
    """
    rows = []
    for key, g in cells.dropna(subset=["final_mean"]).groupby(GROUP, sort=True):
        per_size = g.groupby("dataset_size")["final_mean"].mean()
        if len(per_size) >= MIN_SIZES:
            rows.append(_row(key, per_size, params.scaling_gain))
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)
