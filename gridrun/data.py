"""Data preparation: split once, resize once per image_size, before any trial starts.

One fixed validation set serves the whole grid and training subsets are nested (the
first n images of one fixed order), so the data-set-size effect is not confounded with
which images were drawn. One seeded permutation of the pool gives, in this order, the
validation images, the test images (when the grid asks for a test split) and the
training order; without a test split the validation set is what it always was.
`prepare` does the work in this process; `prepare_on_ray` does the same work as Ray
tasks spread over the cluster and leaves the arrays in the object store, where the
trainers fetch them. Both give byte-identical arrays, and every data problem surfaces
as one DataError naming the file. Sources live in `gridrun.sources`."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from gridrun import layout
from gridrun.layout import OVERLAY_IMAGES
from gridrun.sources import (
    IMAGE_SUFFIXES,
    DataError,
    Example,
    Files,
    Pool,
    Scenes,
    folder_files,
    read_folder,
    render_scene,
    torchvision_files,
)
from gridrun.spec import Grid

if TYPE_CHECKING:
    from ray import ObjectRef

__all__ = [
    "IMAGE_SUFFIXES",
    "DataError",
    "Indices",
    "Pool",
    "Prepared",
    "SizedArrays",
    "Split",
    "SplitTruth",
    "check",
    "listed_source",
    "plan_split",
    "prepare",
    "prepare_on_ray",
    "read_folder",
    "render_scenes",
    "resize_images",
    "resize_masks",
    "shown_examples",
    "split_indices",
    "truth_counts",
    "validation_examples",
]

# below this many megapixels of scenes, starting processes costs more than it saves
PARALLEL_MPIX = 16.0
# prepare_on_ray: at most this many images per task, so a chunk stays a modest object
MAX_CHUNK = 32


@dataclass(frozen=True)
class SizedArrays:
    """The training pool and the validation images at one image_size."""

    train_x: np.ndarray  # (N, C, s, s) uint8, in training order: subset n = first n
    train_y: np.ndarray  # (N, s, s) uint8
    val_x: np.ndarray  # (V, C, s, s) uint8
    test_x: np.ndarray | None = None  # (T, C, s, s) uint8, when the grid has a test split


@dataclass(frozen=True)
class SplitTruth:
    """What an evaluated split holds at eval_size: images and pixels per label (ignored
    pixels excluded, counted apart)."""

    images: int
    class_pixels: tuple[int, ...]
    ignored_pixels: int


def truth_counts(y: np.ndarray, num_labels: int, ignore_index: int | None) -> SplitTruth:
    """The counts of a split's truth masks (N, E, E) uint8."""
    counts = np.bincount(y.reshape(-1), minlength=256)
    ignored = int(counts[ignore_index]) if ignore_index is not None else 0
    return SplitTruth(len(y), tuple(int(c) for c in counts[:num_labels]), ignored)


@dataclass
class Prepared:
    """A grid's data, ready for trials. From `prepare`, the arrays themselves; from
    `prepare_on_ray`, `val_y` and every `sizes[s]` are ObjectRefs (ray.get gives the array
    or the SizedArrays) that the driver never fetches."""

    in_channels: int
    num_labels: int  # 2 for binary data, else num_classes
    eval_size: int
    val_y: np.ndarray | ObjectRef  # (V, E, E) uint8: validation truth at eval_size
    # the split's truth counted where it lies: "val", and "test" when there is one
    splits: dict[str, SplitTruth] = field(default_factory=dict)
    test_y: np.ndarray | ObjectRef | None = None  # (T, E, E) uint8, with a test split
    sizes: dict[int, SizedArrays | ObjectRef] = field(default_factory=dict)
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)
    # the first K validation images at eval_size (K = OVERLAY_IMAGES unless asked): images
    # (K, E, E, 3) uint8, grey repeated to three channels, and truth (K, E, E) uint8 labels
    # with ignore_index kept; None only where a Prepared is built by hand
    examples: tuple[np.ndarray, np.ndarray] | None = None
    # "<node id>:<pid>" of each Ray worker process that read, rendered or resized (Ray only)
    workers: tuple[str, ...] = ()


class Split(NamedTuple):
    """How many images validate, test and exist in all."""

    val: int
    test: int
    total: int


