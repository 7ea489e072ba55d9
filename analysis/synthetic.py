"""Synthetic run tables with known structure, for tests and benchmarks.

Validation IoU saturates as ``asymptote · (1 − exp(−epoch / tau))``; the
asymptote grows with image size and data set size, with a planted
image_size × batch_size interaction; small data sets overfit (validation loss
turns up after a third of training while training loss keeps falling).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import FACTORS

__all__ = ["synthetic_tables", "write_synthetic_run"]


def _asymptote(image: np.ndarray, data: np.ndarray, batch: np.ndarray) -> np.ndarray:
    big_image = image > np.min(image)
    big_batch = batch > np.min(batch)
    return (
        0.55 + 0.1 * big_image + 0.04 * np.log2(data / np.min(data)) + 0.06 * big_image * big_batch
    )


def synthetic_tables(
    image_sizes: tuple[int, ...] = (64, 128),
    dataset_sizes: tuple[int, ...] = (100, 400),
    epochs: tuple[int, ...] = (30,),
    batch_sizes: tuple[int, ...] = (8, 16),
    seeds: int = 3,
    noise: float = 0.004,
    rng_seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, curves)`` shaped like the runner's tables, every trial ``ok``."""
    rng = np.random.default_rng(rng_seed)
    grid = pd.DataFrame(
        list(product(image_sizes, dataset_sizes, epochs, batch_sizes)), columns=list(FACTORS)
    )
    grid["cell_id"] = [f"c{i:03d}" for i in range(len(grid))]
    trials = grid.merge(pd.DataFrame({"seed": range(seeds)}), how="cross")
    trials["run_id"] = [f"{c}_s{s}" for c, s in zip(trials["cell_id"], trials["seed"], strict=True)]

    curves = trials.loc[trials.index.repeat(trials["epochs"])].reset_index(drop=True)
    curves["epoch"] = curves.groupby("run_id").cumcount() + 1
    t = curves["epoch"].to_numpy(float)
    n_epochs = curves["epochs"].to_numpy(float)
    image, data = curves["image_size"].to_numpy(float), curves["dataset_size"].to_numpy(float)
    batch = curves["batch_size"].to_numpy(float)
    trial_of_row = np.repeat(np.arange(len(trials)), trials["epochs"])
    asym = _asymptote(image, data, batch) + rng.normal(0, 2 * noise, len(trials))[trial_of_row]
    tau = n_epochs / 8
    rise = 1 - np.exp(-t / tau)
    overfit = np.where(data <= np.min(data), np.clip(t - n_epochs / 3, 0, None) / n_epochs, 0.0)
    n = len(curves)
    curves["val_iou"] = asym * rise - 0.15 * overfit + rng.normal(0, noise, n)
    curves["train_iou"] = asym * rise + 0.1 * overfit + rng.normal(0, noise, n)
    curves["train_loss"] = 0.1 + 0.6 * np.exp(-t / tau) - 0.05 * overfit
    curves["val_loss"] = 0.15 + 0.6 * np.exp(-t / tau) + 0.5 * overfit + rng.normal(0, noise / 4, n)
    curves["val_dice"] = 2 * curves["val_iou"] / (1 + curves["val_iou"])
    curves["step"] = (t * np.ceil(data / batch)).astype(int)
    curves["epoch_time_s"] = 1e-5 * image**2 * data / 100
    curves["peak_mem_mb"] = batch * image**2 / 500

    g = curves.groupby("run_id", sort=False)
    last = g.tail(1).set_index("run_id")
    best_at = curves.loc[g["val_iou"].idxmax()].set_index("run_id")
    trials = trials.set_index("run_id")
    trials["status"] = "ok"
    trials["error"] = None
    for col in ("val_iou", "train_iou", "val_loss", "train_loss"):
        trials[f"final_{col}"] = last[col]
    trials["best_val_iou"] = best_at["val_iou"]
    trials["best_epoch"] = best_at["epoch"]
    trials["steps"] = last["step"]
    trials["train_time_s"] = g["epoch_time_s"].sum()
    trials["peak_mem_mb"] = last["peak_mem_mb"]
    trials["params"], trials["lr"] = 1_000_000, 1e-3
    return trials.reset_index(), curves


def write_synthetic_run(run_dir: Path, trials: pd.DataFrame, curves: pd.DataFrame) -> Path:
    """Write the two tables as a run directory's Parquet files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    curves.to_parquet(run_dir / "curves.parquet", index=False)
    return run_dir
