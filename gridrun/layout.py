"""The study directory's schema: file names, ids, table columns, factors, trial status.

The one home of these facts. The runner writes what this module names and the analysis
reads it; both import this module and nothing else of each other. It imports nothing of
gridrun, torch or ray, so the analysis stays light. A test forbids other modules to spell
a table file name, an id format or a status string.

Glossary (the words the code, the grid keys, the README and the messages use):

    study         one grid file's experiment: a directory (or URI) holding the files below
    cell          one combination of factor levels (`cell_id`, e.g. img64_n128_ep20_bs4)
    trial         a (cell, seed): one row of trials.parquet (`trial_id`, the `run_id`
                  column, e.g. img64_n128_ep20_bs4_s0)
    training run  one model trained from one seed; it serves every trial whose cells
                  differ only in `epochs`, each read at its own epoch. Named after the
                  trial of its longest cell (`training_run_id`)
    work unit     what Ray Tune runs: one or more training runs, one after another, in
                  one Ray Train worker group

A study directory (a local path or a URI such as ``s3://bucket/prefix``) holds::

    grid.yaml                     the resolved grid
    baselines.json                the validation (and test) set: size, class pixels, and
                                  what trivial predictors (all background, ...) score
    trials.parquet                one row per (cell, seed)
    curves.parquet                one row per (cell, seed, epoch)
    trials.parts/, curves.parts/  while a study runs: the rows of trials finished since
                                  the tables were last compacted, one part per write
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
import json
import math
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "BASELINES_FILE",
    "BEST_EPOCH_COLUMN",
    "BEST_METRIC",
    "DEFAULT_METRIC",
    "FINAL_COLUMNS",
    "FINAL_METRICS",
    "GROUPED_KEY",
    "NOT_CURVE",
    "RENAMED_KEYS",
    "OVERLAY_IMAGES",
    "TRIAL_FLOAT_COLUMNS",
    "TRIAL_ID",
    "TRIAL_KEY",
    "TRIAL_TEXT_COLUMNS",
    "Progress",
    "cell_id",
    "level_text",
    "factor_names",
    "final_column",
    "parse_trial_id",
    "trial_id",
    "training_run_id",
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
    "CURVES_PARTS_DIR",
    "TRIALS_PARTS_DIR",
    "best_column",
    "best_name",
    "checkpoint_path",
    "error_line",
    "latest_checkpoint_path",
    "num_labels",
    "parse_part_name",
    "part_name",
    "predictions_path",
    "run_end_path",
]

FACTORS: tuple[str, ...] = ("image_size", "dataset_size", "epochs", "batch_size")

# the grid file's key under `factors:` whose list holds levels set together
# ([{batch_size: 4, train.lr: 3e-4}, ...]) instead of crossed
GROUPED_KEY = "grouped"


def factor_names(grid_factors: Mapping[str, object] | None) -> tuple[str, ...]:
    """A study's factors from its grid file's `factors:` mapping: the four first, then
    the settings named by their dotted paths (train.lr, model.encoder, augment), in name
    order, whether crossed or grouped. None (no grid file) gives the four."""
    extra: set[str] = set()
    for key, levels in (grid_factors or {}).items():
        if key == GROUPED_KEY and isinstance(levels, list):
            extra.update(k for group in levels if isinstance(group, Mapping) for k in group)
        else:
            extra.add(key)
    return (*FACTORS, *sorted(extra - set(FACTORS)))


# grid keys renamed to the glossary's words: (section, old spelling) -> new. A work unit,
# not a trial, holds a worker group and is what Ray Tune runs concurrently. A grid file
# (or an older study's grid.yaml) with the old spelling is read under the new one.
RENAMED_KEYS: dict[tuple[str, str], str] = {
    ("resources", "workers_per_trial"): "workers_per_unit",
    ("resources", "max_concurrent_trials"): "max_concurrent_units",
}

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
# the streaming path's decoded, resized images: one .npy per image and size
CACHE_DIR = "data_cache"
# each finished trial's rows are appended as a part; readers see the table with its
# parts applied, and `gridrun run` compacts the parts into the table when it ends
TRIALS_PARTS_DIR = "trials.parts"
CURVES_PARTS_DIR = "curves.parts"

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


# a trial's key in both tables, and the column that holds its id (named run_id before
# the glossary above; kept so studies written earlier still load)
TRIAL_KEY: tuple[str, str] = ("cell_id", "seed")
TRIAL_ID = "run_id"
DEFAULT_METRIC = "val_iou"

# trials.parquet: the metrics at the trial's own epoch (final_<m>), and the best epoch by
# BEST_METRIC over its epochs (best_<m>, BEST_EPOCH_COLUMN)
FINAL_METRICS: tuple[str, ...] = ("val_iou", "train_iou", "val_loss", "train_loss")
BEST_METRIC = "val_iou"
BEST_EPOCH_COLUMN = "best_epoch"
TRIAL_FLOAT_COLUMNS: tuple[str, ...] = (
    *(f"final_{m}" for m in FINAL_METRICS), f"best_{BEST_METRIC}", BEST_EPOCH_COLUMN, "steps",
    "train_time_s", "peak_mem_mb",
)  # fmt: skip
TRIAL_TEXT_COLUMNS: tuple[str, ...] = (
    "status", "error", TRIAL_ID, "training_run", "checkpoint", "predictions", "node_id",
    "node_ip",
)  # fmt: skip
# reported with each epoch but not curve columns: they describe the trial, not the epoch
NOT_CURVE: frozenset[str] = frozenset(
    {"status", "params", "worker_ip", "predictions", "error", "device"}
)


def final_column(metric: str) -> str:
    """The trials.parquet column of `metric` at the trial's own epoch."""
    return f"final_{metric}"


