"""The Ray side of a worker: a unit's training runs one after another in one
long-lived worker group, each resumed from its latest checkpoint when one exists, with the
checkpoints and predictions the trial rows point to written as the run passes each
cell's epoch. `gridrun.train.run_epochs` does the training itself."""

from __future__ import annotations

import io
import itertools
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from gridrun.data import SizedArrays
from gridrun.layout import (
    Status,
    checkpoint_path,
    error_line,
    predictions_path,
)
from gridrun.records import (
    EpochReport,
    Report,
    RunCheckpoint,
    RunEnd,
    RunFailed,
    WorkerInfo,
    WorkUnitSetup,
    report_to_dict,
)
from gridrun.runs import RunPlan, WorkUnit
from gridrun.train import rank_and_world, run_epochs

__all__ = ["train_loop_per_worker", "train_run"]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _save(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _inject_fault(faults: str, plan: RunPlan, epoch: int, where: str) -> None:
    """Chaos testing: GRIDRUN_FAULTS="kind@training_run:epoch,..." in the driver's
    environment makes a worker fail in `training_run` at `epoch`: `raise` and `oom` before
    the epoch's report, `kill` (SIGKILL of the worker process) right after its checkpoint.
    `slow@training_run:seconds` makes each of the run's epochs take `seconds` longer (a
    run slower than its estimate, for benchmarks/bench_queue.py)."""
    for fault in filter(None, faults.split(",")):
        kind, _, target = fault.partition("@")
        run, _, at = target.rpartition(":")
        if run != plan.training_run:
            continue
        if kind == "slow" and where == "epoch":
            time.sleep(float(at))
        if kind == "slow" or int(at) != epoch:
            continue
        if kind == "raise" and where == "epoch":
            raise RuntimeError(f"injected fault in {run} at epoch {epoch}")
        if kind == "oom" and where == "epoch":
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected in {run})")
        if kind == "kill" and where == "checkpoint":
            os.kill(os.getpid(), signal.SIGKILL)


def train_run(
    plan: RunPlan,
    arrays: SizedArrays,
    val_y: np.ndarray,
    study,
    send: Callable[[Report], None],
    worker: WorkerInfo,
    history: list[Report],
    device: torch.device | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    faults: str = "",
    test_y: np.ndarray | None = None,
) -> None:
    """Train one run of a unit, resuming from its latest checkpoint if one exists;
    rank 0 writes the checkpoints and predictions the trial rows point to. Every report
    sent is appended to `history`, which the checkpoint keeps."""
    rank, _ = rank_and_world()
    resume = RunCheckpoint.load(study, plan.training_run)
    if resume is not None and resume.state.epoch > plan.epochs:
        resume = None  # trained past what is needed now: start again
    if resume is not None:
        # note: Ray Train delivers reports on a poll, so a worker killed just after
        # reporting may have lost its last reports; send them again (the driver keeps
        # each epoch once)
        history.extend(resume.history)
        for report in history:
            send(report)
    for end in run_epochs(plan, arrays, val_y, device, wrap, resume, test_y):
        epoch = end.epoch
        _inject_fault(faults, plan, epoch, "epoch")
        predictions = None
        if rank == 0:
            weights = _unwrap(end.model).state_dict()
            if epoch in plan.stops:
                blob = _save({"state_dict": weights, "epoch": epoch, "plan": plan.__dict__})
                for trial_id in plan.stops[epoch]:
                    study.write_bytes(checkpoint_path(trial_id), blob)
            if end.predictions is not None:
                predictions = predictions_path(plan.training_run, epoch)
                study.write_npz(predictions, pred=end.predictions)
        report = EpochReport(
            plan.training_run, epoch, end.status, end.metrics, end.params, end.world_size,
            end.device, predictions, worker,
        )  # fmt: skip
        history.append(report)
        if rank == 0:
            checkpoint = RunCheckpoint(
                weights, end.optimizer.state_dict(), tuple(history), end.state
            )
            checkpoint.save(study, plan.training_run)
        send(report)
        _inject_fault(faults, plan, epoch, "checkpoint")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: every run of the unit not ended yet. A run that
    raises is reported as failed (or infeasible) and the unit goes on with the next."""
    import ray
    import ray.train
    import ray.train.torch

    from gridrun.storage import Storage

    unit, setup = WorkUnitSetup.from_config(config)
    refs = setup.refs
    study = Storage(setup.study)
    worker = WorkerInfo(
        ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id(), os.getpid()
    )
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    device = ray.train.torch.get_device()
    val_y = ray.get(refs.val_y)
    test_y = ray.get(refs.test_y) if refs.test_y is not None else None

    def arrays_for(plan: RunPlan) -> SizedArrays:
        return ray.get(refs.by_size[plan.image_size])

    def send(report: Report) -> None:
        ray.train.report(report_to_dict(report))

    rank, world = rank_and_world()
    queue = _queue(unit)
    for position in itertools.count():
        plan = _next_run(unit, queue, position)
        if plan is None:
            break
        ended = RunEnd.load(study, plan.training_run)
        if ended is not None:
            # a restarted worker group: this run ended before the restart
            for report in ended.reports:
                send(report)
            continue
        history: list[Report] = []
        started = time.perf_counter()
        try:
            train_run(
                plan, arrays_for(plan), val_y, study, send, worker, history,
                device, ray.train.torch.prepare_model, setup.faults, test_y,
            )  # fmt: skip
        except Exception as exc:
            if world > 1:
                raise  # the other ranks wait in a collective: restart the group
            if device.type == "cuda":
                torch.cuda.empty_cache()
            failed = RunFailed(
                plan.training_run, Status.from_exception(exc), error_line(exc), worker
            )
            history.append(failed)
            send(failed)
        if rank == 0:
            # mark the run ended, with every report it sent (a restart sends them again)
            RunEnd(plan.training_run, tuple(history)).save(study)
            if queue is not None:
                # what this worker group trained, and in how long, refines the estimates
                trained = sum(isinstance(r, EpochReport) and r.worker == worker for r in history)
                seconds = time.perf_counter() - started
                ray.get(queue.finish.remote(plan.training_run, seconds, trained))


def _queue(unit: WorkUnit):
    """The run queue `unit` pulls from (None: it trains `unit.runs`)."""
    import ray

    from gridrun.workqueue import QUEUE_NAMESPACE

    return ray.get_actor(unit.queue, namespace=QUEUE_NAMESPACE) if unit.queue else None


def _next_run(unit: WorkUnit, queue, position: int) -> RunPlan | None:
    """The unit's run at `position`: from its packed runs, or claimed from the queue
    (every rank, and a restarted worker group, gets the same run for a position)."""
    if queue is None:
        return unit.runs[position] if position < len(unit.runs) else None
    if unit.max_runs is not None and position >= unit.max_runs:
        return None
    import ray

    return ray.get(queue.claim.remote(unit.unit_id, unit.attempt, position, unit.gpu_share))
