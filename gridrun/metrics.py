"""Confusion-matrix metrics. Workers sum confusion counts across processes first;
every ratio is read from the summed counts, never averaged across workers."""

from __future__ import annotations

import torch

__all__ = ["confusion_matrix", "constant_scores", "predict_labels", "scores"]


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits to (N, H, W) class indices; K = 1 is binary (p > 0.5)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_labels: int, ignore_index: int | None = None
) -> torch.Tensor:
    """cm[t, p] = pixels of true class t predicted as p (int64, on pred's device); pixels
    whose truth is `ignore_index` are not counted."""
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    index = target * num_labels + pred
    bins = num_labels**2
    if ignore_index is not None:
        # note: an extra bin for ignored pixels, dropped below; boolean masking would make
        # the GPU wait for the host at every step
        index = torch.where(target == ignore_index, bins, index)
    # note: bincount on CUDA reads the maximum back to the host; scatter_add does not
    counts = torch.zeros(bins + 1, dtype=torch.int64, device=index.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts[:bins].reshape(num_labels, num_labels)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # note: a class absent from both truth and prediction scores nan, not 0 or 1
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


def scores(cm: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """IoU, Dice, precision, recall, pixel accuracy from a confusion matrix.

    Binary (2×2): the headline columns are the foreground class's, plus `miou` over both.
    Multi-class: headline columns are means over classes (nan-ignoring). Either way
    `iou_c{k}` is each class's own IoU (binary: c0 background, c1 foreground)."""
    cm = cm.double()
    tp = cm.diag()
    fp = cm.sum(dim=0) - tp
    fn = cm.sum(dim=1) - tp
    iou = _ratio(tp, tp + fp + fn)
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    out: dict[str, float] = {"pixel_acc": float(tp.sum() / cm.sum().clamp(min=1))}
    if cm.shape[0] == 2:
        out.update(
            iou=float(iou[1]),
            dice=float(dice[1]),
            precision=float(precision[1]),
            recall=float(recall[1]),
            miou=float(iou.nanmean()),
        )
    else:
        out.update(
            iou=float(iou.nanmean()),
            dice=float(dice.nanmean()),
            precision=float(precision.nanmean()),
            recall=float(recall.nanmean()),
        )
    out.update({f"iou_c{k}": float(v) for k, v in enumerate(iou)})
    return {f"{prefix}{k}": v for k, v in out.items()}


def constant_scores(class_pixels: list[int], label: int, prefix: str = "") -> dict[str, float]:
    """What a model predicting `label` at every pixel scores on truth holding
    `class_pixels[t]` pixels of class t: `scores` of cm[t, label] = class_pixels[t]."""
    cm = torch.zeros(len(class_pixels), len(class_pixels), dtype=torch.int64)
    cm[:, label] = torch.tensor(class_pixels, dtype=torch.int64)
    return scores(cm, prefix)
