"""Data preparation cost: synthetic scenes rendered on every core against one, and
resizing once per image_size against resizing again for every trial.

    python benchmarks/bench_data_prep.py [--scenes 96] [--size 512] [--trials-per-size 16]
"""

from __future__ import annotations

import argparse
import os
import time

from gridrun.data import render_scenes, resize_images, resize_masks


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=96)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--trials-per-size", type=int, default=16)
    args = parser.parse_args()
    indices = list(range(args.scenes))

    import gridrun.data as data

    threshold = data.PARALLEL_MPIX
    data.PARALLEL_MPIX = float("inf")
    serial, t_serial = _timed(lambda: render_scenes(indices, args.size, 0))
    data.PARALLEL_MPIX = 0.0
    parallel, t_parallel = _timed(lambda: render_scenes(indices, args.size, 0))
    data.PARALLEL_MPIX = threshold
    same = all(
        (a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(serial, parallel, strict=True)
    )
    print(
        f"render {args.scenes} scenes at {args.size}px: 1 core {t_serial:.1f} s, "
        f"{os.cpu_count()} cores {t_parallel:.1f} s (speed-up {t_serial / t_parallel:.2f}×, "
        f"identical: {same})"
    )

    images, masks = [s[0] for s in serial], [s[1] for s in serial]
    target = args.size // 2
    _, t_resize = _timed(lambda: (resize_images(images, target), resize_masks(masks, target)))
    print(
        f"resize to {target}px once: {t_resize:.2f} s; again in each of "
        f"{args.trials_per_size} trials would cost {t_resize * args.trials_per_size:.1f} s "
        f"(ratio {args.trials_per_size:.0f}×)"
    )


if __name__ == "__main__":
    main()
