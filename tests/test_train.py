"""The worker loop without Ray: counts, metrics, checkpoints, divergence, and a real
two-process torch.distributed run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gridrun.augment import Augmentation, augmentation
from gridrun.data import SizedArrays, prepare, truth_counts
from gridrun.layout import Status
from gridrun.losses import per_sample_loss
from gridrun.models import build_model, count_params
from gridrun.records import RunCheckpoint
from gridrun.runs import RunPlan
from gridrun.spec import parse_grid
from gridrun.storage import Storage
from gridrun.store import baselines_record
from gridrun.targets import resolve_target
from gridrun.train import EpochEnd, run_epochs

torch.set_num_threads(1)

TINY_MODEL = {"base_channels": 4, "depth": 3}
CURVE_METRICS = {
    "train_loss", "train_iou", "val_loss", "val_iou", "val_dice", "val_precision",
    "val_recall", "val_pixel_acc", "val_miou", "lr", "epoch_time_s", "train_samples_per_s",
    "peak_mem_mb",
}  # fmt: skip
# measured per process, so they may differ between ranks
LOCAL_TIMINGS = {"epoch_time_s", "train_time_s", "train_samples_per_s"}
# the exactness tests hold with and without augmentation
AUGMENTS = pytest.mark.parametrize(
    "augment", [Augmentation(), augmentation("strong")], ids=["no_augment", "strong"]
)


def _plan(**overrides) -> RunPlan:
    values = {
        "training_run": "t",
        "seed": 0,
        "image_size": 16,
        "dataset_size": 10,
        "epochs": 2,
        "batch_size": 4,
        "model_name": "unet",
        "model_options": TINY_MODEL,
        "in_channels": 1,
        "num_classes": 1,
        "eval_size": 20,
        "loss": "bce_dice",
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "ignore_index": None,
        "schedule": "constant",
        "warmup_epochs": 0,
        "amp": "auto",
        "channels_last": "auto",
        "compile": False,
        "overlay_every": 5,
        "overlay_images": 2,
    }
    values.update(overrides)
    values.setdefault("stops", {values["epochs"]: ("t",)})
    return RunPlan(**values)


def _random_arrays(train: int, val: int, size: int, eval_size: int, labels: int = 2):
    rng = np.random.default_rng(0)
    arrays = SizedArrays(
        train_x=rng.integers(0, 256, (train, 1, size, size), dtype=np.uint8),
        train_y=rng.integers(0, labels, (train, size, size), dtype=np.uint8),
        val_x=rng.integers(0, 256, (val, 1, size, size), dtype=np.uint8),
    )
    return arrays, rng.integers(0, labels, (val, eval_size, eval_size), dtype=np.uint8)


def _reported(end: EpochEnd) -> dict:
    """Everything an epoch reports, in one mapping: its metrics and the run's fields."""
    return {"epoch": end.epoch, **end.metrics, "params": end.params,
            "world_size": end.world_size, "device": end.device, "status": end.status}  # fmt: skip


def _collect(plan: RunPlan, arrays, val_y, **kwargs) -> list[dict]:
    return [_reported(end) for end in run_epochs(plan, arrays, val_y, **kwargs)]


@pytest.fixture(scope="module")
def membrane_32(membrane: Path):
    """Membrane at image_size 32, ten training images, six for validation, scored at 40."""
    grid = parse_grid(
        {
            "data": {"source": "folder", "path": str(membrane), "val_size": 6, "eval_size": 40},
            "factors": {"image_size": [32], "dataset_size": [10], "epochs": [2], "batch_size": [4]},
        }
    )
    return prepare(grid)


