"""Training one run, epoch by epoch: train, validate (and score the test split, when
there is one, the same way), reduce counts across workers, yield the epoch's metrics.
Plain torch, testable without Ray; `gridrun.worker` is the Ray wrapper that adds
checkpoints and reports."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gridrun.augment import Augmenter
from gridrun.data import SizedArrays
from gridrun.layout import (
    Status,
)
from gridrun.losses import per_sample_loss
from gridrun.metrics import confusion_matrix, predict_labels, scores
from gridrun.models import build_model, count_params
from gridrun.records import RunCheckpoint, TrainState
from gridrun.runs import RunPlan, lr_at

if TYPE_CHECKING:
    from gridrun.streaming import StreamedArrays

__all__ = ["EpochEnd", "device_name", "overlay_epochs", "run_epochs", "rank_and_world"]

EVAL_BATCH = 8
# note: BCE with logits stays finite however far training blows up (BatchNorm keeps the
# activations bounded); a training loss 100× its first epoch's is divergence too
DIVERGED_FACTOR = 100.0


@dataclass
class EpochEnd:
    """One finished epoch: its metrics (the curve values, equal on every rank) and, on
    rank 0, the predictions of the overlay images when this epoch shows them."""

    epoch: int
    status: Status  # OK, or DIVERGED: the run stops after this epoch
    metrics: dict[str, float | int]
    params: int
    world_size: int
    device: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    predictions: np.ndarray | None
    state: TrainState  # what a restart needs besides the weights and the optimizer


def _optimizer(plan: RunPlan, params, fused: bool = False) -> torch.optim.Optimizer:
    # note: fused (one kernel for all parameters) on GPU, where a small model's step is
    # otherwise bound by kernel launches; the same update rule either way
    if plan.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay,
            fused=fused or None,
        )  # fmt: skip
    cls = torch.optim.AdamW if plan.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=plan.lr, weight_decay=plan.weight_decay, fused=fused or None)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if rank_and_world()[1] > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # note: CPU has no allocator counter; the process's peak resident set is the honest proxy
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: torch.device) -> str:
    """"cpu", or "cuda: <the GPU's name>": the device a run actually trained on."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: wait for them before reading the clock
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Device:
    """Where tensors live and how they are computed: AMP and memory format on GPU."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def for_plan(cls, plan: RunPlan, device: torch.device) -> _Device:
        if device.type != "cuda":
            return cls(device)
        torch.backends.cudnn.benchmark = True
        amp = None
        if plan.amp in ("auto", True):
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, amp, plan.channels_last in ("auto", True))

    def put(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 host or device array → this device (non-blocking from pinned memory)."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        if self.device.type == "cuda" and t.device.type == "cpu":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def input(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = self.put(x).float().div_(255)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def target(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.put(y).long()

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=bool(self.amp_dtype)
        )

    def resident(self, x: np.ndarray) -> np.ndarray | torch.Tensor:
        """A run's uint8 arrays on the GPU once, when they take under a quarter of free
        memory: no host copy per step. On CPU they stay where the object store put them."""
        if self.device.type != "cuda":
            return x
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.put(x) if x.nbytes < free / 4 else x


def _index(x: np.ndarray | torch.Tensor, idx: np.ndarray):
    return x[_device_indices(x, idx)]


def _device_indices(x: np.ndarray | torch.Tensor, idx: np.ndarray):
    """`idx` where `x` lives: as is for host arrays, a tensor on x's device otherwise."""
    return torch.from_numpy(idx).to(x.device) if isinstance(x, torch.Tensor) else idx


class _ArrayData:
    """A run's arrays in this process (from the object store), read by index: the
    in-memory path. `gridrun.streaming.StreamedArrays` has the same methods."""

    def __init__(self, dev: _Device, arrays: SizedArrays, dataset_size: int, val_y, test_y):
        self.train_x = dev.resident(arrays.train_x[:dataset_size])
        self.train_y = dev.resident(arrays.train_y[:dataset_size])
        self.val_x, self.val_y = dev.resident(arrays.val_x), dev.resident(val_y)
        self.shown = arrays.val_x
        self.test = None
        if test_y is not None and arrays.test_x is not None:
            self.test = dev.resident(arrays.test_x), dev.resident(test_y)

    def train_batches(self, index_lists: list[np.ndarray]) -> Iterator[tuple]:
        # note: the epoch's indices reach the GPU in one copy; a copy per step would make
        # the host wait for the GPU every step
        flat = _device_indices(self.train_x, np.concatenate(index_lists))
        offset = 0
        for mine in index_lists:
            idx = flat[offset : offset + len(mine)]
            offset += len(mine)
            yield self.train_x[idx], self.train_y[idx]

    def eval_count(self, split: str) -> int:
        return len(self.val_x if split == "val" else self.test[0])

    def eval_batches(self, split: str, index_lists: list[np.ndarray]) -> Iterator[tuple]:
        x, y = (self.val_x, self.val_y) if split == "val" else self.test
        for idx in index_lists:
            yield _index(x, idx), _index(y, idx)

    def has_test(self) -> bool:
        return self.test is not None

    def first_val(self, count: int) -> np.ndarray:
        return self.shown[:count]