def _counts(grid: Grid, total: int) -> tuple[int, int]:
    d = grid.data
    val = d.val_size if d.val_size is not None else max(1, round(total * d.val_fraction))
    test = d.test_size or (max(1, round(total * d.test_fraction)) if d.test_fraction else 0)
    return val, test


def plan_split(grid: Grid, available: int | None) -> Split:
    """The split's counts; `available` is None for synthetic data."""
    d, most = grid.data, max(grid.factors.dataset_size)
    if available is None:
        if d.num_images is not None:
            total = d.num_images
        elif d.val_size is not None:
            total = most + d.val_size + (d.test_size or 0)
        else:
            total = math.ceil(
                (most + (d.test_size or 0)) / (1 - d.val_fraction - (d.test_fraction or 0))
            )
        if d.num_images is None and (d.test_size or d.test_fraction):
            # note: rounding both fractions may leave an image short; scenes are free
            while total - sum(_counts(grid, total)) < most:
                total += 1
    else:
        total = available
    val, test = _counts(grid, total)
    where = {"folder": "data.path", "torchvision": "data.root"}.get(d.source, "data.num_images")
    if val >= total:
        raise DataError(f"data.val_size: {val} validation images leave none of {total} to train")
    if total - val - test < most:
        key = "data.test_size" if d.test_size else "data.test_fraction"
        held = f"{val} for validation" + (f" and {test} for testing ({key})" if test else "")
        raise DataError(
            f"factors.dataset_size: {most} training images asked for but {where} leaves "
            f"{total - val - test} after {held}"
        )
    return Split(val, test, total)


def render_scenes(indices: Sequence[int], size: int, seed: int) -> list[Example]:
    """Synthetic scenes at `size`, rendered on every core when there are many."""
    render = functools.partial(render_scene, size=size, seed=seed)
    workers = min(os.cpu_count() or 1, len(indices))
    if workers < 2 or len(indices) * size**2 / 1e6 < PARALLEL_MPIX:
        return [render(int(i)) for i in indices]
    # note: fork, not spawn: spawn re-imports the caller's __main__; the children only
    # run numpy and Pillow, and the driver never initialises CUDA before this point
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as executor:
        return list(executor.map(render, [int(i) for i in indices], chunksize=4))


def listed_source(grid: Grid) -> tuple[Split, Files | Scenes]:
    """The split's counts and the source: the source listed, nothing read yet."""
    d = grid.data
    if d.source == "synthetic":
        split = plan_split(grid, None)
        # note: scenes are rendered at the evaluation resolution, then resized like files
        native = max(grid.eval_size, max(grid.factors.image_size))
        return split, Scenes(split.total, native, d.split_seed)
    if d.source == "folder":
        assert d.path is not None
        files = folder_files(d.path, d.num_classes, d.ignore_index)
    else:
        assert d.name is not None and d.root is not None and d.split is not None
        assert d.ignore_index is not None
        files = torchvision_files(d.name, d.root, d.split, d.ignore_index)
    return plan_split(grid, len(files)), files


@dataclass(frozen=True)
class Indices:
    """Which examples of the listed source validate, test and train (the streaming
    path reads the same ones through :func:`split_indices`)."""

    val: np.ndarray  # sorted
    test: np.ndarray  # sorted; empty without a test split
    train: np.ndarray  # in training order


def split_indices(grid: Grid) -> tuple[Indices, Files | Scenes]:
    """Validation, test and training indices, and the source."""
    split, source = listed_source(grid)
    if grid.data.source == "synthetic":
        # scenes are drawn independently: scenes 0..V-1 validate, whatever the grid asks
        order = np.arange(split.total)
    else:
        order = np.random.default_rng(grid.data.split_seed).permutation(split.total)
    held = split.val + split.test
    train = order[held : held + max(grid.factors.dataset_size)]
    return Indices(np.sort(order[: split.val]), np.sort(order[split.val : held]), train), source


def _fetch(source: Files | Scenes, indices: Sequence[int]) -> list[Example]:
    if isinstance(source, Scenes):
        return render_scenes(indices, source.size, source.seed)
    return source.read(indices)


def check(grid: Grid) -> Split:
    """Check the data and the split's counts. Every image and mask of a folder is read; a
    torchvision data set's listed files must exist (read when prepared)."""
    split, source = listed_source(grid)
    if isinstance(source, Files) and grid.data.source == "folder":
        for i in range(len(source)):
            source.read([i])
    elif isinstance(source, Files) and (missing := source.missing()) is not None:
        raise DataError(f"{missing}: listed in the {grid.data.split!r} split but missing")
    return split


