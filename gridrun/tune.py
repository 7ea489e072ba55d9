"""How work units reach Ray: each unit of training runs is one Tune trial that fits a
TorchTrainer; the Tuner fans the units out over the cluster, and a Tune callback
hands every report to the `Collector` in the driver."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gridrun.collect import Collector, Listener
from gridrun.data import Prepared
from gridrun.layout import RAY_DIR, Status, error_line, latest_checkpoint_path, run_end_path
from gridrun.records import (
    DataRefs,
    RunEnd,
    RunFailed,
    WorkUnitSetup,
    report_from_dict,
    report_to_dict,
)
from gridrun.runs import (
    RunPlan,
    TrialInfo,
    WorkUnit,
    pack,
    plan_run,
    queue_units,
    training_runs,
    trial_info,
)
from gridrun.spec import Grid
from gridrun.storage import Storage
from gridrun.store import Results
from gridrun.workqueue import QUEUE_NAMESPACE

__all__ = [
    "UNIT_RESOURCES",
    "ClusterError",
    "RunSummary",
    "WorkPlan",
    "init_ray",
    "max_concurrency",
    "plan_work",
    "run_grid",
    "units_at_once",
    "worker_resources",
]

# note: the trial process only waits on its TorchTrainer, so it holds no CPU (two trials
# each holding a CPU while waiting for a worker deadlock a 2-CPU machine); Tune needs a
# non-empty request, so it asks for one byte of memory
UNIT_RESOURCES = {"cpu": 0, "memory": 1}
# note: Ray Train notices a finished worker group on a poll (2 s by default); on a local
# machine a short poll costs nothing and saves most of a second per unit
LOCAL_HEALTH_CHECK_S = "0.2"


class ClusterError(RuntimeError):
    """The cluster cannot run the grid as asked (the message names the resource)."""


@dataclass(frozen=True)
class RunSummary:
    total: int
    skipped: int
    statuses: dict[Status, int]
    concurrency: int
    use_gpu: bool
    training_runs: int
    units: int
    epochs_trained: int
    epochs_requested: int


def worker_resources(grid: Grid, use_gpu: bool, gpu_share: float = 1.0) -> dict[str, float]:
    """What each worker of a work unit asks Ray for; `gpu_share` is the unit's (WorkUnit)."""
    r = grid.resources
    need = {"CPU": r.cpus_per_worker, **r.custom}
    if use_gpu:
        need["GPU"] = r.gpus_per_worker * gpu_share
    return need


def _unit_resources(grid: Grid, use_gpu: bool, gpu_share: float) -> dict[str, float]:
    workers = grid.resources.workers_per_unit
    return {k: v * workers for k, v in worker_resources(grid, use_gpu, gpu_share).items()}


def max_concurrency(
    grid: Grid, cluster: Mapping[str, float], use_gpu: bool, gpu_share: float = 1.0
) -> int:
    """How many work units (of one GPU share) can hold all their workers at once, so
    none waits forever."""
    per_trial = _unit_resources(grid, use_gpu, gpu_share)
    fits = min(math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in per_trial.items())
    explicit = grid.resources.max_concurrent_units
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


def units_at_once(
    grid: Grid, cluster: Mapping[str, float], use_gpu: bool, gpu_shares: Sequence[float]
) -> int:
    """How many of these work units (one GPU share each) Tune may start at once: as many
    as fit when the largest run together, so whichever start, all hold their workers."""
    explicit = grid.resources.max_concurrent_units
    if explicit != "auto":
        return min(explicit, max(1, len(gpu_shares)))
    # the largest alone must fit: else the error names what it lacks
    max_concurrency(grid, cluster, use_gpu, max(gpu_shares, default=1.0))
    used: dict[str, float] = {}
    n = 0
    for share in sorted(gpu_shares, reverse=True):
        need = _unit_resources(grid, use_gpu, share)
        if any(used.get(k, 0.0) + v > cluster.get(k, 0.0) + 1e-9 for k, v in need.items()):
            break
        used = {k: used.get(k, 0.0) + need.get(k, 0.0) for k in {*used, *need}}
        n += 1
    return max(1, n)


