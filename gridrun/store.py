"""The run directory: the resolved grid, the two Parquet tables, resume bookkeeping.
Every file is written to a temporary name and renamed into place, so a reader (or a
crash) never sees half a table."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "CURVE_COLUMNS",
    "TRIAL_COLUMNS",
    "Results",
    "RunDirError",
    "RunState",
    "claim_run_dir",
    "run_status",
    "atomic_write",
    "read_table",
    "summarize_trial",
]

TRIAL_COLUMNS = [
    "cell_id", "seed", "image_size", "dataset_size", "epochs", "batch_size", "status",
    "error", "final_val_iou", "final_train_iou", "final_val_loss", "final_train_loss",
    "best_val_iou", "best_epoch", "steps", "train_time_s", "peak_mem_mb", "params", "lr",
    "run_id", "node_ip", "started_at", "finished_at",
]  # fmt: skip
CURVE_COLUMNS = [
    "cell_id", "seed", "image_size", "dataset_size", "epochs", "batch_size", "run_id",
    "epoch", "train_loss", "train_iou", "val_loss", "val_iou", "val_dice", "val_precision",
    "val_recall", "val_pixel_acc", "lr", "step", "epoch_time_s", "train_samples_per_s",
    "peak_mem_mb",
]  # fmt: skip
# reported by the worker but not table columns
_NOT_CURVE = {"status", "params", "worker_ip"}
STATUSES = ("ok", "infeasible", "diverged", "failed")
# a rerun would give the same answer; only "failed" (a crash, a lost node) is retried
FINAL_STATUSES = ("ok", "infeasible", "diverged")


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


def _ordered(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in leading:
        if column not in frame:
            frame[column] = None
    extra = sorted(c for c in frame.columns if c not in leading)
    return frame[leading + extra]


def summarize_trial(
    identity: dict[str, Any], epochs: list[dict[str, Any]], status: str, error: str | None
) -> dict[str, Any]:
    """One trials.parquet row from a trial's per-epoch rows."""
    row: dict[str, Any] = {**identity, "status": status, "error": error}
    if epochs:
        last = epochs[-1]
        best = max(epochs, key=lambda r: _nan_low(r.get("val_iou")))
        row.update(
            final_val_iou=last.get("val_iou"),
            final_train_iou=last.get("train_iou"),
            final_val_loss=last.get("val_loss"),
            final_train_loss=last.get("train_loss"),
            best_val_iou=best.get("val_iou"),
            best_epoch=best.get("epoch"),
            steps=last.get("step"),
            train_time_s=last.get("train_time_s"),
            peak_mem_mb=max(r.get("peak_mem_mb") or 0.0 for r in epochs),
            params=last.get("params"),
            node_ip=last.get("worker_ip"),
        )
    return row


def _nan_low(value: Any) -> float:
    return float("-inf") if value is None or value != value else float(value)


class Results:
    """Rows of one run directory, flushed to Parquet as each trial finishes."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.trials_path = run_dir / "trials.parquet"
        self.curves_path = run_dir / "curves.parquet"
        trials, curves = read_table(self.trials_path), read_table(self.curves_path)
        self.trials: dict[str, dict[str, Any]] = {r["run_id"]: r for r in trials.to_dict("records")}
        self.curves: dict[str, list[dict[str, Any]]] = {}
        for record in curves.to_dict("records"):
            self.curves.setdefault(record["run_id"], []).append(record)
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._started: dict[str, datetime] = {}

    def done(self) -> set[str]:
        """Trials with a final answer (ok, diverged, infeasible): a resumed run skips them
        and runs again only what failed or never ran."""
        return {r for r, row in self.trials.items() if row["status"] in FINAL_STATUSES}

    def start(self, run_id: str) -> None:
        self._started[run_id] = datetime.now(UTC)
        self._pending[run_id] = []

    def add_epoch(self, identity: dict[str, Any], metrics: dict[str, Any]) -> None:
        row = {**identity, **{k: v for k, v in metrics.items() if k not in identity}}
        self._pending.setdefault(identity["run_id"], []).append(row)

    def finish(
        self, identity: dict[str, Any], status: str, error: str | None = None
    ) -> dict[str, Any]:
        run_id = identity["run_id"]
        epochs = self._pending.pop(run_id, [])
        if epochs and epochs[-1].get("status") in STATUSES and status == "ok":
            status = epochs[-1]["status"]
        row = summarize_trial(identity, epochs, status, error)
        row["started_at"] = self._started.pop(run_id, None)
        row["finished_at"] = datetime.now(UTC)
        self.trials[run_id] = row
        self.curves[run_id] = [{k: v for k, v in r.items() if k not in _NOT_CURVE} for r in epochs]
        self.flush()
        return row

    def flush(self) -> None:
        trials = _ordered(list(self.trials.values()), TRIAL_COLUMNS)
        curves = _ordered([r for rows in self.curves.values() for r in rows], CURVE_COLUMNS)
        trials = trials.sort_values(["cell_id", "seed"], ignore_index=True)
        curves = curves.sort_values(["cell_id", "seed", "epoch"], ignore_index=True)
        atomic_write(self.trials_path, lambda tmp: trials.to_parquet(tmp, index=False))
        atomic_write(self.curves_path, lambda tmp: curves.to_parquet(tmp, index=False))


class RunDirError(ValueError):
    """The run directory cannot be used as asked (the message names it)."""


GRID_FILE = "grid.yaml"


def claim_run_dir(run_dir: Path, resolved_yaml: str) -> None:
    """Create `run_dir` for this grid, or resume it if it holds the same grid."""
    grid_path = run_dir / GRID_FILE
    started = (run_dir / "trials.parquet").exists()
    if started and grid_path.exists() and grid_path.read_text() != resolved_yaml:
        raise RunDirError(
            f"{run_dir}: holds the results of a different grid; pass --out to choose another "
            "directory (results are never overwritten)"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a directory")
    atomic_write(grid_path, lambda tmp: tmp.write_text(resolved_yaml))


@dataclass
class RunState:
    total: int
    done: list[str]
    not_ok: dict[str, tuple[str, str | None]]
    missing: list[str]


def run_status(run_dir: Path) -> RunState:
    from gridrun.spec import GridError, load_grid

    grid_path = run_dir / GRID_FILE
    if not grid_path.exists():
        raise RunDirError(f"{run_dir}: not a gridrun run directory (no {GRID_FILE})")
    try:
        expected = [t.run_id for t in load_grid(grid_path).trials()]
    except GridError as exc:
        raise RunDirError(str(exc)) from None
    rows = {r["run_id"]: r for r in read_table(run_dir / "trials.parquet").to_dict("records")}
    return RunState(
        total=len(expected),
        done=[r for r in expected if rows.get(r, {}).get("status") == "ok"],
        # note: pandas reads a missing error back as NaN once any row holds one
        not_ok={r: (rows[r]["status"], rows[r]["error"] if pd.notna(rows[r]["error"]) else None)
                for r in expected
                if r in rows and rows[r]["status"] != "ok"},
        missing=[r for r in expected if r not in rows],
    )  # fmt: skip
