"""Data-set-size scaling: a power law of validation error, error = a · n^(−b).

Fitted by least squares on log error against log n over the cell means of one
(image_size, epochs, batch_size) group; error is 1 − metric for a metric in
[0, 1] where higher is better (IoU, Dice, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PowerLaw", "doubling_threshold", "fit_power_law", "scaling_table"]

GROUP: list[str] = ["image_size", "epochs", "batch_size"]
SCALING_COLUMNS: list[str] = [
    *GROUP,
    "n_sizes",
    "min_size",
    "max_size",
    "coefficient",
    "exponent",
    "r2",
    "doubling_gain_at_max",
    "doubling_below_1pt_at",
]
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


def doubling_threshold(law: PowerLaw, gain: float = 0.01) -> float:
    """Data-set size past which doubling it lowers error by less than ``gain``.

    error(n) − error(2n) = a·n^(−b)·(1 − 2^(−b)) < gain, solved for n; 0 when
    the fit says more data never helps (b ≤ 0).
    """
    if law.exponent <= 0:
        return 0.0
    drop = law.coefficient * (1.0 - 2.0 ** (-law.exponent))
    return float((drop / gain) ** (1.0 / law.exponent))


def scaling_table(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (image_size, epochs, batch_size) with at least two data set sizes.

    ``exponent`` is b in error ∝ n^(−b) (larger: more data helps more);
    ``doubling_gain_at_max`` is the IoU a doubling past the largest size would
    add; ``doubling_below_1pt_at`` the size past which a doubling adds < 1 point.
    """
    rows = []
    for key, g in cells.dropna(subset=["final_mean"]).groupby(GROUP, sort=True):
        per_size = g.groupby("dataset_size")["final_mean"].mean()
        if len(per_size) < 2:
            continue
        sizes = per_size.index.to_numpy(dtype=float)
        law = fit_power_law(sizes, 1.0 - per_size.to_numpy())
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "n_sizes": len(sizes),
                "min_size": sizes.min(),
                "max_size": sizes.max(),
                "coefficient": law.coefficient,
                "exponent": law.exponent,
                "r2": law.r2,
                "doubling_gain_at_max": float(law.error(sizes.max()) - law.error(2 * sizes.max())),
                "doubling_below_1pt_at": doubling_threshold(law),
            }
        )
    return pd.DataFrame(rows, columns=SCALING_COLUMNS)
