"""The fan-out's pure parts: how many trials fit at once, how failures are classified."""

from __future__ import annotations

import pytest

from gridrun.layout import Status, error_line
from gridrun.runs import plan_run, training_runs
from gridrun.spec import parse_grid
from gridrun.tune import (
    ClusterError,
    max_concurrency,
    plan_work,
    units_at_once,
    worker_resources,
)

FACTORS = {"image_size": [32], "dataset_size": [8], "epochs": [1], "batch_size": [4]}


def _grid(**resources):
    return parse_grid({"factors": FACTORS, "resources": resources})


def test_trials_whose_workers_fit_run_at_once_and_no_more():
    # the trial process holds no CPU: on 2 CPUs two 1-CPU trials run, never a third
    assert max_concurrency(_grid(), {"CPU": 2}, use_gpu=False) == 2
    assert max_concurrency(_grid(workers_per_unit=2), {"CPU": 2}, use_gpu=False) == 1
    assert max_concurrency(_grid(cpus_per_worker=3), {"CPU": 16}, use_gpu=False) == 5


def test_gpu_trials_are_packed_by_gpus_not_cpus():
    grid = _grid(workers_per_unit=2, gpus_per_worker=1, cpus_per_worker=2)
    assert max_concurrency(grid, {"CPU": 64, "GPU": 8}, use_gpu=True) == 4
    assert max_concurrency(grid, {"CPU": 6, "GPU": 8}, use_gpu=True) == 1


def test_custom_resources_limit_packing_like_a_gpu():
    grid = _grid(custom={"fake_gpu": 1})
    assert max_concurrency(grid, {"CPU": 8, "fake_gpu": 3}, use_gpu=False) == 3


def test_a_trial_the_cluster_cannot_hold_is_a_clear_error():
    with pytest.raises(ClusterError, match=r"needs 4 CPU but the cluster has 2 CPU"):
        max_concurrency(_grid(workers_per_unit=2, cpus_per_worker=2), {"CPU": 2}, False)
    with pytest.raises(ClusterError, match=r"GPU"):
        max_concurrency(_grid(), {"CPU": 2}, use_gpu=True)


def test_explicit_concurrency_is_trusted_for_autoscaling_clusters():
    assert max_concurrency(_grid(max_concurrent_units=7), {"CPU": 2}, False) == 7
    assert units_at_once(_grid(max_concurrent_units=7), {"CPU": 2}, False, [1.0] * 3) == 3


def test_a_shared_gpu_holds_as_many_units_as_its_share_allows():
    grid = _grid(gpus_per_worker=1, cpus_per_worker=1)
    assert worker_resources(grid, True, 1 / 4) == {"CPU": 1, "GPU": 0.25}
    assert worker_resources(grid, False, 1 / 4) == {"CPU": 1}  # CPU workers: unchanged
    cluster = {"CPU": 16, "GPU": 2}
    assert max_concurrency(grid, cluster, True, 1 / 4) == 8
    assert max_concurrency(grid, cluster, True, 1 / 2) == 4
    assert max_concurrency(grid, {"CPU": 3, "GPU": 2}, True, 1 / 4) == 3  # CPUs run out
    # mixed shares: Tune may start any of them, so count the largest first
    # one GPU for the whole unit, four quarters on the other: five, not six
    assert units_at_once(grid, cluster, True, [1.0] + [0.25] * 5) == 5
    assert units_at_once(grid, cluster, True, [1.0, 1.0, 0.25, 0.25]) == 2
    assert units_at_once(grid, cluster, True, [0.5] * 3 + [0.25] * 10) == 5
    assert units_at_once(grid, {"CPU": 2}, False, [1.0] * 3) == 2  # as before on CPU
    with pytest.raises(ClusterError, match=r"needs 1 GPU but the cluster has 0.5 GPU"):
        units_at_once(grid, {"CPU": 2, "GPU": 0.5}, True, [1.0, 0.25])


def test_small_runs_share_a_gpu_unless_turned_off():
    grid = {"factors": {**FACTORS, "image_size": [256], "dataset_size": [16],
                        "batch_size": [4, 16]}, "seeds": [0, 1]}  # fmt: skip

    def slots(share: float) -> int:
        return max_concurrency(parse_grid(grid), {"CPU": 8, "GPU": 1}, True, share)

    # the queue: per share, as many units as fit on the GPU and have runs to pull
    work = plan_work(parse_grid(grid), set(), 3, 32, slots, use_gpu=True, queue="q")
    assert sorted(b.gpu_share for b in work.units) == [0.25, 0.25, 1.0]
    assert len(work.queued) == 4 and work.epochs_trained == 4
    grid["resources"] = {"queue": False}  # packed up front
    work = plan_work(parse_grid(grid), set(), 3, 32, slots, use_gpu=True)
    assert sorted((b.gpu_share, len(b.runs)) for b in work.units) == [
        (0.25, 1), (0.25, 1), (1.0, 2)
    ]  # fmt: skip
    grid["resources"] = {"share_gpus": False, "queue": False}
    work = plan_work(parse_grid(grid), set(), 3, 32, slots, use_gpu=True)
    assert [(b.gpu_share, len(b.runs)) for b in work.units] == [(1.0, 4)]
    grid["resources"] = {"share_gpus": False}
    work = plan_work(parse_grid(grid), set(), 3, 32, slots, use_gpu=True, queue="q")
    assert [b.gpu_share for b in work.units] == [1.0]


