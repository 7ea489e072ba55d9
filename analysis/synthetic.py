"""Synthetic study tables with known structure, for tests, benchmarks and the docs.

Ids are the runner's (``gridrun.layout``): a training run is named after the trial of its
longest cell, so tests built on these tables see the names a real study has.

Validation IoU saturates as ``asymptote · (1 − exp(−epoch / tau))``; the asymptote
grows with image size and data set size, with a planted image_size × batch_size
interaction, and a gain for each extra factor given an effect (a setting by its dotted
path, e.g. ``train.lr``, alone and with the larger batch sizes); the smallest data sets
overfit (validation loss turns up after a third of
training while training loss keeps falling), and some runs have a transient bump in
validation loss early on. Cells that differ only in ``epochs`` share one training run,
as the runner's do: their curves are the same run cut at their own epoch.

    python -m analysis.synthetic DIR     # writes the small study in docs/example-run
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import yaml

from gridrun.layout import (
    BEST_EPOCH_COLUMN,
    BEST_METRIC,
    CURVES_FILE,
    EXAMPLES_FILE,
    FACTORS,
    FINAL_METRICS,
    GRID_FILE,
    TRIAL_ID,
    TRIALS_FILE,
    Status,
    best_column,
    cell_id,
    final_column,
    predictions_path,
    training_run_id,
    trial_id,
)

__all__ = ["example_grid", "synthetic_tables", "write_example_run", "write_synthetic_run"]

_RUN_FACTORS = ["image_size", "dataset_size", "batch_size"]
_Location = TypeVar("_Location", str, Path)


def _asymptote(image: np.ndarray, data: np.ndarray, batch: np.ndarray) -> np.ndarray:
    big_image = image > np.min(image)
    big_batch = batch > np.min(batch)
    return (
        0.55 + 0.1 * big_image + 0.04 * np.log2(data / np.min(data)) + 0.06 * big_image * big_batch
    )


def _extra_gain(
    runs: pd.DataFrame,
    extra: Mapping[str, Sequence[object]],
    effects: Mapping[str, tuple[float, float]],
) -> np.ndarray:
    """Per run, the asymptote's gain from the extra factors: ``effects[f] = (main,
    with_batch)`` at ``f``'s last level over its first (linear in the level's place),
    ``with_batch`` only with a batch size above the smallest."""
    gain = np.zeros(len(runs))
    big_batch = (runs["batch_size"] > runs["batch_size"].min()).to_numpy(float)
    for f, (main, with_batch) in effects.items():
        levels = list(extra[f])
        place = runs[f].map({v: i / max(len(levels) - 1, 1) for i, v in enumerate(levels)})
        gain += place.to_numpy(float) * (main + with_batch * big_batch)
    return gain


def _run_curves(
    runs: pd.DataFrame, n_epochs: int, noise: float, rng, gain: np.ndarray
) -> pd.DataFrame:
    """Every training run's curve to ``n_epochs``; ``gain``: each run's asymptote gain."""
    curves = runs.loc[runs.index.repeat(n_epochs)].reset_index(drop=True)
    curves["epoch"] = np.tile(np.arange(1, n_epochs + 1), len(runs))
    t = curves["epoch"].to_numpy(float)
    image, data = curves["image_size"].to_numpy(float), curves["dataset_size"].to_numpy(float)
    batch = curves["batch_size"].to_numpy(float)
    per_run = np.repeat(np.arange(len(runs)), n_epochs)
    asym = _asymptote(image, data, batch) + (gain + rng.normal(0, 2 * noise, len(runs)))[per_run]
    tau = n_epochs / 8
    rise = 1 - np.exp(-t / tau)
    overfit = np.where(data <= np.min(data), np.clip(t - n_epochs / 3, 0, None) / n_epochs, 0.0)
    bump_at = np.where(rng.random(len(runs)) < 0.3, np.round(2 * tau), -10)[per_run]
    bump = 0.25 * np.exp(-((t - bump_at) ** 2))
    n = len(curves)
    curves["val_iou"] = asym * rise - 0.15 * overfit + rng.normal(0, noise, n)
    curves["train_iou"] = asym * rise + 0.1 * overfit + rng.normal(0, noise, n)
    curves["train_loss"] = 0.1 + 0.6 * np.exp(-t / tau) - 0.05 * overfit
    curves["val_loss"] = (
        0.15 + 0.6 * np.exp(-t / tau) + 0.5 * overfit + bump + rng.normal(0, noise / 4, n)
    )
    curves["val_dice"] = 2 * curves["val_iou"] / (1 + curves["val_iou"])
    curves["step"] = (t * np.ceil(data / batch)).astype(int)
    curves["epoch_time_s"] = 1e-5 * image**2 * data / 100
    curves["peak_mem_mb"] = batch * image**2 / 500
    return curves


def synthetic_tables(
    image_sizes: tuple[int, ...] = (64, 128),
    dataset_sizes: tuple[int, ...] = (100, 400),
    epochs: tuple[int, ...] = (30,),
    batch_sizes: tuple[int, ...] = (8, 16),
    seeds: int = 3,
    noise: float = 0.004,
    rng_seed: int = 0,
    extra: Mapping[str, Sequence[object]] | None = None,
    effects: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, curves)`` shaped like the runner's tables, every trial ``ok``.

    ``extra``: settings crossed with the four as factors, by dotted path and levels
    (``{"train.lr": (3e-4, 1e-3)}``), one column each; ``effects``: per extra factor
    ``(main, with_batch)``, what its last level adds to the asymptote over its first,
    and adds again with the larger batch sizes (an interaction with ``batch_size``). An
    extra factor without an effect is null."""
    rng = np.random.default_rng(rng_seed)
    extra = dict(sorted((extra or {}).items()))
    run_factors = [*_RUN_FACTORS, *extra]
    runs = pd.DataFrame(
        list(product(image_sizes, dataset_sizes, batch_sizes, *extra.values(), range(seeds))),
        columns=[*run_factors, "seed"],
    )
    # as the runner names them: after the trial of the run's longest cell
    longest = runs[run_factors].assign(epochs=max(epochs)).to_dict("records")
    runs["training_run"] = [
        training_run_id(f, s) for f, s in zip(longest, runs["seed"], strict=True)
    ]
    gain = _extra_gain(runs, extra, effects or {})
    run_curves = _run_curves(runs, max(epochs), noise, rng, gain)
    trials = runs.merge(pd.DataFrame({"epochs": epochs}), how="cross")
    factors = [*FACTORS, *extra]
    trials["cell_id"] = [cell_id(f) for f in trials[factors].to_dict("records")]
    trials[TRIAL_ID] = [
        trial_id(c, s) for c, s in zip(trials["cell_id"], trials["seed"], strict=True)
    ]
    trials = trials.sort_values(["cell_id", "seed"], ignore_index=True)
    curves = trials[["cell_id", "seed", "epochs", TRIAL_ID, "training_run"]].merge(
        run_curves.drop(columns="seed"), on="training_run"
    )
    curves = curves[curves["epoch"] <= curves["epochs"]]
    curves = curves.sort_values(["cell_id", "seed", "epoch"], ignore_index=True)

    g = curves.groupby(TRIAL_ID, sort=False)
    last = g.tail(1).set_index(TRIAL_ID)
    best_at = curves.loc[g[BEST_METRIC].idxmax()].set_index(TRIAL_ID)
    trials = trials.set_index(TRIAL_ID)
    trials["status"] = Status.OK
    trials["error"] = None
    for col in FINAL_METRICS:
        trials[final_column(col)] = last[col]
    trials[best_column(BEST_METRIC)] = best_at[BEST_METRIC]
    trials[BEST_EPOCH_COLUMN] = best_at["epoch"]
    trials["steps"] = last["step"]
    trials["train_time_s"] = g["epoch_time_s"].sum()
    trials["peak_mem_mb"] = last["peak_mem_mb"]
    trials["params"], trials["lr"] = 1_000_000, 1e-3
    trials["node_id"] = "node0"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    trials["started_at"] = start
    trials["finished_at"] = start + pd.to_timedelta(trials["train_time_s"], unit="s")
    return trials.reset_index(), curves


