"""Prediction overlays: true positives, false positives and false negatives blended over
the input image. The one painter of TensorBoard's overlays (`gridrun.tracking`) and the
report's (`analysis.overlays`), so both show the same pixels in the same colours.

Foreground is any label but 0 and `ignore_index` (the grid's data.ignore_index; None:
every value is a label): a pixel of the wrong foreground class is a false positive, and
an ignored pixel (a border, void) is painted as neither class, as the metrics leave it
out. numpy only, so the analysis may import it without torch or ray.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLORS", "OPACITY", "as_rgb", "overlay_masks", "paint_overlay"]

COLORS: dict[str, tuple[int, int, int]] = {
    "TP": (0, 200, 0),
    "FP": (255, 0, 0),
    "FN": (0, 110, 255),
}
OPACITY = 0.55


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 of an RGB image or of a grey one (H×W or H×W×1)."""
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim == 2 or rgb.shape[-1] == 1:
        rgb = np.repeat(rgb.reshape(rgb.shape[:2] + (1,)), 3, axis=-1)
    return rgb


def overlay_masks(
    truth: np.ndarray, pred: np.ndarray, ignore_index: int | None
) -> dict[str, np.ndarray]:
    """The TP, FP and FN pixels of one image's labels, ignored pixels in none of them."""
    scored = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
    fg_truth, fg_pred = scored & (truth > 0), scored & (pred > 0)
    return {
        "TP": fg_truth & (pred == truth),
        "FP": fg_pred & (pred != truth),
        "FN": fg_truth & ~fg_pred,
    }


def paint_overlay(
    image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignore_index: int | None
) -> np.ndarray:
    """uint8 H×W×3: `image` (H×W×3, or grey H×W or H×W×1) with its TP, FP and FN pixels
    blended in COLORS at OPACITY; every other pixel keeps the input's colour."""
    rgb = as_rgb(image)
    if truth.shape != rgb.shape[:2] or pred.shape != rgb.shape[:2]:
        raise ValueError(f"image {image.shape}, truth {truth.shape}, pred {pred.shape} differ")
    out = rgb.astype(float)
    for name, mask in overlay_masks(truth, pred, ignore_index).items():
        out[mask] = (1 - OPACITY) * out[mask] + OPACITY * np.asarray(COLORS[name], dtype=float)
    return np.rint(out).astype(np.uint8)
