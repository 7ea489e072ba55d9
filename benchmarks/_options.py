"""The command line every benchmark script starts from, and the timed study run the Ray
benchmarks share (imported from the script's own folder, which Python puts first on the
path when it runs `python benchmarks/<script>.py`)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def int_options(doc: str, **defaults: int | None) -> argparse.ArgumentParser:
    """A parser described by the first line of `doc`, with one integer option per keyword
    in order (`image_size=128` is `--image-size`, default 128)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    return parser


def timed_run_grid(grid: Any) -> tuple[float, Any, Any]:
    """`run_grid` of `grid` (Ray is running) into a fresh temporary study: (its wall
    seconds, its RunSummary, the study's curves table)."""
    import pandas as pd

    from gridrun.data import prepare
    from gridrun.storage import Storage
    from gridrun.store import claim_study
    from gridrun.tune import run_grid

    prepared = prepare(grid)
    with tempfile.TemporaryDirectory() as tmp:
        study = Storage(Path(tmp))
        claim_study(study, grid.resolved_yaml())
        t0 = time.perf_counter()
        summary = run_grid(grid, prepared, study)
        seconds = time.perf_counter() - t0
        curves = pd.read_parquet(Path(tmp) / "curves.parquet")
    return seconds, summary, curves