def best_name(metric: str) -> str:
    """The name of `metric`'s best value over a trial's epochs (a trials.parquet column
    for BEST_METRIC; a tracker's tag for any metric)."""
    return f"best_{metric}"


def best_column(metric: str) -> str | None:
    """The trials.parquet column of `metric`'s best value over epochs, when the runner
    writes one (it does for BEST_METRIC alone)."""
    return best_name(metric) if metric == BEST_METRIC else None


FINAL_COLUMNS: dict[str, str] = {final_column(m): m for m in FINAL_METRICS}


def level_text(value: object) -> str:
    """A factor level as it appears in ids: integers as written, floats in %g form
    (3e-04 → 0.0003), text with anything but letters, digits, '.' and '-' as '-'."""
    if isinstance(value, float):
        return f"{value:g}"
    return re.sub(r"[^A-Za-z0-9.-]", "-", str(value))


def cell_id(factors: Mapping[str, object]) -> str:
    """A readable id made from the factor values alone, so the same cell gets the
    same id whatever the order of keys or levels in the file, on any machine. Factors
    beyond the four (a setting's dotted path, e.g. train.lr) follow in name order as
    `_<path>=<level>`, so a grid without them keeps its ids."""
    f = factors
    core = f"img{f['image_size']}_n{f['dataset_size']}_ep{f['epochs']}_bs{f['batch_size']}"
    extra = "".join(f"_{k}={level_text(f[k])}" for k in sorted(set(f) - set(FACTORS)))
    return core + extra


def trial_id(cell: str, seed: int) -> str:
    """The id of trial (cell, seed)."""
    return f"{cell}_s{seed}"


def parse_trial_id(text: str) -> tuple[str, int]:
    """(cell_id, seed) of a trial id; ValueError when `text` is not one."""
    cell, sep, seed = text.rpartition("_s")
    if not sep or not cell or not seed.isdigit():
        raise ValueError(f"not a trial id: {text!r}")
    return cell, int(seed)


def training_run_id(longest: Mapping[str, int], seed: int) -> str:
    """A training run's id: the trial id of the longest cell it serves."""
    return trial_id(cell_id(longest), seed)


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
    def parse(cls, value: object) -> Status:
        """A status read from a table. ValueError on anything but the four names; a
        missing value is only acceptable where a hand-written table has no status column
        at all (`analysis.load` fills that column with OK before parsing)."""
        return cls(str(value))

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
    """{"history": [report, ...]} of a training run that has ended: every report it sent
    (`gridrun.records.RunEnd`)."""
    return f"{LATEST_DIR}/{training_run}.json"


def error_line(exc: BaseException) -> str:
    """The last non-empty line of an error (of the worker's error, when Ray wraps it)."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        exc = next(iter(failures.values()))
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def part_name(number: int, level: int) -> str:
    """A table part's file name in its parts directory: the number of the newest write it
    holds and its level (0: one write; n + 1: several level-n parts merged). Parts apply
    in (number, level) order, which is the name order."""
    return f"{number:08d}.{level}.parquet"


def parse_part_name(name: str) -> tuple[int, int] | None:
    """(number, level) of a part's file name; None for any other file."""
    found = re.fullmatch(r"(\d{8,})\.(\d)\.parquet", name)
    return None if found is None else (int(found[1]), int(found[2]))


def predictions_path(training_run: str, epoch: int) -> str:
    """Predicted labels (uint8, N×E×E) of the examples in EXAMPLES_FILE at `epoch`."""
    return f"{PREDICTIONS_DIR}/{training_run}/epoch_{epoch:04d}.npz"


# validation images in EXAMPLES_FILE, painted in TensorBoard and the report's overlays
# (the default of the grid's tracking.overlay_images)
OVERLAY_IMAGES = 4


def num_labels(num_classes: int) -> int:
    """The labels a model predicts and the metrics score: binary masks (num_classes 1)
    are scored as two labels, background and foreground."""
    return max(2, num_classes)


@dataclass(frozen=True)
class Progress:
    """progress.json: the trials running now, each with its latest epoch, and when the
    driver wrote this (seconds since the epoch). `gridrun status` reads it from anywhere."""

    updated: float
    running: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"updated": self.updated, "running": dict(self.running)})

    @classmethod
    def from_json(cls, text: str) -> Progress:
        raw = json.loads(text)
        updated = float(raw["updated"])
        if not math.isfinite(updated):
            raise ValueError(f"{PROGRESS_FILE}: updated is not a time")
        return cls(updated, {str(k): int(v) for k, v in raw.get("running", {}).items()})
