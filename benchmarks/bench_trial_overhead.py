"""What a (cell, seed) costs beyond its training, three ways, side by side on one Ray:

1. gridrun as it is: training runs packed into long-lived TorchTrainer worker groups;
2. the previous design: one TorchTrainer per (cell, seed) (`resources.pack: false`);
3. a plain Tune function trainable training the same model in the trial process, no
   TorchTrainer at all (the floor of Tune's own cost).

Prints the wall time per (cell, seed) of each and their ratios. Usage:

    python benchmarks/bench_trial_overhead.py [--pairs 16] [--epochs 1] [--image-size 32]
"""

from __future__ import annotations

import tempfile
import time

from _options import int_options, timed_run_grid

from gridrun.data import prepare
from gridrun.runs import plan_run, training_runs
from gridrun.spec import parse_grid
from gridrun.tune import init_ray


def _grid(args, pack: bool):
    return parse_grid(
        {
            "name": "bench",
            "data": {"source": "synthetic", "val_size": 4},
            "model": {"base_channels": 8, "depth": 3},
            "factors": {
                "image_size": [args.image_size],
                "dataset_size": [8],
                "epochs": [args.epochs],
                "batch_size": [4],
            },
            "seeds": list(range(args.pairs)),
            "resources": {"pack": pack},
            "tracking": {"tensorboard": False},
        }
    )


def _gridrun(args, pack: bool) -> float:
    seconds, summary, _ = timed_run_grid(_grid(args, pack))
    assert summary.statuses == {"ok": args.pairs}, summary
    return seconds


def _plain_tune(args) -> float:
    """Each trial trains in its own Tune trial process with `run_epochs`, on one CPU."""
    import ray
    from ray import tune

    grid = _grid(args, True)
    prepared = prepare(grid)
    plans = {
        r.lead.seed: plan_run(grid, r, prepared.in_channels, prepared.eval_size)
        for r in training_runs(grid, grid.trials())
    }
    arrays = ray.put(prepared.sizes[args.image_size])
    val_y = ray.put(prepared.val_y)

    def trainable(config):
        import torch

        from gridrun.train import run_epochs

        torch.set_num_threads(1)
        plan = plans[config["seed"]]
        for end in run_epochs(plan, ray.get(arrays), ray.get(val_y)):
            tune.report({"val_iou": end.metrics["val_iou"]})

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"seed": tune.grid_search(list(plans))},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(storage_path=tmp, verbose=0),
        )
        t0 = time.perf_counter()
        results = tuner.fit()
        seconds = time.perf_counter() - t0
    assert not results.errors
    return seconds


def main() -> None:
    parser = int_options(__doc__, pairs=16, epochs=1, image_size=32)
    args = parser.parse_args()

    t0 = time.perf_counter()
    init_ray(None)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s (paid once per `gridrun run`)")
    packed = _gridrun(args, pack=True)
    alone = _gridrun(args, pack=False)
    plain = _plain_tune(args)
    n = args.pairs
    print(f"{n} (cell, seed) pairs, {args.image_size} px, {args.epochs} epoch(s) each:")
    print(f"  gridrun, packed runs:          {packed / n:6.2f} s per pair ({packed:.1f} s)")
    print(f"  one TorchTrainer per pair:     {alone / n:6.2f} s per pair ({alone:.1f} s)")
    print(f"  plain Tune function trainable: {plain / n:6.2f} s per pair ({plain:.1f} s)")
    print(f"  ratio one-trainer-per-pair / packed: {alone / packed:.2f}x")
    print(f"  ratio packed / plain Tune:           {packed / plain:.2f}x")


if __name__ == "__main__":
    main()
