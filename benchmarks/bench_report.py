"""Time ``write_report`` on synthetic tables of 100 cells × 3 seeds × 80 epochs.

Prints the measured time and its ratio to the 30 s target. Overlays are
skipped: synthetic runs have no checkpoints.

    python benchmarks/bench_report.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.report import write_report
from analysis.synthetic import synthetic_tables, write_synthetic_run

TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trials, curves = synthetic_tables(
        image_sizes=(64, 128, 192, 256, 320),
        dataset_sizes=(100, 200, 400, 800, 1600),
        epochs=(80,),
        batch_sizes=(8, 16, 32, 64),
        seeds=3,
    )
    cells = trials["cell_id"].nunique()
    print(f"{cells} cells, {len(trials)} trials, {len(curves)} curve rows")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_synthetic_run(Path(tmp) / "run", trials, curves)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            write_report(run_dir, overlays=False)
            times.append(time.perf_counter() - start)
    best, worst = min(times), max(times)
    print(
        f"report: best {best:.2f} s, worst {worst:.2f} s over {len(times)} runs "
        f"(first includes imports)"
    )
    print(
        f"ratio to the {TARGET_S:.0f} s target: {worst / TARGET_S:.2f} (worst), "
        f"{best / TARGET_S:.2f} (best)"
    )


if __name__ == "__main__":
    main()
