"""`gridrun run | plan | status | report`: thin commands over the modules.
Errors a user can fix print one line and exit with code 2."""

from __future__ import annotations

import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from gridrun.layout import (
    CURVES_FILE,
    DEFAULT_METRIC,
    TRIALS_FILE,
    Status,
    factor_names,
    level_text,
    trial_id,
)  # fmt: skip
from gridrun.records import EpochReport
from gridrun.runs import TrialInfo

__all__ = ["app", "main"]

app = typer.Typer(
    help="Factorial segmentation-training grids on Ray: grid file in, Parquet tables out.\n\n"
    "Example: gridrun run grids/quick.yaml && gridrun report runs/quick --open",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # long paths and run ids stay on one line
err = Console(stderr=True)
_default_showwarning = warnings.showwarning
T = TypeVar("T")


def _user_errors() -> tuple[type[Exception], ...]:
    from gridrun.augment import AugmentError
    from gridrun.data import DataError
    from gridrun.spec import GridError
    from gridrun.storage import StorageError
    from gridrun.store import StudyDirError
    from gridrun.tune import ClusterError

    errors: list[type[Exception]] = [
        GridError, AugmentError, DataError, ClusterError, StudyDirError, StorageError,
    ]  # fmt: skip
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
        # note: the message is text, not Rich markup: a key like '[/x]' prints as it is
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


class _LiveProgress:
    """The collector's events move this bar; each running (cell, seed) gets a row of its
    own with its epoch and latest validation metric."""

    def __init__(self, progress: Progress, total: int, metric: str = DEFAULT_METRIC):
        self.progress, self.metric = progress, metric
        self.task = progress.add_task("trials", total=total, info="")
        self.running: dict[str, Any] = {}
        self.failed = 0
        self._update()

    def _update(self, advance: int = 0) -> None:
        info = f"running {len(self.running)}  not ok {self.failed}"
        self.progress.update(self.task, advance=advance, info=info)

    def trial_started(self, trial: TrialInfo) -> None:
        self.running[trial.trial_id] = self.progress.add_task(
            f"  {trial.trial_id}", total=trial.factors["epochs"], info=""
        )
        self._update()

    def trial_epoch(self, trial: TrialInfo, report: EpochReport) -> None:
        task = self.running.get(trial.trial_id)
        if task is not None:
            value = report.metrics.get(self.metric)
            shown = f"{value:.3f}" if isinstance(value, float) else "-"
            self.progress.update(task, completed=report.epoch, info=f"{self.metric} {shown}")

    def trial_finished(self, trial: TrialInfo, status: Status) -> None:
        task = self.running.pop(trial.trial_id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.failed += status != Status.OK
        self._update(advance=1)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"gridrun {version('gridrun')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Factorial segmentation-training grids on Ray: grid file in, Parquet tables out."""
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A grid key under its old name, and the like: one line on stderr, no source line."""
    from gridrun.spec import RenamedKeyWarning

    if issubclass(category, RenamedKeyWarning):
        err.print(f"warning: {message}", highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


@app.command()
def run(
    grid_file: Annotated[Path, typer.Argument(help="The grid file (YAML).")],
    out: Annotated[
        str | None,
        typer.Option(
            "--out", "-o", help="Study directory or URI, e.g. s3://bucket/study "
            "(default: runs/<grid name>)."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address ('auto' inside a cluster); none = local Ray."),
    ] = None,
    mlflow: Annotated[
        str | None,
        typer.Option(help="Also log to MLflow at this tracking URI (e.g. sqlite:///mlflow.db)."),
    ] = None,
) -> None:
    """Run every (cell, seed) of the grid; rerun to resume (only failed trials are retried).

    Examples:

      gridrun run grids/quick.yaml

      gridrun run grids/study.yaml --address auto --out s3://bucket/study
    """
    from gridrun.spec import load_grid
    from gridrun.storage import Storage
    from gridrun.store import StudyLock, claim_study

    grid = _guarded(lambda: load_grid(grid_file))
    _guarded(lambda: _check_models(grid))
    study = _guarded(lambda: Storage(out or Path("runs") / grid.name))
    _guarded(study.check)
    started = time.monotonic()
    lock = StudyLock(study)
    _guarded(lock.acquire)
    try:
        extended = _guarded(lambda: claim_study(study, grid.resolved_yaml()))
        _run(grid, study, address, mlflow or grid.tracking.mlflow, started, extended)
    finally:
        lock.release()


def _run(grid, study, address, mlflow_uri, started, extended) -> None:
    from gridrun.layout import EXAMPLES_FILE, TENSORBOARD_DIR
    from gridrun.store import baselines_record, write_baselines
    from gridrun.streaming import prepare_data
    from gridrun.tune import init_ray, run_grid

    with console.status("starting Ray and preparing data (resized once per image_size)"):
        _guarded(lambda: init_ray(address))
        prepared, path = _guarded(lambda: prepare_data(grid, study, grid.tracking.overlay_images))
    console.print(path, highlight=False)
    if prepared.examples is not None and not study.exists(EXAMPLES_FILE):
        image, truth = prepared.examples
        study.write_npz(EXAMPLES_FILE, image=image, truth=truth)
    d = grid.data
    write_baselines(
        study, baselines_record(prepared.splits, prepared.eval_size, d.num_classes, d.ignore_index)
    )
    tracker = _tracker(grid, study, mlflow_uri, TENSORBOARD_DIR)
    console.print(
        f"[bold]{grid.name}[/]: {len(grid.cells())} cells × {len(grid.seeds)} seeds = "
        f"{len(grid.trials())} trials{' (study extended)' if extended else ''}; "
        f"ready in {time.monotonic() - started:.1f}s; results in {study}"
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        live = _LiveProgress(progress, len(grid.trials()))
        try:
            summary = _guarded(lambda: run_grid(grid, prepared, study, live, tracker))
        finally:
            tracker.close()
        progress.update(live.task, completed=summary.total)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.statuses.items())) or "nothing new"
    console.print(
        f"done in {time.monotonic() - started:.0f}s: {counts}"
        + (f"; {summary.skipped} already done" if summary.skipped else "")
        + f"; {_count(summary.training_runs, 'training run')} in "
        f"{_count(summary.units, 'work unit')}, "
        f"{summary.epochs_trained} epochs trained for {summary.epochs_requested} requested "
        f"({summary.concurrency} at a time, {'GPU' if summary.use_gpu else 'CPU'} workers)"
    )
    console.print(f"tables: {study.join(TRIALS_FILE)}, {study.join(CURVES_FILE)}")
    if summary.statuses.get(Status.OK, 0) < sum(summary.statuses.values()):
        raise typer.Exit(1)


def _check_models(grid) -> None:
    """Each distinct model built once on the CPU with a tiny batch through it, and each
    distinct augmentation run on a blank sample, before Ray."""
    from gridrun.augment import check_augmentations
    from gridrun.data import validation_examples
    from gridrun.models import check_models
    from gridrun.runs import plan_run, training_runs

    # note: the first validation image's channels (a folder mixing grey and colour
    # images trains on three)
    channels = validation_examples(grid, 1)[0][0].shape[2]
    runs = training_runs(grid, grid.trials())
    plans = [plan_run(grid, run, channels, grid.eval_size) for run in runs]
    check_models(plans)
    check_augmentations(plans)


def _tracker(grid, study, mlflow_uri, tensorboard_dir):
    from gridrun.tracking import make_trackers

    if not grid.tracking.tensorboard:
        return make_trackers(None, mlflow_uri, grid.name)
    local, ignore = study.local_path(tensorboard_dir), grid.data.ignore_index
    if local is not None:
        return make_trackers(local, mlflow_uri, grid.name, ignore_index=ignore)
    import tempfile

    # object storage: event files are written locally and uploaded as each trial ends
    scratch = Path(tempfile.mkdtemp(prefix="gridrun-tb-"))

    def upload(folder: Path) -> None:
        study.upload(folder, f"{tensorboard_dir}/{folder.name}")

    return make_trackers(scratch, mlflow_uri, grid.name, upload=upload, ignore_index=ignore)


LISTED = 20  # trials of each kind `gridrun status` lists without --all


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@app.command()
def plan(grid_file: Annotated[Path, typer.Argument(help="The grid file (YAML).")]) -> None:
    """Validate the grid and its data; print cells, training runs, epochs and steps.

    Example: gridrun plan grids/study.yaml
    """
    from gridrun.data import check
    from gridrun.runs import estimate_seconds, gpu_share, plan_run, training_runs
    from gridrun.spec import effective_lr, load_grid
    from gridrun.streaming import choose_path, prepared_mb

    grid = _guarded(lambda: load_grid(grid_file))
    split = _guarded(lambda: check(grid))
    _guarded(lambda: _check_models(grid))
    runs = training_runs(grid, grid.trials())
    served = {t.trial_id: run.id for run in runs for t in run.trials}
    r = grid.resources
    plans = {run.id: plan_run(grid, run, 3, grid.eval_size) for run in runs}
    # on GPU workers, the part of a GPU each worker of the run's work unit asks for
    shares = r.use_gpu is not False and r.share_gpus == "auto"
    share_of = {run: gpu_share(p, r.workers_per_unit) for run, p in plans.items()}
    settings = list(grid.factors.setting_levels())
    table = Table(
        Column("cell_id", overflow="fold"), *("image", "data", "epochs", "batch"), *settings,
        "steps", "lr", "trained by", *(["GPU"] if shares else []), box=None,
    )  # fmt: skip
    for cell in grid.cells():
        lead = trial_id(cell.cell_id, grid.seeds[0])
        run_of = served[lead]
        share = share_of[run_of]
        table.add_row(
            cell.cell_id,
            *(level_text(v) for v in cell.factors().values()),
            str(cell.steps),
            f"{effective_lr(grid.for_cell(cell), cell.batch_size):.3g}",
            # the runs differ from the cell only in epochs, so its epochs name the run
            f"{plans[run_of].epochs}-ep run" if run_of != lead else "itself",
            *([f"1/{round(1 / share)}" if share < 1 else "1"] if shares else []),
        )
    console.print(table)
    requested = sum(t.cell.epochs for t in grid.trials())
    trained = sum(run.epochs for run in runs)
    steps = sum(run.steps for run in runs)
    gpu_hours = sum(estimate_seconds(p, True, r.workers_per_unit) for p in plans.values())
    console.print(
        f"{_count(len(grid.cells()), 'cell')} × {_count(len(grid.seeds), 'seed')} = "
        f"{_count(len(grid.trials()), 'trial')}, served by {_count(len(runs), 'training run')}: "
        f"{trained} epochs trained for {requested} "
        f"requested ({requested / trained:.2f}×), {steps} optimizer steps in all"
    )
    reason = grid.share_reason()
    if reason:
        console.print(f"epochs not shared: {reason}")
    small = Counter(share for share in share_of.values() if share < 1)
    if shares and small:
        console.print(
            "GPU sharing: " + ", ".join(
                f"{_count(n, 'training run')} at 1/{round(1 / s)} GPU"
                for s, n in sorted(small.items())
            ) + (", the rest at a whole GPU per worker" if sum(small.values()) < len(runs) else "")
            + " (resources.share_gpus: false turns it off)"
        )  # fmt: skip
    if settings:
        names = factor_names(grid.factors.model_dump(mode="json"))
        nuisance = f"; nuisance: {', '.join(grid.nuisance)}" if grid.nuisance else ""
        console.print(f"factors: {', '.join(names)}{nuisance}", highlight=False)
    console.print(
        f"data: {grid.data.source}, {split.total} images, {split.val} for validation"
        + (f", {split.test} for testing" if split.test else "")
        + f", scored at {grid.eval_size}px; training estimate at nominal GPU throughput: "
        + (f"{gpu_hours / 3600:.3g} GPU-hours" if gpu_hours >= 36 else "under 0.01 GPU-hours")
    )
    console.print(choose_path(grid, prepared_mb(grid), None).line, highlight=False)


@app.command()
def status(
    study_dir: Annotated[str, typer.Argument(help="A study directory or URI.")],
    all_: Annotated[
        bool, typer.Option("--all", help=f"List every trial (default: the first {LISTED}).")
    ] = False,
) -> None:
    """Trials done, running, not ok (failed, diverged, infeasible) and missing.

    Example: gridrun status s3://bucket/study
    """
    from gridrun.storage import Storage
    from gridrun.store import study_state

    study = _guarded(lambda: Storage(study_dir))
    state = _guarded(lambda: study_state(study))
    console.print(
        f"{study}: {len(state.ok)} ok, {len(state.running)} running, "
        f"{len(state.not_ok)} not ok, {len(state.missing)} missing of {state.total}"
    )
    if state.lock is not None:
        console.print(f"  driver: {state.lock.describe()}", highlight=False)
    for path, levels in state.settings.items():
        console.print(f"  factor     {path}: {', '.join(map(level_text, levels))}", highlight=False)
    # note: a large study lists the first few of each kind; --all lists every one
    def listed(items: list, what: str) -> list:
        if not all_ and len(items) > LISTED:
            rest = len(items) - LISTED
            more.append(f"{rest} more {what}")
            return items[:LISTED]
        return items

    more: list[str] = []
    for trial, epoch in listed(sorted(state.running.items()), "running"):
        console.print(f"  running    {trial}  epoch {epoch}", highlight=False)
    for trial, (status_, error) in listed(sorted(state.not_ok.items()), "not ok"):
        console.print(f"  {status_:<10} {trial}  {error or ''}", highlight=False)
    if state.missing:
        console.print(
            f"  missing: {', '.join(listed(list(state.missing), 'missing'))}", highlight=False
        )
    if more:
        console.print(f"  ({'; '.join(more)}: gridrun status --all lists them)", highlight=False)
    if (state.missing or state.running) and state.seconds_per_step:
        left = state.steps_left * state.seconds_per_step
        console.print(
            f"  about {left / 60:.1f} worker-minutes of training left "
            f"({state.steps_left} steps at the measured {state.seconds_per_step:.3g} s/step)",
            highlight=False,
        )


@app.command()
def report(
    study_dir: Annotated[str, typer.Argument(help="A study directory or URI.")],
    metric: Annotated[str, typer.Option(help="Curve metric to analyse.")] = DEFAULT_METRIC,
    to: Annotated[
        Path | None, typer.Option(help="Write the report here (default: STUDY/report).")
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the page in a browser.")] = False,
) -> None:
    """Write the report (index.html, tables/, plots/) and print the main findings.

    Examples:

      gridrun report runs/quick --open

      gridrun report s3://bucket/study --to ./study-report
    """
    from analysis.report import write_report

    result = _guarded(lambda: write_report(study_dir, metric=metric, to=to))
    for line in result.findings:
        console.print(f"• {line}", highlight=False)
    console.print(f"report: {result.html_path}")
    if open_:
        import webbrowser

        webbrowser.open(Path(result.html_path).resolve().as_uri())


def main() -> None:
    sys.exit(app(standalone_mode=True))