def test_out_of_memory_is_infeasible_other_errors_failed():
    try:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    except RuntimeError as exc:
        assert Status.from_exception(exc) is Status.INFEASIBLE
    assert Status.from_exception(ValueError("Expected more than 1 value per channel")) is (
        Status.FAILED
    )
    assert not Status.FAILED.final and Status.INFEASIBLE.final and Status.DIVERGED.final
    assert error_line(ValueError("boom\n\nlast line")) == "ValueError: last line"


def test_run_plan_carries_the_effective_learning_rate():
    grid = parse_grid(
        {
            "factors": {**FACTORS, "batch_size": [2, 8]},
            "train": {"lr": 0.01, "lr_scaling": "linear"},
        }
    )
    plans = {
        r.lead.cell.batch_size: plan_run(grid, r, 3, 32)
        for r in training_runs(grid, grid.trials())
    }
    assert plans[2].lr == pytest.approx(0.01)
    assert plans[8].lr == pytest.approx(0.04)
    assert plans[8].training_run == "img32_n8_ep1_bs8_s0"


def test_a_rerun_plans_only_what_is_not_done():
    grid = parse_grid({"factors": {**FACTORS, "epochs": [1, 2, 4]}, "seeds": [0, 1]})
    done = {"img32_n8_ep1_bs4_s0", "img32_n8_ep2_bs4_s0", "img32_n8_ep4_bs4_s0",
            "img32_n8_ep1_bs4_s1"}  # fmt: skip
    work = plan_work(grid, done, in_channels=3, eval_size=32, slots=2, use_gpu=False)
    assert work.skipped == 4
    assert list(work.trials) == ["img32_n8_ep4_bs4_s1"]
    assert [t.trial_id for t in work.trials["img32_n8_ep4_bs4_s1"]] == [
        "img32_n8_ep2_bs4_s1", "img32_n8_ep4_bs4_s1"
    ]  # fmt: skip
    assert work.epochs_trained == 4 and work.epochs_requested == 6


_SHARING = """
import json, logging, os, sys, time
os.environ["RAY_AUTH_MODE"] = "disabled"
import ray
from gridrun.spec import parse_grid
from gridrun.tune import max_concurrency, plan_work, units_at_once, worker_resources

grid = parse_grid(json.loads(sys.argv[1]))
# one node whose `fake_gpu` stands for its GPU; Ray's scheduler enforces it like a GPU
ray.init(address="local", num_cpus=1, resources={"fake_gpu": 1}, include_dashboard=False,
         log_to_driver=False, logging_level=logging.ERROR)
node = {"CPU": 1, "GPU": 1}
work = plan_work(grid, set(), 3, 32, lambda s: max_concurrency(grid, node, True, s), True)
shares = [u.gpu_share for u in work.units]


@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self):
        self.arrived = 0

    def arrive(self):
        self.arrived += 1

    def count(self):
        return self.arrived


@ray.remote
def unit(barrier, n, wait_s):
    # holds its quota until n units hold theirs at once, or wait_s passes
    ray.get(barrier.arrive.remote())
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if ray.get(barrier.count.remote()) >= n:
            return True
        time.sleep(0.05)
    return False


def side_by_side(shares, wait_s):
    barrier = Barrier.remote()
    quotas = [worker_resources(grid, True, s)["GPU"] for s in shares]
    units = [unit.options(num_cpus=0, resources={"fake_gpu": q})
             .remote(barrier, len(shares), wait_s) for q in quotas]
    return quotas, ray.get(units, timeout=wait_s * len(shares) + 30)


quotas, together = side_by_side(shares, 60)
_, whole = side_by_side([1.0, 1.0], 3)
print(json.dumps({"shares": shares, "at_once": units_at_once(grid, node, True, shares),
                  "quotas": quotas, "together": together, "whole": sorted(whole)}))
"""


@pytest.mark.ray
def test_four_small_units_hold_one_fake_gpu_side_by_side_and_two_whole_ones_do_not(tmp_path):
    """Ray's scheduler on a node whose custom `fake_gpu` stands for its GPU, in a
    process of its own: the four quarter-GPU units of batch-4 cells hold their quotas
    at once; of two whole-GPU units, one gives up waiting alone before the other starts."""
    import json

    from fixtures_ray import run_own_ray

    grid = {"factors": {**FACTORS, "image_size": [256], "dataset_size": [16]},
            "seeds": [0, 1, 2, 3], "resources": {"cpus_per_worker": 0.25}}  # fmt: skip
    out = run_own_ray(tmp_path, _SHARING, json.dumps(grid), timeout=300)
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["shares"] == [0.25] * 4 and seen["at_once"] == 4
    assert seen["quotas"] == [0.25] * 4
    assert seen["together"] == [True] * 4
    assert seen["whole"] == [False, True]