@dataclass(frozen=True)
class WorkPlan:
    """What one invocation trains: the trials still to do, grouped into training runs
    and packed into units."""

    trials: dict[str, list[TrialInfo]]  # training run -> the trials it serves
    units: list[WorkUnit]
    epochs_requested: int
    skipped: int
    # the runs the units pull from the queue (none when they were packed up front)
    queued: tuple[RunPlan, ...] = ()

    @property
    def epochs_trained(self) -> int:
        packed = sum(p.epochs for b in self.units for p in b.runs)
        return packed + sum(p.epochs for p in self.queued)


def plan_work(
    grid: Grid,
    done: set[str],
    in_channels: int,
    eval_size: int,
    slots: int | Callable[[float], int],
    use_gpu: bool,
    queue: str = "",
) -> WorkPlan:
    """`slots`: the work units that fit at once (given their GPU share, when shared).
    With `resources.queue` (the default) the units pull the runs from the queue named
    `queue`; else the runs are packed into units up front."""
    every = grid.trials()
    todo = [t for t in every if t.trial_id not in done]
    runs = training_runs(grid, todo)
    plans = [plan_run(grid, run, in_channels, eval_size) for run in runs]
    r = grid.resources
    share_gpus = r.share_gpus == "auto"
    if r.queue:
        units = queue_units(plans, slots, queue, use_gpu, r.workers_per_unit, r.pack, share_gpus)
    else:
        units = pack(plans, slots, use_gpu, r.workers_per_unit, r.pack, share_gpus)
    return WorkPlan(
        trials={run.id: [trial_info(grid, run, t) for t in run.trials] for run in runs},
        units=units,
        epochs_requested=sum(t.cell.epochs for t in todo),
        skipped=len(every) - len(todo),
        queued=tuple(plans) if r.queue else (),
    )


@dataclass(frozen=True)
class _TrainerSetup:
    """How each work unit's TorchTrainer is built, and what its workers get."""

    workers: int
    use_gpu: bool
    worker_resources: dict[float, dict[str, float]]  # by the work unit's GPU share
    storage: str  # Ray's own files
    max_restarts: int
    unit: WorkUnitSetup


def _trainer(unit: WorkUnit, setup: _TrainerSetup):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from gridrun.worker import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=setup.unit.config(unit),
        scaling_config=ScalingConfig(
            num_workers=setup.workers,
            use_gpu=setup.use_gpu,
            resources_per_worker=setup.worker_resources[unit.gpu_share],
        ),
        run_config=RunConfig(
            # note: a fresh name per fit, also when Tune retries the whole work unit
            name=f"{unit.unit_id}-{unit.attempt}-{uuid.uuid4().hex[:6]}",
            storage_path=setup.storage,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=setup.max_restarts),
        ),
    )


def _fail(study: Storage, run: str, exc: Exception) -> None:
    from ray import tune

    report = RunFailed(run, Status.from_exception(exc), error_line(exc))
    RunEnd(run, (report,)).save(study)
    tune.report(report_to_dict(report))


def _work_unit_trial(
    config: dict[str, Any], units: dict[str, WorkUnit], setup: _TrainerSetup
) -> None:
    """One Tune trial: train a unit's runs in one TorchTrainer. If the trainer fails
    for good (restarts used up), the run it was on is reported failed and a new trainer
    takes the runs it had not reached (from the queue: the runs it pulls next)."""
    import ray

    unit = units[config["unit_id"]]
    study = Storage(setup.unit.study)
    queue = ray.get_actor(unit.queue, namespace=QUEUE_NAMESPACE) if unit.queue else None
    remaining = list(unit.runs)
    attempt = 0
    while remaining or queue is not None:
        try:
            _trainer(replace(unit, runs=tuple(remaining), attempt=attempt), setup).fit()
            return
        except Exception as exc:  # noqa: BLE001 - the run is that run's row; others go on
            if queue is None:
                remaining = [p for p in remaining if RunEnd.load(study, p.training_run) is None]
                if not remaining:
                    return
                _fail(study, remaining.pop(0).training_run, exc)
            else:
                lost = []
                for run in ray.get(queue.unfinished.remote(unit.unit_id)):
                    if RunEnd.load(study, run) is None:
                        _fail(study, run, exc)
                        lost.append(run)
                    ray.get(queue.finish.remote(run))
                if not lost:
                    raise  # no run to blame: Tune retries the unit or ends it
            attempt += 1


