"""The loop one Ray Train worker runs: train and validate each epoch, reduce counts
across workers, report once per epoch. `run_epochs` is plain torch so it can be tested
without Ray; `train_loop_per_worker` is the thin Ray wrapper."""

from __future__ import annotations

import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gridrun.data import SizedArrays
from gridrun.metrics import confusion_matrix, predict_labels, scores
from gridrun.models import build_model, count_params

__all__ = [
    "CHECKPOINT_FILE",
    "TrialPlan",
    "per_sample_loss",
    "run_epochs",
    "save_checkpoint",
    "train_loop_per_worker",
]

CHECKPOINT_FILE = "model.pt"
EVAL_BATCH = 8
# note: BCE with logits stays finite however far training blows up (BatchNorm keeps the
# activations bounded); a training loss 100× its first epoch's is divergence too
DIVERGED_FACTOR = 100.0


@dataclass(frozen=True)
class TrialPlan:
    """Everything a worker needs to train one (cell, seed), as plain values."""

    run_id: str
    seed: int
    image_size: int
    dataset_size: int
    epochs: int
    batch_size: int
    model_name: str
    model_options: dict[str, Any]
    in_channels: int
    num_classes: int  # as in the grid file: 1 = binary
    eval_size: int
    loss: str
    optimizer: str
    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.9

    @property
    def num_labels(self) -> int:
        return max(2, self.num_classes)


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice per sample; over the foreground for binary, mean over classes else."""
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits[:, 0])[:, None]
        onehot = target[:, None].float()
    else:
        prob = logits.softmax(dim=1)
        onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum(dim=(2, 3))
    total = prob.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean(dim=1)


def per_sample_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) losses, so a batch split across workers or chunks averages the same."""
    parts = []
    if name in ("bce", "bce_dice"):
        bce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
        parts.append(bce.mean(dim=(1, 2)))
    if name in ("ce", "ce_dice"):
        parts.append(F.cross_entropy(logits, target.long(), reduction="none").mean(dim=(1, 2)))
    if name in ("dice", "bce_dice", "ce_dice"):
        parts.append(_soft_dice_loss(logits, target))
    return torch.stack(parts).sum(dim=0)


def _optimizer(plan: TrialPlan, params) -> torch.optim.Optimizer:
    if plan.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay
        )
    cls = torch.optim.AdamW if plan.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=plan.lr, weight_decay=plan.weight_decay)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if _world()[1] > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # note: CPU has no allocator counter; the process's peak resident set is the honest proxy
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: wait for them before reading the clock
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_input(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).float().div_(255)


def _to_target(y: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).to(device).long()


def _train_epoch(plan, model, optimizer, arrays, epoch, device) -> tuple[torch.Tensor, int]:
    """One pass over the first dataset_size images; returns [loss sum, n, cm...] counts."""
    rank, world = _world()
    model.train()
    order = np.random.default_rng([plan.seed, epoch]).permutation(plan.dataset_size)
    cm = torch.zeros(plan.num_labels, plan.num_labels, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen, steps = 0, 0
    for start in range(0, plan.dataset_size, plan.batch_size):
        batch = order[start : start + plan.batch_size]
        # global batch: each worker takes every world-th image of it
        mine = np.sort(batch[rank::world])
        weight = 1.0
        if len(mine) == 0:
            # a final batch smaller than the world: train on a duplicate with zero weight
            # so every rank still joins DDP's gradient all-reduce
            mine, weight = np.sort(batch[:1]), 0.0
        x, y = _to_input(arrays.train_x[mine], device), _to_target(arrays.train_y[mine], device)
        logits = model(x)
        losses = per_sample_loss(plan.loss, logits, y)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; scaling each rank's sum by world / len(batch)
        # makes the update the mean over the global batch however unevenly it splits
        (losses.sum() * (weight * world / len(batch))).backward()
        optimizer.step()
        steps += 1
        if weight:
            loss_sum += losses.detach().sum().double()
            seen += len(mine)
            cm += confusion_matrix(predict_labels(logits.detach()), y, plan.num_labels)
    counts = torch.cat([loss_sum[None], torch.tensor([seen], device=device), cm.flatten()])
    return counts.double(), steps


@torch.no_grad()
def _validate(plan, model, val_x, val_y, device) -> torch.Tensor:
    """Predict at image_size, score at eval_size; this rank's share of the validation set."""
    rank, world = _world()
    model.eval()
    mine = np.arange(rank, len(val_x), world)
    cm = torch.zeros(plan.num_labels, plan.num_labels, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), EVAL_BATCH):
        idx = mine[start : start + EVAL_BATCH]
        logits = model(_to_input(val_x[idx], device))
        if logits.shape[-1] != plan.eval_size:
            logits = F.interpolate(
                logits, size=(plan.eval_size,) * 2, mode="bilinear", align_corners=False
            )
        y = _to_target(val_y[idx], device)
        loss_sum += per_sample_loss(plan.loss, logits, y).sum().double()
        cm += confusion_matrix(predict_labels(logits), y, plan.num_labels)
    return torch.cat([loss_sum[None], torch.tensor([len(mine)], device=device), cm.flatten()])


