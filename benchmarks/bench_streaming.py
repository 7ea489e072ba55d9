"""Streaming against in-memory data: one folder data set trained through `gridrun run`
twice on one local Ray, once in memory and once forced onto the streaming path
(data.memory_budget_mb: 0); prints each path's training throughput and epoch time.

    python benchmarks/bench_streaming.py [--images 96] [--size 64] [--epochs 3] [--cpus 2]
                                         [--workers 1]
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _options import int_options
from PIL import Image


def _folder(root: Path, n: int, size: int) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = (image[:, :, 0] > 127).astype(np.uint8) * 255
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")


def main() -> None:
    args = int_options(__doc__, images=96, size=64, epochs=3, cpus=2, workers=1).parse_args()
    import ray
    from typer.testing import CliRunner

    from gridrun.cli import app

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    _folder(tmp / "data", args.images, args.size)
    val = max(1, args.images // 6)
    measured = {}
    for name, budget in (("in memory", {}), ("streamed", {"memory_budget_mb": 0})):
        grid = {
            "name": name.replace(" ", "-"),
            "data": {"source": "folder", "path": str(tmp / "data"), "val_size": val, **budget},
            "model": {"base_channels": 8, "depth": 2},
            "factors": {"image_size": [args.size], "dataset_size": [args.images - val],
                        "epochs": [args.epochs], "batch_size": [8]},
            "tracking": {"overlay_images": 0},
            "resources": {"workers_per_unit": args.workers},
        }  # fmt: skip
        path = tmp / f"{grid['name']}.yaml"
        path.write_text(yaml.safe_dump(grid))
        t0 = time.perf_counter()
        result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp / grid["name"])])
        wall = time.perf_counter() - t0
        assert result.exit_code == 0, result.output
        curves = pd.read_parquet(tmp / grid["name"] / "curves.parquet")
        measured[name] = (
            float(curves["train_samples_per_s"].median()),
            float(curves["epoch_time_s"].median()),
            wall,
            curves["val_loss"].tolist(),
        )
        epochs = ", ".join(f"{t:.2f}" for t in curves.sort_values("epoch")["epoch_time_s"])
        print(
            f"{name:>9}: {measured[name][0]:.1f} training samples/s, "
            f"{measured[name][1]:.2f} s per epoch (training + validation; each: {epochs}), "
            f"{wall:.1f} s wall"
        )
    (mem_rate, mem_epoch, _, mem_val), (str_rate, str_epoch, _, str_val) = measured.values()
    same = np.allclose(mem_val, str_val, rtol=1e-6)
    print(
        f"{args.images} images at {args.size}px: streamed/in-memory throughput "
        f"{str_rate / mem_rate:.2f}×, epoch time {str_epoch / mem_epoch:.2f}×; "
        f"same val_loss per epoch: {same}"
    )


if __name__ == "__main__":
    main()
