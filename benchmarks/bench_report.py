"""Time ``write_report`` on a synthetic study of 1,000 cells × 3 seeds × 80 epochs.

Prints the measured time and its ratio to the 30 s target (on 2 cores). Every trial
has 80 epochs (240,000 curve rows at 1,000 cells); prediction overlays are included
(small example images). ``--cells N`` crosses image size, data set size and batch size
at levels whose product is N (10,000: 25 × 20 × 20). ``--keep DIR`` leaves the study
and its report there, to look at the page.

    python benchmarks/bench_report.py [--cells 1000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.report import write_report
from analysis.synthetic import example_grid, synthetic_tables, write_synthetic_run

TARGET_S = 30.0


def _levels(cells: int) -> tuple[int, int, int]:
    """Three level counts whose product is ``cells``, as even as its divisors allow."""
    best = (cells, 1, 1)
    for a in range(1, cells + 1):
        for b in range(1, cells // a + 1):
            if a * b * (cells // (a * b)) != cells:
                continue
            c = cells // (a * b)
            if max(a, b, c) - min(a, b, c) < max(best) - min(best):
                best = tuple(sorted((a, b, c), reverse=True))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=1000, help="cells in the study")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the study here")
    args = parser.parse_args()
    images, datasets, batches = _levels(args.cells)
    trials, curves = synthetic_tables(
        image_sizes=tuple(range(64, 64 + 32 * images, 32)),
        dataset_sizes=tuple(range(100, 100 * (datasets + 1), 100)),
        epochs=(80,),
        batch_sizes=tuple(range(4, 4 * (batches + 1), 4)),
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