def _unpack(counts: torch.Tensor, num_labels: int, prefix: str) -> dict[str, float]:
    n = counts[1].item()
    cm = counts[2:].round().long().reshape(num_labels, num_labels)
    out = scores(cm, prefix)
    out[f"{prefix}loss"] = counts[0].item() / max(n, 1)
    out[f"{prefix}pixels"] = int(cm.sum())
    return out


Report = Callable[[dict[str, Any], nn.Module | None], None]


def run_epochs(
    plan: TrialPlan,
    arrays: SizedArrays,
    val_y: np.ndarray,
    report: Report,
    device: torch.device | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
) -> None:
    """Train `plan`; after each epoch call report(metrics, model-or-None-on-other-ranks)."""
    device = device or torch.device("cpu")
    rank, world = _world()
    torch.manual_seed(plan.seed)
    model = build_model(plan.model_name, plan.in_channels, plan.num_classes, **plan.model_options)
    params = count_params(model)
    model = wrap(model.to(device))
    optimizer = _optimizer(plan, model.parameters())
    step, train_time, first_loss = 0, 0.0, math.inf
    for epoch in range(1, plan.epochs + 1):
        t0 = time.perf_counter()
        train_counts, steps = _train_epoch(plan, model, optimizer, arrays, epoch, device)
        _sync(device)
        t1 = time.perf_counter()
        val_counts = _validate(plan, model, arrays.val_x, val_y, device)
        _sync(device)
        t2 = time.perf_counter()
        step += steps
        train_time += t1 - t0
        reduced = _all_reduce(torch.cat([train_counts, val_counts]).double())
        # on GPU workers NCCL reduces device tensors only
        peak = _all_reduce(torch.tensor([_peak_mem_mb(device)], device=device), dist.ReduceOp.MAX)
        k = len(train_counts)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            **_unpack(reduced[:k], plan.num_labels, "train_"),
            **_unpack(reduced[k:], plan.num_labels, "val_"),
            "lr": optimizer.param_groups[0]["lr"],
            "step": step,
            "epoch_time_s": t2 - t0,
            "train_time_s": train_time,
            "train_samples_per_s": plan.dataset_size / max(t1 - t0, 1e-9),
            "peak_mem_mb": float(peak.item()),
            "params": params,
            "world_size": world,
        }
        first_loss = first_loss if epoch > 1 else metrics["train_loss"]
        diverged = not math.isfinite(metrics["train_loss"]) or (
            metrics["train_loss"] > DIVERGED_FACTOR * first_loss
        )
        metrics["status"] = "diverged" if diverged else "ok"
        report(metrics, model if rank == 0 else None)
        if diverged:
            return


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(plan: TrialPlan, model: nn.Module, epoch: int, directory: Path) -> Path:
    path = directory / CHECKPOINT_FILE
    torch.save(
        {"state_dict": _unwrap(model).state_dict(), "epoch": epoch, "plan": plan.__dict__},
        path,
    )
    return path


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    import ray
    import ray.train
    import ray.train.torch

    plan: TrialPlan = config["plan"]
    arrays: SizedArrays = ray.get(config["arrays"])
    val_y: np.ndarray = ray.get(config["val_y"])
    node_ip = ray.util.get_node_ip_address()

    def report(metrics: dict[str, Any], model: nn.Module | None) -> None:
        metrics = {**metrics, "worker_ip": node_ip, "run_id": plan.run_id}
        if model is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(plan, model, metrics["epoch"], Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    run_epochs(
        plan,
        arrays,
        val_y,
        report,
        device=ray.train.torch.get_device(),
        wrap=ray.train.torch.prepare_model,
    )
