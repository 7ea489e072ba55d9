"""How busy gridrun keeps a GPU: trains one cell with `run_epochs` (AMP and channels_last
as the grid's `auto` gives them on GPU) while `nvidia-smi` samples the GPU's utilisation
every 100 ms, after a warm-up epoch. Prints the mean utilisation over the training
epochs, samples/s and the pixel throughput `gridrun.runs` uses to pack runs. Usage:

    python benchmarks/bench_gpu_util.py [--image-size 256] [--batch 16] [--images 512]
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time

import numpy as np
import torch
from _options import int_options

from gridrun.data import SizedArrays
from gridrun.runs import RunPlan
from gridrun.train import run_epochs


class _Sampler:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.on = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
             "-lms", "100"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if self._stop.is_set():
                break
            if self.on and line.strip().isdigit():
                self.samples.append(float(line))
        proc.kill()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def main() -> None:
    parser = int_options(__doc__, image_size=256, batch=16, images=512, epochs=6)
    parser.add_argument("--amp", default="auto", choices=["auto", "false"])
    parser.add_argument("--compile", action="store_true", help="torch.compile with CUDA graphs")
    args = parser.parse_args()
    s = args.image_size
    rng = np.random.default_rng(0)
    arrays = SizedArrays(
        train_x=rng.integers(0, 256, (args.images, 3, s, s), dtype=np.uint8),
        train_y=rng.integers(0, 2, (args.images, s, s), dtype=np.uint8),
        val_x=rng.integers(0, 256, (8, 3, s, s), dtype=np.uint8),
    )
    val_y = rng.integers(0, 2, (8, s, s), dtype=np.uint8)
    amp: str | bool = "auto" if args.amp == "auto" else False
    plan = RunPlan(
        training_run="gpu", seed=0, image_size=s, dataset_size=args.images,
        batch_size=args.batch, epochs=args.epochs, stops={args.epochs: ("gpu",)},
        model_name="unet", model_options={"base_channels": 16, "depth": 4}, in_channels=3,
        num_classes=1, ignore_index=None, eval_size=s, loss="bce_dice", optimizer="adam",
        lr=1e-3, weight_decay=0.0, momentum=0.9, schedule="constant", warmup_epochs=0,
        amp=amp, channels_last=amp, compile=args.compile, overlay_every=1000, overlay_images=0,
    )  # fmt: skip
    device = torch.device("cuda")
    rates, train_s = [], 0.0
    with _Sampler() as sampler:
        for end in run_epochs(plan, arrays, val_y, device=device):
            m = end.metrics
            if m["epoch"] == 1:
                sampler.on = True  # cudnn autotuning and allocator warm-up are over
                continue
            rates.append(m["train_samples_per_s"])
            train_s += m["epoch_time_s"]
        time.sleep(0.2)
    util = statistics.mean(sampler.samples)
    rate = statistics.median(rates)
    print(f"{torch.cuda.get_device_name()}: {s}px, batch {args.batch}, {args.images} images, "
          f"AMP {'bf16' if amp == 'auto' else 'off'}, channels_last {amp == 'auto'}")  # fmt: skip
    print(f"  GPU utilisation over {len(sampler.samples)} samples in {train_s:.1f} s of "
          f"epochs 2-{args.epochs}: mean {util:.0f}% (min {min(sampler.samples):.0f}%)")
    print(f"  training: {rate:.0f} samples/s = {rate * s * s:.3g} pixels/s")


if __name__ == "__main__":
    main()
