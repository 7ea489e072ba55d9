"""The trial (a Tune function that builds and fits one TorchTrainer) and the Tuner
that fans every (cell, seed) of a grid out over the cluster."""

from __future__ import annotations

import logging
import math
import os
import shutil
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gridrun.data import Prepared
from gridrun.spec import Grid, Trial, effective_lr
from gridrun.store import Results
from gridrun.train import TrialPlan

__all__ = [
    "TRIAL_RESOURCES",
    "ClusterError",
    "Listener",
    "RunSummary",
    "max_concurrency",
    "plan_trial",
    "run_grid",
    "worker_resources",
]

# note: the trial process only waits on its TorchTrainer, so it holds no CPU (two trials
# each holding a CPU while waiting for a worker deadlock a 2-CPU machine); Tune needs a
# non-empty request, so it asks for one byte of memory
TRIAL_RESOURCES = {"cpu": 0, "memory": 1}


class ClusterError(RuntimeError):
    """The cluster cannot run the grid as asked (the message names the resource)."""


class Listener(Protocol):
    def trial_started(self, run_id: str) -> None: ...
    def trial_finished(self, run_id: str, status: str) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    total: int
    skipped: int
    statuses: dict[str, int]
    concurrency: int
    use_gpu: bool


def worker_resources(grid: Grid, use_gpu: bool) -> dict[str, float]:
    r = grid.resources
    need = {"CPU": r.cpus_per_worker, **r.custom}
    if use_gpu:
        need["GPU"] = r.gpus_per_worker
    return need


def max_concurrency(grid: Grid, cluster: Mapping[str, float], use_gpu: bool) -> int:
    """How many trials can hold all their workers at once, so none waits forever."""
    per_trial = {
        k: v * grid.resources.workers_per_trial for k, v in worker_resources(grid, use_gpu).items()
    }
    fits = min(math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items())
    explicit = grid.resources.max_concurrent_trials
    if explicit != "auto":
        # an autoscaling cluster may grow into what the user asked for
        return explicit
    if fits < 1:
        short = [k for k, v in per_trial.items() if cluster.get(k, 0.0) < v]
        raise ClusterError(
            f"resources: a trial needs {', '.join(f'{per_trial[k]:g} {k}' for k in short)} "
            f"but the cluster has {', '.join(f'{cluster.get(k, 0.0):g} {k}' for k in short)}"
        )
    return fits


def plan_trial(grid: Grid, trial: Trial, prepared: Prepared) -> TrialPlan:
    cell = trial.cell
    return TrialPlan(
        run_id=trial.run_id,
        seed=trial.seed,
        image_size=cell.image_size,
        dataset_size=cell.dataset_size,
        epochs=cell.epochs,
        batch_size=cell.batch_size,
        model_name=grid.model.name,
        model_options={"base_channels": grid.model.base_channels, "depth": grid.model.depth}
        if grid.model.name == "unet"
        else {},
        in_channels=prepared.in_channels,
        num_classes=grid.data.num_classes,
        eval_size=prepared.eval_size,
        loss=grid.train.loss,
        optimizer=grid.train.optimizer,
        lr=effective_lr(grid, cell.batch_size),
        weight_decay=grid.train.weight_decay,
        momentum=grid.train.momentum,
    )


def _classify(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).lower()
    return "infeasible" if "out of memory" in text or "outofmemoryerror" in text else "failed"


