"""Overfitting onsets from Prechelt's early-stopping criteria.

Prechelt (1998), "Early Stopping - But When?": the generalization loss
GL(t) = 100 * (E_va(t) / min_{t' <= t} E_va(t') - 1) and the training progress
P_k(t) = 1000 * (sum of the last k training losses / (k * their minimum) - 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import FACTORS, TRIAL_KEY

__all__ = ["generalization_loss", "overfit_onset", "overfitting_table", "training_progress"]


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


def overfit_onset(
    train_loss: np.ndarray, val_loss: np.ndarray, gl_alpha: float = 5.0
) -> int | None:
    """0-based index of the first epoch with GL > ``gl_alpha`` while the training
    loss is still below its value at the validation minimum so far, else ``None``.

    The second condition tells overfitting (training still improves while
    validation worsens) from a run that degrades on both.
    """
    train_loss = np.asarray(train_loss, dtype=float)
    gl = generalization_loss(val_loss)
    val_loss = np.asarray(val_loss, dtype=float)
    running_min_at = 0
    for t in range(len(val_loss)):
        if val_loss[t] < val_loss[running_min_at]:
            running_min_at = t
        if gl[t] > gl_alpha and train_loss[t] < train_loss[running_min_at]:
            return t
    return None


def overfitting_table(
    curves: pd.DataFrame,
    metric: str = "val_iou",
    gl_alpha: float = 5.0,
    k: int = 5,
) -> pd.DataFrame:
    """One row per (cell, seed).

    Columns: ``val_min_epoch``, ``overfit_epoch`` (null if never), ``gl_max``,
    ``gl_final``, ``progress_final`` (P_k at the last epoch), ``train_val_iou_gap``
    (final train − validation IoU) and ``best_minus_last`` (best − last ``metric``:
    what stopping at the best epoch would have kept).
    """
    rows = []
    for (cell_id, seed), g in curves.groupby(list(TRIAL_KEY), sort=True):
        g = g.dropna(subset=["val_loss", "train_loss"])
        if g.empty:
            continue
        epochs = g["epoch"].to_numpy()
        train, val = g["train_loss"].to_numpy(float), g["val_loss"].to_numpy(float)
        gl = generalization_loss(val)
        onset = overfit_onset(train, val, gl_alpha)
        score = g[metric].to_numpy(float) if metric in g.columns else np.full(len(g), np.nan)
        best = np.nanmin(score) if "loss" in metric else np.nanmax(score)
        rows.append(
            {
                "cell_id": cell_id,
                **{f: g[f].iloc[0] for f in FACTORS},
                "seed": seed,
                "val_min_epoch": epochs[int(np.argmin(val))],
                "overfit_epoch": epochs[onset] if onset is not None else pd.NA,
                "gl_max": float(np.max(gl)),
                "gl_final": float(gl[-1]),
                "progress_final": float(training_progress(train, k)[-1]),
                "train_val_iou_gap": float(g["train_iou"].iloc[-1] - g["val_iou"].iloc[-1]),
                "best_minus_last": float(abs(best - score[-1])),
            }
        )
    columns = [
        "cell_id",
        *FACTORS,
        "seed",
        "val_min_epoch",
        "overfit_epoch",
        "gl_max",
        "gl_final",
        "progress_final",
        "train_val_iou_gap",
        "best_minus_last",
    ]
    return pd.DataFrame(rows, columns=columns).astype({"overfit_epoch": "Int64"})