def validation_examples(grid: Grid, count: int) -> list[Example]:
    """The first `count` validation examples at native size (for overlays)."""
    indices, source = split_indices(grid)
    return _fetch(source, indices.val[:count])


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
    """(H, W) label masks → (N, size, size) uint8, nearest: labels, the ignore value
    included, are never blended."""
    return _stack_resized(masks, size, "nearest")[:, 0].to(torch.uint8).numpy()


def _images(examples: Sequence[Example], channels: int) -> list[np.ndarray]:
    """The examples' images, grey ones repeated to `channels` (grey and colour mixed)."""
    return [i if i.shape[2] == channels else np.repeat(i, channels, 2) for i, _, _ in examples]


def shown_examples(
    val: Sequence[Example], channels: int, eval_size: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` validation examples at ``eval_size``, as RGB images and masks:
    what the report's prediction overlays show."""
    first = val[:count]
    if not first:
        empty = np.zeros((0, eval_size, eval_size, 3), np.uint8)
        return empty, empty[..., 0]
    images = resize_images(_images(first, channels), eval_size).transpose(0, 2, 3, 1)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    truth = resize_masks([mask for _, mask, _ in first], eval_size)
    return np.ascontiguousarray(images), truth


def prepare(grid: Grid, shown: int = OVERLAY_IMAGES) -> Prepared:
    """Read or render the data once, split it, and resize it once per image_size, here;
    keep the first `shown` validation images at eval_size as `examples`."""
    indices, source = split_indices(grid)
    examples = _fetch(source, np.concatenate([indices.val, indices.test, indices.train]))
    v, t = len(indices.val), len(indices.val) + len(indices.test)
    val, test, train = examples[:v], examples[v:t], examples[t:]
    # note: grey and colour images mixed: every image gets three channels
    channels = max(image.shape[2] for image, _, _ in examples)
    sizes = {
        size: SizedArrays(
            train_x=resize_images(_images(train, channels), size),
            train_y=resize_masks([mask for _, mask, _ in train], size),
            val_x=resize_images(_images(val, channels), size),
            test_x=resize_images(_images(test, channels), size) if test else None,
        )
        for size in grid.factors.image_size
    }
    num_labels, ignore = layout.num_labels(grid.data.num_classes), grid.data.ignore_index
    val_y = resize_masks([mask for _, mask, _ in val], grid.eval_size)
    splits = {"val": truth_counts(val_y, num_labels, ignore)}
    test_y = None
    if test:
        test_y = resize_masks([mask for _, mask, _ in test], grid.eval_size)
        splits["test"] = truth_counts(test_y, num_labels, ignore)
    return Prepared(
        in_channels=channels,
        num_labels=num_labels,
        eval_size=grid.eval_size,
        val_y=val_y,
        splits=splits,
        test_y=test_y,
        sizes=sizes,
        train_names=[name for _, _, name in train],
        val_names=[name for _, _, name in val],
        test_names=[name for _, _, name in test],
        examples=shown_examples(val, channels, grid.eval_size, shown),
    )


# --- the same on Ray: each function below runs as a task, wherever Ray places it --------


def _worker() -> str:
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"


def _read_task(source: Files | Scenes, indices: np.ndarray) -> tuple[list[Example], Any]:
    examples = source.read(indices)
    return examples, (max(image.shape[2] for image, _, _ in examples), _worker())


def _resize_task(examples: list[Example], size: int, channels: int, images: bool, masks: bool):
    x = resize_images(_images(examples, channels), size) if images else None
    y = resize_masks([mask for _, mask, _ in examples], size) if masks else None
    return x, y, _worker()


def _stack_sized_task(val_chunks: int, test_chunks: int, *parts) -> tuple[SizedArrays, set[str]]:
    held = val_chunks + test_chunks
    val, test, train = parts[:val_chunks], parts[val_chunks:held], parts[held:]
    arrays = SizedArrays(
        train_x=np.concatenate([x for x, _, _ in train]),
        train_y=np.concatenate([y for _, y, _ in train]),
        val_x=np.concatenate([x for x, _, _ in val]),
        test_x=np.concatenate([x for x, _, _ in test]) if test else None,
    )
    return arrays, {w for _, _, w in parts} | {_worker()}


def _stack_truth_task(
    num_labels: int, ignore_index: int | None, *parts
) -> tuple[np.ndarray, set[str], SplitTruth]:
    """The split's truth, stacked where it lies; only its counts go to the driver."""
    y = np.concatenate([y for _, y, _ in parts])
    workers = {w for _, _, w in parts} | {_worker()}
    return y, workers, truth_counts(y, num_labels, ignore_index)


def _shown_task(channels: int, eval_size: int, count: int, *chunks: list[Example]):
    return shown_examples([e for chunk in chunks for e in chunk], channels, eval_size, count)


def _get(refs: Any) -> Any:
    """ray.get, with a DataError raised in a task re-raised here as the one line it is."""
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DataError):
            raise DataError(str(exc.cause)) from None
        raise


def prepare_on_ray(
    grid: Grid, shown: int = OVERLAY_IMAGES, chunk_size: int | None = None
) -> Prepared:
    """`prepare`, done by Ray tasks spread over the cluster; Ray must be initialised.

    Files are read (or scenes rendered) by one task per chunk of images, and each chunk
    is resized by one task per image_size, where the tasks run: a folder or data.root
    must be at the same path on every node. One task per image_size then stacks the
    chunks, so `sizes[s]` is one ObjectRef to a SizedArrays and `val_y` (`test_y`) one to
    an array. Only chunk metadata, the splits' pixel counts and the few `examples` come
    back to the driver."""
    import ray

    indices, source = split_indices(grid)
    if chunk_size is None:
        # two chunks per CPU keep every CPU busy while the slowest chunks finish
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        every = len(indices.val) + len(indices.test) + len(indices.train)
        chunk_size = min(MAX_CHUNK, math.ceil(every / (2 * cpus)))
    read = ray.remote(num_returns=2, scheduling_strategy="SPREAD")(_read_task)
    # note: default scheduling prefers the node holding a task's arguments, so each chunk
    # is resized where it was read: spread like the reads, no native images moved
    resize = ray.remote(_resize_task)
    source_ref = ray.put(source)

    def chunks(indices: np.ndarray) -> list[Any]:
        starts = range(0, len(indices), chunk_size)
        return [read.remote(source_ref, indices[s : s + chunk_size]) for s in starts]

    val_reads, test_reads = chunks(indices.val), chunks(indices.test)
    train_reads = chunks(indices.train)
    infos = _get([info for _, info in val_reads + test_reads + train_reads])
    channels = max(c for c, _ in infos)
    val_chunks, test_chunks = [r for r, _ in val_reads], [r for r, _ in test_reads]
    train_chunks = [r for r, _ in train_reads]

    stack_sized = ray.remote(num_returns=2)(_stack_sized_task)
    sizes, done = {}, []
    for size in grid.factors.image_size:
        parts = [resize.remote(c, size, channels, True, False) for c in val_chunks + test_chunks]
        parts += [resize.remote(c, size, channels, True, True) for c in train_chunks]
        sizes[size], workers = stack_sized.remote(len(val_chunks), len(test_chunks), *parts)
        done.append(workers)
    eval_size, num_labels = grid.eval_size, layout.num_labels(grid.data.num_classes)
    stack_truth = ray.remote(num_returns=3)(_stack_truth_task)
    truth, counted = {}, {}
    for name, split_chunks in (("val", val_chunks), ("test", test_chunks)):
        if split_chunks:
            masks = [resize.remote(c, eval_size, channels, False, True) for c in split_chunks]
            truth[name], workers, counted[name] = stack_truth.remote(
                num_labels, grid.data.ignore_index, *masks
            )
            done.append(workers)
    first = val_chunks[: math.ceil(shown / chunk_size)]
    examples_ref = ray.remote(_shown_task).remote(channels, eval_size, shown, *first)
    examples, *fetched = _get([examples_ref, *counted.values(), *done])
    splits = dict(zip(counted, fetched[: len(counted)], strict=True))
    done_sets = fetched[len(counted) :]
    return Prepared(
        in_channels=channels,
        num_labels=num_labels,
        eval_size=eval_size,
        val_y=truth["val"],
        splits=splits,
        test_y=truth.get("test"),
        sizes=sizes,
        train_names=[source.names[i] for i in indices.train],
        val_names=[source.names[i] for i in indices.val],
        test_names=[source.names[i] for i in indices.test],
        examples=tuple(examples),
        workers=tuple(sorted(set().union(*done_sets, (w for _, w in infos)))),
    )
