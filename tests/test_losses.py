"""Per-sample losses against values worked out by hand, with and without ignored pixels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gridrun.losses import per_sample_loss

IGNORE = 255


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_cross_entropy_leaves_ignored_pixels_out() -> None:
    # one sample, two classes, three pixels: [0, 0] → class 1, [2, 0] → class 0, ignored
    logits = torch.tensor([[[[0.0, 2.0, 9.0]], [[0.0, 0.0, -9.0]]]])
    target = torch.tensor([[[1, 0, IGNORE]]])
    expected = (math.log(2) + _softplus(-2)) / 2
    assert per_sample_loss("ce", logits, target, IGNORE).tolist() == pytest.approx([expected])
    # the same as torch's own ignore_index for a single sample
    torch_ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert float(torch_ce) == pytest.approx(expected)


def test_binary_cross_entropy_leaves_ignored_pixels_out() -> None:
    logits = torch.tensor([[[[2.0, -1.0, 5.0]]]])
    target = torch.tensor([[[1, 0, IGNORE]]])
    expected = (_softplus(-2) + _softplus(-1)) / 2
    assert per_sample_loss("bce", logits, target, IGNORE).tolist() == pytest.approx([expected])


def test_dice_counts_only_valid_pixels() -> None:
    # p = 0.5 everywhere; valid truth [1, 0]: inter 0.5, total 1 + 1 → 1 − (1 + 1)/(2 + 1)
    logits = torch.zeros(1, 1, 1, 3)
    target = torch.tensor([[[1, 0, IGNORE]]])
    assert per_sample_loss("dice", logits, target, IGNORE).tolist() == pytest.approx([1 / 3])
    # counted as background instead, the third pixel would add 0.5 to the total: 1 − 2/3.5
    as_background = per_sample_loss("dice", logits, torch.tensor([[[1, 0, 0]]]))
    assert as_background.tolist() == pytest.approx([1 - 2 / 3.5])


def test_multiclass_dice_counts_only_valid_pixels() -> None:
    # softmax of equal logits: 1/3 per class; valid truth [0, 2]
    logits = torch.zeros(1, 3, 1, 3)
    target = torch.tensor([[[0, 2, IGNORE]]])
    # per class: inter (1/3, 0, 1/3), total (2/3 + 1, 2/3, 2/3 + 1)
    dice = [(2 / 3 + 1) / (5 / 3 + 1), 1 / (2 / 3 + 1), (2 / 3 + 1) / (5 / 3 + 1)]
    expected = 1 - sum(dice) / 3
    assert per_sample_loss("dice", logits, target, IGNORE).tolist() == pytest.approx([expected])


def test_combined_losses_add_their_parts() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 5, generator=g)
    target = torch.randint(0, 4, (3, 5, 5), generator=g)
    target[0, :2] = IGNORE
    ce = per_sample_loss("ce", logits, target, IGNORE)
    dice = per_sample_loss("dice", logits, target, IGNORE)
    assert torch.allclose(per_sample_loss("ce_dice", logits, target, IGNORE), ce + dice)


def test_ignored_pixels_get_no_gradient() -> None:
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    logits.requires_grad_(True)
    target = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(2))
    target[1, 2:, :] = IGNORE
    per_sample_loss("ce_dice", logits, target, IGNORE).sum().backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad[1, :, 2:, :]) == 0
    assert torch.count_nonzero(logits.grad[1, :, :2, :]) > 0


def test_a_sample_with_every_pixel_ignored_contributes_zero() -> None:
    logits = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    target = torch.full((2, 3, 3), IGNORE)
    target[0] = 1
    losses = per_sample_loss("bce_dice", logits, target, IGNORE)
    assert losses[1].item() == 0.0
    assert losses[0].item() == pytest.approx(per_sample_loss("bce_dice", logits[:1], target[:1])[0])


def test_without_ignore_index_the_losses_are_torchs_means() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    ce = F.cross_entropy(logits, target, reduction="none").mean(dim=(1, 2))
    assert torch.allclose(per_sample_loss("ce", logits, target), ce)
    binary = torch.randint(0, 2, (2, 4, 4), generator=g)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], binary.float(), reduction="none")
    assert torch.allclose(per_sample_loss("bce", logits[:, :1], binary), bce.mean(dim=(1, 2)))


def test_losses_with_ignored_pixels_do_not_depend_on_chunking() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (4, 6, 6), generator=g)
    target[:, 0] = IGNORE
    whole = per_sample_loss("ce_dice", logits, target, IGNORE)
    halves = [
        per_sample_loss("ce_dice", logits[i : i + 2], target[i : i + 2], IGNORE) for i in (0, 2)
    ]
    assert torch.equal(whole, torch.cat(halves))
