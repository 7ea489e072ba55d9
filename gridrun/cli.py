"""`gridrun run | plan | status | report`: thin commands over the modules.
Errors a user can fix print one line and exit with code 2."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(
    help="Factorial segmentation-training grids on Ray: grid file in, Parquet tables out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # long paths and run ids stay on one line
err = Console(stderr=True)
T = TypeVar("T")


def _user_errors() -> tuple[type[Exception], ...]:
    from gridrun.data import DataError
    from gridrun.spec import GridError
    from gridrun.store import RunDirError
    from gridrun.tune import ClusterError

    errors: list[type[Exception]] = [GridError, DataError, ClusterError, RunDirError]
    try:
        from analysis.load import AnalysisInputError

        errors.append(AnalysisInputError)
    except ImportError:
        pass
    return tuple(errors)


def _guarded(fn: Callable[[], T]) -> T:
    """Run fn; an error the user can fix becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except _user_errors() as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


class _LiveProgress:
    """Tune's callbacks run in the driver; they move this bar."""

    def __init__(self, progress: Progress, total: int):
        self.progress = progress
        self.task = progress.add_task("trials", total=total, running=0, failed=0)
        self.running: set[str] = set()
        self.failed = 0

    def _update(self, advance: int = 0) -> None:
        self.progress.update(
            self.task, advance=advance, running=len(self.running), failed=self.failed
        )

    def trial_started(self, run_id: str) -> None:
        self.running.add(run_id)
        self._update()

    def trial_finished(self, run_id: str, status: str) -> None:
        self.running.discard(run_id)
        self.failed += status != "ok"
        self._update(advance=1)


@app.command()
def run(
    grid_file: Annotated[Path, typer.Argument(help="The grid file (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<grid name>).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address ('auto' inside a cluster); none = local Ray."),
    ] = None,
) -> None:
    """Run every (cell, seed) of the grid; rerun to resume (only failed trials are retried)."""
    from gridrun.data import prepare
    from gridrun.spec import load_grid
    from gridrun.store import claim_run_dir
    from gridrun.tune import run_grid

    grid = _guarded(lambda: load_grid(grid_file))
    run_dir = out or Path("runs") / grid.name
    started = time.monotonic()
    with console.status("preparing data (read, split, resize once per image_size)"):
        prepared = _guarded(lambda: prepare(grid))
    _guarded(lambda: claim_run_dir(run_dir, grid.resolved_yaml()))
    console.print(
        f"[bold]{grid.name}[/]: {len(grid.cells())} cells × {len(grid.seeds)} seeds = "
        f"{len(grid.trials())} trials; data ready in {time.monotonic() - started:.1f}s; "
        f"results in {run_dir}"
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}  not ok {task.fields[failed]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        live = _LiveProgress(progress, len(grid.trials()))
        summary = _guarded(lambda: run_grid(grid, prepared, run_dir, address, live))
        progress.update(live.task, completed=summary.total)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    console.print(
        f"done in {time.monotonic() - started:.0f}s: {counts}"
        + (f"; {summary.skipped} already done" if summary.skipped else "")
        + f" ({summary.concurrency} at a time, {'GPU' if summary.use_gpu else 'CPU'} workers)"
    )
    console.print(f"tables: {run_dir / 'trials.parquet'}, {run_dir / 'curves.parquet'}")
    if summary.statuses.get("ok", 0) < sum(summary.statuses.values()):
        raise typer.Exit(1)


@app.command()
def plan(grid_file: Annotated[Path, typer.Argument(help="The grid file (YAML).")]) -> None:
    """Validate the grid and its data; print cells, trials and optimizer steps."""
    from gridrun.data import check
    from gridrun.spec import effective_lr, load_grid

    grid = _guarded(lambda: load_grid(grid_file))
    val_count, total = _guarded(lambda: check(grid))
    table = Table("cell_id", *("image", "data", "epochs", "batch"), "steps", "lr", box=None)
    for cell in grid.cells():
        table.add_row(
            cell.cell_id,
            *(str(v) for v in cell.factors().values()),
            str(cell.steps),
            f"{effective_lr(grid, cell.batch_size):.3g}",
        )
    console.print(table)
    steps = sum(c.steps for c in grid.cells()) * len(grid.seeds)
    console.print(
        f"{len(grid.cells())} cells × {len(grid.seeds)} seeds = {len(grid.trials())} trials, "
        f"{steps} optimizer steps in all; data: {grid.data.source}, {total} images, "
        f"{val_count} for validation, scored at {grid.eval_size}px"
    )


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Trials done, not ok (failed, diverged, infeasible) and missing in a run directory."""
    from gridrun.store import run_status

    state = _guarded(lambda: run_status(run_dir))
    console.print(
        f"{run_dir}: {len(state.done)} done, {len(state.not_ok)} not ok, "
        f"{len(state.missing)} missing of {state.total}"
    )
    for run_id, (status_, error) in sorted(state.not_ok.items()):
        console.print(f"  {status_:<10} {run_id}  {error or ''}", highlight=False)
    if state.missing:
        console.print(f"  missing: {', '.join(state.missing)}", highlight=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    metric: Annotated[str, typer.Option(help="Curve metric to analyse.")] = "val_iou",
) -> None:
    """Write DIR/report/ (index.html, tables/, plots/) and print the main findings."""
    from analysis.report import write_report

    result = _guarded(lambda: write_report(run_dir, metric=metric))
    for line in result.findings:
        console.print(f"• {line}", highlight=False)
    console.print(f"report: {result.html_path}")


def main() -> None:
    sys.exit(app(standalone_mode=True))