def example_grid(
    trials: pd.DataFrame, name: str = "example", extra: Sequence[str] = ()
) -> dict[str, Any]:
    """A ``grid.yaml`` for synthetic tables: their factor levels (with the ``extra``
    factors' columns, by dotted path) and seeds."""
    levels = {f: sorted(int(v) for v in trials[f].unique()) for f in FACTORS}
    for f in sorted(extra):
        levels[f] = sorted(v.item() if hasattr(v, "item") else v for v in trials[f].unique())
    return {
        "name": name,
        "data": {"source": "synthetic", "num_classes": 1, "eval_size": None},
        "model": {"name": "unet", "base_channels": 16, "depth": 4},
        "train": {"optimizer": "adam", "lr": 0.001, "loss": "bce_dice"},
        "factors": levels,
        "seeds": sorted(int(s) for s in trials["seed"].unique()),
        "resources": {"workers_per_unit": 1, "use_gpu": "auto"},
    }


def _examples(count: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy grey images with a bright disk each, and the disks as 0/1 labels."""
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    truth = np.empty((count, size, size), dtype=np.uint8)
    for i in range(count):
        (cy, cx), r = rng.uniform(0.35, 0.65, 2) * size, rng.uniform(0.18, 0.3) * size
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        grey = rng.normal(90, 25, (size, size)) + 110 * disk
        images[i] = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
        truth[i] = disk
    return images, truth


def write_synthetic_run(
    run_dir: _Location,
    trials: pd.DataFrame,
    curves: pd.DataFrame,
    grid: dict[str, Any] | None = None,
    examples: int = 0,
    size: int = 32,
) -> _Location:
    """Write the tables as a study at ``run_dir`` (a directory or a URI, through
    ``gridrun.storage``); with ``examples``, also the example images and each training
    run's predictions at every trial's epoch (a worse trial's prediction is shifted
    further off the truth)."""
    from gridrun.storage import Storage

    study = Storage(run_dir)
    trials = trials.copy()
    if grid is not None:
        study.write_text(GRID_FILE, yaml.safe_dump(grid, sort_keys=False))
    if examples:
        rng = np.random.default_rng(0)
        images, truth = _examples(examples, size, rng)
        study.write_npz(EXAMPLES_FILE, image=images, truth=truth)
        paths = []
        finals = trials[final_column(BEST_METRIC)].to_numpy(float)
        for row, final in zip(trials.itertuples(), finals, strict=True):
            if np.isnan(final):
                paths.append(None)  # a trial that failed predicted nothing
                continue
            rel = predictions_path(row.training_run, int(row.epochs))
            shift = int(round((1 - final) * size / 3))
            study.write_npz(rel, pred=np.roll(truth, (shift, shift), axis=(1, 2)))
            paths.append(rel)
        trials["predictions"] = paths
    study.write_parquet(TRIALS_FILE, trials)
    study.write_parquet(CURVES_FILE, curves)
    return run_dir


def write_example_run(run_dir: Path) -> Path:
    """The small study the notebook in ``docs/`` walks through."""
    trials, curves = synthetic_tables(
        image_sizes=(64, 128),
        dataset_sizes=(20, 40, 80),
        epochs=(10, 20),
        batch_sizes=(4, 8),
        noise=0.01,
    )
    return write_synthetic_run(run_dir, trials, curves, example_grid(trials), examples=3)


if __name__ == "__main__":
    print(write_example_run(Path(sys.argv[1])))
