"""Makespan of a grid whose run-time estimates are wrong by 2×: the run queue
(`resources.queue: true`, the default) beside the static packing (`queue: false`).

A seeded half of the training runs takes twice its estimate (pixels × samples × epochs
at a nominal throughput, `gridrun.runs.estimate_seconds`), the other half as estimated.
Two modes, labelled in the output:

- `--mode ray` (real): `run_grid` on a local Ray, a tiny model and data set; every run
  sleeps `--scale` × its estimate per epoch (× 2 for the slow half, via the worker's
  GRIDRUN_FAULTS `slow@run:seconds` hook), so the sleep sets its true time. Training
  time is the sleep plus each epoch's measured `epoch_time_s`.
- `--mode simulate`: the same `RunQueue`, `queue_units` and `pack` code driven by the
  runs' true times on `--slots` slots, with `--startup` seconds per work unit (a worker
  group's start-up), on a larger grid (`--grid`, default `grids/membrane.yaml`; `--gpu`:
  the estimates at the GPU throughput, GPUs not shared).

The last line: each design's makespan and its ratio to the ideal, max(total training
time / slots, the longest run), which no schedule beats. Usage:

    python benchmarks/bench_queue.py --mode simulate [--grid GRID] [--slots 4] [--gpu]
    python benchmarks/bench_queue.py --mode ray [--runs 8] [--scale 600]
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
from pathlib import Path

from gridrun.runs import RunPlan, estimate_seconds, pack, plan_run, queue_units, training_runs
from gridrun.spec import Grid, load_grid, parse_grid
from gridrun.workqueue import RunQueue


def _slow_half(plans: list[RunPlan], seed: int) -> set[str]:
    ids = sorted(p.training_run for p in plans)
    return set(random.Random(seed).sample(ids, len(ids) // 2))


def _plans(grid: Grid) -> list[RunPlan]:
    eval_size = max(grid.factors.image_size)
    return [plan_run(grid, r, 3, eval_size) for r in training_runs(grid, grid.trials())]


def _queue_makespan(plans, true, slots: int, startup: float, gpu: bool) -> float:
    queue = RunQueue(plans, use_gpu=gpu)
    units = queue_units(plans, slots, "simulated", use_gpu=gpu)
    events = [(startup, u.unit_id, 0, None) for u in units]  # (time, unit, position, run)
    end = 0.0
    while events:
        now, unit, position, finished = heapq.heappop(events)
        if finished is not None:
            queue.finish(finished.training_run, true[finished.training_run], finished.epochs)
        plan = queue.claim(unit, 0, position, 1.0)
        end = max(end, now)
        if plan is not None:
            heapq.heappush(events, (now + true[plan.training_run], unit, position + 1, plan))
    return end


def _static_makespan(plans, true, slots: int, startup: float, gpu: bool) -> float:
    # Tune starts the units in order, each on the first slot that frees
    free = [0.0] * slots
    for unit in pack(plans, slots, use_gpu=gpu):
        start = heapq.heappop(free)
        heapq.heappush(free, start + startup + sum(true[p.training_run] for p in unit.runs))
    return max(free)


def _simulate(args) -> tuple[dict[str, float], float, float, int]:
    grid = load_grid(Path(args.grid))
    plans = _plans(grid)
    slow = _slow_half(plans, args.seed)
    true = {
        p.training_run: estimate_seconds(p, args.gpu) * (2 if p.training_run in slow else 1)
        for p in plans
    }
    queued = _queue_makespan(plans, true, args.slots, args.startup, args.gpu)
    static = _static_makespan(plans, true, args.slots, args.startup, args.gpu)
    kind = "GPU" if args.gpu else "CPU"
    print(f"simulated: {grid.name}, {len(plans)} training runs on {args.slots} {kind} "
          f"slots, {args.startup:g} s start-up per work unit")  # fmt: skip
    return true, queued, static, args.slots


def _ray_grid(args, queue: bool) -> Grid:
    return parse_grid(
        {
            "name": "bench-queue",
            "data": {"source": "synthetic", "val_size": 2},
            "model": {"base_channels": 4, "depth": 2},
            "factors": {"image_size": [16], "dataset_size": [4, 8], "epochs": [2, 4],
                        "batch_size": [4]},  # fmt: skip
            "seeds": list(range(max(1, args.runs // 4))),
            "train": {"share_epochs": False},
            "resources": {"queue": queue},
            "tracking": {"tensorboard": False},
        }
    )


def _ray(args) -> tuple[dict[str, float], float, float, int]:
    from _options import timed_run_grid

    from gridrun.tune import init_ray

    init_ray(None)
    plans = _plans(_ray_grid(args, True))
    slow = _slow_half(plans, args.seed)
    sleep = {
        p.training_run: args.scale * estimate_seconds(p, use_gpu=False) / p.epochs
        * (2 if p.training_run in slow else 1)
        for p in plans
    }  # fmt: skip
    os.environ["GRIDRUN_FAULTS"] = ",".join(f"slow@{r}:{s:.3f}" for r, s in sleep.items())
    makespans, trained = {}, {}
    for queue in (True, False):
        makespans[queue], summary, curves = timed_run_grid(_ray_grid(args, queue))
        assert set(summary.statuses) == {"ok"}, summary
        per_run = curves.drop_duplicates(["training_run", "epoch"])
        trained[queue] = {
            run: float(c["epoch_time_s"].sum()) + sleep[run] * len(c)
            for run, c in per_run.groupby("training_run")
        }
    slots = summary.concurrency
    print(f"real: run_grid on a local Ray, {len(plans)} training runs on {slots} slots "
          f"(queue {makespans[True]:.1f} s, static {makespans[False]:.1f} s, start-up "
          f"and Tune included)")  # fmt: skip
    # the training time of each run: the mean of its two measurements
    true = {r: (trained[True][r] + trained[False][r]) / 2 for r in trained[True]}
    return true, makespans[True], makespans[False], slots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["simulate", "ray"], default="simulate")
    parser.add_argument("--grid", default="grids/membrane.yaml")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--startup", type=float, default=10.0)
    parser.add_argument("--gpu", action="store_true", help="estimates at the GPU throughput")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--scale", type=float, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    true, queued, static, slots = (_simulate if args.mode == "simulate" else _ray)(args)
    total, longest = sum(true.values()), max(true.values())
    ideal = max(total / slots, longest)  # no schedule does better
    bound = total / slots + longest  # what a greedy queue is sure to beat
    print(f"training {total:.1f} s in all, longest run {longest:.1f} s; "
          f"training / {slots} slots + longest = {bound:.1f} s")  # fmt: skip
    print(
        f"{args.mode}: queue {queued:.1f} s = {queued / ideal:.2f}× ideal, "
        f"static {static:.1f} s = {static / ideal:.2f}× ideal "
        f"(ideal {ideal:.1f} s = max(training / slots, longest run))"
    )

if __name__ == "__main__":
    main()
