"""A node lost mid-run: its training run restarts from its last epoch on a node that
remains, and the grid completes with every epoch once."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
from fixtures_ray import grid_file, run_cli

pytestmark = pytest.mark.ray


def test_a_run_on_a_removed_node_resumes_on_another(ray_cluster, tmp_path):
    import ray

    doomed = ray_cluster.add_node(num_cpus=1, include_dashboard=False)
    ray_cluster.wait_for_nodes()
    # three runs, one work unit each, all at once: one of them trains on the new node
    factors = {"image_size": 32, "dataset_size": 16, "epochs": 30, "batch_size": [2, 4, 8]}
    grid = grid_file(tmp_path, "nodeloss", factors, val_size=2, resources={"pack": False})
    out = tmp_path / "study"
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(r=run_cli(grid, out)))
    driver.start()
    try:
        # note: three units of one CPU each on three one-CPU nodes: one trains on
        # `doomed`; its latest checkpoint's report history names the node
        deadline = time.monotonic() + 240
        while not _early_on(out, doomed.node_id):
            assert time.monotonic() < deadline, "no run trained on the node to remove"
            assert driver.is_alive(), result
            time.sleep(0.1)
        ray_cluster.remove_node(doomed)
    finally:
        driver.join(timeout=400)
    assert not driver.is_alive()
    assert result["r"].exit_code == 0, result["r"].output

    trials = pd.read_parquet(out / "trials.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    assert (trials["status"] == "ok").all() and len(trials) == 3
    for _, curve in curves.groupby("run_id"):
        assert curve["epoch"].tolist() == list(range(1, 31))
    # the run that lost its node: its first epochs on the removed node, the rest elsewhere,
    # by a new worker process that went on from the last checkpoint
    moved = curves[curves["node_id"] == doomed.node_id]["run_id"].unique()
    assert len(moved) == 1
    curve = curves[curves["run_id"] == moved[0]].sort_values("epoch")
    assert curve["node_id"].iloc[0] == doomed.node_id != curve["node_id"].iloc[-1]
    assert curve["worker_pid"].nunique() == 2
    assert ray.is_initialized()


def _early_on(out, node_id: str) -> bool:
    """Whether a run is training on `node_id` with most of its 30 epochs still to go."""
    from gridrun.records import EpochReport, RunCheckpoint
    from gridrun.storage import Storage

    for path in (out / "checkpoints" / "latest").glob("*.pt"):
        try:
            checkpoint = RunCheckpoint.load(Storage(out), path.stem)
        except (OSError, EOFError, RuntimeError):
            continue  # replaced while being read
        last = checkpoint.history[-1] if checkpoint and checkpoint.history else None
        if isinstance(last, EpochReport) and last.worker.node_id == node_id and last.epoch <= 10:
            return True
    return False
