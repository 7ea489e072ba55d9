"""Data sources and their preprocessing.

One fixed validation set serves the whole grid and training subsets are nested (the
first n images of one fixed order), so the data-set-size effect is not confounded with
which images were drawn. Each image is resized once per image_size, here, before any
trial starts; every data problem surfaces here too."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from gridrun.spec import Grid

__all__ = [
    "IMAGE_SUFFIXES",
    "DataError",
    "Pool",
    "Prepared",
    "SizedArrays",
    "check",
    "plan_split",
    "prepare",
    "read_folder",
    "render_scenes",
    "resize_images",
    "resize_masks",
    "validation_examples",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


Example = tuple[np.ndarray, np.ndarray, str]  # image (H, W, C), mask (H, W), name


class DataError(ValueError):
    """A data problem the user can fix; the message names the file."""


@dataclass
class Pool:
    """Every image of the source at its native size: images (H, W, C) uint8, masks
    (H, W) uint8 class labels (0/1 for binary)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str]


@dataclass(frozen=True)
class SizedArrays:
    """The training pool and the validation images at one image_size."""

    train_x: np.ndarray  # (N, C, s, s) uint8, in training order: subset n = first n
    train_y: np.ndarray  # (N, s, s) uint8
    val_x: np.ndarray  # (V, C, s, s) uint8


@dataclass
class Prepared:
    in_channels: int
    num_labels: int  # 2 for binary data, else num_classes
    eval_size: int
    val_y: np.ndarray  # (V, E, E) uint8: validation truth at the evaluation resolution
    sizes: dict[int, SizedArrays] = field(default_factory=dict)
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)


def _to_rgb_or_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("L", "1"):
        return np.asarray(image.convert("L"))[:, :, None]
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode.startswith("I;16") else 1.0
        return np.clip(arr / scale, 0, 255).astype(np.uint8)[:, :, None]
    return np.asarray(image.convert("RGB"))


