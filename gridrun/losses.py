"""Training losses, one value per sample, with pixels marked `ignore_index` left out.

Per-sample values let a batch split across workers (or chunks) average to the same loss.
A sample's value is its mean over the pixels it does not ignore; a sample whose every
pixel is ignored contributes 0."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_sample_loss"]


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """(N, H, W) float: 1 where the pixel counts, 0 where it is ignored."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.float32)
    return (target != ignore_index).float()


def _soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """1 − soft Dice per sample over the valid pixels; over the foreground for binary,
    mean over classes else. `target` holds real labels only (ignored pixels relabelled)."""
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits[:, 0])[:, None]
        onehot = target[:, None].float()
    else:
        prob = logits.softmax(dim=1)
        onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).float()
    prob, onehot = prob * valid[:, None], onehot * valid[:, None]
    inter = (prob * onehot).sum(dim=(2, 3))
    total = prob.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean(dim=1)


def per_sample_loss(
    name: str, logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None
) -> torch.Tensor:
    """(N,) losses of (N, K, H, W) logits against (N, H, W) labels; `name` is one of
    bce, dice, bce_dice (K = 1) or ce, dice, ce_dice (K > 1)."""
    valid = _valid(target, ignore_index)
    count = valid.sum(dim=(1, 2)).clamp(min=1)
    # ignored pixels get label 0, then weigh nothing: one_hot and BCE need a real label
    labels = target.long() * valid.long()
    parts = []
    if name in ("bce", "bce_dice"):
        bce = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float(), reduction="none")
        parts.append((bce * valid).sum(dim=(1, 2)) / count)
    if name in ("ce", "ce_dice"):
        ce = F.cross_entropy(logits, labels, reduction="none")
        parts.append((ce * valid).sum(dim=(1, 2)) / count)
    if name in ("dice", "bce_dice", "ce_dice"):
        parts.append(_soft_dice_loss(logits, labels, valid))
    return torch.stack(parts).sum(dim=0)