def test_run_epochs_on_membrane_reports_each_epoch(membrane_32, tmp_path: Path) -> None:
    # dataset_size 10 with batch 4: batches of 4, 4 and a partial 2 -> 3 steps per epoch
    plan = _plan(image_size=32, eval_size=40, dataset_size=10, batch_size=4, epochs=2)
    ends = list(run_epochs(plan, membrane_32.sizes[32], membrane_32.val_y))
    reports = [_reported(end) for end in ends]

    assert [r["epoch"] for r in reports] == [1, 2]
    assert [r["step"] for r in reports] == [3, 6]
    for r in reports:
        assert set(r) >= CURVE_METRICS
        assert r["status"] is Status.OK and r["world_size"] == 1 and r["device"] == "cpu"
        # every validation pixel at the evaluation resolution, every training pixel once
        assert r["val_pixels"] == 6 * 40 * 40
        assert r["train_pixels"] == 10 * 32 * 32
        assert r["lr"] == pytest.approx(1e-3)
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
        for key in ("train_iou", "val_iou", "val_dice", "val_miou", "val_pixel_acc"):
            assert 0.0 <= r[key] <= 1.0
        assert r["epoch_time_s"] > 0 and r["train_samples_per_s"] > 0 and r["peak_mem_mb"] > 0
    assert reports[1]["train_time_s"] > reports[0]["train_time_s"]
    assert reports[0]["params"] == count_params(build_model("unet", 1, 1, **TINY_MODEL))
    # the overlay images are predicted at each cell's own epoch, at the evaluation size
    assert ends[0].predictions is None
    assert ends[1].predictions.shape == (2, 40, 40) and ends[1].predictions.dtype == np.uint8


def test_an_smp_model_trains_an_epoch_like_the_own_unet() -> None:
    arrays, val_y = _random_arrays(8, 2, 32, 32, labels=3)
    smp = {"arch": "Unet", "encoder": "resnet18", "encoder_weights": None, "kwargs": {}}
    plan = _plan(
        image_size=32, dataset_size=8, eval_size=32, epochs=1, num_classes=3, loss="ce_dice",
        model_name="smp", model_options=smp,
    )  # fmt: skip
    (report,) = _collect(plan, arrays, val_y)
    assert report["status"] == "ok" and report["step"] == 2
    assert report["params"] == count_params(build_model("smp", 1, 3, **smp))
    assert math.isfinite(report["train_loss"]) and 0.0 <= report["val_iou"] <= 1.0
    assert report["val_pixels"] == 2 * 32 * 32


def test_multiclass_reports_per_class_iou() -> None:
    arrays, val_y = _random_arrays(6, 2, 16, 16, labels=3)
    plan = _plan(dataset_size=6, eval_size=16, epochs=1, num_classes=3, loss="ce_dice")
    (report,) = _collect(plan, arrays, val_y)
    assert {"val_iou_c0", "val_iou_c1", "val_iou_c2"} <= set(report)
    assert report["val_pixels"] == 2 * 16 * 16
    assert report["val_iou"] == pytest.approx(
        np.nanmean([report[f"val_iou_c{k}"] for k in range(3)])
    )


def test_a_huge_learning_rate_diverges_and_stops_early() -> None:
    arrays, val_y = _random_arrays(8, 2, 16, 16)
    plan = _plan(dataset_size=8, eval_size=16, epochs=4, optimizer="sgd", lr=1e30)
    reports = _collect(plan, arrays, val_y)
    assert len(reports) < 4
    assert reports[-1]["status"] is Status.DIVERGED
    assert not math.isfinite(reports[-1]["train_loss"])


def test_a_finite_but_exploding_loss_is_divergence_too() -> None:
    # BCE with logits stays finite at lr 1e6 but grows far past its first epoch's value
    arrays, val_y = _random_arrays(8, 2, 16, 16)
    plan = _plan(dataset_size=8, eval_size=16, epochs=6, optimizer="sgd", lr=1e6)
    reports = _collect(plan, arrays, val_y)
    assert reports[-1]["status"] is Status.DIVERGED
    assert math.isfinite(reports[-1]["train_loss"])
    assert reports[-1]["train_loss"] > 100 * reports[0]["train_loss"]
    assert all(r["status"] is Status.OK for r in reports[:-1])


def test_per_sample_loss_hand_values() -> None:
    logits = torch.zeros(2, 1, 8, 8)  # p = 0.5 everywhere
    ones = torch.ones(2, 8, 8, dtype=torch.long)
    assert per_sample_loss("bce", logits, ones).tolist() == pytest.approx([math.log(2)] * 2)
    # soft Dice with smoothing 1: 1 - (2·32 + 1) / (32 + 64 + 1)
    dice = 1 - 65 / 97
    assert per_sample_loss("dice", logits, ones).tolist() == pytest.approx([dice] * 2)
    assert per_sample_loss("bce_dice", logits, ones).tolist() == pytest.approx(
        [math.log(2) + dice] * 2
    )


