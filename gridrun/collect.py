"""How results come back: per-epoch reports of training runs in, rows of (cell, seed)
trials out. Runs in the driver; Tune's callback (in `tune.py`) feeds it.

A report names its training run and epoch; every trial served by that run whose cell
has at least that many epochs gets the epoch as a curve row, and a trial whose cell ends
at that epoch is finished then: its row holds the metrics at its own epoch."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from gridrun.layout import PROGRESS_FILE, Progress, Status, checkpoint_path
from gridrun.records import EpochReport, Report, RunFailed
from gridrun.runs import TrialInfo
from gridrun.store import Results

__all__ = ["Collector", "Listener"]


class Listener(Protocol):
    def trial_started(self, trial: TrialInfo) -> None: ...
    def trial_epoch(self, trial: TrialInfo, report: EpochReport) -> None: ...
    def trial_finished(self, trial: TrialInfo, status: Status) -> None: ...


class Collector:
    def __init__(
        self,
        results: Results,
        runs: dict[str, list[TrialInfo]],
        listener: Listener | None = None,
        tracker: Any = None,
        examples: tuple[Any, Any] | None = None,
        read_predictions: Any = None,
    ):
        """`runs` maps a training run to the trials it serves, shortest cell first."""
        self.results, self.runs = results, runs
        self.listener, self.tracker = listener, tracker
        self.examples, self.read_predictions = examples, read_predictions
        self._closed: set[str] = set()
        self._epochs: dict[str, int] = {}  # running trials: their latest epoch
        self._written = 0.0

    # note: `gridrun status` reads this from anywhere; a few seconds stale is fine
    PROGRESS_EVERY_S = 5.0

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._written >= self.PROGRESS_EVERY_S:
            self._written = now
            running = {r: e for r, e in self._epochs.items() if r not in self._closed}
            progress = Progress(time.time(), running)
            self.results.study.write_text(PROGRESS_FILE, progress.to_json())

    def _open(self, training_run: str) -> list[TrialInfo]:
        return [t for t in self.runs[training_run] if t.trial_id not in self._closed]

    def start(self, training_runs: Iterable[str]) -> None:
        for run in training_runs:
            for trial in self._open(run):
                if not self.results.pending(trial.trial_id):
                    self.results.start(trial.trial_id)
                    if self.listener:
                        self.listener.trial_started(trial)

    def report(self, report: Report) -> None:
        """One report of a training run: an epoch, or how the run ended early."""
        run = report.training_run
        if run not in self.runs:
            return
        self.start([run])
        if isinstance(report, RunFailed):  # every open trial of the run ends so
            for trial in self._open(run):
                self._finish(trial, report.status, report.error)
            self._progress(force=True)
            return
        epoch, status = report.epoch, report.status
        overlay = self._overlay(epoch, report.predictions)
        finished = False
        for trial in self._open(run):
            if trial.factors["epochs"] < epoch:
                continue
            self.results.add_epoch(trial, report)
            self._epochs[trial.trial_id] = epoch
            if self.tracker is not None:
                self.tracker.epoch(trial, report, overlay)
            if self.listener:
                self.listener.trial_epoch(trial, report)
            if trial.factors["epochs"] == epoch:
                self._finish(trial, status, None, checkpoint_path(trial.trial_id))
                finished = True
            elif status != Status.OK:  # diverged: the run stops here
                self._finish(trial, status, None)
                finished = True
        self._progress(force=finished)

    def lost(self, training_runs: Iterable[str], error: str) -> None:
        """A work unit ended: trials it never finished failed with `error`."""
        for run in training_runs:
            if run in self.runs:
                for trial in self._open(run):
                    self._finish(trial, Status.FAILED, error)
        self._progress(force=True)

    def final(self, training_run: str) -> bool:
        """Whether every trial of the run has a row with a final status (nothing to retry)."""
        statuses = [self.results.status(t.trial_id) for t in self.runs.get(training_run, [])]
        return all(s is not None and s.final for s in statuses)

    def _overlay(self, epoch: int, predictions: str | None):
        if self.tracker is None or predictions is None or self.examples is None:
            return None
        from gridrun.tracking import Overlay

        image, truth = self.examples
        return Overlay(epoch, image, truth, self.read_predictions(predictions))

    def _finish(
        self, trial: TrialInfo, status: Status, error: str | None, checkpoint: str | None = None
    ) -> None:
        self._closed.add(trial.trial_id)
        row = self.results.finish(trial, status, error, checkpoint)
        if self.tracker is not None:
            self.tracker.end(trial, row.status, row)
        if self.listener:
            self.listener.trial_finished(trial, row.status)
