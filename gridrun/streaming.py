"""The streaming path: folder and torchvision data too large to keep in memory.

When a grid's prepared arrays exceed `data.memory_budget_mb` (default: a fraction of the
cluster's object store), nothing is stacked and nothing whole goes to the object store.
A manifest of the sample indices is decoded and resized by Ray Data (`map_batches`, with
`gridrun.data`'s own resize functions) into a cache of one file per image and size in
the study's storage, written atomically and reused by every run, unit and later
invocation. Each epoch of a run then streams its rank's samples through Ray Data in the
order the in-memory path trains them (`preserve_order`): the same (seed, epoch)
permutation, the same nested subsets, the same validation set, so both paths give the
same batches and the same metrics. `StreamedArrays` is what a worker gets in place of
`SizedArrays`; `gridrun.train.run_epochs` reads either through the same four methods."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridrun import layout
from gridrun.cache import array_name, load, read_batch, save
from gridrun.data import (
    DataError,
    Prepared,
    SplitTruth,
    listed_source,
    prepare_on_ray,
    resize_images,
    resize_masks,
    shown_examples,
    split_indices,
    validation_examples,
)
from gridrun.layout import CACHE_DIR, OVERLAY_IMAGES
from gridrun.sources import Files
from gridrun.spec import Grid
from gridrun.storage import Storage

__all__ = [
    "CACHE_DIR",
    "STREAM_FRACTION",
    "DataPath",
    "StreamedArrays",
    "choose_path",
    "prepare_data",
    "prepare_streamed",
    "prepared_mb",
]

# the default budget: this fraction of the cluster's object store
STREAM_FRACTION = 0.5
# images decoded (or streamed) per Ray Data batch
BUILD_BATCH = 16
LOAD_BATCH = 16
# Ray Data tasks reading one stream at a time (measured on 2 cores: 234 images at
# 512 px read in 0.9 s with 2 or 4, 2.5–5.7 s unbounded; benchmarks/bench_streaming.py)
READ_TASKS = 2


def prepared_mb(grid: Grid, channels: int | None = None) -> float:
    """What the in-memory path would hold, in MB: every image_size's training pool and
    evaluated images, and the evaluated splits' truth at eval_size (uint8). `channels`:
    by default the first validation image's."""
    if channels is None:
        channels = validation_examples(grid, 1)[0][0].shape[2]
    split = listed_source(grid)[0]
    train = max(grid.factors.dataset_size)
    held = split.val + split.test
    sizes = grid.factors.image_size
    per_size = sum((train * (channels + 1) + held * channels) * s * s for s in sizes)
    return (per_size + held * grid.eval_size**2) / 2**20


def _mb(mb: float) -> str:
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.2g}"


@dataclass(frozen=True)
class DataPath:
    """Which path a study's data takes, and the one line that says why."""

    stream: bool
    line: str


def choose_path(grid: Grid, mb: float, object_store_bytes: float | None) -> DataPath:
    """Stream when `mb` exceeds the budget; `object_store_bytes` is None without Ray."""
    key = "data.memory_budget_mb"
    if grid.data.source == "synthetic":
        return DataPath(False, f"data: in memory, {_mb(mb)} MB prepared (synthetic data)")
    budget = grid.data.memory_budget_mb
    why = key
    if budget is None:
        if object_store_bytes is None:
            return DataPath(
                False,
                f"data: {_mb(mb)} MB prepared; streamed through Ray Data if over {key} "
                f"(default {STREAM_FRACTION:g} of the cluster's object store), else in memory",
            )
        budget = STREAM_FRACTION * object_store_bytes / 2**20
        why = f"{key} unset: {STREAM_FRACTION:g} of the object store"
    if mb > budget:
        return DataPath(
            True,
            f"data: streamed through Ray Data, {_mb(mb)} MB prepared > {_mb(budget)} MB ({why})",
        )
    return DataPath(False, f"data: in memory, {_mb(mb)} MB prepared ≤ {_mb(budget)} MB ({why})")


def prepare_data(grid: Grid, study: Storage, shown: int = OVERLAY_IMAGES) -> tuple[Prepared, str]:
    """The grid's data on the path its size asks for (Ray is running), and why."""
    import ray

    store = ray.cluster_resources().get("object_store_memory")
    path = choose_path(grid, prepared_mb(grid), store)
    if path.stream:
        return prepare_streamed(grid, study, shown), path.line
    return prepare_on_ray(grid, shown), path.line