def _read(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def _mask_labels(mask: Image.Image, num_classes: int, path: Path) -> np.ndarray:
    if num_classes == 1:
        # binary: foreground is mask > 127, whatever the file's mode
        return (np.asarray(mask.convert("L")) > 127).astype(np.uint8)
    arr = np.asarray(mask if mask.mode in ("L", "P") else mask.convert("L"))
    if arr.max() >= num_classes:
        raise DataError(
            f"{path}: mask holds class {int(arr.max())} but data.num_classes is {num_classes}"
        )
    return arr.astype(np.uint8)


def _by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in files:
            raise DataError(f"{path}: two files share the stem {path.stem!r}")
        files[path.stem] = path
    return files


def read_folder(root: Path, num_classes: int = 1) -> Pool:
    """`root/images/*` and `root/masks/*` matched by file stem."""
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (root, image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: no such directory (data.path needs images/ and masks/)")
    images, masks = _by_stem(image_dir), _by_stem(mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for stem in sorted(images.keys() - masks.keys()):
        raise DataError(f"{images[stem]}: no mask with the stem {stem!r} in {mask_dir}")
    for stem in sorted(masks.keys() - images.keys()):
        raise DataError(f"{masks[stem]}: no image with the stem {stem!r} in {image_dir}")

    pool = Pool([], [], [])
    for stem in sorted(images):
        image, mask = _read(images[stem]), _read(masks[stem])
        if image.size != mask.size:
            raise DataError(
                f"{masks[stem]}: mask is {mask.size[0]}x{mask.size[1]} but its image "
                f"{images[stem].name} is {image.size[0]}x{image.size[1]}"
            )
        pool.images.append(_to_rgb_or_gray(image))
        pool.masks.append(_mask_labels(mask, num_classes, masks[stem]))
        pool.names.append(stem)
    if len({img.shape[2] for img in pool.images}) > 1:
        # mixed grayscale and colour: promote everything to RGB
        pool.images = [np.repeat(i, 3, axis=2) if i.shape[2] == 1 else i for i in pool.images]
    return pool


def plan_split(grid: Grid, available: int | None) -> tuple[int, int]:
    """(validation count, total images); `available` is None for synthetic data."""
    d, most = grid.data, max(grid.factors.dataset_size)
    if available is None:
        if d.num_images is not None:
            total = d.num_images
        elif d.val_size is not None:
            total = most + d.val_size
        else:
            total = math.ceil(most / (1 - d.val_fraction))
    else:
        total = available
    val = d.val_size if d.val_size is not None else max(1, round(total * d.val_fraction))
    where = "data.path" if available is not None else "data.num_images"
    if val >= total:
        raise DataError(f"data.val_size: {val} validation images leave none of {total} to train")
    if total - val < most:
        raise DataError(
            f"factors.dataset_size: {most} training images asked for but {where} leaves "
            f"{total - val} after {val} for validation"
        )
    return val, total


Fetch = Callable[[Sequence[int]], list[Example]]
# below this many megapixels of scenes, starting processes costs more than it saves
PARALLEL_MPIX = 16.0


def _render_one(index: int, size: int, seed: int) -> Example:
    from gridrun.synthetic import render

    image, mask = render(index, size, seed=seed)
    return image, mask, f"scene{index:05d}"


def render_scenes(indices: Sequence[int], size: int, seed: int) -> list[Example]:
    """Synthetic scenes at `size`, rendered on every core when there are many."""
    render = functools.partial(_render_one, size=size, seed=seed)
    workers = min(os.cpu_count() or 1, len(indices))
    if workers < 2 or len(indices) * size**2 / 1e6 < PARALLEL_MPIX:
        return [render(int(i)) for i in indices]
    # note: fork, not spawn: spawn re-imports the caller's __main__; the children only
    # run numpy and Pillow, and the driver never initialises CUDA before this point
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        return list(executor.map(render, [int(i) for i in indices], chunksize=4))


def _examples(grid: Grid) -> tuple[int, int, Fetch]:
    """(validation count, total, fetch): fetch(indices) gives those examples at native size."""
    if grid.data.source == "folder":
        assert grid.data.path is not None
        pool = read_folder(grid.data.path, grid.data.num_classes)
        val_count, total = plan_split(grid, len(pool.images))
        return (
            val_count,
            total,
            lambda idx: [(pool.images[i], pool.masks[i], pool.names[i]) for i in idx],
        )
    # note: scenes are rendered at the evaluation resolution, then resized like any folder
    native = max(grid.eval_size, max(grid.factors.image_size))
    val_count, total = plan_split(grid, None)
    return val_count, total, lambda idx: render_scenes(idx, native, grid.data.split_seed)


def _stack_resized(arrays: Sequence[np.ndarray], size: int, mode: str) -> torch.Tensor:
    out = []
    for arr in arrays:
        t = torch.tensor(arr)
        t = t.permute(2, 0, 1)[None].float() if t.ndim == 3 else t[None, None].float()
        if t.shape[-1] != size or t.shape[-2] != size:
            if mode == "bilinear":
                t = F.interpolate(
                    t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            else:
                t = F.interpolate(t, size=(size, size), mode="nearest-exact")
        out.append(t[0])
    return torch.stack(out)


def resize_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(H, W, C) uint8 images of any sizes → (N, C, size, size) uint8, bilinear."""
    t = _stack_resized(images, size, "bilinear")
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def resize_masks(masks: Sequence[np.ndarray], size: int) -> np.ndarray:
    """(H, W) label masks → (N, size, size) uint8, nearest (labels are never blended)."""
    return _stack_resized(masks, size, "nearest")[:, 0].to(torch.uint8).numpy()


def check(grid: Grid) -> tuple[int, int]:
    """Read every file (folder data) and check the split: (validation count, total)."""
    val_count, total, _ = _examples(grid)
    return val_count, total


def _split(grid: Grid) -> tuple[np.ndarray, np.ndarray, Fetch]:
    """Validation indices, training indices in training order, and fetch."""
    val_count, total, fetch = _examples(grid)
    if grid.data.source == "synthetic":
        # scenes are drawn independently: scenes 0..V-1 validate, whatever the grid asks
        order = np.arange(total)
    else:
        order = np.random.default_rng(grid.data.split_seed).permutation(total)
    train = order[val_count : val_count + max(grid.factors.dataset_size)]
    return np.sort(order[:val_count]), train, fetch


def validation_examples(grid: Grid, count: int) -> list[Example]:
    """The first `count` validation examples at native size (for overlays)."""
    val_idx, _, fetch = _split(grid)
    return fetch(val_idx[:count])


def prepare(grid: Grid) -> Prepared:
    """Read or render the data once, split it, and resize it once per image_size."""
    val_idx, train_idx, fetch = _split(grid)
    examples = fetch(np.concatenate([val_idx, train_idx]))
    val, train = examples[: len(val_idx)], examples[len(val_idx) :]
    prepared = Prepared(
        in_channels=val[0][0].shape[2],
        num_labels=max(2, grid.data.num_classes),
        eval_size=grid.eval_size,
        val_y=resize_masks([mask for _, mask, _ in val], grid.eval_size),
        train_names=[name for _, _, name in train],
        val_names=[name for _, _, name in val],
    )
    for size in grid.factors.image_size:
        prepared.sizes[size] = SizedArrays(
            train_x=resize_images([image for image, _, _ in train], size),
            train_y=resize_masks([mask for _, mask, _ in train], size),
            val_x=resize_images([image for image, _, _ in val], size),
        )
    return prepared