@pytest.mark.parametrize(("loss", "channels"), [("bce_dice", 1), ("dice", 1), ("ce_dice", 3)])
def test_per_sample_loss_does_not_depend_on_chunking(loss: str, channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, channels, 6, 6, generator=g)
    target = torch.randint(0, max(2, channels), (4, 6, 6), generator=g)
    # the last image has no foreground: a batch-wide Dice would differ from per-sample Dice
    target[3] = 0
    whole = per_sample_loss(loss, logits, target)
    assert whole.shape == (4,)
    chunks = torch.cat(
        [per_sample_loss(loss, logits[i : i + 2], target[i : i + 2]) for i in (0, 2)]
    )
    torch.testing.assert_close(whole.mean(), chunks.mean())
    torch.testing.assert_close(whole, chunks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        # 9 images in batches of 4, 4, 1: rank 1 gets nothing of the last batch;
        # 5 validation images split 3 / 2
        arrays, val_y = _random_arrays(9, 5, 16, 20)
        # a test split of 3 images: split 2 / 1, its counts reduced like validation's
        arrays = dataclasses.replace(arrays, test_x=arrays.val_x[:3])
        plan = _plan(dataset_size=9, batch_size=4, eval_size=20, epochs=2)
        reports = [
            {**_reported(end), "has_predictions": end.predictions is not None}
            for end in run_epochs(
                plan, arrays, val_y, wrap=torch.nn.parallel.DistributedDataParallel,
                test_y=val_y[:3],
            )
        ]  # fmt: skip
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(reports))
        # both ranks leave together: a rank tearing gloo down while its peer still sends
        # aborts ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_run_reduces_counts_across_ranks(tmp_path: Path) -> None:
    context = mp.spawn(
        _distributed_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=False
    )
    deadline = time.monotonic() + 90
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two-process run did not finish in 90 s")
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert [r["epoch"] for r in rank0] == [r["epoch"] for r in rank1] == [1, 2]
    # only rank 0 predicts the overlay images (at the cell's epoch, 2)
    assert [r["has_predictions"] for r in rank0 + rank1] == [False, True, False, False]
    for a, b in zip(rank0, rank1, strict=True):
        shared = set(a) - LOCAL_TIMINGS - {"has_predictions"}
        assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
        assert a["world_size"] == 2
        assert a["val_pixels"] == 5 * 20 * 20
        assert a["test_pixels"] == 3 * 20 * 20
        assert a["train_pixels"] == 9 * 16 * 16
        assert a["status"] == "ok"
    assert [r["step"] for r in rank0] == [3, 6]


def test_training_on_membrane_beats_the_constant_prediction(membrane: Path) -> None:
    grid = parse_grid(
        {
            "data": {"source": "folder", "path": str(membrane), "val_size": 6},
            "factors": {"image_size": [64], "dataset_size": [12], "epochs": [16],
                        "batch_size": [2]},
        }
    )  # fmt: skip
    prepared = prepare(grid)
    plan = _plan(
        image_size=64, dataset_size=12, epochs=16, batch_size=2, eval_size=64, lr=3e-3,
        model_options={"base_channels": 16, "depth": 4},
    )  # fmt: skip
    reports = _collect(plan, prepared.sizes[64], prepared.val_y)
    # predicting "cell interior" everywhere: foreground IoU = its pixel share, background 0
    interior = float(prepared.val_y.mean())
    assert reports[-1]["val_miou"] > interior / 2 + 0.1
    assert reports[-1]["val_iou"] > interior


