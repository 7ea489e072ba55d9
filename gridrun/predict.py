"""Predictions of a finished trial from its saved checkpoint (for report overlays).
No Ray here: the analysis package calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gridrun.data import resize_images, resize_masks, validation_examples
from gridrun.models import build_model
from gridrun.spec import load_grid
from gridrun.store import GRID_FILE
from gridrun.train import CHECKPOINT_FILE, TrialPlan

__all__ = ["latest_checkpoint", "predict_examples"]


def latest_checkpoint(run_dir: Path, run_id: str) -> Path:
    found = sorted((run_dir / "train" / run_id).glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    if not found:
        raise FileNotFoundError(f"{run_dir / 'train' / run_id}: no checkpoint")
    return found[-1]


@torch.no_grad()
def predict_examples(
    run_dir: Path, run_id: str, max_images: int = 4
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image uint8 HxWx3, truth bool HxW, predicted foreground bool HxW) for the first
    validation images, at the evaluation resolution, from the trial's last checkpoint."""
    run_dir = Path(run_dir)
    state = torch.load(latest_checkpoint(run_dir, run_id), map_location="cpu", weights_only=False)
    plan = TrialPlan(**state["plan"])
    model = build_model(plan.model_name, plan.in_channels, plan.num_classes, **plan.model_options)
    model.load_state_dict(state["state_dict"])
    model.eval()
    grid = load_grid(run_dir / GRID_FILE)
    examples = validation_examples(grid, max_images)
    images = [image for image, _, _ in examples]
    x = torch.from_numpy(resize_images(images, plan.image_size)).float() / 255
    logits = F.interpolate(model(x), size=(plan.eval_size,) * 2, mode="bilinear")
    # foreground: p > 0.5 for binary, any class but 0 otherwise
    pred = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(dim=1) > 0
    truth = resize_masks([mask for _, mask, _ in examples], plan.eval_size) > 0
    shown = resize_images(images, plan.eval_size).transpose(0, 2, 3, 1)
    if shown.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    return [(shown[i], truth[i], pred[i].numpy()) for i in range(len(examples))]