# --- the cache: one file per image (and mask) and size --------------------------------


def _cache_folder(grid: Grid, files: Files) -> str:
    """The cache of this data as read (source, labels, each file's size and time),
    whatever split or sizes ask: a file replaced in place is decoded again."""
    d = grid.data
    stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (*files.images, *files.masks)]
    key = {
        "source": d.source, "path": str(d.path), "root": str(d.root), "name": d.name,
        "split": d.split, "num_classes": d.num_classes, "ignore_index": d.ignore_index,
        "names": list(files.names), "stats": stats,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{CACHE_DIR}/{digest}"


def _build(batch: dict[str, np.ndarray], files: Files, study: str, folder: str,
           sizes: Sequence[int], eval_size: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Ray Data: decode and resize a batch of the manifest into the cache (what is there
    already is read back instead); returns each image's channels, its truth's label
    counts at eval_size (evaluated images only) and the DataError an unreadable file
    gave ("" if none), which Ray Data would otherwise keep only as text."""
    store = Storage(study)
    channels, counts, errors = [], [], []
    for index, evaluated in zip(batch["index"].tolist(), batch["evaluated"].tolist(), strict=True):
        masks = [eval_size] if evaluated else list(sizes)
        wanted = [array_name(folder, "x", s, index) for s in sizes]
        wanted += [array_name(folder, "y", s, index) for s in masks]
        if all(store.exists(rel) for rel in wanted):
            c = load(store, wanted[0]).shape[0]
            truth = load(store, array_name(folder, "y", eval_size, index)) if evaluated else None
        else:
            try:
                image, mask, _ = files.read([index])[0]
            except DataError as exc:
                errors.append(str(exc))
                channels.append(0)
                counts.append(np.zeros(256, np.int64))
                continue
            c = image.shape[2]
            for s in sizes:
                # note: one image at a time, in its own channels: a grey image repeated to
                # three channels after resizing is the same bytes as repeated before
                save(store, array_name(folder, "x", s, index), resize_images([image], s)[0])
            for s in masks:
                save(store, array_name(folder, "y", s, index), resize_masks([mask], s)[0])
            truth = resize_masks([mask], eval_size)[0] if evaluated else None
        channels.append(c)
        errors.append("")
        zero = np.zeros(256, np.int64)
        counts.append(zero if truth is None else np.bincount(truth.reshape(-1), minlength=256))
    return {
        "index": batch["index"], "channels": np.array(channels), "counts": np.stack(counts),
        "error": np.array(errors, dtype=object),
    }  # fmt: skip


def _quiet_data() -> Any:
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # note: the streamed order is the training order; Ray Data may otherwise reorder
    context.execution_options.preserve_order = True
    return ray.data


def prepare_streamed(grid: Grid, study: Storage, shown: int = OVERLAY_IMAGES) -> Prepared:
    """`prepare_on_ray`'s Prepared for the streaming path: the cache filled (by Ray Data
    tasks spread over the cluster; a folder or data.root must be at the same path on
    every node), and `sizes[s]` a StreamedArrays naming it; `val_y` and `test_y` are None
    (the StreamedArrays carry the truth)."""
    data = _quiet_data()
    indices, source = split_indices(grid)
    assert isinstance(source, Files)
    folder = _cache_folder(grid, source)
    sizes, eval_size = tuple(grid.factors.image_size), grid.eval_size
    evaluated = {int(i) for i in np.concatenate([indices.val, indices.test])}
    every = np.concatenate([indices.val, indices.test, indices.train])
    rows = [{"index": int(i), "evaluated": int(i) in evaluated} for i in every]
    manifest = data.from_items(rows, override_num_blocks=math.ceil(len(rows) / BUILD_BATCH))
    built = manifest.map_batches(
        _build, batch_size=BUILD_BATCH, batch_format="numpy",
        fn_kwargs={"files": source, "study": study.uri, "folder": folder, "sizes": sizes,
                   "eval_size": eval_size},
    )  # fmt: skip
    rows = built.take_all()
    if errors := [str(r["error"]) for r in rows if r["error"]]:
        raise DataError(errors[0])
    channels = max(int(r["channels"]) for r in rows)
    counts = {int(r["index"]): np.asarray(r["counts"]) for r in rows}
    num_labels, ignore = layout.num_labels(grid.data.num_classes), grid.data.ignore_index

    def truth(split: np.ndarray) -> SplitTruth:
        total = np.sum([counts[int(i)] for i in split], axis=0)
        ignored = int(total[ignore]) if ignore is not None else 0
        return SplitTruth(len(split), tuple(int(c) for c in total[:num_labels]), ignored)

    splits = {"val": truth(indices.val)}
    if len(indices.test):
        splits["test"] = truth(indices.test)
    first = source.read(indices.val[:shown])
    return Prepared(
        in_channels=channels,
        num_labels=num_labels,
        eval_size=eval_size,
        val_y=None,
        splits=splits,
        test_y=None,
        sizes={
            s: StreamedArrays(
                study.uri,
                folder,
                s,
                eval_size,
                channels,
                tuple(int(i) for i in indices.train),
                tuple(int(i) for i in indices.val),
                tuple(int(i) for i in indices.test),
            )  # fmt: skip
            for s in sizes
        },
        train_names=[source.names[i] for i in indices.train],
        val_names=[source.names[i] for i in indices.val],
        test_names=[source.names[i] for i in indices.test],
        examples=shown_examples(first, channels, eval_size, shown),
    )


# --- the workers' side: batches streamed in training order ----------------------------


@dataclass(frozen=True)
class StreamedArrays:
    """One image_size of a streamed data set, in place of SizedArrays: the cache's
    folder and the source indices of the training order and the evaluated splits."""

    study: str
    folder: str
    size: int
    eval_size: int
    channels: int
    train: tuple[int, ...]  # in training order: subset n = first n
    val: tuple[int, ...]
    test: tuple[int, ...]

    def _stream(
        self, indices: Sequence[int], mask_size: int, lengths: Sequence[int]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) batches of `lengths` images, the images of `indices` in order."""
        data = _quiet_data()
        if not len(indices):
            return
        rows = [{"index": int(i)} for i in indices]
        # note: one block per read batch; Ray Data's default of a block per row starts a
        # task per image
        blocks = math.ceil(len(rows) / LOAD_BATCH)
        ds = data.from_items(rows, override_num_blocks=blocks).map_batches(
            read_batch, batch_size=LOAD_BATCH, batch_format="numpy",
            fn_kwargs={"study": self.study, "folder": self.folder, "size": self.size,
                       "mask_size": mask_size, "channels": self.channels},
            # note: the worker's trainer holds its CPUs; reading must not wait for one.
            # Without a CPU to bound them, Ray Data would start a task (and a worker
            # process) per block at once: READ_TASKS bounds them
            num_cpus=0, compute=data.TaskPoolStrategy(size=READ_TASKS),
        )  # fmt: skip
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = 0
        wanted = iter(lengths)
        need = next(wanted, None)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            xs.append(batch["x"])
            ys.append(batch["y"])
            held += len(batch["x"])
            while need is not None and held >= need:
                x, y = np.concatenate(xs), np.concatenate(ys)
                yield x[:need], y[:need]
                xs, ys, held = [x[need:]], [y[need:]], held - need
                need = next(wanted, None)

    def train_batches(self, index_lists: list[np.ndarray]) -> Iterator[tuple]:
        """The training batches: positions in the training order, one list per step."""
        order = [self.train[int(p)] for p in np.concatenate(index_lists)]
        return self._stream(order, self.size, [len(m) for m in index_lists])

    def eval_count(self, split: str) -> int:
        return len(self.val if split == "val" else self.test)

    def eval_batches(self, split: str, index_lists: list[np.ndarray]) -> Iterator[tuple]:
        """Images at image_size and truth at eval_size of an evaluated split."""
        held = self.val if split == "val" else self.test
        flat = [held[int(p)] for idx in index_lists for p in idx]
        return self._stream(flat, self.eval_size, [len(idx) for idx in index_lists])

    def has_test(self) -> bool:
        return bool(self.test)

    def first_val(self, count: int) -> np.ndarray:
        """The overlay images: a few, read from the cache here."""
        batch = {"index": np.asarray(self.val[:count], np.int64)}
        return read_batch(
            batch, self.study, self.folder, self.size, self.eval_size, self.channels
        )["x"]
