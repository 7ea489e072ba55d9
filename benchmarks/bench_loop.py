"""Training samples/s of gridrun's loop (`run_epochs`, no Ray) against a bare PyTorch
loop on the same model, batch and input. Both time training passes only (gridrun's
`train_samples_per_s`), best of several epochs. Usage:

    python benchmarks/bench_loop.py [--image-size 128] [--batch 8] [--images 64] [--device cpu]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _options import int_options

from gridrun.data import SizedArrays
from gridrun.losses import per_sample_loss
from gridrun.models import build_model
from gridrun.runs import RunPlan
from gridrun.train import run_epochs


def _plan(args) -> RunPlan:
    return RunPlan(
        training_run="bench", seed=0, image_size=args.image_size, dataset_size=args.images,
        batch_size=args.batch, epochs=args.epochs, stops={args.epochs: ("bench",)},
        model_name="unet", model_options={"base_channels": 16, "depth": 4}, in_channels=3,
        num_classes=1, ignore_index=None, eval_size=args.image_size, loss="bce_dice",
        optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.9, schedule="constant",
        warmup_epochs=0, amp=args.amp, channels_last=args.amp, compile=False, overlay_every=1000,
        overlay_images=0,
    )  # fmt: skip


def _bare(args, arrays: SizedArrays, device: torch.device) -> float:
    """The loop a user would write: shuffled batches, forward, loss, backward, step."""
    torch.manual_seed(0)
    model = build_model("unet", 3, 1, base_channels=16, depth=4).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all = torch.from_numpy(arrays.train_x).to(device)
    y_all = torch.from_numpy(arrays.train_y).to(device)
    use_amp = device.type == "cuda" and args.amp
    best = 0.0
    for epoch in range(args.epochs):
        order = torch.from_numpy(np.random.default_rng(epoch).permutation(args.images))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train()
        for start in range(0, args.images, args.batch):
            idx = order[start : start + args.batch].to(device)
            x, y = x_all[idx].float() / 255, y_all[idx].long()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = per_sample_loss("bce_dice", model(x).float(), y).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, args.images / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = int_options(__doc__, image_size=128, batch=8, images=64, epochs=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    s = args.image_size
    arrays = SizedArrays(
        train_x=rng.integers(0, 256, (args.images, 3, s, s), dtype=np.uint8),
        train_y=rng.integers(0, 2, (args.images, s, s), dtype=np.uint8),
        val_x=rng.integers(0, 256, (4, 3, s, s), dtype=np.uint8),
    )
    val_y = rng.integers(0, 2, (4, s, s), dtype=np.uint8)
    ours = max(
        end.metrics["train_samples_per_s"]
        for end in run_epochs(_plan(args), arrays, val_y, device=device)
    )
    bare = _bare(args, arrays, device)
    print(f"{device} {s}px batch {args.batch}, {args.images} images, best of {args.epochs} epochs")
    print(f"  gridrun run_epochs: {ours:8.1f} samples/s")
    print(f"  bare PyTorch loop:  {bare:8.1f} samples/s")
    print(f"  ratio gridrun / bare: {ours / bare:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
