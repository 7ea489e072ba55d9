"""What crosses the runner's seams, typed: a training run's reports (an epoch, or how it
failed), how a run ended, its latest checkpoint, a work unit's set-up, a trial's row.

Dicts appear only where Ray wants them: `report_to_dict` / `report_from_dict` at
`ray.train.report` and Tune's callback, `WorkUnitSetup.config` / `from_config` for a
TorchTrainer's `train_loop_config`. Everything else passes these dataclasses. Imports no
Ray; torch only inside the checkpoint's `save` / `load`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gridrun.layout import Status, latest_checkpoint_path, run_end_path

if TYPE_CHECKING:
    from ray import ObjectRef

    from gridrun.runs import WorkUnit
    from gridrun.storage import Storage

__all__ = [
    "DataRefs",
    "EpochReport",
    "Report",
    "RunCheckpoint",
    "RunEnd",
    "RunFailed",
    "TrainState",
    "TrialRow",
    "WorkUnitSetup",
    "WorkerInfo",
    "report_from_dict",
    "report_to_dict",
]


@dataclass(frozen=True)
class WorkerInfo:
    """Which process trained an epoch: a restarted worker group shows a new pid."""

    worker_ip: str
    node_id: str
    worker_pid: int


@dataclass(frozen=True)
class EpochReport:
    """One epoch of a training run. `metrics` are its curve values (train_loss, val_iou,
    ..., lr, step, epoch_time_s, train_time_s, peak_mem_mb, ...); the other fields
    describe the run, not the epoch."""

    training_run: str
    epoch: int
    status: Status  # OK, or DIVERGED at the epoch the run stopped
    metrics: Mapping[str, float | int]
    params: int
    world_size: int
    device: str
    predictions: str | None  # the overlay images' predictions, when this epoch has them
    worker: WorkerInfo


@dataclass(frozen=True)
class RunFailed:
    """A training run raised before finishing. `worker` is None when the work unit's
    trainer reports it (its workers are gone)."""

    training_run: str
    status: Status
    error: str
    worker: WorkerInfo | None = None


Report = EpochReport | RunFailed

_EPOCH, _FAILED = "epoch", "run_failed"


def _worker_dict(worker: WorkerInfo | None) -> dict[str, Any] | None:
    if worker is None:
        return None
    return {"worker_ip": worker.worker_ip, "node_id": worker.node_id,
            "worker_pid": worker.worker_pid}  # fmt: skip


def _worker(raw: Mapping[str, Any] | None) -> WorkerInfo | None:
    if raw is None:
        return None
    return WorkerInfo(raw["worker_ip"], raw["node_id"], int(raw["worker_pid"]))


def report_to_dict(report: Report) -> dict[str, Any]:
    """The dict `ray.train.report` sends (and a checkpoint or run end keeps)."""
    common = {"training_run": report.training_run, "status": report.status.value,
              "worker": _worker_dict(report.worker)}  # fmt: skip
    if isinstance(report, RunFailed):
        return {"kind": _FAILED, **common, "error": report.error}
    return {
        "kind": _EPOCH, **common, "epoch": report.epoch, "metrics": dict(report.metrics),
        "params": report.params, "world_size": report.world_size, "device": report.device,
        "predictions": report.predictions,
    }  # fmt: skip


def report_from_dict(raw: Mapping[str, Any]) -> Report | None:
    """The report in `raw`, reading only its own keys: Tune adds bookkeeping of its own
    (training_iteration, trial_id, checkpoint_dir_name, ...). None when `raw` holds no
    report (a result of Tune's own)."""
    kind = raw.get("kind")
    if kind not in (_EPOCH, _FAILED):
        return None
    run, status, worker = raw["training_run"], Status(raw["status"]), _worker(raw["worker"])
    if kind == _FAILED:
        return RunFailed(run, status, raw["error"], worker)
    if worker is None:
        raise ValueError(f"an epoch report of {run} without its worker")
    return EpochReport(
        run, int(raw["epoch"]), status, dict(raw["metrics"]), raw["params"],
        raw["world_size"], raw["device"], raw["predictions"], worker,
    )  # fmt: skip


# the flat reports of gridrun before records: metrics, run facts and worker in one dict
_LEGACY_FACTS = {"epoch", "status", "params", "world_size", "device", "predictions",
                 "training_run", "error", "worker_ip", "node_id", "worker_pid"}  # fmt: skip


def _legacy(raw: Mapping[str, Any]) -> Report | None:
    """A report as an older gridrun stored it in a checkpoint, so that a study started
    before the upgrade resumes."""
    if "training_run" not in raw or "status" not in raw:
        return None
    worker = _worker(raw) if {"worker_ip", "node_id", "worker_pid"} <= set(raw) else None
    run, status = raw["training_run"], Status(raw["status"])
    if raw.get("epoch") is None:
        return RunFailed(run, status, str(raw.get("error") or ""), worker)
    if worker is None:
        return None
    metrics = {k: v for k, v in raw.items() if k not in _LEGACY_FACTS}
    return EpochReport(
        run, int(raw["epoch"]), status, metrics, raw.get("params", 0),
        raw.get("world_size", 1), raw.get("device", ""), raw.get("predictions"), worker,
    )  # fmt: skip


def _reports(raw: list[Mapping[str, Any]]) -> tuple[Report, ...]:
    found = [report_from_dict(r) if "kind" in r else _legacy(r) for r in raw]
    if any(r is None for r in found):
        raise ValueError("a stored report history holds something that is no report")
    return tuple(r for r in found if r is not None)


@dataclass(frozen=True)
class RunEnd:
    """checkpoints/latest/<run>.json: every report a training run sent, written once it
    has ended; a restarted worker group sends them again instead of training the run."""

    training_run: str
    reports: tuple[Report, ...]

    def save(self, study: Storage) -> None:
        history = [report_to_dict(r) for r in self.reports]
        study.write_text(run_end_path(self.training_run), json.dumps({"history": history}))

    @classmethod
    def load(cls, study: Storage, training_run: str) -> RunEnd | None:
        path = run_end_path(training_run)
        if not study.exists(path):
            return None
        return cls(training_run, _reports(json.loads(study.read_text(path))["history"]))


@dataclass(frozen=True)
class TrainState:
    """What a restart needs besides the weights and the optimizer: the optimizer steps
    taken, the training time so far, the first epoch's training loss (the divergence
    test's reference) and the last epoch done."""

    step: int = 0
    train_time: float = 0.0
    first_loss: float = math.inf
    epoch: int = 0


@dataclass(frozen=True)
class RunCheckpoint:
    """checkpoints/latest/<run>.pt: a training run's latest epoch, with every report it
    sent so far (a restart sends them again). `model` and `optimizer` are state dicts."""

    model: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    history: tuple[Report, ...]
    state: TrainState

    def save(self, study: Storage, training_run: str) -> None:
        import torch

        s = self.state
        blob = {
            "model": self.model, "optimizer": self.optimizer,
            "history": [report_to_dict(r) for r in self.history], "step": s.step,
            "train_time": s.train_time, "first_loss": s.first_loss, "epoch": s.epoch,
        }  # fmt: skip
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        study.write_bytes(latest_checkpoint_path(training_run), buffer.getvalue())

    @classmethod
    def load(cls, study: Storage, training_run: str) -> RunCheckpoint | None:
        import torch

        path = latest_checkpoint_path(training_run)
        if not study.exists(path):
            return None
        raw = torch.load(io.BytesIO(study.read_bytes(path)), weights_only=False)
        state = TrainState(raw["step"], raw["train_time"], raw["first_loss"], raw["epoch"])
        return cls(raw["model"], raw["optimizer"], _reports(raw["history"]), state)


@dataclass(frozen=True)
class DataRefs:
    """The arrays every worker reads, in Ray's object store: the validation (and test)
    labels, and each image size's arrays (`gridrun.data.SizedArrays`)."""

    val_y: ObjectRef
    test_y: ObjectRef | None
    by_size: Mapping[int, ObjectRef]


_SETUP_KEY = "setup"
_UNIT_KEY = "work_unit"


@dataclass(frozen=True)
class WorkUnitSetup:
    """What each work unit's workers need besides the work unit itself: the study's URI,
    the chaos-testing faults (see `gridrun.worker._inject_fault`) and the data."""

    study: str
    faults: str
    refs: DataRefs

    def config(self, unit: WorkUnit) -> dict[str, Any]:
        """The TorchTrainer's `train_loop_config` (Ray wants a dict) for `unit`."""
        return {_UNIT_KEY: unit, _SETUP_KEY: self}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> tuple[WorkUnit, WorkUnitSetup]:
        """The work unit and its set-up back from a `train_loop_config`."""
        setup = config[_SETUP_KEY]
        if not isinstance(setup, WorkUnitSetup):
            raise TypeError(f"train_loop_config[{_SETUP_KEY!r}] is a {type(setup).__name__}")
        return config[_UNIT_KEY], setup


@dataclass(frozen=True)
class TrialRow:
    """A trial's trials.parquet row as written: how it ended, and each column's value
    (layout.TRIAL_COLUMNS first)."""

    status: Status
    error: str | None
    columns: Mapping[str, object]
