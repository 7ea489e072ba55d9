"""Data preparation cost: synthetic scenes rendered on every core against one, resizing
once per image_size against resizing again for every trial, and `prepare` in the driver
against `prepare_on_ray` (Ray tasks; the arrays stay in the object store).

    python benchmarks/bench_data_prep.py [--scenes 96] [--size 512] [--trials-per-size 16]
                                         [--skip-ray] [--cpus N]
"""

from __future__ import annotations

import logging
import os
import resource
import time

from _options import int_options

from gridrun.data import prepare, prepare_on_ray, render_scenes, resize_images, resize_masks
from gridrun.spec import parse_grid


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _render_and_resize(args) -> None:
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


def _local_against_ray(args) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    grid = parse_grid(
        {
            "data": {"source": "synthetic", "num_images": args.scenes, "val_size": 16,
                     "eval_size": args.size},
            "factors": {"image_size": [args.size // 4, args.size // 2],
                        "dataset_size": [args.scenes - 16], "epochs": [1], "batch_size": [4]},
        }
    )  # fmt: skip
    cpus = args.cpus or os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)  # fmt: skip
    rss0 = _peak_rss_mb()
    cold, t_cold = _timed(lambda: prepare_on_ray(grid))
    warm, t_warm = _timed(lambda: prepare_on_ray(grid))
    rss_ray = _peak_rss_mb()
    local, t_local = _timed(lambda: prepare(grid))
    rss_local = _peak_rss_mb()
    same = ray.get(warm.val_y).tobytes() == local.val_y.tobytes() and all(
        getattr(ray.get(warm.sizes[s]), f).tobytes() == getattr(local.sizes[s], f).tobytes()
        for s in local.sizes
        for f in ("train_x", "train_y", "val_x")
    )
    print(
        f"prepare {args.scenes} scenes at {args.size}px, sizes {sorted(local.sizes)}: "
        f"driver {t_local:.1f} s; Ray tasks on {cpus} CPUs {t_cold:.1f} s cold, "
        f"{t_warm:.1f} s warm ({len(warm.workers)} worker processes; identical: {same}); "
        f"driver peak RSS grew {rss_ray - rss0:.0f} MB with Ray, "
        f"{rss_local - rss_ray:.0f} MB more in the driver"
    )
    del cold
    ray.shutdown()


def main() -> None:
    parser = int_options(__doc__, scenes=96, size=512, trials_per_size=16)
    parser.add_argument("--skip-ray", action="store_true", help="no prepare_on_ray comparison")
    parser.add_argument("--cpus", type=int, default=None, help="Ray's CPUs (default: all)")
    args = parser.parse_args()
    if not args.skip_ray:
        # first, while the driver's peak memory is still that of an empty process
        _local_against_ray(args)
    _render_and_resize(args)


if __name__ == "__main__":
    main()
