"""Training runs and work units. Pure: no Ray, no torch.

A *trial* is one (cell, seed). A *training run* is what is actually trained: the trials
that differ only in `epochs` share one run trained to the largest of their epoch counts,
and each trial reads its numbers off the run's curve at its own epoch (exact while
nothing depends on the total epoch count: data order is seeded per epoch, validation
draws no random numbers, and the schedule does not look at the last epoch). A *unit*
is a work unit: training runs trained one after another by one long-lived TorchTrainer
worker group, so the worker start-up is paid once per unit, not once per run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridrun import layout
from gridrun.augment import Augmentation, augmentation
from gridrun.spec import Grid, Trial, effective_lr

__all__ = [
    "WorkUnit",
    "RunPlan",
    "TrialInfo",
    "TrainingRun",
    "estimate_seconds",
    "gpu_share",
    "lr_at",
    "pack",
    "queue_units",
    "share_groups",
    "plan_run",
    "trial_info",
    "training_runs",
]

# note: rough training throughput (pixels × samples per second and worker) of the default
# U-Net, measured on one CPU core and on one H100 with AMP (docs/performance.md); it only
# decides what is packed, so being off by 2× costs little
CPU_PIXELS_PER_S = 2.0e5
GPU_PIXELS_PER_S = 1.0e8
# a unit's worker group takes ~10 s to start; a run shorter than 10× that is packed
STARTUP_S = 10.0
LONG_RUN_S = 10 * STARTUP_S
# note: pixels × samples per optimizer step and worker from which a run keeps a GPU to
# itself. Measured on an H100 (docs/performance.md): 256 px at batch 4 (2.6e5) keeps it
# 29 % busy, batch 16 (1.0e6) 60-65 %, batch 32 90 %: a run below half of this keeps a GPU
# under about half busy, so two (under half) or four (under a quarter) share one
GPU_PIXELS_PER_STEP = 256 * 256 * 16
# note: at most four runs on one GPU: each holds its own CUDA context and data arrays
MIN_GPU_SHARE = 1 / 4


@dataclass(frozen=True)
class TrialInfo:
    """Who a row belongs to: one (cell, seed), and the training run it is read from."""

    trial_id: str
    cell_id: str
    seed: int
    # the four factors, then the settings varied as factors by dotted path (train.lr)
    factors: dict[str, Any]
    training_run: str
    # fixed settings worth showing beside the factors (lr, model, schedule, ...)
    hparams: dict[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = set(self.hparams) & {*self.factors, "seed"}
        if clash:
            raise ValueError(f"hparams repeat the trial's identity: {sorted(clash)}")

    def __hash__(self) -> int:  # note: the dict fields are not hashable; trial_id names a trial
        return hash(self.trial_id)

    @property
    def params(self) -> dict[str, float | int | str]:
        """The factors, the seed, then the fixed hparams: what a tracker shows as settings."""
        return {**self.factors, "seed": self.seed, **self.hparams}

    def row(self) -> dict[str, Any]:
        """The identity columns of this trial's rows in both tables."""
        return {
            "cell_id": self.cell_id,
            "seed": self.seed,
            **self.factors,
            layout.TRIAL_ID: self.trial_id,
            "training_run": self.training_run,
            "lr": self.hparams.get("lr"),
        }


@dataclass(frozen=True)
class TrainingRun:
    """Trials sharing everything but `epochs`, trained once to the longest."""

    trials: tuple[Trial, ...]  # sorted by epochs

    @property
    def id(self) -> str:
        # the longest trial's id: a run that serves one trial is named like it
        return self.trials[-1].trial_id

    @property
    def epochs(self) -> int:
        return self.trials[-1].cell.epochs

    @property
    def lead(self) -> Trial:
        return self.trials[-1]

    @property
    def steps(self) -> int:
        """Optimizer steps the run takes (its longest cell's)."""
        return self.lead.cell.steps


@dataclass(frozen=True)
class RunPlan:
    """Everything a worker needs to train one training run, as plain values."""

    training_run: str
    seed: int
    image_size: int
    dataset_size: int
    batch_size: int
    epochs: int  # trained to
    # epoch -> the trials (trial_ids) whose cell ends there: checkpoint and predictions
    stops: dict[int, tuple[str, ...]]
    model_name: str
    model_options: dict[str, Any]
    in_channels: int
    num_classes: int  # as in the grid file: 1 = binary
    ignore_index: int | None
    eval_size: int
    loss: str
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    schedule: str
    warmup_epochs: int
    amp: str | bool
    channels_last: str | bool
    compile: bool
    overlay_every: int
    overlay_images: int
    # the training images' augmentation (none: empty); validation is never augmented
    augment: Augmentation = field(default_factory=Augmentation)

    @property
    def num_labels(self) -> int:
        return layout.num_labels(self.num_classes)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.dataset_size / self.batch_size)