def _first_line(exc: BaseException) -> str:
    failures = getattr(exc, "worker_failures", None)
    if failures:
        exc = next(iter(failures.values()))
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def _trial(config: dict[str, Any], plans: dict[str, TrialPlan], refs: dict, setup: dict) -> None:
    """One Tune trial: fit a TorchTrainer for one (cell, seed)."""
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from gridrun.train import train_loop_per_worker

    plan = plans[config["run_id"]]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan, "arrays": refs[plan.image_size], "val_y": refs["val_y"]},
        scaling_config=ScalingConfig(
            num_workers=setup["workers"],
            use_gpu=setup["use_gpu"],
            resources_per_worker=setup["worker_resources"],
        ),
        run_config=RunConfig(
            name=plan.run_id,
            storage_path=setup["storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row, the grid goes on
        tune.report({"status": _classify(exc), "error": _first_line(exc)})


class _ResultsCallback:
    """Runs in the driver: per-epoch rows in, tables flushed as each trial ends.
    (Made a tune.Callback by `_results_callback`, so importing this module needs no Ray.)"""

    def __init__(self, results: Results, identities: dict[str, dict], listener: Listener | None):
        self.results, self.identities, self.listener = results, identities, listener
        self.last: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict:
        # note: the Tuner pickles its callbacks into its experiment state; this one lives
        # only in the driver that made it (it holds the open tables), so save nothing
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        run_id = trial.config["run_id"]
        self.results.start(run_id)
        if self.listener:
            self.listener.trial_started(run_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = trial.config["run_id"]
        self.last[run_id] = result
        if "epoch" in result and result.get("run_id") == run_id:
            from ray.tune.result import AUTO_RESULT_KEYS

            # keep what the worker reported, drop Tune's bookkeeping
            drop = {*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag", "checkpoint_path"}
            metrics = {k: v for k, v in result.items() if k not in drop}
            self.results.add_epoch(self.identities[run_id], metrics)

    def _finish(self, trial, status: str, error: str | None) -> None:
        run_id = trial.config["run_id"]
        row = self.results.finish(self.identities[run_id], status, error)
        if self.listener:
            self.listener.trial_finished(run_id, row["status"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self.last.get(trial.config["run_id"], {})
        self._finish(trial, last.get("status", "ok"), last.get("error"))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = str(getattr(trial, "error_msg", None) or "trial process failed")
        self._finish(trial, "failed", error.strip().splitlines()[-1][:500])


def _results_callback(results: Results, identities: dict[str, dict], listener: Listener | None):
    from ray import tune

    cls = type("ResultsCallback", (_ResultsCallback, tune.Callback), {})
    return cls(results, identities, listener)


def _init_ray(address: str | None) -> None:
    """Join `address`, or start a local Ray. On a cluster, submit with
    `ray job submit --working-dir .` (or install gridrun on the nodes) so workers import it."""
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # a private, single-user local cluster: no token files, no dashboard, and no
        # preemption watcher (one process less per trial; measured in benchmarks/)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    ray.init(
        address=address,
        log_to_driver=False,
        logging_level=logging.WARNING,
        include_dashboard=False if address is None else None,
    )


def run_grid(
    grid: Grid,
    prepared: Prepared,
    run_dir: Path,
    address: str | None = None,
    listener: Listener | None = None,
) -> RunSummary:
    """Run every (cell, seed) of `grid` not already done in `run_dir`."""
    # the classic reporter at verbose=0 prints nothing; the progress bar is ours
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    _init_ray(address)
    cluster = ray.cluster_resources()
    want_gpu = grid.resources.use_gpu
    use_gpu = cluster.get("GPU", 0) > 0 if want_gpu == "auto" else bool(want_gpu)
    if use_gpu and cluster.get("GPU", 0) == 0 and grid.resources.max_concurrent_trials == "auto":
        raise ClusterError("resources.use_gpu: true but the cluster has no GPU")

    results = Results(run_dir)
    done, every = results.done(), grid.trials()
    trials = [t for t in every if t.run_id not in done]
    skipped = len(every) - len(trials)
    concurrency = min(max_concurrency(grid, cluster, use_gpu), max(1, len(trials)))
    if not trials:
        return RunSummary(len(every), skipped, {}, concurrency, use_gpu)

    for t in trials:
        # a retried trial starts afresh, not from the failed attempt's checkpoints
        shutil.rmtree(run_dir / "train" / t.run_id, ignore_errors=True)
    plans = {t.run_id: plan_trial(grid, t, prepared) for t in trials}
    identities = {
        t.run_id: {"cell_id": t.cell.cell_id, "seed": t.seed, **t.cell.factors(),
                   "run_id": t.run_id, "lr": plans[t.run_id].lr}
        for t in trials
    }  # fmt: skip
    refs: dict[Any, Any] = {"val_y": ray.put(prepared.val_y)}
    for size, arrays in prepared.sizes.items():
        refs[size] = ray.put(arrays)
    setup = {
        "workers": grid.resources.workers_per_trial,
        "use_gpu": use_gpu,
        "worker_resources": worker_resources(grid, use_gpu),
        "storage": str((run_dir / "train").resolve()),
    }
    trainable = tune.with_resources(
        tune.with_parameters(_trial, plans=plans, refs=refs, setup=setup), TRIAL_RESOURCES
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"run_id": tune.grid_search([t.run_id for t in trials])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency,
            # a finished trial's process takes the next trial: one torch import less each
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["run_id"],
            trial_dirname_creator=lambda trial: trial.config["run_id"],
        ),
        run_config=tune.RunConfig(
            # one Tune experiment per invocation, so a resumed run never mixes states
            name=f"tune-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            storage_path=str((run_dir / "ray").resolve()),
            callbacks=[_results_callback(results, identities, listener)],
            verbose=0,
        ),
    )
    tuner.fit()
    statuses: dict[str, int] = {}
    for t in trials:
        status = results.trials.get(t.run_id, {}).get("status", "failed")
        statuses[status] = statuses.get(status, 0) + 1
    return RunSummary(len(every), skipped, statuses, concurrency, use_gpu)
