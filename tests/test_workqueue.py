"""The driver's run queue: units pull runs longest first, a unit that finishes early
takes more, every run is trained once, a lost unit's run goes back, and measured times
re-order what is left (without Ray; then one grid on the session's Ray)."""

from __future__ import annotations

import pytest

from gridrun.runs import estimate_seconds, plan_run, queue_units, training_runs
from gridrun.spec import parse_grid
from gridrun.workqueue import RunQueue


def _plans(image_size=(32,), epochs=(1,), seeds=(0,), batch_size=(4,)):
    grid = parse_grid({"factors": {"image_size": list(image_size), "dataset_size": [16],
                                   "epochs": list(epochs), "batch_size": list(batch_size)},
                       "seeds": list(seeds), "train": {"share_epochs": False}})  # fmt: skip
    return [plan_run(grid, r, 3, 32) for r in training_runs(grid, grid.trials())]


def _claim(queue, unit, position, attempt=0, share=1.0):
    plan = queue.claim(unit, attempt, position, share)
    return None if plan is None else plan.training_run


def test_a_unit_that_finishes_early_takes_more_runs_and_each_run_is_trained_once():
    # eight equal estimates; unit "a"'s runs really take 1 s, unit "b"'s first one 10 s
    plans = _plans(seeds=range(8))
    queue = RunQueue(plans, use_gpu=False)
    taken = {"a": [_claim(queue, "a", 0)], "b": [_claim(queue, "b", 0)]}
    clock = {"a": 1.0, "b": 10.0}  # when each unit's current run ends
    while True:
        unit = min(clock, key=clock.get)
        queue.finish(taken[unit][-1], seconds=1.0, epochs=1)
        run = _claim(queue, unit, len(taken[unit]))
        if run is None:
            break
        taken[unit].append(run)
        clock[unit] += 1.0
    # "a" took every run while "b" was on its slow first one
    assert [len(taken["a"]), len(taken["b"])] == [7, 1]
    every = taken["a"] + taken["b"]
    assert sorted(every) == sorted(p.training_run for p in plans)  # each exactly once
    assert queue.pending() == []


def test_every_rank_and_a_restarted_worker_group_get_the_same_run():
    queue = RunQueue(_plans(seeds=range(3)), use_gpu=False)
    first = _claim(queue, "u0", 0)
    assert _claim(queue, "u0", 0) == first  # another rank, or the group restarted
    second = _claim(queue, "u0", 1)
    assert second != first and _claim(queue, "u0", 1) == second
    # a new trainer (the last one failed for good) claims afresh
    third = _claim(queue, "u0", 0, attempt=1)
    assert third not in (first, second)
    assert _claim(queue, "u1", 0) is None  # nothing left for another unit
    assert queue.claimed("u0") == [first, second, third]
    assert queue.claims() == [first, second, third] and queue.claims(2) == [third]


def test_a_lost_units_unfinished_run_goes_back_on_the_queue():
    queue = RunQueue(_plans(seeds=range(2)), use_gpu=False)
    done, lost = _claim(queue, "u0", 0), _claim(queue, "u0", 1)
    queue.finish(done, seconds=1.0, epochs=1)
    assert queue.release("u0") == [lost]
    assert queue.pending() == [lost]
    # another unit takes it (and resumes it from its latest checkpoint)
    assert _claim(queue, "u1", 0) == lost
    assert queue.claimed("u0") == [done] and queue.unfinished("u1") == [lost]
    # the lost unit's retry: position 0 is still its finished run, the rest is gone
    assert _claim(queue, "u0", 0) == done and _claim(queue, "u0", 1) is None


def test_measured_times_rescale_the_estimates_and_reorder_the_rest():
    plans = _plans(image_size=(32, 64), epochs=(1, 2, 4))
    by_id = {(p.image_size, p.epochs): p.training_run for p in plans}
    queue = RunQueue(plans, use_gpu=False)
    nominal = {p.training_run: estimate_seconds(p, use_gpu=False) for p in plans}
    # nominal: 64 px at 4 epochs first, and 64 px at 2 epochs before 32 px at 4
    assert queue.pending()[:3] == [by_id[64, 4], by_id[64, 2], by_id[32, 4]]
    small32, small64 = by_id[32, 1], by_id[64, 1]
    # 32 px measured 10× slower than its estimate, 64 px as estimated
    queue.finish(small32, seconds=10 * nominal[small32], epochs=1)
    assert queue.estimate(by_id[64, 4]) == nominal[by_id[64, 4]] * 10  # all sizes so far
    queue.finish(small64, seconds=nominal[small64], epochs=1)
    assert queue.estimate(by_id[32, 4]) == 10 * nominal[by_id[32, 4]]
    assert queue.estimate(by_id[64, 4]) == nominal[by_id[64, 4]]
    assert queue.pending() == [by_id[32, 4], by_id[32, 2], by_id[64, 4], by_id[64, 2]]
    assert _claim(queue, "u0", 0) == by_id[32, 4]


def test_a_unit_takes_only_runs_of_its_own_gpu_share():
    plans = _plans(image_size=(256,), batch_size=(4, 16))  # a quarter and a whole GPU
    queue = RunQueue(plans, use_gpu=True, share_gpus=True)
    assert queue.claim("q", 0, 0, 0.25).batch_size == 4
    assert queue.claim("q", 0, 1, 0.25) is None
    assert queue.claim("w", 0, 0, 1.0).batch_size == 16


def test_queue_units_fill_the_slots_and_packing_off_gives_each_run_its_own():
    plans = _plans(seeds=range(5))
    units = queue_units(plans, 2, "runs-x", use_gpu=False)
    assert [(u.unit_id, u.queue, u.max_runs, u.runs) for u in units] == [
        ("u0000", "runs-x", None, ()), ("u0001", "runs-x", None, ())
    ]  # fmt: skip
    assert len(queue_units(plans[:1], 4, "runs-x", use_gpu=False)) == 1  # no idle units
    alone = queue_units(plans, 2, "runs-x", use_gpu=False, enabled=False)
    assert len(alone) == 5 and {u.max_runs for u in alone} == {1}


@pytest.mark.ray
def test_on_ray_the_unit_that_finishes_early_trains_the_rest(ray_cluster, tmp_path, monkeypatch):
    import pandas as pd
    from fixtures_ray import grid_file, run_cli

    # equal estimates; the first run taken (the last by name) sleeps 4 s per epoch
    factors = {"image_size": 16, "dataset_size": 4, "epochs": 4, "batch_size": [1, 2, 4]}
    grid = grid_file(tmp_path, "queue", factors, val_size=2)
    monkeypatch.setenv("GRIDRUN_FAULTS", "slow@img16_n4_ep4_bs4_s0:4")
    out = tmp_path / "study"
    result = run_cli(grid, out)
    assert result.exit_code == 0, result.output
    assert "3 training runs in 2 work units" in " ".join(result.output.split())
    curves = pd.read_parquet(out / "curves.parquet")
    for _, curve in curves.groupby("run_id"):
        assert curve["epoch"].tolist() == [1, 2, 3, 4]  # each run trained once
    runs_by_worker = curves.groupby("worker_pid")["batch_size"].unique()
    assert sorted(sorted(b) for b in runs_by_worker) == [[1, 2], [4]]