@dataclass(frozen=True)
class WorkUnit:
    """A work unit: training runs one worker group trains one after another."""

    unit_id: str
    runs: tuple[RunPlan, ...]
    seconds: float  # estimated
    # the part of `gpus_per_worker` each worker asks for (all its runs have this share)
    gpu_share: float = 1.0
    # the named run queue (gridrun.workqueue) the unit pulls its runs from, one after
    # another, instead of training `runs`; empty: `runs` were packed up front
    queue: str = ""
    # at most this many runs pulled (None: until the queue holds none of its share)
    max_runs: int | None = None
    # which TorchTrainer of the unit's trial pulls: a trainer that failed for good is
    # replaced by the next attempt, which claims runs afresh
    attempt: int = 0


def training_runs(grid: Grid, trials: list[Trial]) -> list[TrainingRun]:
    """Group `trials` into training runs (one per trial when epochs cannot be shared)."""
    if not grid.epochs_shared() and not grid.factors.setting_levels():
        return [TrainingRun((t,)) for t in sorted(trials)]
    groups: dict[tuple, list[Trial]] = defaultdict(list)
    for t in trials:
        c = t.cell
        groups[(c.image_size, c.dataset_size, c.batch_size, c.settings, t.seed)].append(t)
    runs = []
    for group in groups.values():
        group.sort(key=lambda t: t.cell.epochs)
        # note: a setting varied as a factor (train.schedule) may decide the sharing
        if grid.for_cell(group[-1].cell).epochs_shared():
            runs.append(TrainingRun(tuple(group)))
        else:
            runs += [TrainingRun((t,)) for t in group]
    return runs


def plan_run(grid: Grid, run: TrainingRun, in_channels: int, eval_size: int) -> RunPlan:
    cell = run.lead.cell
    grid = grid.for_cell(cell)
    stops: dict[int, list[str]] = defaultdict(list)
    for t in run.trials:
        stops[t.cell.epochs].append(t.trial_id)
    d, m, tr, tk = grid.data, grid.model, grid.train, grid.tracking
    model_name, model_options = m.build_args()
    return RunPlan(
        training_run=run.id,
        seed=run.lead.seed,
        image_size=cell.image_size,
        dataset_size=cell.dataset_size,
        batch_size=cell.batch_size,
        epochs=run.epochs,
        stops={e: tuple(ids) for e, ids in sorted(stops.items())},
        model_name=model_name,
        model_options=model_options,
        in_channels=in_channels,
        num_classes=d.num_classes,
        ignore_index=d.ignore_index,
        eval_size=eval_size,
        loss=tr.loss,
        optimizer=tr.optimizer,
        lr=effective_lr(grid, cell.batch_size),
        weight_decay=tr.weight_decay,
        momentum=tr.momentum,
        schedule=tr.schedule,
        warmup_epochs=tr.warmup_epochs,
        amp=tr.amp,
        channels_last=tr.channels_last,
        compile=tr.compile,
        overlay_every=tk.overlay_every,
        overlay_images=tk.overlay_images,
        augment=augmentation(grid.augment),
    )


def trial_info(grid: Grid, run: TrainingRun, trial: Trial) -> TrialInfo:
    grid = grid.for_cell(trial.cell)
    return TrialInfo(
        trial_id=trial.trial_id,
        cell_id=trial.cell.cell_id,
        seed=trial.seed,
        factors=trial.cell.factors(),
        training_run=run.id,
        hparams={
            "model": grid.model.label,
            "optimizer": grid.train.optimizer,
            "loss": grid.train.loss,
            "schedule": grid.train.schedule,
            "lr": effective_lr(grid, trial.cell.batch_size),
        },
    )


def estimate_seconds(plan: RunPlan, use_gpu: bool, workers: int = 1) -> float:
    """Training time from pixels × samples × epochs at a nominal throughput."""
    rate = (GPU_PIXELS_PER_S if use_gpu else CPU_PIXELS_PER_S) * workers
    return plan.image_size**2 * plan.dataset_size * plan.epochs / rate


def gpu_share(plan: RunPlan, workers: int = 1) -> float:
    """The part of a GPU each of the run's workers needs: 1, 1/2 or 1/4, the smallest
    that holds the run's pixels × samples per step and worker against a busy GPU's.
    (Memory is not estimated: the share is a scheduling quota, and a run too large for
    what is left of its GPU is infeasible as ever.)"""
    pixels = plan.image_size**2 * plan.batch_size / workers
    share = 2.0 ** math.ceil(math.log2(pixels / GPU_PIXELS_PER_STEP))
    return min(1.0, max(MIN_GPU_SHARE, share))


