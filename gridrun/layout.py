"""The study directory's layout: file names, table columns, factors and trial status.

The one home of these facts. The runner writes what this module names and the analysis
reads it; both import this module and nothing else of each other. It imports nothing of
gridrun, torch or ray, so the analysis stays light.

A study directory (a local path or a URI such as ``s3://bucket/prefix``) holds::

    grid.yaml                     the resolved grid
    baselines.json                the validation (and test) set: size, class pixels, and
                                  what trivial predictors (all background, ...) score
    trials.parquet                one row per (cell, seed)
    curves.parquet                one row per (cell, seed, epoch)
    lock.json                     the live driver that owns the study
    progress.json                 the trials running now and their latest epoch
    checkpoints/<trial>.pt        the model at a cell's own epoch (the row's `checkpoint`)
    checkpoints/latest/<run>.pt   the latest epoch of a training run in progress
    checkpoints/latest/<run>.json how the run ended, once it has (read on a restart)
    predictions/examples.npz      the fixed validation images shown in overlays
    predictions/<run>/epoch_NNNN.npz   a training run's predictions of those images
    tensorboard/<trial>/          TensorBoard event files
    report/                       written by `gridrun report`
    ray/                          Ray Tune's and Ray Train's own files
"""

from __future__ import annotations

import enum
import traceback

__all__ = [
    "BASELINES_FILE",
    "CHECKPOINTS_DIR",
    "CURVE_COLUMNS",
    "CURVES_FILE",
    "EXAMPLES_FILE",
    "FACTORS",
    "GRID_FILE",
    "LATEST_DIR",
    "LOCK_FILE",
    "PREDICTIONS_DIR",
    "PROGRESS_FILE",
    "RAY_DIR",
    "REPORT_DIR",
    "TENSORBOARD_DIR",
    "TRIAL_COLUMNS",
    "TRIALS_FILE",
    "Status",
    "checkpoint_path",
    "error_line",
    "latest_checkpoint_path",
    "predictions_path",
    "run_end_path",
]

FACTORS: tuple[str, ...] = ("image_size", "dataset_size", "epochs", "batch_size")

GRID_FILE = "grid.yaml"
BASELINES_FILE = "baselines.json"
TRIALS_FILE = "trials.parquet"
CURVES_FILE = "curves.parquet"
LOCK_FILE = "lock.json"
PROGRESS_FILE = "progress.json"
CHECKPOINTS_DIR = "checkpoints"
LATEST_DIR = f"{CHECKPOINTS_DIR}/latest"
PREDICTIONS_DIR = "predictions"
EXAMPLES_FILE = f"{PREDICTIONS_DIR}/examples.npz"
TENSORBOARD_DIR = "tensorboard"
REPORT_DIR = "report"
RAY_DIR = "ray"

TRIAL_COLUMNS = [
    "cell_id", "seed", *FACTORS, "status", "error", "final_val_iou", "final_train_iou",
    "final_val_loss", "final_train_loss", "best_val_iou", "best_epoch", "steps",
    "train_time_s", "peak_mem_mb", "device", "params", "lr", "run_id", "training_run",
    "checkpoint", "predictions", "node_ip", "node_id", "started_at", "finished_at",
]  # fmt: skip
CURVE_COLUMNS = [
    "cell_id", "seed", *FACTORS, "run_id", "training_run", "epoch", "train_loss",
    "train_iou", "val_loss", "val_iou", "val_dice", "val_precision", "val_recall",
    "val_pixel_acc", "val_iou_c0", "val_iou_c1", "lr", "step", "epoch_time_s",
    "train_samples_per_s", "peak_mem_mb",
]  # fmt: skip


class Status(enum.StrEnum):
    """How a trial ended. Final statuses would end the same way again; a rerun retries
    only the rest."""

    OK = "ok"
    DIVERGED = "diverged"  # training loss non-finite or far above its first epoch's
    INFEASIBLE = "infeasible"  # out of memory
    FAILED = "failed"  # any other error: a crash, a lost node

    @property
    def final(self) -> bool:
        return self is not Status.FAILED

    @classmethod
    def from_exception(cls, exc: BaseException) -> Status:
        text = "".join(traceback.format_exception(exc)).lower()
        oom = "out of memory" in text or "outofmemoryerror" in text
        return cls.INFEASIBLE if oom else cls.FAILED


def checkpoint_path(run_id: str) -> str:
    """The model of trial `run_id` at its cell's own epoch."""
    return f"{CHECKPOINTS_DIR}/{run_id}.pt"


def latest_checkpoint_path(training_run: str) -> str:
    """The latest epoch of a training run, kept while the run is in progress."""
    return f"{LATEST_DIR}/{training_run}.pt"


def run_end_path(training_run: str) -> str:
    """{"status", "error", "epoch"} of a training run that has ended."""
    return f"{LATEST_DIR}/{training_run}.json"


def error_line(exc: BaseException) -> str:
    """The last non-empty line of an error (of the worker's error, when Ray wraps it)."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        exc = next(iter(failures.values()))
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def predictions_path(training_run: str, epoch: int) -> str:
    """Predicted labels (uint8, N×E×E) of the examples in EXAMPLES_FILE at `epoch`."""
    return f"{PREDICTIONS_DIR}/{training_run}/epoch_{epoch:04d}.npz"
