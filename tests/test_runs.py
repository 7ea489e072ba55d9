"""Training runs and work units: which trials share a run, how runs are packed, and the
learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from gridrun.runs import (
    GPU_PIXELS_PER_STEP,
    LONG_RUN_S,
    MIN_GPU_SHARE,
    estimate_seconds,
    gpu_share,
    lr_at,
    pack,
    plan_run,
    training_runs,
    trial_info,
)
from gridrun.spec import parse_grid


def _grid(epochs=(1, 2, 4), seeds=(0, 1), **train):
    return parse_grid(
        {
            "factors": {"image_size": [32], "dataset_size": [8], "epochs": list(epochs),
                        "batch_size": [4]},
            "seeds": list(seeds),
            "train": train,
        }
    )  # fmt: skip


def test_cells_differing_only_in_epochs_share_one_run_per_seed():
    grid = _grid()
    runs = training_runs(grid, grid.trials())
    assert [r.id for r in runs] == ["img32_n8_ep4_bs4_s0", "img32_n8_ep4_bs4_s1"]
    assert sum(r.epochs for r in runs) == 8  # not 2 × (1 + 2 + 4) = 14
    plan = plan_run(grid, runs[0], 3, 32)
    assert plan.epochs == 4
    assert plan.stops == {1: ("img32_n8_ep1_bs4_s0",), 2: ("img32_n8_ep2_bs4_s0",),
                          4: ("img32_n8_ep4_bs4_s0",)}  # fmt: skip


@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_schedules_that_see_the_total_epoch_count_train_each_level_alone(schedule):
    grid = _grid(schedule=schedule)
    runs = training_runs(grid, grid.trials())
    assert len(runs) == 6 and sum(r.epochs for r in runs) == 14
    assert "depends on the total epoch count" in grid.share_reason()
    assert _grid(share_epochs=False).share_reason() == "train.share_epochs is false"
    assert _grid(schedule="warmup_constant", warmup_epochs=1).share_reason() is None


def test_a_rerun_groups_only_the_trials_left():
    grid = _grid()
    left = [t for t in grid.trials() if t.cell.epochs == 4]
    runs = training_runs(grid, left)
    assert [r.id for r in runs] == ["img32_n8_ep4_bs4_s0", "img32_n8_ep4_bs4_s1"]


def _plans(grid, eval_size=32):
    return [plan_run(grid, r, 3, eval_size) for r in training_runs(grid, grid.trials())]


def test_short_runs_are_packed_into_one_work_unit_per_slot():
    grid = parse_grid({"factors": {"image_size": [32], "dataset_size": [8], "epochs": [1],
                                   "batch_size": [4]}, "seeds": list(range(16))})  # fmt: skip
    plans = _plans(grid)
    units = pack(plans, slots=2, use_gpu=False)
    assert len(units) == 2
    assert sorted(len(b.runs) for b in units) == [8, 8]
    assert sorted(p.training_run for b in units for p in b.runs) == sorted(
        p.training_run for p in plans
    )
    assert len(pack(plans, slots=2, use_gpu=False, enabled=False)) == 16
    # never fewer work units than slots while there are runs to fill them
    assert len(pack(plans, slots=5, use_gpu=False)) == 5
    assert len(pack(plans[:3], slots=5, use_gpu=False)) == 3


def test_long_runs_are_never_packed():
    grid = parse_grid({"factors": {"image_size": [32, 512], "dataset_size": [64],
                                   "epochs": [20], "batch_size": [4]}})  # fmt: skip
    plans = _plans(grid, 512)
    big = next(p for p in plans if p.image_size == 512)
    assert estimate_seconds(big, use_gpu=False) >= LONG_RUN_S
    units = pack(plans, slots=1, use_gpu=False)
    assert [len(b.runs) for b in units] == [1, 1]
    assert units[0].runs[0] is big  # the longest starts first


def test_learning_rate_schedules():
    grid = _grid(epochs=(4,), lr=0.1)
    base = plan_run(grid, training_runs(grid, grid.trials())[0], 3, 32)  # 2 steps per epoch
    constant = [lr_at(base, s) for s in range(8)]
    assert constant == [0.1] * 8
    from dataclasses import replace

    warm = replace(base, schedule="warmup_constant", warmup_epochs=1)
    assert [lr_at(warm, s) for s in range(4)] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    poly = replace(base, schedule="poly")
    assert lr_at(poly, 0) == pytest.approx(0.1)
    assert lr_at(poly, 4) == pytest.approx(0.1 * 0.5**0.9)
    cosine = replace(base, schedule="cosine")
    assert lr_at(cosine, 4) == pytest.approx(0.05)
    assert lr_at(cosine, 2) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))


def _plan(image_size, batch_size, seed=0, dataset_size=16):
    grid = parse_grid({"factors": {"image_size": [image_size], "dataset_size": [dataset_size],
                                   "epochs": [1], "batch_size": [batch_size]},
                       "seeds": [seed]})  # fmt: skip
    return _plans(grid)[0]


def test_small_runs_ask_for_a_quarter_or_half_gpu_large_ones_a_whole():
    # pixels × samples per step and worker against 256² × 16 (a GPU ~60 % busy)
    assert gpu_share(_plan(256, 4)) == 1 / 4  # 29 % busy measured on an H100
    assert gpu_share(_plan(256, 8)) == 1 / 2
    assert gpu_share(_plan(256, 16)) == 1.0
    assert gpu_share(_plan(512, 4)) == 1.0
    assert gpu_share(_plan(256, 12)) == 1.0  # over half: a whole GPU
    assert gpu_share(_plan(32, 4)) == MIN_GPU_SHARE == 1 / 4  # never more than 4 per GPU
    # a batch split over two workers is half the size on each
    assert gpu_share(_plan(256, 16), workers=2) == 1 / 2
    assert GPU_PIXELS_PER_STEP == 256 * 256 * 16


def test_gpu_shares_are_packed_apart_and_only_on_gpu():
    small = [_plan(256, 4, seed) for seed in range(8)]
    half = [_plan(256, 8, seed) for seed in range(4)]
    whole = [_plan(256, 16, seed) for seed in range(2)]
    plans = small + half + whole
    slots = {1.0: 1, 0.5: 2, 0.25: 4}  # work units of each share that fit on one GPU
    units = pack(plans, slots.__getitem__, use_gpu=True, share_gpus=True)
    by_share = {}
    for b in units:
        assert {gpu_share(p) for p in b.runs} == {b.gpu_share}  # homogeneous
        by_share.setdefault(b.gpu_share, []).append(len(b.runs))
    # short runs: at least one work unit per slot of its share
    assert {s: sorted(n) for s, n in by_share.items()} == {
        0.25: [2, 2, 2, 2], 0.5: [2, 2], 1.0: [2]
    }  # fmt: skip
    assert sorted(p.training_run for b in units for p in b.runs) == sorted(
        p.training_run for p in plans
    )
    # off, or on CPU workers: one share, packed as before
    for off in (pack(plans, 1, use_gpu=True), pack(plans, 1, use_gpu=False, share_gpus=True)):
        assert [b.gpu_share for b in off] == [1.0] and len(off[0].runs) == 14


def _five(**extra):
    return parse_grid(
        {
            "factors": {"image_size": [32], "dataset_size": [8], "epochs": [1, 2],
                        "batch_size": [2, 4], "train.lr": [3e-4, 1e-3], **extra},
            "train": {"lr_scaling": "linear"},
        }
    )  # fmt: skip


def test_training_runs_group_by_every_factor_but_epochs():
    grid = _five()
    runs = training_runs(grid, grid.trials())
    # 2 batch sizes × 2 lr levels, each run serving both epochs levels
    assert sorted(r.id for r in runs) == [
        "img32_n8_ep2_bs2_train.lr=0.0003_s0", "img32_n8_ep2_bs2_train.lr=0.001_s0",
        "img32_n8_ep2_bs4_train.lr=0.0003_s0", "img32_n8_ep2_bs4_train.lr=0.001_s0",
    ]  # fmt: skip
    for run in runs:
        assert [t.cell.epochs for t in run.trials] == [1, 2]
        assert len({t.cell.settings for t in run.trials}) == 1


def test_a_plan_uses_its_cells_own_settings():
    grid = _five(**{"train.optimizer": ["adam", "sgd"]})
    runs = training_runs(grid, grid.trials())
    plans = {p.training_run: p for p in (plan_run(grid, r, 3, 32) for r in runs)}
    plan = plans["img32_n8_ep2_bs4_train.lr=0.001_train.optimizer=sgd_s0"]
    # lr_scaling ties the level to the batch: 1e-3 × 4 / 2
    assert (plan.optimizer, plan.lr) == ("sgd", pytest.approx(2e-3))
    info = trial_info(grid, runs[0], grid.trials()[0])
    assert info.factors["train.lr"] == 3e-4 and info.factors["train.optimizer"] == "adam"
    assert info.row()["train.lr"] == 3e-4 and info.params["train.lr"] == 3e-4


def test_a_schedule_varied_as_a_factor_decides_the_sharing_of_its_own_cells():
    grid = _five(**{"train.schedule": ["constant", "cosine"]})
    runs = training_runs(grid, grid.trials())
    shared = {dict(r.lead.cell.settings)["train.schedule"]: 0 for r in runs}
    for r in runs:
        shared[dict(r.lead.cell.settings)["train.schedule"]] += len(r.trials) > 1
    assert shared == {"constant": 4, "cosine": 0}
    assert len(runs) == 4 + 8