@AUGMENTS
def test_the_same_trial_twice_gives_the_same_curve(augment: Augmentation) -> None:
    # a seed is a replicate: rerunning it must reproduce it, not draw a new one
    arrays, val_y = _random_arrays(10, 3, 16, 20)
    plan = _plan(epochs=2, augment=augment)
    first, second = _collect(plan, arrays, val_y), _collect(plan, arrays, val_y)
    keep = lambda r: {k: v for k, v in r.items() if k not in LOCAL_TIMINGS | {"peak_mem_mb"}}  # noqa: E731
    assert [keep(r) for r in first] == [keep(r) for r in second]
    other_seed = _collect(dataclasses.replace(plan, seed=1), arrays, val_y)
    assert other_seed[-1]["train_loss"] != first[-1]["train_loss"]


def _weights(model) -> dict[str, torch.Tensor]:
    inner = model.module if hasattr(model, "module") else model
    return {k: v.clone() for k, v in inner.state_dict().items()}


@AUGMENTS
def test_a_shared_run_is_bit_identical_to_a_run_trained_alone_to_fewer_epochs(
    augment: Augmentation,
) -> None:
    # the premise of sharing one training run between cells differing only in epochs
    arrays, val_y = _random_arrays(10, 3, 16, 20)
    # the model is trained in place: take its weights as each epoch ends
    alone_plan = _plan(epochs=2, augment=augment)
    alone = [(e, _weights(e.model)) for e in run_epochs(alone_plan, arrays, val_y)]
    shared_plan = _plan(epochs=5, stops={2: ("a",), 5: ("b",)}, augment=augment)
    shared = [(e, _weights(e.model)) for e in run_epochs(shared_plan, arrays, val_y)]
    keep = lambda r: {k: v for k, v in r.items() if k not in LOCAL_TIMINGS | {"peak_mem_mb"}}  # noqa: E731
    assert [keep(_reported(e)) for e, _ in alone] == [keep(_reported(e)) for e, _ in shared[:2]]
    for name, tensor in alone[-1][1].items():
        assert torch.equal(tensor, shared[1][1][name]), name
    np.testing.assert_array_equal(alone[-1][0].predictions, shared[1][0].predictions)


@AUGMENTS
def test_a_run_resumed_from_its_checkpoint_continues_exactly(
    augment: Augmentation, tmp_path: Path
) -> None:
    arrays, val_y = _random_arrays(10, 3, 16, 20)
    plan = _plan(
        epochs=4, optimizer="adamw", schedule="warmup_constant", warmup_epochs=1, augment=augment
    )
    straight = _collect(plan, arrays, val_y)
    study = Storage(tmp_path)
    for end in run_epochs(plan, arrays, val_y):
        if end.epoch == 2:
            weights, optimizer = _weights(end.model), end.optimizer.state_dict()
            RunCheckpoint(weights, optimizer, (), end.state).save(study, plan.training_run)
            break
    # what a restarted worker reads back
    resumed = _collect(plan, arrays, val_y, resume=RunCheckpoint.load(study, plan.training_run))
    keep = lambda r: {k: v for k, v in r.items() if k not in LOCAL_TIMINGS | {"peak_mem_mb"}}  # noqa: E731
    assert [r["epoch"] for r in resumed] == [3, 4]
    assert [keep(r) for r in resumed] == [keep(r) for r in straight[2:]]


def test_augmentation_changes_the_training_curve(tmp_path: Path) -> None:
    arrays, val_y = _random_arrays(10, 3, 16, 20)
    plain = _collect(_plan(epochs=2), arrays, val_y)
    flipped = _collect(_plan(epochs=2, augment=augmentation("flips")), arrays, val_y)
    assert [r["train_loss"] for r in flipped] != [r["train_loss"] for r in plain]
    assert flipped[-1]["val_loss"] != plain[-1]["val_loss"]
    # the user's transform sees each training image once an epoch, and no other image
    (tmp_path / "count_aug.py").write_text(
        "seen = []\n"
        "def build():\n"
        "    def transform(image, mask):\n"
        "        seen.append(float(image.sum()))\n"
        "        return image, mask\n"
        "    return transform\n"
    )
    counting = Augmentation(target="count_aug:build", folder=str(tmp_path))
    unchanged = _collect(_plan(epochs=2, augment=counting), arrays, val_y)
    seen = resolve_target("count_aug:build", str(tmp_path), "augment.target").__globals__["seen"]
    train_sums = sorted(float(x.sum()) / 255 for x in arrays.train_x[:10].astype(np.float64))
    assert len(seen) == 20
    assert sorted(seen[:10]) == pytest.approx(train_sums) and sorted(seen[10:]) == pytest.approx(
        train_sums
    )
    # an identity transform trains exactly as no augmentation
    keep = lambda r: {k: v for k, v in r.items() if k not in LOCAL_TIMINGS | {"peak_mem_mb"}}  # noqa: E731
    assert [keep(r) for r in unchanged] == [keep(r) for r in plain]


