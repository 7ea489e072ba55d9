"""The driver's cost per finished trial as a study grows, through the code `gridrun run`
calls when a run reports: `Collector.report` with synthetic epoch reports, into
`Results`, which appends each finished trial's rows as a part of both tables.

One cell, one training run per seed, `--epochs` reports per run. The cost per finished
trial is the driver's CPU time per trial (wall time, printed beside it, varies with what
else the machine runs) over the first 100 trials (A) and over the last tenth of
`--trials` (B: part merges included at their real rate); the memory is the growth of the
process's peak RSS from the 100th trial to the last. `--old` runs the
design before parts instead (every row held, both tables rewritten per trial; quadratic:
give it fewer trials). The final compaction is timed on its own line. Usage:

    python benchmarks/bench_store.py [--trials 10000] [--epochs 80] [--old] [--out URI]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import UTC, datetime

from gridrun.collect import Collector
from gridrun.layout import CURVE_COLUMNS, CURVES_FILE, TRIAL_COLUMNS, TRIALS_FILE, Status
from gridrun.records import EpochReport, TrialRow, WorkerInfo
from gridrun.runs import TrialInfo, training_runs, trial_info
from gridrun.spec import parse_grid
from gridrun.storage import Storage
from gridrun.store import Results, _curve_row, _ordered, summarize_trial

WORKER = WorkerInfo("10.0.0.7", "a1b2c3", 4321)
FIRST = 100


class OldResults(Results):
    """The design before parts: every trial and curve row in memory, both tables
    rewritten from them each time a trial finishes."""

    def __init__(self, study: Storage):
        super().__init__(study)
        self.curves: dict[str, list[dict]] = {}

    def finish(self, trial: TrialInfo, status, error=None, checkpoint=None) -> TrialRow:
        epochs = [r for _, r in sorted(self._pending.pop(trial.trial_id, {}).items())]
        row = summarize_trial(trial, epochs, status, error)
        row["checkpoint"] = checkpoint
        row["started_at"] = self._started.pop(trial.trial_id, None) or datetime.now(UTC)
        row["finished_at"] = datetime.now(UTC)
        self.trials[trial.trial_id] = row
        self.curves[trial.trial_id] = [_curve_row(trial, r) for r in epochs]
        trials = _ordered(list(self.trials.values()), TRIAL_COLUMNS)
        curves = _ordered([r for rows in self.curves.values() for r in rows], CURVE_COLUMNS)
        self.study.write_parquet(
            CURVES_FILE, curves.sort_values(["cell_id", "seed", "epoch"], ignore_index=True)
        )
        self.study.write_parquet(
            TRIALS_FILE, trials.sort_values(["cell_id", "seed"], ignore_index=True)
        )
        return TrialRow(status, error, dict(row))

    def compact(self) -> None:
        return None  # the tables are whole after every trial


def _metrics(epoch: int, epochs: int) -> dict[str, float]:
    progress = epoch / epochs
    return {
        "train_loss": 1.0 - 0.5 * progress, "train_iou": 0.3 + 0.5 * progress,
        "val_loss": 1.1 - 0.4 * progress, "val_iou": 0.25 + 0.45 * progress,
        "val_dice": 0.4 + 0.4 * progress, "val_precision": 0.6, "val_recall": 0.5,
        "val_pixel_acc": 0.9, "val_iou_c0": 0.8, "val_iou_c1": 0.25 + 0.45 * progress,
        "lr": 1e-3, "step": 16 * epoch, "epoch_time_s": 0.5, "train_time_s": 0.5 * epoch,
        "train_samples_per_s": 128.0, "peak_mem_mb": 350.0,
    }  # fmt: skip


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--old", action="store_true", help="the design before parts")
    parser.add_argument("--out", default=None, help="a study URI (default: a temp dir)")
    args = parser.parse_args()
    grid = parse_grid(
        {
            "name": "bench",
            "factors": {"image_size": [64], "dataset_size": [128], "epochs": [args.epochs],
                        "batch_size": [8]},
            "seeds": list(range(args.trials)),
        }  # fmt: skip
    )
    runs = {
        r.id: [trial_info(grid, r, t) for t in r.trials]
        for r in training_runs(grid, grid.trials())
    }
    with tempfile.TemporaryDirectory() as tmp:
        study = Storage(args.out or tmp)
        results = (OldResults if args.old else Results)(study)
        collector = Collector(results, runs)
        times, walls, baseline_mb = [], [], 0.0
        for n, run in enumerate(runs, start=1):
            started, cpu = time.perf_counter(), time.process_time()
            collector.start([run])
            for epoch in range(1, args.epochs + 1):
                metrics = _metrics(epoch, args.epochs)
                collector.report(
                    EpochReport(run, epoch, Status.OK, metrics, 1_234_567, 1, "cpu", None, WORKER)
                )
            times.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - started)
            if n == FIRST:
                baseline_mb = _peak_mb()
            tenth = max(1, args.trials // 10)
            if n % tenth == 0:
                cpu_s, wall_s = sum(times[-tenth:]) / tenth, sum(walls[-tenth:]) / tenth
                print(f"{n} trials: {cpu_s:.4f} s CPU, {wall_s:.4f} s wall per trial lately; "
                      f"peak RSS {_peak_mb():.0f} MB")  # fmt: skip
        grown = _peak_mb() - baseline_mb
        started = time.perf_counter()
        results.compact()
        compact_s, compact_mb = time.perf_counter() - started, _peak_mb() - baseline_mb
        trials, curves = (study.read_parquet(f) for f in (TRIALS_FILE, CURVES_FILE))
        print(
            f"compaction at the end: {compact_s:.1f} s into {len(trials)} trial and "
            f"{len(curves)} curve rows; driver peak memory with it +{compact_mb:.0f} MB"
        )
    first = sum(times[:FIRST]) / len(times[:FIRST])
    tail = times[-max(FIRST, args.trials // 10) :]
    last = sum(tail) / len(tail)
    print(
        f"per finished trial: {first:.4f} s at {min(FIRST, args.trials)} trials, {last:.4f} s "
        f"at {args.trials} trials; ratio {last / first:.2f}; driver memory +{grown:.0f} MB"
    )


if __name__ == "__main__":
    main()