def _train_epoch(plan, model, forward, optimizer, scaler, dev, data, epoch, step):
    """One pass over the first dataset_size images; returns [loss sum, n, cm...] counts."""
    rank, world = rank_and_world()
    model.train()
    # note: the order depends on (seed, epoch) only, so any epoch count shares its prefix
    order = np.random.default_rng([plan.seed, epoch]).permutation(plan.dataset_size)
    cm = torch.zeros(plan.num_labels, plan.num_labels, dtype=torch.int64, device=dev.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev.device)
    seen = 0
    batches = []
    for start in range(0, plan.dataset_size, plan.batch_size):
        batch = order[start : start + plan.batch_size]
        # global batch: each worker takes every world-th image of it
        mine = np.sort(batch[rank::world])
        weight = 1.0
        if len(mine) == 0:
            # a final batch smaller than the world: train on a duplicate with zero weight
            # so every rank still joins DDP's gradient all-reduce
            mine, weight = np.sort(batch[:1]), 0.0
        batches.append((mine, weight, len(batch)))
    augment = Augmenter(plan.augment, plan.seed, plan.image_size) if plan.augment else None
    pairs = data.train_batches([m for m, _, _ in batches])
    for (mine, weight, batch_len), (x_batch, y_batch) in zip(batches, pairs, strict=True):
        x, y = dev.input(x_batch), dev.target(y_batch)
        if augment is not None:
            # note: seeded per (seed, epoch, sample), on the device x and y live on
            x, y = augment(x, y, epoch, mine)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(plan, step)
        with dev.autocast():
            logits = forward(x)
            losses = per_sample_loss(plan.loss, logits.float(), y, plan.ignore_index)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; scaling each rank's sum by world / len(batch)
        # makes the update the mean over the global batch however unevenly it splits
        scaler.scale(losses.sum() * (weight * world / batch_len)).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        if weight:
            loss_sum += losses.detach().sum().double()
            seen += len(mine)
            cm += confusion_matrix(
                predict_labels(logits.detach()), y, plan.num_labels, plan.ignore_index
            )
    counts = torch.cat([loss_sum[None], torch.tensor([seen], device=dev.device), cm.flatten()])
    return counts.double(), step


def _eval_logits(plan, forward, dev, x) -> torch.Tensor:
    """Logits at the evaluation resolution: predicted at image_size, upsampled."""
    with dev.autocast():
        logits = forward(dev.input(x)).float()
    if logits.shape[-1] != plan.eval_size:
        logits = F.interpolate(
            logits, size=(plan.eval_size,) * 2, mode="bilinear", align_corners=False
        )
    return logits


@torch.no_grad()
def _validate(plan, model, forward, dev, data, split: str = "val") -> torch.Tensor:
    """Score at eval_size this rank's share of an evaluated split (validation or test).
    Draws no random numbers, so scoring never shifts the training stream."""
    rank, world = rank_and_world()
    model.eval()
    mine = np.arange(rank, data.eval_count(split), world)
    cm = torch.zeros(plan.num_labels, plan.num_labels, dtype=torch.int64, device=dev.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev.device)
    chunks = [mine[start : start + EVAL_BATCH] for start in range(0, len(mine), EVAL_BATCH)]
    for x_batch, y_batch in data.eval_batches(split, chunks):
        logits = _eval_logits(plan, forward, dev, x_batch)
        y = dev.target(y_batch)
        loss_sum += per_sample_loss(plan.loss, logits, y, plan.ignore_index).sum().double()
        cm += confusion_matrix(predict_labels(logits), y, plan.num_labels, plan.ignore_index)
    return torch.cat([loss_sum[None], torch.tensor([len(mine)], device=dev.device), cm.flatten()])


@torch.no_grad()
def _predict(plan, model, forward, dev, data) -> np.ndarray:
    """Predicted labels (uint8, N×E×E) of the first overlay_images validation images."""
    model.eval()
    logits = _eval_logits(plan, forward, dev, data.first_val(plan.overlay_images))
    return predict_labels(logits).to(torch.uint8).cpu().numpy()