class _TuneCallback:
    """Runs in the driver: Tune's events in, the collector's rows out; with a run queue
    (a Ray actor handle), a unit's runs are those it claimed, and a unit Tune retries
    puts the runs it had not finished back on the queue.
    (Made a tune.Callback by `_tune_callback`, so importing this module needs no Ray.)"""

    def __init__(
        self, collector: Collector, units: dict[str, WorkUnit], study: Storage, queue=None
    ):
        self.collector, self.units, self.study = collector, units, study
        self.queue = queue
        self._claims_seen, self._polled = 0, 0.0

    def __getstate__(self) -> dict:
        # note: the Tuner pickles its callbacks into its experiment state; this one lives
        # only in the driver that made it (it holds the open tables), so save nothing
        return {}

    def _runs(self, trial) -> list[str]:
        unit = self.units[trial.config["unit_id"]]
        if self.queue is not None and unit.queue:
            import ray

            return ray.get(self.queue.claimed.remote(unit.unit_id))
        return [p.training_run for p in unit.runs]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.collector.start(self._runs(trial))

    # note: how often the driver asks the queue which runs units took (their trials are
    # started then, not at their first epoch)
    POLL_CLAIMS_S = 0.5

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        if self.queue is None or now - self._polled < self.POLL_CLAIMS_S:
            return
        import ray

        self._polled = now
        taken = ray.get(self.queue.claims.remote(self._claims_seen))
        self._claims_seen += len(taken)
        self.collector.start(taken)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        report = report_from_dict(result)
        if report is not None:
            self.collector.report(report)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if self.queue is not None:
            import ray

            # the retried unit, or another, resumes them from their latest epochs
            ray.get(self.queue.release.remote(trial.config["unit_id"]))

    def _end(self, trial, error: str) -> None:
        runs = self._runs(trial)
        self.collector.lost(runs, error)
        for run in runs:
            self.study.delete(run_end_path(run))
            if self.collector.final(run):
                # only the rows' checkpoints stay; a run to retry keeps its latest epoch
                self.study.delete(latest_checkpoint_path(run))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "the work unit ended before this run reported")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = str(getattr(trial, "error_msg", None) or "trial process failed")
        self._end(trial, error.strip().splitlines()[-1][:500])


def _tune_callback(collector: Collector, units: dict[str, WorkUnit], study: Storage, queue):
    from ray import tune

    cls = type("GridrunCallback", (_TuneCallback, tune.Callback), {})
    return cls(collector, units, study, queue)


def init_ray(address: str | None) -> None:
    """Join `address`, or start a private local Ray. On a cluster, submit with
    `ray job submit --working-dir .` (or install gridrun on the nodes)."""
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # a private, single-user local cluster: no token files, no dashboard, no
        # preemption watcher, and a short poll for finished worker groups
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", LOCAL_HEALTH_CHECK_S)
    ray.init(
        address=address,
        log_to_driver=False,
        logging_level=logging.WARNING,
        include_dashboard=False if address is None else None,
    )


def cluster_gpu(grid: Grid) -> tuple[dict[str, float], bool]:
    import ray

    cluster = ray.cluster_resources()
    want_gpu = grid.resources.use_gpu
    use_gpu = cluster.get("GPU", 0) > 0 if want_gpu == "auto" else bool(want_gpu)
    if use_gpu and cluster.get("GPU", 0) == 0 and grid.resources.max_concurrent_units == "auto":
        raise ClusterError("resources.use_gpu: true but the cluster has no GPU")
    return cluster, use_gpu


