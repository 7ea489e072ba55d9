"""The streaming path's cache of decoded, resized images: one `.npy` per image (and
mask) and size, in the study's storage, and the reads Ray Data's tasks make from it.

Torch-free on purpose: a Ray Data task imports this module in every worker process it
starts, and the streaming path starts them every epoch."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np

from gridrun.storage import Storage


def array_name(folder: str, kind: Literal["x", "y"], size: int, index: int) -> str:
    """Where source image ``index`` (``kind`` x) or its mask (y) at ``size`` is cached."""
    return f"{folder}/size-{size}/{kind}-{index}.npy"


def save(study: Storage, rel: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    study.write_bytes(rel, buffer.getvalue())


def load(study: Storage, rel: str) -> np.ndarray:
    return np.load(io.BytesIO(study.read_bytes(rel)))


def read_batch(batch: dict[str, np.ndarray], study: str, folder: str, size: int,
               mask_size: int, channels: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Ray Data: a batch of source indices → their cached images and masks."""
    store = Storage(study)
    indices = batch["index"].tolist()
    images = [load(store, array_name(folder, "x", size, i)) for i in indices]
    # grey images repeated to `channels`, as the in-memory path does before resizing
    x = np.stack([i if len(i) == channels else np.repeat(i, channels, 0) for i in images])
    y = np.stack([load(store, array_name(folder, "y", mask_size, i)) for i in indices])
    return {"x": np.ascontiguousarray(x), "y": y}
