"""Time ``write_report`` on a synthetic study of 1,000 cells × 3 seeds × 80 epochs.

Prints the measured time and its ratio to the 30 s target (on 2 cores). Every trial
has 80 epochs (240,000 curve rows); prediction overlays are included (small example
images). ``--keep DIR`` leaves the study and its report there, to look at the page.

    python benchmarks/bench_report.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.report import write_report
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run

TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the study here")
    args = parser.parse_args()
    trials, curves = synthetic_tables(
        image_sizes=tuple(range(64, 384, 32)),
        dataset_sizes=tuple(range(100, 1100, 100)),
        epochs=(80,),
        batch_sizes=tuple(range(4, 44, 4)),
        seeds=3,
    )
    cells = trials["cell_id"].nunique()
    print(f"{cells} cells, {len(trials)} trials, {len(curves)} curve rows")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp) / "study"
        study = write_synthetic_run(root, trials, curves, example_grid(trials, "bench"), examples=4)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = write_report(study)
            times.append(time.perf_counter() - start)
    best, worst = min(times), max(times)
    print(f"{report.html_path}: {len(report.plots)} plots, {len(report.findings)} findings")
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