def test_the_test_split_is_scored_like_validation_and_trains_nothing() -> None:
    arrays, val_y = _random_arrays(10, 3, 16, 20)
    plan = _plan(epochs=2)
    # the model is trained in place: take its weights as each epoch ends
    plain = [(_reported(e), _weights(e.model)) for e in run_epochs(plan, arrays, val_y)]
    # the validation images again as a test split: every test_ metric is its val_ twin
    tested_arrays = dataclasses.replace(arrays, test_x=arrays.val_x.copy())
    tested = [
        (_reported(e), _weights(e.model))
        for e in run_epochs(plan, tested_arrays, val_y, test_y=val_y.copy())
    ]
    keep = lambda r: {k: v for k, v in r.items() if k not in LOCAL_TIMINGS | {"peak_mem_mb"}}  # noqa: E731
    for (without, w0), (with_test, w1) in zip(plain, tested, strict=True):
        test_keys = {k for k in with_test if k.startswith("test_")}
        assert {"test_loss", "test_iou", "test_miou", "test_iou_c0", "test_iou_c1"} <= test_keys
        for key in test_keys:
            assert with_test[key] == with_test[key.replace("test_", "val_", 1)], key
        # nothing in training reads the test split
        assert keep({k: v for k, v in with_test.items() if k not in test_keys}) == keep(without)
        assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not any(k.startswith("test_") for k in plain[0][0])


class _Constant(torch.nn.Module):
    """Predicts one label at every pixel, whatever it is trained on."""

    def __init__(self, label: int, num_classes: int):
        super().__init__()
        logits = torch.full((num_classes,), -10.0)
        if num_classes == 1:
            logits[0] = 10.0 if label == 1 else -10.0
        else:
            logits[label] = 10.0
        self.logits = torch.nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return self.logits[None, :, None, None].expand(n, -1, h, w) + 0 * x[:, :1]


@pytest.mark.parametrize(
    ("num_classes", "label", "predictor"),
    [(1, 0, "all background"), (1, 1, "all foreground"), (3, 2, "all class 2")],
)
def test_a_constant_model_scores_exactly_its_baseline(
    monkeypatch, num_classes: int, label: int, predictor: str
) -> None:
    monkeypatch.setattr("gridrun.train.build_model", lambda *a, **k: _Constant(label, num_classes))
    labels = max(2, num_classes)
    arrays, val_y = _random_arrays(6, 3, 16, 20, labels=labels)
    val_y[0, :2] = 255  # ignored pixels count for neither
    arrays = dataclasses.replace(arrays, test_x=arrays.val_x[:2])
    plan = _plan(
        dataset_size=6, epochs=1, num_classes=num_classes, ignore_index=255,
        loss="bce" if num_classes == 1 else "ce", optimizer="sgd", lr=1e-6,
    )  # fmt: skip
    (metrics,) = _collect(plan, arrays, val_y, test_y=val_y[:2])
    ignored = {k: int((y == 255).sum()) for k, y in (("val", val_y), ("test", val_y[:2]))}
    splits = {
        name: truth_counts(y, labels, 255) for name, y in (("val", val_y), ("test", val_y[:2]))
    }
    assert {name: t.ignored_pixels for name, t in splits.items()} == ignored
    record = baselines_record(splits, 20, num_classes, 255)
    expected = record["predictors"][predictor]
    assert {"val_iou", "val_iou_c0", "test_iou", "test_pixel_acc"} <= set(expected)
    # the same numbers as the epoch's, NaN (a class never predicted) written as None
    got = {k: None if math.isnan(metrics[k]) else metrics[k] for k in expected}
    assert got == expected
