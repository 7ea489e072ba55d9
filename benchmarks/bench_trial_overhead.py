"""What a Tune trial that fits a TorchTrainer costs beyond its training.

Runs a small synthetic grid on a local Ray cluster and prints, per trial, the wall time
the driver saw (trial start to trial end) against the time the worker spent in training
passes, and the whole grid's wall time against the sum of its trials'. Usage:

    python benchmarks/bench_trial_overhead.py [--trials 4] [--epochs 2] [--image-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from gridrun.data import prepare
from gridrun.spec import parse_grid
from gridrun.store import claim_run_dir
from gridrun.tune import run_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()

    grid = parse_grid(
        {
            "name": "bench",
            "data": {"source": "synthetic", "val_size": 8},
            "factors": {
                "image_size": [args.image_size],
                "dataset_size": [32],
                "epochs": [args.epochs],
                "batch_size": [8],
            },
            "seeds": list(range(args.trials)),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        t0 = time.perf_counter()
        prepared = prepare(grid)
        claim_run_dir(run_dir, grid.resolved_yaml())
        summary = run_grid(grid, prepared, run_dir)
        total = time.perf_counter() - t0
        trials = pd.read_parquet(run_dir / "trials.parquet")

    wall = (trials["finished_at"] - trials["started_at"]).dt.total_seconds()
    train = trials["train_time_s"]
    print(f"{len(trials)} trials, {summary.concurrency} at a time, {args.epochs} epochs each")
    print(f"trial wall time:   median {wall.median():6.1f} s")
    print(f"training passes:   median {train.median():6.1f} s")
    print(
        f"overhead per trial: median {(wall - train).median():5.1f} s "
        f"(training is {100 * (train / wall).median():.0f}% of a trial's wall time)"
    )
    print(
        f"grid wall time {total:.1f} s vs sum of trial walls {wall.sum():.1f} s "
        f"(ratio {total / wall.sum():.2f}; < 1 means trials overlapped)"
    )


if __name__ == "__main__":
    main()