def share_groups(
    plans: list[RunPlan], use_gpu: bool, workers: int = 1, share_gpus: bool = False
) -> dict[float, list[RunPlan]]:
    """The runs by the GPU share their workers ask for (all 1.0 unless GPUs are shared)."""
    shares: dict[float, list[RunPlan]] = defaultdict(list)
    for p in plans:
        shares[gpu_share(p, workers) if use_gpu and share_gpus else 1.0].append(p)
    return dict(shares)


def _bins(plans: list[RunPlan], est: dict[str, float], slots: int) -> list[list[RunPlan]]:
    long = [p for p in plans if est[p.training_run] >= LONG_RUN_S]
    short = sorted(
        (p for p in plans if est[p.training_run] < LONG_RUN_S),
        key=lambda p: (-est[p.training_run], p.training_run),
    )
    n = 0
    if short:
        by_time = math.ceil(sum(est[p.training_run] for p in short) / LONG_RUN_S)
        n = min(len(short), max(by_time, slots - len(long), 1))
    bins: list[list[RunPlan]] = [[] for _ in range(n)]
    load = [0.0] * n
    for p in short:
        i = min(range(n), key=lambda j: (load[j], j))
        bins[i].append(p)
        load[i] += est[p.training_run]
    return [[p] for p in long] + bins


def pack(
    plans: list[RunPlan],
    slots: int | Callable[[float], int],
    use_gpu: bool,
    workers: int = 1,
    enabled: bool = True,
    share_gpus: bool = False,
) -> list[WorkUnit]:
    """Work units of runs: a long run alone; short runs spread by longest-first onto the
    least-loaded unit, at least one unit per free slot, and about LONG_RUN_S each.
    Longest units come first, so they start first. On GPUs with `share_gpus`, runs are
    grouped by `gpu_share` first and each group is packed alone, so a unit's runs ask
    for one share; `slots` then gives the units of a share that fit at once."""
    est = {p.training_run: estimate_seconds(p, use_gpu, workers) for p in plans}
    shares = share_groups(plans, use_gpu, workers, share_gpus)
    groups: list[tuple[float, list[RunPlan]]] = []
    for share, some in sorted(shares.items(), reverse=True):
        n = slots(share) if callable(slots) else slots
        groups += [(share, g) for g in (_bins(some, est, n) if enabled else [[p] for p in some])]
    units = []
    for share, group in groups:
        group = sorted(group, key=lambda p: p.training_run)
        seconds = sum(est[p.training_run] for p in group)
        units.append((seconds, group, share))
    units.sort(key=lambda b: (-b[0], b[1][0].training_run))
    return [
        WorkUnit(f"b{i:04d}_{group[0].training_run}", tuple(group), seconds, share)
        for i, (seconds, group, share) in enumerate(units)
    ]


def queue_units(
    plans: list[RunPlan],
    slots: int | Callable[[float], int],
    queue: str,
    use_gpu: bool,
    workers: int = 1,
    enabled: bool = True,
    share_gpus: bool = False,
) -> list[WorkUnit]:
    """Work units that pull their runs from the queue named `queue`: per GPU share, as
    many as fit at once (`slots`) and no more than it has runs. With packing off
    (`enabled` false), one unit per run, each taking one run: every run gets a fresh
    worker group, and the longest left goes first."""
    est = {p.training_run: estimate_seconds(p, use_gpu, workers) for p in plans}
    units = []
    for share, some in sorted(share_groups(plans, use_gpu, workers, share_gpus).items(),
                              reverse=True):  # fmt: skip
        n = len(some) if not enabled else min(len(some), slots(share) if callable(slots) else slots)
        seconds = sum(est[p.training_run] for p in some) / n
        units += [
            WorkUnit(f"u{len(units) + i:04d}", (), seconds, share, queue, None if enabled else 1)
            for i in range(n)
        ]
    return units


def lr_at(plan: RunPlan, step: int) -> float:
    """The learning rate for optimizer step `step` (0-based): a pure function of the step,
    so a run resumed mid-way gets the same rates. Warm-up is linear from lr/warmup_steps."""
    per_epoch = plan.steps_per_epoch
    warm = plan.warmup_epochs * per_epoch if plan.schedule != "constant" else 0
    if step < warm:
        return plan.lr * (step + 1) / warm
    if plan.schedule in ("constant", "warmup_constant"):
        return plan.lr
    total = plan.epochs * per_epoch - warm
    progress = min(1.0, (step - warm) / max(total, 1))
    if plan.schedule == "poly":
        return plan.lr * (1 - progress) ** 0.9
    assert plan.schedule == "cosine", plan.schedule
    return plan.lr * 0.5 * (1 + math.cos(math.pi * progress))