def _unpack(counts: torch.Tensor, num_labels: int, prefix: str) -> dict[str, float]:
    n = counts[1].item()
    cm = counts[2:].round().long().reshape(num_labels, num_labels)
    out = scores(cm, prefix)
    out[f"{prefix}loss"] = counts[0].item() / max(n, 1)
    out[f"{prefix}pixels"] = int(cm.sum())
    return out


def overlay_epochs(plan: RunPlan) -> set[int]:
    """Epochs whose predictions are kept: every overlay_every-th and each cell's own."""
    if plan.overlay_images == 0:
        return set()
    return {e for e in range(1, plan.epochs + 1) if e % plan.overlay_every == 0} | set(
        plan.stops
    )


def run_epochs(
    plan: RunPlan,
    arrays: SizedArrays | StreamedArrays,
    val_y: np.ndarray | None,
    device: torch.device | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    resume: RunCheckpoint | None = None,
    test_y: np.ndarray | None = None,
) -> Iterator[EpochEnd]:
    """Train `plan`, yielding after each epoch; stops after a diverged epoch. `resume` is
    a checkpoint made from an earlier EpochEnd: training goes on after its epoch.
    With `test_y` (and `arrays.test_x`), every epoch also reports `test_*` metrics,
    scored like validation; nothing in training reads them. StreamedArrays (the streaming
    path) carry their own truth masks: `val_y` and `test_y` are then None."""
    dev = _Device.for_plan(plan, device or torch.device("cpu"))
    rank, world = rank_and_world()
    torch.manual_seed(plan.seed)
    model = build_model(plan.model_name, plan.in_channels, plan.num_classes, **plan.model_options)
    params = count_params(model)
    if resume is not None:
        model.load_state_dict(resume.model)
    model = model.to(dev.device)
    if dev.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap(model)
    optimizer = _optimizer(plan, model.parameters(), fused=dev.device.type == "cuda")
    # note: the compiled function only runs the model; weights, train()/eval() and the
    # state dict stay those of `model`
    forward = model
    if plan.compile and dev.device.type == "cuda":
        forward = torch.compile(model, mode="reduce-overhead")
    scaler = torch.amp.GradScaler(enabled=dev.amp_dtype == torch.float16)
    state = TrainState()
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        state = resume.state
    step, train_time, first_loss = state.step, state.train_time, state.first_loss
    data = arrays
    if isinstance(arrays, SizedArrays):
        data = _ArrayData(dev, arrays, plan.dataset_size, val_y, test_y)
    test = data.has_test()
    where = device_name(dev.device)
    shown = overlay_epochs(plan)
    for epoch in range(state.epoch + 1, plan.epochs + 1):
        _sync(dev.device)
        t0 = time.perf_counter()
        train_counts, step = _train_epoch(
            plan, model, forward, optimizer, scaler, dev, data, epoch, step
        )
        _sync(dev.device)
        t1 = time.perf_counter()
        val_counts = _validate(plan, model, forward, dev, data)
        _sync(dev.device)
        t2 = time.perf_counter()
        train_time += t1 - t0
        counts = [train_counts, val_counts]
        if test:
            counts.append(_validate(plan, model, forward, dev, data, "test"))
        reduced = _all_reduce(torch.cat(counts).double())
        # on GPU workers NCCL reduces device tensors only
        peak = _all_reduce(
            torch.tensor([_peak_mem_mb(dev.device)], device=dev.device), dist.ReduceOp.MAX
        )
        k = len(train_counts)
        metrics: dict[str, float | int] = {
            **_unpack(reduced[:k], plan.num_labels, "train_"),
            **_unpack(reduced[k : 2 * k], plan.num_labels, "val_"),
            **(_unpack(reduced[2 * k :], plan.num_labels, "test_") if test else {}),
            "lr": optimizer.param_groups[0]["lr"],
            "step": step,
            "epoch_time_s": t2 - t0,
            "train_time_s": train_time,
            "train_samples_per_s": plan.dataset_size / max(t1 - t0, 1e-9),
            "peak_mem_mb": float(peak.item()),
        }
        if epoch == 1:
            first_loss = metrics["train_loss"]
        diverged = not math.isfinite(metrics["train_loss"]) or (
            metrics["train_loss"] > DIVERGED_FACTOR * first_loss
        )
        status = Status.DIVERGED if diverged else Status.OK
        predictions = _predict(plan, model, forward, dev, data) if epoch in shown else None
        yield EpochEnd(
            epoch, status, metrics, params, world, where, model, optimizer,
            predictions if rank == 0 else None, TrainState(step, train_time, first_loss, epoch),
        )  # fmt: skip
        if diverged:
            return