def _start_queue(grid: Grid, work: WorkPlan, name: str, use_gpu: bool):
    """The invocation's run queue: a named actor on the driver's node (it lives and dies
    with the driver, whichever node is lost)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from gridrun.workqueue import RunQueue

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(RunQueue).options(
        name=name, namespace=QUEUE_NAMESPACE, num_cpus=0, scheduling_strategy=here
    )
    r = grid.resources
    return actor.remote(list(work.queued), use_gpu, r.workers_per_unit, r.share_gpus == "auto")


def run_grid(
    grid: Grid,
    prepared: Prepared,
    study: Storage,
    listener: Listener | None = None,
    tracker: Any = None,
) -> RunSummary:
    """Train every (cell, seed) of `grid` not already done in `study` (Ray is running)."""
    # the classic reporter at verbose=0 prints nothing; the progress bar is ours
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    cluster, use_gpu = cluster_gpu(grid)
    results = Results(study)

    def slots(gpu_share: float) -> int:
        return max_concurrency(grid, cluster, use_gpu, gpu_share)

    queue_name = f"runs-{uuid.uuid4().hex[:12]}"
    work = plan_work(
        grid, results.final_trial_ids(), prepared.in_channels, prepared.eval_size, slots,
        use_gpu, queue_name,
    )  # fmt: skip
    concurrency = units_at_once(grid, cluster, use_gpu, [b.gpu_share for b in work.units])

    def summary(statuses: dict[Status, int]) -> RunSummary:
        return RunSummary(
            total=len(grid.trials()),
            skipped=work.skipped,
            statuses=statuses,
            concurrency=concurrency,
            use_gpu=use_gpu,
            training_runs=len(work.trials),
            units=len(work.units),
            epochs_trained=work.epochs_trained,
            epochs_requested=work.epochs_requested,
        )

    if not work.units:
        results.compact()  # a driver stopped after its last trial may have left parts
        return summary({})
    for run in work.trials:
        # a retried run starts from its latest epoch, never from a stale end marker
        study.delete(run_end_path(run))

    def put(value):
        return value if isinstance(value, ray.ObjectRef) else ray.put(value)

    refs = DataRefs(
        val_y=put(prepared.val_y),
        test_y=None if prepared.test_y is None else put(prepared.test_y),
        by_size={size: put(arrays) for size, arrays in prepared.sizes.items()},
    )
    setup = _TrainerSetup(
        workers=grid.resources.workers_per_unit,
        use_gpu=use_gpu,
        worker_resources={
            b.gpu_share: worker_resources(grid, use_gpu, b.gpu_share) for b in work.units
        },
        storage=study.join(RAY_DIR),
        max_restarts=grid.resources.max_restarts,
        # chaos testing only (see worker._inject_fault)
        unit=WorkUnitSetup(study.uri, os.environ.get("GRIDRUN_FAULTS", ""), refs),
    )
    units = {b.unit_id: b for b in work.units}
    queue = _start_queue(grid, work, queue_name, use_gpu) if work.queued else None
    examples = getattr(prepared, "examples", None)
    collector = Collector(
        results, work.trials, listener, tracker, examples,
        lambda rel: study.read_npz(rel)["pred"],
    )
    trainable = tune.with_resources(
        tune.with_parameters(_work_unit_trial, units=units, setup=setup), UNIT_RESOURCES
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"unit_id": tune.grid_search([b.unit_id for b in work.units])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency,  # Ray Tune runs one trial per work unit
            # a finished trial's process takes the next trial: one torch import less each
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["unit_id"],
            trial_dirname_creator=lambda trial: trial.config["unit_id"],
        ),
        run_config=tune.RunConfig(
            # one Tune experiment per invocation, so a resumed run never mixes states
            name=f"tune-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}",
            storage_path=study.join(RAY_DIR),
            callbacks=[_tune_callback(collector, units, study, queue)],
            # note: a work unit whose trial process or Train controller is lost with its
            # node starts again; its runs go on from their latest epochs
            failure_config=tune.FailureConfig(max_failures=grid.resources.max_restarts),
            verbose=0,
        ),
    )
    try:
        tuner.fit()
        if queue is not None:
            # runs no unit was left to pull (every unit of their share failed for good)
            collector.lost(ray.get(queue.pending.remote()), "no work unit was left to train it")
    finally:
        if queue is not None:
            ray.kill(queue)
        # note: a finished (or stopped) study is two tables pandas opens
        results.compact()
    statuses: dict[Status, int] = {}
    for trials in work.trials.values():
        for t in trials:
            status = results.status(t.trial_id) or Status.FAILED
            statuses[status] = statuses.get(status, 0) + 1
    return summary(statuses)
